"""Shared libraries wheels leave to the system, on the real engine: the build's check fails on
what an import would miss (and only notes what nothing loads), `envctl lock` adds the Debian
package with a notice, and `gpu: required` never stops lock or build."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template

pytestmark = pytest.mark.integration

# lightgbm's manylinux wheel (3.5 MB) links libgomp.so.1 and does not vendor it; a bare
# bookworm base (mmdebstrap minbase) has no libgomp1.
SPEC = """\
version: 1
base: {debian: bookworm}
python: "3.11"
packages: ["lightgbm==4.6.0"]
"""
EXT = "_ext.cpython-311-x86_64-linux-gnu.so"
SITE = "/opt/venv/lib/python3.11/site-packages"


def test_lightgbm_gets_libgomp1_at_lock_and_imports(shared: Envctl) -> None:
    path = shared.cwd / "gbm"
    path.mkdir()
    (path / "envd.yaml").write_text(SPEC)
    out = shared("lock", str(path))
    assert out.returncode == 0, out.stderr
    assert "added libgomp1: lightgbm needs libgomp.so.1" in out.stdout + out.stderr
    assert "libgomp1" in (path / "envd.lock").read_text()
    shared.ok("build", str(path))
    out_text = shared.ok(
        "enter", str(path), "--", "python", "-c", "import lightgbm; print(lightgbm.__version__)"
    )
    assert out_text.strip().endswith("4.6.0")

    # `system:` wins: a package named there is taken as written, nothing is added
    (path / "envd.yaml").write_text(SPEC + "system: [libgomp1]\n")
    out = shared("lock", str(path))
    assert out.returncode == 0, out.stderr
    assert "added libgomp1" not in out.stdout + out.stderr


def wheel(name: str, files: dict[str, bytes]) -> bytes:
    """`{name}-1.0-py3-none-any.whl` holding `files` (binary allowed) and a correct RECORD."""
    dist = f"{name}-1.0.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: envd-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def shared_objects(tmp: Path) -> dict[str, bytes]:
    """An extension module that links libgomp.so.1 and libyaml-0.so.2, and a plugin nothing
    links that needs a library no Debian package has, built with gcc against stubs."""
    (tmp / "x.c").write_text("int envd_x(void) { return 1; }\n")

    def so(name: str, soname: str = "", links: tuple[str, ...] = ()) -> bytes:
        argv = ["gcc", "-shared", "-fPIC", "-o", str(tmp / name), str(tmp / "x.c")]
        argv += [f"-Wl,-soname,{soname}"] if soname else []
        argv += [f"-L{tmp}", "-Wl,--no-as-needed", *(f"-l:{n}" for n in links)]
        subprocess.run(argv, check=True)
        return (tmp / name).read_bytes()

    fake_gomp = so("libgomp.so.1", "libgomp.so.1")
    so("libyaml-0.so.2", "libyaml-0.so.2")  # (not in envd's table: Debian's Contents has it)
    so("libenvdplug.so.2", "libenvdplug.so.2")
    return {
        "ext": so(EXT, links=("libgomp.so.1", "libyaml-0.so.2")),
        "plugin": so("libplug.so", links=("libenvdplug.so.2",)),
        "gomp": fake_gomp,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """gompy and carrier served on 127.0.0.1: (base URL, file name -> sha256)."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to make the shared objects")
    made = shared_objects(tmp_path_factory.mktemp("so"))
    files = {
        "gompy-1.0-py3-none-any.whl": wheel(
            "gompy",
            {
                "gompy/__init__.py": b"",
                f"gompy/{EXT}": made["ext"],
                "gompy/plugins/libplug.so": made["plugin"],
            },
        ),
        # ships a file named libgomp.so.1 (as torch does): it serves no other wheel
        "carrier-1.0-py3-none-any.whl": wheel(
            "carrier", {"carrier/__init__.py": b"", "carrier/lib/libgomp.so.1": made["gomp"]}
        ),
    }
    root = tmp_path_factory.mktemp("served")
    for name, data in files.items():
        (root / name).write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield (
        f"http://127.0.0.1:{server.server_address[1]}",
        {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    )
    server.shutdown()
    server.server_close()


def test_a_wheel_missing_a_library_fails_the_build_then_lock_adds_it(
    shared: Envctl, served: tuple[str, dict[str, str]]
) -> None:
    base, digests = served
    path = shared.cwd / "gompy"
    path.mkdir()
    packages = "".join(
        f"  - {name.split('-', 1)[0]} @ {base}/{name}#sha256={digest}\n"
        for name, digest in sorted(digests.items())
    )
    (path / "envd.yaml").write_text(
        f'version: 1\nbase: {{debian: bookworm}}\npython: "3.11"\npackages:\n{packages}'
    )
    out = shared("lock", str(path))
    assert out.returncode == 0, out.stderr
    assert "added" not in out.stdout + out.stderr  # nothing known about gompy yet

    proc = shared("build", str(path))
    assert proc.returncode == 6, proc.stderr
    assert f"gompy needs libgomp.so.1 (gompy/{EXT}): Debian's libgomp1 provides it" in proc.stderr
    assert (
        f"gompy needs libyaml-0.so.2 (gompy/{EXT}): Debian's libyaml-0-2 provides it" in proc.stderr
    )
    error = proc.stderr[proc.stderr.index("need shared libraries") :]
    assert "carrier" not in error and "libenvdplug" not in error
    assert f"envctl lock {path.name}" in error
    assert "Traceback" not in proc.stderr

    out = shared("lock", str(path))
    assert out.returncode == 0, out.stderr
    assert "added libgomp1: gompy needs libgomp.so.1" in out.stdout + out.stderr
    assert "added libyaml-0-2: gompy needs libyaml-0.so.2" in out.stdout + out.stderr
    build = shared("build", str(path))
    assert build.returncode == 0, build.stderr
    # the plugin nothing links is a note, naming its distribution
    assert "gompy (libenvdplug.so.2)" in build.stdout + build.stderr
    loaded = shared.ok(
        "enter",
        str(path),
        "--",
        "python",
        "-c",
        f"import ctypes; ctypes.CDLL('{SITE}/gompy/{EXT}'); print('loaded')",
    )
    assert loaded.strip().endswith("loaded")


def test_a_gpu_environment_locks_and_builds_here_and_only_enter_needs_a_gpu(
    shared: Envctl,
) -> None:
    path = copy_template("default", shared.cwd / "needsgpu")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec + "gpu: required\n")
    shared.ok("lock", str(path))
    shared.ok("build", str(path))
    host = json.loads(shared.ok("info", "--json"))
    if host.get("gpus"):
        pytest.skip("this host has a GPU: nothing to refuse")
    status = shared.ok("status", str(path))
    assert "host:   envd.yaml says `gpu: required`, but this host has" in status
    proc = shared("enter", str(path), "--", "true")
    assert proc.returncode == 7, proc.stderr
    assert "gpu: required" in proc.stderr and "Traceback" not in proc.stderr
