"""The build plan: a pure function of envd.lock.

Each step's cache key is sha256(parent key, step content), so a change to one Python package
changes the packages step's key and every key after it, and nothing before it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from envd.model import names
from envd.model.direct import install_requirement
from envd.model.lockfile import LockFile
from envd.model.setupmeta import SetupMetadata
from envd.model.spec import DEFAULT_PATH

VENV = "/opt/venv"
WORKDIR = "/workspace"
# The executor mounts one host folder (uv, the CA bundle, the requirements) over /mnt, and the
# uv cache volume over /tmp: both already exist in Debian images, so no mount point is left in
# a committed layer.
RUN_DIR = "/mnt"
REQUIREMENTS = f"{RUN_DIR}/requirements.txt"
UV = f"{RUN_DIR}/uv"
CA_BUNDLE = f"{RUN_DIR}/ca.pem"
UV_CACHE_MOUNT = "/tmp"
UV_CACHE = "/tmp/uv"
# The apt cache volume goes over /var/cache/apt, and the .debs into a folder of their own: the
# `docker-clean` hook of Docker Hub's Debian images deletes /var/cache/apt/archives/*.deb.
APT_CACHE_MOUNT = "/var/cache/apt"
APT_ARCHIVES = "/var/cache/apt/envd-archives"
# A step's own files (a setup step's project files) are a private copy, mounted read-only
# with the CA bundle at /mnt (not at /workspace: a mount point the image lacks would be left
# behind, empty, in the committed layer). The command runs from there.
STEP_FILES = f"{RUN_DIR}/workspace"
IDLE_CMD = ("sleep", "infinity")
PLAN_VERSION = 3  # bump when the meaning of a step changes, so old cache keys stop matching
# The same for the metadata step alone (3: env and label values are committed unexpanded).
METADATA_VERSION = 3


@dataclass(frozen=True)
class StepFile:
    """A file a step sees at STEP_FILES/<path> (read-only): named by its content."""

    path: str  # relative, "/"-separated
    sha256: str  # hex
    executable: bool = False


# What the builder read from the project for the plan: for each entry a `setup:` step names
# (a file, or `dir/` for every file under it), the files with their digests.
SetupFiles = Mapping[str, tuple[StepFile, ...]]


@dataclass(frozen=True)
class Step:
    name: str  # "base", "system", "venv", "packages", "setup[0]", "metadata"
    key: str  # hex sha256
    summary: str
    argv: tuple[str, ...] = ()  # what runs in the step's container; () for the base
    network: bool = False
    uses_ca: bool = False  # mount the host CA bundle (and point tools at it)
    uses_uv: bool = False  # mount the host uv binary, the uv cache and the requirements file
    uses_apt_cache: bool = False
    files: tuple[StepFile, ...] = ()  # at STEP_FILES, read-only; never committed


@dataclass(frozen=True)
class BuildPlan:
    project: str
    lock_hash: str
    steps: tuple[Step, ...]
    requirements: str  # the hashed requirements file the packages step installs
    env: tuple[tuple[str, str], ...]  # the image's environment (spec env + venv)
    labels: tuple[tuple[str, str], ...]
    namespace: str = "envd"  # the envd home's own repository prefix (see make_plan)
    # The bytes of the files the plan itself makes (the project step's dist-info), by sha256.
    generated: tuple[tuple[str, bytes], ...] = ()
    project_source: str = ""  # `install`: where the package's files lie in the project

    @property
    def final_key(self) -> str:
        return self.steps[-1].key

    @property
    def tag(self) -> str:
        return f"{self.namespace}/{self.project}:{self.final_key[:12]}"


def step_key(parent: str, kind: str, content: object) -> str:
    payload = json.dumps([PLAN_VERSION, parent, kind, content], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def lock_hash(lock: LockFile) -> str:
    """What the image was built from: the inputs and every pinned artifact."""
    content = [
        lock.inputs_hash,
        lock.base.digest,
        [(p.name, p.version) for p in lock.system],
        [
            (p.name, p.version, list(p.hashes), p.index, *([p.url] if p.url else []))
            for p in lock.python
        ],
    ]
    return "sha256:" + hashlib.sha256(json.dumps(content).encode()).hexdigest()


def requirements_text(lock: LockFile) -> str:
    """The lock's Python packages as a hashed requirements file (uv/pip --require-hashes).

    A direct URL package is its verified local copy (see envd.services.direct), by hash too."""
    lines = []
    for p in lock.python:
        hashes = "".join(f" \\\n    --hash={h}" for h in p.hashes)
        pinned = (
            install_requirement(p.name, p.url, p.version) if p.url else f"{p.name}=={p.version}"
        )
        lines.append(f"{pinned}{hashes}")
    return "\n".join(lines) + ("\n" if lines else "")


def system_pins(lock: LockFile) -> list[str]:
    return [f"{p.name}={p.version}" for p in lock.system]


def apt_script(pins: list[str], archives: str = "") -> str:
    """Install exact Debian versions; with `archives`, the .debs are kept there (a cache)."""
    cache = f"mkdir -p {archives}/partial; " if archives else ""
    option = f"-o Dir::Cache::Archives={archives} " if archives else ""
    clean = "" if archives else "apt-get clean; "
    return (
        f"set -e; export DEBIAN_FRONTEND=noninteractive; {cache}apt-get update -qq; "
        f"apt-get install -y -qq --no-install-recommends {option}{' '.join(pins)}; "
        f"{clean}rm -rf /var/lib/apt/lists/*"
    )


def index_args(lock: LockFile) -> tuple[str, ...]:
    args: list[str] = []
    for url in lock.inputs.indexes:
        args += ["--extra-index-url", url]
    return tuple(args)


def image_env(lock: LockFile) -> tuple[tuple[str, str], ...]:
    env = dict(lock.inputs.env)
    env["VIRTUAL_ENV"] = VENV
    env.setdefault("PATH", DEFAULT_PATH)  # envd.yaml's PATH replaces it, as ENV PATH does
    env.setdefault("LANG", "C.UTF-8")
    return tuple(sorted(env.items()))


def binary_args(from_source: Sequence[str]) -> list[str]:
    """uv's options for wheels only, except the packages a spec builds from source on purpose."""
    return ["--only-binary", ":all:", *(a for n in from_source for a in ("--no-binary", n))]


