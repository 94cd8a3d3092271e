"""The proof of sameness against a careful adversary: each attack is refused with exit 9 (or 1
for a hand-edited lock), the message names what differs, and the engine is left as it was.

Images are tampered with the engine's own tools (`docker build` on top of a real envd image),
shared through a real local registry or an archive, and received by a second envd home.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SESSION_LABEL, Envctl, _envctl_env, copy_template, stop_daemon
from tests.integration.registry import local_registry

pytestmark = pytest.mark.integration

SITE = "/opt/venv/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture
def colleague(tmp_path: Path) -> Iterator[Envctl]:
    """A second envd home on the same engine: its own daemon, state and caches."""
    home = tmp_path / "home2"
    home.mkdir()
    runner = Envctl(env=_envctl_env(home), home=home, cwd=tmp_path)
    yield runner
    runner("stop", "--all")
    stop_daemon(runner)


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def image_of(envctl: Envctl, path: Path) -> str:
    projects = json.loads(envctl.ok("--json", "ls"))["projects"]
    return str(next(p["image"] for p in projects if p["path"] == str(path)))


def tamper(base: str, tag: str, dockerfile: str, tmp_path: Path) -> str:
    """`docker build` FROM an envd image; the labels (and so the claimed hashes) are kept."""
    folder = tmp_path / f"build-{tag.replace('/', '-').replace(':', '-')}"
    folder.mkdir()
    (folder / "Dockerfile").write_text(f"FROM {base}\n{dockerfile}\nLABEL {SESSION_LABEL}\n")
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(folder)],
        check=True,
        capture_output=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"},
    )
    return tag


def checkout_of(project: Path, tmp_path: Path, name: str = "checkout") -> Path:
    checkout = tmp_path / name
    checkout.mkdir()
    for file in ("envd.yaml", "envd.lock"):
        (checkout / file).write_bytes((project / file).read_bytes())
    return checkout


def containers_created_since(since: float) -> list[str]:
    out = docker(
        "events",
        "--since",
        str(int(since)),
        "--until",
        str(int(time.time()) + 1),
        "--filter",
        "type=container",
        "--filter",
        "event=create",
        "--format",
        "{{.Actor.Attributes.image}}",
    )
    return [line for line in out.splitlines() if line]


def test_an_edited_file_with_its_labels_kept_is_refused(
    shared: Envctl, default_project: Path, registry: str, colleague: Envctl, tmp_path: Path
) -> None:
    target = tamper(
        image_of(shared, default_project),
        f"{registry}/team/edited:1",
        f"RUN echo '# edited' >> {SITE}/yaml/__init__.py",
        tmp_path,
    )
    docker("push", target)
    docker("rmi", "-f", target)
    proc = colleague("pull", target)
    assert proc.returncode == 9, proc.stderr
    assert f"{SITE}/yaml/__init__.py does not match pyyaml's RECORD" in proc.stderr
    assert "do not match its fingerprint label" in proc.stderr
    assert subprocess.run(["docker", "image", "inspect", target], capture_output=True).returncode


def test_start_up_code_is_refused_and_never_runs(
    shared: Envctl, default_project: Path, registry: str, colleague: Envctl, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    target = tamper(
        image_of(shared, default_project),
        f"{registry}/team/pth:1",
        f'RUN echo \'import os; open("/tmp/ran", "w")\' > {SITE}/zz-evil.pth'
        f' && echo \'open("/tmp/ran", "w")\' > {SITE}/sitecustomize.py',
        tmp_path,
    )
    docker("push", target)
    docker("rmi", "-f", target)
    since = time.time() - 1
    proc = colleague("pull", target)
    assert proc.returncode == 9, proc.stderr
    assert f"{SITE}/zz-evil.pth runs at Python start-up and no package owns it" in proc.stderr
    assert f"{SITE}/sitecustomize.py runs at Python start-up" in proc.stderr
    # Nothing of the image ran: no container was made from it, so its code had no chance.
    assert not [i for i in containers_created_since(since) if "pth" in i]
    assert not marker.exists()


def test_a_package_removed_with_the_label_recomputed_is_refused(
    shared: Envctl, default_project: Path, registry: str, colleague: Envctl, tmp_path: Path
) -> None:
    """The attacker recomputes the fingerprint label with envd's own code: the contents then
    match the label, but not the lock whose hash the image claims."""
    from envd.gateways.engine import Engine
    from envd.model.fingerprint import environment_from_manifest, section_hash
    from envd.model.plan import VENV
    from envd.services.content import ContentHasher

    stripped = tamper(
        image_of(shared, default_project),
        "envd-test-evil/stripped:1",
        f"RUN /opt/venv/bin/python -m pip uninstall -y -q pyyaml && rm -rf {SITE}/__pycache__",
        tmp_path,
    )
    engine = Engine()
    info = engine.inspect_image(stripped)
    assert info is not None
    env = {"PYTHONHASHSEED": "0"}
    manifest = ContentHasher(engine, tmp_path / "layers").image_manifest(stripped)
    label = section_hash(
        environment_from_manifest(manifest, info.labels.get("envd.base-digest", ""), env, VENV)
    )
    target = tamper(
        stripped, f"{registry}/team/relabelled:1", f"LABEL envd.fingerprint.environment={label}",
        tmp_path,
    )  # fmt: skip
    docker("push", target)
    docker("rmi", "-f", target, stripped)
    colleague.ok("add", str(checkout_of(default_project, tmp_path)))
    proc = colleague("pull", target)
    assert proc.returncode == 9, proc.stderr
    assert "claims to be dflt's environment" in proc.stderr
    assert "(pinned by envd.lock) is not installed" in proc.stderr and "pyyaml" in proc.stderr
    state = json.loads(colleague.ok("--json", "ls"))["projects"][0]
    assert state["image"] == ""  # nothing was registered


def _envd_archive(image_tar: bytes, meta: dict[str, object], out: Path) -> Path:
    import hashlib

    meta = {**meta, "image_sha256": hashlib.sha256(image_tar).hexdigest()}
    with tarfile.open(out, "w:gz", compresslevel=1) as archive:  # (level 9: a minute of CPU)
        for name, data in (
            ("envd-share.json", json.dumps(meta).encode()),
            ("fingerprint.json", b"{}"),
            ("image.tar", image_tar),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out


def test_crafted_archive_metadata_and_tags_are_never_acted_on(
    shared: Envctl, default_project: Path, colleague: Envctl, tmp_path: Path
) -> None:
    """An archive whose record names another image's ID and whose image carries a tag of a
    project: the other image survives, the tag does not move, and the archive is refused."""
    victim = image_of(shared, default_project)
    victim_id = docker("image", "inspect", "-f", "{{.Id}}", victim)
    evil = tamper(victim, "envd-test-evil/archive:1", "RUN echo x > /etc/evil", tmp_path)
    docker("tag", evil, victim.replace(":", "-bait:"))  # a second tag, carried in the save
    saved = subprocess.run(
        ["docker", "save", evil, victim.replace(":", "-bait:")], capture_output=True, check=True
    ).stdout
    docker("rmi", "-f", evil, victim.replace(":", "-bait:"))
    claimed = docker(
        "image", "inspect", "-f", '{{index .Config.Labels "envd.fingerprint.environment"}}', victim
    )
    archive = _envd_archive(
        saved,
        {"image": victim, "image_id": victim_id, "project": "dflt", "environment_hash": claimed},
        tmp_path / "evil.tar.gz",
    )
    proc = colleague("load", str(archive))
    assert proc.returncode == 9, proc.stderr
    assert "/etc/evil" in proc.stderr or "do not match its fingerprint label" in proc.stderr
    assert docker("image", "inspect", "-f", "{{.Id}}", victim) == victim_id  # untouched
    bait = subprocess.run(
        ["docker", "image", "inspect", victim.replace(":", "-bait:")], capture_output=True
    )
    assert bait.returncode != 0  # the archive's tags were never applied
    assert shared.ok("enter", str(default_project), "--", "python", "-c", "print(2)") == "2\n"


def test_a_swapped_base_tag_is_not_trusted(
    shared: Envctl, colleague: Envctl, tmp_path: Path
) -> None:
    """The Debian base tag is shared by every home on the engine, so anyone can swap it. A
    home that still has its own step images built on the real base does not need the tag; a
    home that needs it (the colleague's, with no step images) re-imports the locked tarball."""
    path = copy_template("default", shared.cwd / "swapped")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace('PYTHONHASHSEED: "0"', 'SWAPPED_BASE: "1"'))
    shared.ok("lock", str(path))
    lock = json.loads((path / "envd.lock").read_text())
    reference, tarball = lock["base"]["reference"], lock["base"]["tarball_sha256"]
    original = docker("image", "inspect", "-f", "{{.Id}}", reference)
    tamper(reference, reference, "RUN echo swapped > /etc/swapped", tmp_path)
    assert docker("image", "inspect", "-f", "{{.Id}}", reference) != original
    shared.ok("build", str(path))
    out = shared("enter", str(path), "--", "cat", "/etc/swapped")
    assert out.returncode != 0  # the swapped base's file is not in the environment
    checkout = tmp_path / "colleague-swapped"
    shutil.copytree(path, checkout)
    colleague.ok("build", str(checkout))
    layers = json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", reference))
    assert layers == [tarball]  # imported again from the locked tarball
    out = colleague("enter", str(checkout), "--", "cat", "/etc/swapped")
    assert out.returncode != 0


