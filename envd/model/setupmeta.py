"""A setuptools project without pyproject.toml [project]: its metadata, read statically.

envd installs a project without running its build backend (envd/model/plan.py, "the project
itself"), so for a project described only by setup.cfg or setup.py the name, version,
install_requires and console scripts must be written literally: setup.cfg's [metadata] and
[options], and setup.py's `setup(...)` keyword arguments when they are literals (read with
`ast`, never executed). What is computed when setup.py runs is refused, naming the fix.
Pure: texts in, `SetupMetadata` or `SetupError` out.
"""

from __future__ import annotations

import ast
import configparser
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement


class SetupError(ValueError):
    """setup.py/setup.cfg does not say statically what envd needs; `hint` says what to write."""

    def __init__(self, message: str, hint: str, computable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # True: the metadata is computed when setup.py runs, and the PEP 517 legacy backend
        # can compute it (in a throwaway container at lock: envd.services.setup_container)
        self.computable = computable


@dataclass(frozen=True)
class SetupMetadata:
    """What setup.cfg and setup.py say literally (None: not said anywhere)."""

    name: str | None = None
    version: str | None = None
    summary: str | None = None
    requires_python: str | None = None
    install_requires: tuple[str, ...] | None = None
    scripts: tuple[tuple[str, str], ...] = ()  # console_scripts (command, "module:attr")
    package_dir: str = ""  # "" or e.g. "src": where the import packages lie
    source: str = ""  # the file the dependencies were read from
    # setup.cfg `version = attr: pkg.__version__`: read from the module's literal assignment
    # when the project is installed (literal_attr), never by running it
    version_attr: str | None = None


_EXAMPLES = {
    "install_requires": 'install_requires=["numpy>=1.24"]',
    "version": 'version="1.2.0"',
    "name": 'name="mypkg"',
}


def _fix(key: str = "install_requires") -> str:
    example = _EXAMPLES.get(key)
    literally = f" (e.g. `{example}`)" if example else ""
    return (
        f"write `{key}=` literally in setup(...){literally}, or move the metadata to "
        "setup.cfg [metadata]/[options] or pyproject.toml [project]"
    )


def read_setup(setup_py: str | None, setup_cfg: str | None) -> SetupMetadata:
    """setup.cfg's metadata, overridden by setup.py's literal keywords (as setuptools does)."""
    cfg = _from_cfg(setup_cfg) if setup_cfg is not None else SetupMetadata()
    if setup_py is None:
        return cfg
    py = _from_py(setup_py)
    return SetupMetadata(
        name=py.name or cfg.name,
        version=py.version or cfg.version,
        version_attr=None if py.version else py.version_attr or cfg.version_attr,
        summary=py.summary or cfg.summary,
        requires_python=py.requires_python or cfg.requires_python,
        install_requires=(
            py.install_requires if py.install_requires is not None else cfg.install_requires
        ),
        scripts=py.scripts or cfg.scripts,
        package_dir=py.package_dir or cfg.package_dir,
        source=py.source if py.install_requires is not None else cfg.source,
    )


# ------------------------------------------------------------ setup.cfg


def _lines(value: str) -> tuple[str, ...]:
    out = []
    for line in value.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return tuple(out)


def _from_cfg(text: str) -> SetupMetadata:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source="setup.cfg")
    except configparser.Error as exc:
        raise SetupError(
            f"setup.cfg is not valid: {str(exc).splitlines()[0]}", "fix setup.cfg's syntax"
        ) from None
    meta = parser["metadata"] if parser.has_section("metadata") else {}
    options = parser["options"] if parser.has_section("options") else {}
    version = meta.get("version")
    version_attr = None
    if version is not None and version.strip().startswith("attr:"):
        version_attr = version.strip().removeprefix("attr:").strip()
        version = None
        if "." not in version_attr:
            raise SetupError(
                f"setup.cfg: version is `attr: {version_attr}`, which names no module",
                "write `version = attr: mypkg.__version__`, or the version literally",
            )
    if version is not None and version.strip().startswith("file:"):
        raise SetupError(
            f"setup.cfg: version is `{version.strip()}`, computed when the project is built; "
            "envd installs the project without building it",
            "write the version literally in setup.cfg [metadata] (`version = 1.2.0`)",
            computable=True,
        )
    requires = options.get("install_requires")
    if requires is not None and requires.strip().startswith(("file:", "attr:")):
        raise SetupError(
            f"setup.cfg: install_requires is `{requires.strip()}`; envd reads the list only "
            "when it is written in setup.cfg",
            "list the requirements under install_requires in setup.cfg [options], one a line",
            computable=True,
        )
    scripts: list[tuple[str, str]] = []
    if parser.has_section("options.entry_points"):
        for line in _lines(parser["options.entry_points"].get("console_scripts", "")):
            command, _, target = line.partition("=")
            scripts.append((command.strip(), target.strip()))
    package_dir = ""
    for line in _lines(options.get("package_dir", "")):
        key, _, value = line.partition("=")
        if not key.strip() and value.strip():
            package_dir = value.strip().strip("/")
    return SetupMetadata(
        name=(meta.get("name") or "").strip() or None,
        version=(version or "").strip() or None,
        summary=(meta.get("description") or "").strip() or None,
        requires_python=(options.get("python_requires") or "").strip() or None,
        install_requires=_lines(requires) if requires is not None else None,
        scripts=tuple(sorted(scripts)),
        package_dir=package_dir,
        source="setup.cfg",
        version_attr=version_attr,
    )