def _with_env(env: dict[str, str], argv: list[str]) -> tuple[str, ...]:
    """Variables for one command only: they must not end up in the committed image's config."""
    return ("env", *(f"{k}={v}" for k, v in sorted(env.items())), *argv)


CA_ENV = {
    "SSL_CERT_FILE": CA_BUNDLE,
    "REQUESTS_CA_BUNDLE": CA_BUNDLE,
    "PIP_CERT": CA_BUNDLE,
    "CURL_CA_BUNDLE": CA_BUNDLE,
}


def step_files(lock: LockFile, index: int, setup_files: SetupFiles | None) -> tuple[StepFile, ...]:
    """The files setup step `index` names, from what the builder read (KeyError if unread).

    None: nothing was read (a caller that only looks at a plan): each entry stands for itself
    with no digest, so such a step's key, and the tag, match no build."""
    named = lock.inputs.setup_files[index] if index < len(lock.inputs.setup_files) else ()
    found: dict[str, StepFile] = {}
    for entry in named:
        for f in setup_files[entry] if setup_files is not None else (StepFile(entry, ""),):
            found[f.path] = f
    return tuple(found[path] for path in sorted(found))


def in_step_files(files: tuple[StepFile, ...]) -> list[str]:
    """A prefix that runs the rest of argv from STEP_FILES, when a step has files. (Not the
    container's working directory: the engine would leave it behind in the committed layer.)"""
    if not files:
        return []
    return ["sh", "-c", f'cd {STEP_FILES} && exec "$@"', "sh"]