def test_a_hand_edited_lock_is_named_and_refused(shared: Envctl, tmp_path: Path) -> None:
    path = copy_template("default", shared.cwd / "edited-lock")
    shared.ok("lock", str(path))
    good = (path / "envd.lock").read_text()
    data = json.loads(good)
    victim = next(p for p in data["python"] if p["name"] == "pyyaml")
    victim["hashes"] = ["sha256:" + "0" * 64]
    (path / "envd.lock").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    check = shared("lock", str(path), "--check")
    assert check.returncode == 1, check.stderr
    assert "envd.lock was edited: pyyaml's sha256 changed" in check.stderr
    assert "run `envctl lock " in check.stderr
    build = shared("build", str(path))
    assert build.returncode == 1 and "pyyaml's sha256 changed" in build.stderr
    shared.ok("lock", str(path))  # the hint works: the edited pin is resolved again
    relocked = json.loads((path / "envd.lock").read_text())
    pins = {p["name"]: p["hashes"] for p in relocked["python"]}
    assert pins["pyyaml"] == next(
        p["hashes"] for p in json.loads(good)["python"] if p["name"] == "pyyaml"
    )
    assert shared("lock", str(path), "--check").returncode == 0


def test_two_homes_on_one_engine_keep_to_their_own_images(
    shared: Envctl, default_project: Path, colleague: Envctl, tmp_path: Path
) -> None:
    mine = image_of(shared, default_project)
    checkout = checkout_of(default_project, tmp_path)
    colleague.ok("build", str(checkout))
    theirs = image_of(colleague, checkout)
    assert theirs != mine and theirs.split("/")[0] != mine.split("/")[0]
    assert theirs.split(":")[1] == mine.split(":")[1]  # the same plan, in another namespace
    colleague.ok("gc")
    colleague.ok("rm", "--image", theirs)
    assert docker("image", "inspect", "-f", "{{.Id}}", mine)  # still there
    assert shared.ok("enter", str(default_project), "--", "python", "-c", "print(3)") == "3\n"
    # Same lock, separate caches: the same environment, file for file.
    a = json.loads(shared.ok("fingerprint", str(default_project), "--json"))["environment"]
    colleague.ok("build", str(checkout))
    b = json.loads(colleague.ok("fingerprint", str(checkout), "--json"))["environment"]
    assert a["content_hash"] == b["content_hash"] and a["files"] == b["files"] > 1000