# ------------------------------------------------------------ setup.py


def _setup_call(tree: ast.Module) -> ast.Call | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "setup":
                return node
    return None


# What METADATA and entry_points.txt say, so the backend can compute it when setup.py does.
_COMPUTABLE = frozenset(
    ("name", "version", "description", "python_requires", "install_requires", "entry_points")
)


def _literal(node: ast.expr, key: str) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise SetupError(
            f"setup.py: `{key}=` is computed when setup.py runs "
            f"(`{ast.unparse(node)[:60]}`); envd reads setup.py without running it",
            _fix(key),
            computable=key in _COMPUTABLE,
        ) from None


def _strings(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return _lines(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise SetupError(f"setup.py: `{key}=` must be a list of strings", _fix(key))


def _from_py(text: str) -> SetupMetadata:
    try:
        tree = ast.parse(text, filename="setup.py")
    except (SyntaxError, ValueError) as exc:
        raise SetupError(f"setup.py cannot be parsed: {exc}", "fix setup.py's syntax") from None
    call = _setup_call(tree)
    if call is None:
        raise SetupError(
            "setup.py calls no setup(...)", "call setuptools.setup(...) with the metadata"
        )
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    unpacked = any(k.arg is None for k in call.keywords) or bool(call.args)
    if "ext_modules" in keywords:
        raise SetupError(
            "setup.py builds extension modules (`ext_modules=`), and envd installs the project "
            "without building it, so they would be missing",
            "publish the package as a wheel and depend on it by name, or remove `project:`",
        )
    found: dict[str, object] = {}
    version_attr = None
    if "version" in keywords:
        version_attr = _imported_attr(tree, keywords["version"])
    for key in ("name", "version", "description", "python_requires", "install_requires"):
        if key in keywords and not (key == "version" and version_attr is not None):
            found[key] = _literal(keywords[key], key)
    if "install_requires" not in found and unpacked:
        raise SetupError(
            "setup.py passes setup() its arguments through `**` or positionally, so envd "
            "cannot tell its install_requires without running it",
            _fix(),
            computable=True,
        )
    scripts: list[tuple[str, str]] = []
    if "entry_points" in keywords:
        points = _literal(keywords["entry_points"], "entry_points")
        console = points.get("console_scripts", ()) if isinstance(points, dict) else ()
        for line in _strings(console, "entry_points"):
            command, _, target = line.partition("=")
            scripts.append((command.strip(), target.strip()))
    package_dir = ""
    if "package_dir" in keywords:
        dirs = _literal(keywords["package_dir"], "package_dir")
        if isinstance(dirs, dict) and isinstance(dirs.get(""), str):
            package_dir = dirs[""].strip("/")
    for key in ("name", "version", "description", "python_requires"):
        if key in found and not isinstance(found[key], str):
            raise SetupError(f"setup.py: `{key}=` must be a string", _fix(key))
    return SetupMetadata(
        name=_opt(found.get("name")),
        version=_opt(found.get("version")),
        summary=_opt(found.get("description")),
        requires_python=_opt(found.get("python_requires")),
        install_requires=(
            _strings(found["install_requires"], "install_requires")
            if "install_requires" in found
            else None
        ),
        scripts=tuple(sorted(scripts)),
        package_dir=package_dir,
        source="setup.py",
        version_attr=version_attr,
    )


def _imported_attr(tree: ast.Module, node: ast.expr) -> str | None:
    """`version=__version__` after `from pkg import __version__`, or `version=pkg.__version__`
    after `import pkg`: the module attribute setup.py takes its version from, as `pkg.name`
    (read later from the module's literal assignment, never run). None for anything else."""
    imports: dict[str, str] = {}  # local name -> "module.attr" or "module"
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
            for alias in statement.names:
                imports[alias.asname or alias.name] = f"{statement.module}.{alias.name}"
        elif isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.asname or "." not in alias.name:
                    imports[alias.asname or alias.name] = alias.name
    if isinstance(node, ast.Name) and "." in imports.get(node.id, ""):
        return imports[node.id]
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in imports
        and "." not in imports[node.value.id]
    ):
        return f"{imports[node.value.id]}.{node.attr}"
    return None


def _opt(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


# ------------------------------------------------------------ `attr:` read statically
#
# setuptools resolves `version = attr: pkg.__version__` (setup.cfg) and pyproject.toml's
# `[tool.setuptools.dynamic] version = { attr = "pkg.VERSION" }` by reading the module with
# `ast` first, importing it only when the value is not a literal (setuptools.config.expand
# StaticModule). envd does the first half and never the second: a literal string assigned at
# the module's top level is the version; anything else stays refused, naming the fix.


def dynamic_version_attr(pyproject_text: str) -> str | None:
    """`pkg.VERSION` when pyproject.toml takes its version from setuptools' `attr`."""
    import tomllib

    try:
        data = tomllib.loads(pyproject_text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError:
        return None
    project = data.get("project")
    dynamic = project.get("dynamic") if isinstance(project, dict) else None
    if not isinstance(dynamic, list) or "version" not in dynamic:
        return None
    tool = data.get("tool")
    setuptools = tool.get("setuptools") if isinstance(tool, dict) else None
    table = setuptools.get("dynamic") if isinstance(setuptools, dict) else None
    version = table.get("version") if isinstance(table, dict) else None
    attr = version.get("attr") if isinstance(version, dict) else None
    return attr.strip() if isinstance(attr, str) and "." in attr else None


def attr_module_files(attr: str, package_dir: str = "") -> tuple[str, ...]:
    """Where the module of `attr` may lie, relative to the package's folder: under
    `package_dir` when the project names one, else src layout first, as setuptools finds it."""
    module = attr.rsplit(".", 1)[0].replace(".", "/")
    bases = (f"{package_dir}/",) if package_dir else ("src/", "")
    return tuple(f"{base}{module}{tail}" for base in bases for tail in ("/__init__.py", ".py"))


def literal_attr(module_text: str, attr: str) -> str | None:
    """The string literally assigned to `attr`'s last name at the module's top level (None:
    not there, or computed)."""
    name = attr.rsplit(".", 1)[-1]
    try:
        tree = ast.parse(module_text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    found: str | None = None
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if value is None or not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        found = (
            value.value.strip() or None
            if isinstance(value, ast.Constant) and isinstance(value.value, str)
            else None
        )  # the last assignment wins, as when the module runs
    return found


# ------------------------------------------------------------ computed by the legacy backend
#
# A setup.py whose metadata is computed (`install_requires=open("requirements.txt")...`,
# `**kwargs`, `version=read_version()`) is run by `setuptools.build_meta:__legacy__` in a
# throwaway container at lock (envd.services.setup_container), never on the host. What it
# wrote (METADATA, entry_points.txt) is read here, bounded, and recorded in envd.lock with the
# hashes of the files it was computed from; a change of any of them makes the lock stale.

LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
MAX_METADATA_BYTES = 256 * 1024
_MAX_REQUIRES = 1000


@dataclass(frozen=True)
class ComputedMetadata:
    """A project's metadata as the PEP 517 legacy backend computed it (envd.lock `computed`;
    all empty: the metadata was read statically, or there is no project)."""

    name: str = ""
    version: str = ""
    summary: str = ""
    requires_python: str = ""
    requires: tuple[str, ...] = ()  # Requires-Dist without an `extra` marker, as written
    scripts: tuple[tuple[str, str], ...] = ()  # console_scripts (command, "module:attr")
    backend: str = ""  # e.g. "setuptools.build_meta:__legacy__ (setuptools 66.1.1)"
    # "relpath sha256:<hex>": the files the metadata was computed from (envd.lock inputs
    # carry the same list, so a changed file makes the lock stale)
    files: tuple[str, ...] = ()

    def as_setup(self) -> SetupMetadata:
        """As the project step installs it (the same dist-info a literal setup.py gets)."""
        return SetupMetadata(
            name=self.name or None,
            version=self.version or None,
            summary=self.summary or None,
            requires_python=self.requires_python or None,
            install_requires=self.requires,
            scripts=self.scripts,
            source="setup.py",
        )


class MetadataError(ValueError):
    """What the backend wrote is not metadata envd can take."""


def parse_metadata(text: str, entry_points: str = "") -> ComputedMetadata:
    """METADATA's headers (RFC 822 style; the description body is not read) and
    entry_points.txt's console_scripts, bounded: MetadataError when they are not sound."""
    if len(text.encode("utf-8", "replace")) > MAX_METADATA_BYTES:
        raise MetadataError(f"METADATA is larger than {MAX_METADATA_BYTES // 1024} KiB")
    headers: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            break  # the body (long description) follows the first blank line
        if line[0] in " \t":
            if headers:  # a folded header continues the previous one
                key, value = headers[-1]
                headers[-1] = (key, f"{value} {line.strip()}")
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip() or " " in key.strip():
            raise MetadataError(f"METADATA line is not a header: {line[:80]!r}")
        headers.append((key.strip().lower(), value.strip()))
    single = dict(headers)
    name, version = single.get("name", ""), single.get("version", "")
    if not name or not version:
        raise MetadataError("METADATA names no Name or no Version")
    requires = []
    for key, value in headers:
        if key != "requires-dist":
            continue
        try:
            requirement = Requirement(value)
        except InvalidRequirement as exc:
            raise MetadataError(f"Requires-Dist `{value[:80]}` is not PEP 508: {exc}") from None
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue  # an optional extra: installed only when asked for
        requires.append(value)
    if len(requires) > _MAX_REQUIRES:
        raise MetadataError(f"METADATA has more than {_MAX_REQUIRES} Requires-Dist")
    return ComputedMetadata(
        name=name,
        version=version,
        summary=single.get("summary", ""),
        requires_python=single.get("requires-python", ""),
        requires=tuple(requires),
        scripts=_console_scripts(entry_points),
    )


def _console_scripts(text: str) -> tuple[tuple[str, str], ...]:
    if not text.strip():
        return ()
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source="entry_points.txt")
    except configparser.Error as exc:
        raise MetadataError(f"entry_points.txt is not valid: {str(exc).splitlines()[0]}") from None
    if not parser.has_section("console_scripts"):
        return ()
    return tuple(
        sorted(
            (command.strip(), target.strip())
            for command, target in parser["console_scripts"].items()
        )
    )


def named_files(setup_py: str) -> tuple[str, ...]:
    """Project files setup.py names with literal strings (`open("requirements.txt")`,
    `os.path.join(here, "pkg", "version.py")`, `Path(__file__).parent / "README.md"`): the
    files its computed metadata may be read from, hashed into envd.lock. Relative paths as
    written (the caller keeps those that are files inside the project)."""
    try:
        tree = ast.parse(setup_py, filename="setup.py")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ()
    found: list[str] = []

    def add(path: str) -> None:
        path = path.strip().removeprefix("./")
        if path and "\n" not in path and len(path) < 256 and path not in found:
            found.append(path)

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            add(node.value)
        elif isinstance(node, ast.Call) and _call_name(node) == "join":
            joined = [str(a.value) for a in node.args if isinstance(a, ast.Constant)]
            if joined and all(isinstance(a, ast.Constant) for a in node.args[-len(joined) :]):
                add("/".join(joined))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            divided = _div_parts(node)
            if divided:
                add("/".join(divided))
    return tuple(found)


def cfg_named_files(setup_cfg: str) -> tuple[str, ...]:
    """The files setup.cfg's `file:` directives name (`install_requires = file:
    requirements.txt`, `version = file: VERSION`): what the backend reads them from."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(setup_cfg, source="setup.cfg")
    except configparser.Error:
        return ()
    found: list[str] = []
    for section in parser.sections():
        for value in parser[section].values():
            if value.strip().startswith("file:"):
                for path in value.strip().removeprefix("file:").split(","):
                    path = path.strip().removeprefix("./")
                    if path and path not in found:
                        found.append(path)
    return tuple(found)


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _div_parts(node: ast.expr) -> list[str]:
    """The literal tail of `base / "a" / "b"` (["a", "b"])."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        right = node.right
        if isinstance(right, ast.Constant) and isinstance(right.value, str):
            return [*_div_parts(node.left), right.value]
        return []
    return []