def make_plan(
    project: str,
    lock: LockFile,
    namespace: str = "envd",
    setup_files: SetupFiles | None = None,
    package: ProjectPackage | None = None,
    members: tuple[ProjectPackage, ...] | None = None,
) -> BuildPlan:
    """The build plan of `lock`; images are named under `namespace`, one per envd home, so
    two homes on one engine never retag or remove each other's images.

    `setup_files`: the digests of the project files the lock's setup steps name (read by the
    builder), so editing one rebuilds from its step on; the plan itself reads nothing.
    `package`: the project's pyproject.toml as read, for `project:` (its metadata, and for
    `install` its package's files by digest). None: not read, the keys match no build.
    `members`: the local packages in subfolders the lock installs editable (`members`), as
    read from their pyproject.toml (None: not read)."""
    steps: list[Step] = []
    base_content = [lock.base.kind, lock.base.digest, lock.base.reference]
    key = step_key("", "base", base_content)
    steps.append(Step("base", key, f"{lock.base.kind} base {lock.base.reference}"))

    if lock.base.kind == "image" and lock.system:
        pins = system_pins(lock)
        key = step_key(key, "system", pins)
        script = apt_script(pins, APT_ARCHIVES)
        steps.append(
            Step(
                "system",
                key,
                f"{len(pins)} Debian packages",
                ("sh", "-c", script),
                network=True,
                uses_apt_cache=True,
            )
        )

    key = step_key(key, "venv", [VENV, lock.target.python_version])
    steps.append(
        Step(
            "venv",
            key,
            f"Python {lock.target.python_version} virtualenv at {VENV}",
            # SOURCE_DATE_EPOCH: the .pyc files ensurepip writes are hash-checked (PEP 552), not
            # stamped with this build's mtimes, so two builds give the same bytes.
            _with_env({"SOURCE_DATE_EPOCH": "0"}, ["python3", "-m", "venv", VENV]),
        )
    )

    requirements = requirements_text(lock)
    if lock.python:
        from_source = list(lock.inputs.from_source)
        key = step_key(key, "packages", [requirements, list(lock.inputs.indexes), from_source])
        uv_env = {
            **CA_ENV,
            "UV_CACHE_DIR": UV_CACHE,
            "UV_LINK_MODE": "copy",
            "UV_NO_PROGRESS": "1",
            "UV_PYTHON_DOWNLOADS": "never",
        }
        argv = [
            UV,
            "pip",
            "install",
            "--no-config",
            "--python",
            f"{VENV}/bin/python",
            "--require-hashes",
            "--no-deps",
            *binary_args(from_source),
            # A source build happens here, in this project's own step: never a wheel another
            # project built into the shared cache.
            *(["--no-cache"] if from_source else []),
            *index_args(lock),
            "-r",
            REQUIREMENTS,
        ]
        steps.append(
            Step(
                "packages",
                key,
                f"{len(lock.python)} Python packages with uv (hashes required)",
                _with_env(uv_env, argv),
                network=True,
                uses_ca=True,
                uses_uv=True,
            )
        )

    generated: dict[str, bytes] = {}
    if lock.inputs.project or lock.inputs.members:
        mode = lock.inputs.project
        written: tuple[StepFile, ...] = ()
        if package is not None and mode:
            written, generated = project_files(package, mode, lock.target.python_version)
        made: list[object] = [mode, [[f.path, f.sha256, f.executable] for f in written]]
        if package is None and mode:
            made.append("unread")
        what = f"{package.name} {package.version}" if package else "the project"
        if lock.inputs.members:
            # (a lock without members keeps the key it always had)
            extra: list[StepFile] = []
            for member in members or ():
                files, made_bytes = project_files(member, "editable", lock.target.python_version)
                extra += files
                generated.update(made_bytes)
            made.append(["members", [[f.path, f.sha256, f.executable] for f in extra]])
            if members is None or len(members) != len(lock.inputs.members):
                made.append("members unread")
            written += tuple(extra)
            listed = ", ".join(f"{m.name} {m.version}" for m in members or ())
            what = f"{what}, {listed}" if mode else listed or "the local packages"
            mode = mode or "editable"
        key = step_key(key, "project", made)
        steps.append(
            Step(
                "project",
                key,
                f"{what} ({mode}{', live at ' + WORKDIR if mode == 'editable' else ''})",
                (*in_step_files(written), "cp", "-R", ".", "/"),
                files=written,
            )
        )

    env = image_env(lock)
    for i, command in enumerate(lock.inputs.setup):
        files = step_files(lock, i, setup_files)
        content: list[object] = [command, list(env)]
        if files:  # (a step without files keeps the key it always had)
            content.append([[f.path, f.sha256, f.executable] for f in files])
        key = step_key(key, "setup", content)
        run_env = {**dict(env), **CA_ENV}
        steps.append(
            Step(
                f"setup[{i}]",
                key,
                command,
                _with_env(run_env, [*in_step_files(files), "sh", "-c", command]),
                network=True,
                uses_ca=True,
                files=files,
            )
        )

    digest = lock_hash(lock)
    labels = (
        (names.BASE_DIGEST_LABEL, lock.base.digest),
        (names.LOCK_HASH_LABEL, digest),
        (names.PROJECT_LABEL, project),
        (names.PYTHON_LABEL, lock.target.python_version),
    )
    metadata = [METADATA_VERSION, list(env), list(labels), WORKDIR, list(IDLE_CMD)]
    key = step_key(key, "metadata", metadata)
    steps.append(Step("metadata", key, "environment, labels, workdir", ("true",)))
    return BuildPlan(
        project=project,
        lock_hash=digest,
        steps=tuple(steps),
        requirements=requirements,
        env=env,
        labels=labels,
        namespace=namespace,
        generated=tuple(sorted(generated.items())),
        project_source=package.source if package is not None else "",
    )