def test_one_changed_byte_changes_the_hash_and_diff_names_the_file(
    shared: Envctl, default_project: Path, tmp_path: Path
) -> None:
    image = image_of(shared, default_project)
    edited = tamper(
        image, "envd-test-evil/onebyte:1", f"RUN sed -i '1s/^/#/' {SITE}/yaml/cyaml.py", tmp_path
    )
    try:
        proc = shared("diff", str(default_project), edited)
        assert proc.returncode == 1, proc.stderr
        assert f"~ file {SITE}/yaml/cyaml.py (python:PyYAML) modified" in proc.stdout
        assert "content_hash" in proc.stdout
    finally:
        docker("rmi", "-f", edited)


SDIST_ONLY = 'version: 1\nbase: {debian: bookworm}\npackages: ["docopt==0.6.2"]\n'


def test_a_package_without_a_wheel_is_named_at_lock_time(shared: Envctl, project) -> None:  # type: ignore[no-untyped-def]
    path = project("sdist-refused", SDIST_ONLY)
    proc = shared("lock", str(path))
    assert proc.returncode == 1, proc.stderr
    assert "docopt==0.6.2 has no wheel for any Python from 3.6 to 3.14" in proc.stderr
    assert "build: {from_source: [docopt]}" in proc.stderr
    assert not (path / "envd.lock").exists()


def test_a_source_build_needs_an_opt_in_and_runs_in_its_own_step(shared: Envctl, project) -> None:  # type: ignore[no-untyped-def]
    path = project("sdist-built", SDIST_ONLY + "build: {from_source: [docopt]}\n")
    shared.ok("lock", str(path))
    lock = json.loads((path / "envd.lock").read_text())
    assert lock["inputs"]["from_source"] == ["docopt"]
    out = shared.ok(
        "enter", str(path), "--", "python", "-c", "import docopt; print(docopt.__version__)"
    )
    assert out.strip() == "0.6.2"
    # No environment hash is held against other machines: source builds are not reproducible.
    assert json.loads((path / "envd.lock").read_text())["environment_hash"] == ""