# ------------------------------------------------------------ site-packages
#
# (The shared-library check that runs there after the packages step: envd.model.libraries.)


def site_packages(python_version: str) -> str:
    major_minor = ".".join(python_version.split(".")[:2])
    return f"{VENV}/lib/python{major_minor}/site-packages"


# ------------------------------------------------------------ the project itself
#
# `project: editable` (or `install`) installs the project from its pyproject.toml without a
# build backend: a "project" step after the packages writes a dist-info (METADATA, INSTALLER,
# RECORD with every file's sha256, direct_url.json, entry_points.txt) and, editable, a
# `__editable__.NAME-VERSION.pth` pointing at /workspace (or /workspace/src), where `envctl
# enter` binds the project: editing the code needs no build. `install` copies the package's
# files in instead. Everything is owned by that RECORD, so the image verifies. The project's
# dependencies are locked with the rest (envd/model/spec_project.py). A setuptools project
# without [project] is read the same way from setup.cfg and setup.py's literal keywords
# (envd/model/setupmeta.py): setup.py is never run.


class ProjectError(ValueError):
    """pyproject.toml does not say what envd needs to install the project itself."""


@dataclass(frozen=True)
class ProjectPackage:
    """What the builder read about the project: pure data, in the project step's key."""

    name: str  # as written in [project]
    version: str
    summary: str = ""
    requires_python: str = ""
    dependencies: tuple[str, ...] = ()
    scripts: tuple[tuple[str, str], ...] = ()  # (command, "module:attr"), sorted
    source: str = ""  # "" or "src": where the import package lies, relative to the project
    # `install`: the package's files (paths relative to `source`), by content
    files: tuple[StepFile, ...] = ()
    # A local package in a subfolder (a uv workspace member): its folder in the project,
    # where direct_url.json points ("" for the project itself).
    location: str = ""


def read_pyproject(text: str, version: str | None = None) -> ProjectPackage:
    """[project] name, version, description, requires-python, dependencies and scripts.
    `version`: the version read elsewhere when [project] declares it dynamic (setuptools'
    `attr`, read statically: envd.model.setupmeta.literal_attr)."""
    import tomllib

    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"pyproject.toml is not valid TOML: {exc}") from None
    table = data.get("project")
    if not isinstance(table, dict):
        raise ProjectError("pyproject.toml has no [project] table (PEP 621)")
    name, version = table.get("name"), table.get("version") or version
    if not isinstance(name, str) or not name:
        raise ProjectError("pyproject.toml: [project] has no `name`")
    if not isinstance(version, str) or not version:
        raise ProjectError(
            "pyproject.toml: [project] has no static `version` (envd installs the project "
            "without running its build backend, so a dynamic version cannot be read)"
        )
    scripts = table.get("scripts") or {}
    dependencies = table.get("dependencies") or []
    if not isinstance(scripts, dict) or not all(
        isinstance(v, str) and ":" in v for v in scripts.values()
    ):
        raise ProjectError('pyproject.toml: [project.scripts] must map names to "module:attr"')
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise ProjectError("pyproject.toml: [project] `dependencies` must be a list of strings")
    summary = table.get("description")
    requires = table.get("requires-python")
    return ProjectPackage(
        name=name,
        version=version,
        summary=summary if isinstance(summary, str) else "",
        requires_python=requires if isinstance(requires, str) else "",
        dependencies=tuple(dependencies),
        scripts=tuple(sorted((str(k), str(v)) for k, v in scripts.items())),
    )


def has_project_table(text: str) -> bool:
    """Whether pyproject.toml has a [project] table (False for invalid TOML: said when read)."""
    import tomllib

    try:
        return isinstance(tomllib.loads(text.removeprefix("\ufeff")).get("project"), dict)
    except tomllib.TOMLDecodeError:
        return True


def package_from_setup(meta: SetupMetadata) -> ProjectPackage:
    """A setuptools project's static metadata (setup.cfg, literal setup.py) as the project
    step installs it: the same dist-info a pyproject.toml project gets."""
    if not meta.name:
        raise ProjectError("the project has no literal `name` in setup.py or setup.cfg")
    for _, target in meta.scripts:
        if ":" not in target:
            raise ProjectError(f'console script `{target}` is not "module:attr"')
    return ProjectPackage(
        name=meta.name,
        version=meta.version or "0.0.0",  # setuptools' own default
        summary=meta.summary or "",
        requires_python=meta.requires_python or "",
        dependencies=meta.install_requires or (),
        scripts=meta.scripts,
        source=meta.package_dir,
    )


def import_name(name: str) -> str:
    """The import package a distribution name suggests (`my-pkg` -> `my_pkg`)."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _record_hash(sha256_hex: str) -> str:
    digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _script(target: str) -> bytes:
    module, _, attr = target.partition(":")
    module, attr = module.strip(), attr.strip()
    head = attr.split(".", 1)[0]
    return (
        f"#!{VENV}/bin/python\n"
        "import sys\n"
        f"from {module} import {head}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n"
        f"    sys.exit({attr}())\n"
    ).encode()


def project_files(
    package: ProjectPackage, mode: str, python_version: str
) -> tuple[tuple[StepFile, ...], dict[str, bytes]]:
    """Every file the project step writes (paths relative to /), and the bytes of those it
    makes itself by sha256 (the `install` package's own files come from the project)."""
    site = site_packages(python_version)
    dist = f"{import_name(package.name)}-{package.version}.dist-info"
    root = f"{WORKDIR}/{package.source}".rstrip("/")
    made: dict[str, tuple[bytes, bool]] = {}
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {package.name}",
        f"Version: {package.version}",
    ]
    if package.summary:
        metadata.append(f"Summary: {' '.join(package.summary.split())}")
    if package.requires_python:
        metadata.append(f"Requires-Python: {package.requires_python}")
    metadata += [f"Requires-Dist: {d}" for d in package.dependencies]
    made[f"{site}/{dist}/METADATA"] = ("\n".join(metadata) + "\n").encode(), False
    made[f"{site}/{dist}/INSTALLER"] = b"envd\n", False
    dir_info = {"editable": True} if mode == "editable" else {}
    url = {"dir_info": dir_info, "url": f"file://{WORKDIR}/{package.location}".rstrip("/")}
    made[f"{site}/{dist}/direct_url.json"] = (
        (json.dumps(url, sort_keys=True) + "\n").encode(),
        False,
    )
    if package.scripts:
        lines = ["[console_scripts]", *(f"{k} = {v}" for k, v in package.scripts)]
        made[f"{site}/{dist}/entry_points.txt"] = ("\n".join(lines) + "\n").encode(), False
        for command, target in package.scripts:
            made[f"{VENV}/bin/{command}"] = _script(target), True
    if mode == "editable":
        pth = f"__editable__.{import_name(package.name)}-{package.version}.pth"
        made[f"{site}/{pth}"] = f"{root}\n".encode(), False
    listed: dict[str, StepFile] = {
        path: StepFile(path, hashlib.sha256(data).hexdigest(), executable)
        for path, (data, executable) in made.items()
    }
    if mode != "editable":
        for f in package.files:
            listed[f"{site}/{f.path}"] = StepFile(f"{site}/{f.path}", f.sha256, f.executable)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for path in sorted(listed):
        relative = (
            path.removeprefix(f"{site}/")
            if path.startswith(f"{site}/")
            else "../../../" + path.removeprefix(f"{VENV}/")
        )
        writer.writerow([relative, _record_hash(listed[path].sha256), ""])
    writer.writerow([f"{dist}/RECORD", "", ""])
    record = rows.getvalue().encode()
    made[f"{site}/{dist}/RECORD"] = record, False
    listed[f"{site}/{dist}/RECORD"] = StepFile(
        f"{site}/{dist}/RECORD", hashlib.sha256(record).hexdigest()
    )
    generated = {listed[path].sha256: data for path, (data, _) in made.items()}
    files = tuple(replace(listed[path], path=path.lstrip("/")) for path in sorted(listed))
    return files, generated
