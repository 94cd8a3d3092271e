"""pip requirements and constraints files, read as pip reads them (-r/-c includes)."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable

from packaging.requirements import Requirement

from envd.errors import SpecError
from envd.model.reqfiles import localpath
from envd.model.reqfiles.base import (
    COMMENT,
    Parsed,
    Read,
    _Acc,
    _error,
    _nothing,
    _pin_of,
    _requirement,
    logical_lines,
    shown,
)

_ENV_VAR = re.compile(r"\$\{[A-Z0-9_]+\}")
_EGG = re.compile(r"#(?:.*&)?egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_WHEEL = re.compile(r"([A-Za-z0-9_.]+)-([0-9][^-]*)-[^-]+-[^-]+-[^-]+\.whl$")
_URL_START = re.compile(r"^(https?|file|git\+[a-z]+|hg\+[a-z]+|svn\+[a-z]+|bzr\+[a-z]+)://")

# option name -> (takes a value, the option's canonical name)
_OPTIONS = {
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
    "-e": "editable",
    "--editable": "editable",
    "-i": "index-url",
    "--index-url": "index-url",
    "--extra-index-url": "extra-index-url",
    "-f": "find-links",
    "--find-links": "find-links",
    "--no-index": "no-index",
    "--pre": "pre",
    "--prefer-binary": "prefer-binary",
    "--require-hashes": "require-hashes",
    "--only-binary": "only-binary",
    "--no-binary": "no-binary",
    "--trusted-host": "trusted-host",
    "--use-feature": "use-feature",
    "--hash": "hash",
    "--config-settings": "config-settings",
    "--global-option": "global-option",
    "--install-option": "install-option",
}
_FLAGS = {"no-index", "pre", "prefer-binary", "require-hashes"}
_PER_LINE = {"hash", "config-settings", "global-option", "install-option"}


def _options(
    tokens: list[str], report: Callable[[str, str | None], SpecError]
) -> list[tuple[str, str]]:
    """(canonical option, value) pairs; `--opt=value`, `--opt value`, `-rvalue`."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if not token.startswith("--") and len(token) > 2 and token[:2] in _OPTIONS:
            name, value, eq = token[:2], token[2:], "="
        option = _OPTIONS.get(name)
        if option is None:
            raise report(
                f"unknown option `{name}`",
                "pip's requirement file options: -r, -c, -e, -i, --extra-index-url, --hash",
            )
        if option in _FLAGS:
            out.append((option, ""))
        elif eq:
            out.append((option, value))
        else:
            if i + 1 >= len(tokens):
                raise report(f"`{name}` needs a value", None)
            i += 1
            out.append((option, tokens[i]))
        i += 1
    return out


MAX_INCLUDE_DEPTH = 32  # -r/-c chains: pip has no bound; a deeper one is a loop through a link
MAX_INCLUDE_READS = 256  # files read for one top file, includes included


class _RequirementsReader:
    def __init__(self, read: Read, root: str, acc: _Acc) -> None:
        self.read = read
        self.root = root
        self.acc = acc
        self.stack: list[str] = []
        self.reads = 0

    def file(self, path: str, *, constraint: bool, via: tuple[str, int] | None) -> None:
        if via is not None and (
            len(self.stack) >= MAX_INCLUDE_DEPTH or self.reads >= MAX_INCLUDE_READS
        ):  # distinct paths can still loop: `-r sub/r.txt` with a link sub -> .
            raise _error(
                self.root,
                via[0],
                f"includes nested deeper than {MAX_INCLUDE_DEPTH} files, or more than "
                f"{MAX_INCLUDE_READS} reads of included files",
                via[1],
                "include each file once, from the top file (a symlinked folder may loop)",
            )
        self.reads += 1
        if path in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(path) :], path])
            assert via is not None
            raise _error(
                self.root,
                via[0],
                f"include cycle: {cycle}",
                via[1],
                f"remove the `-r`/`-c` line that includes {path} again",
            )
        text = self.read(path)
        if text is None:
            if via is None:
                raise _error(self.root, path, "file not found")
            raise _error(
                self.root,
                via[0],
                f"included file `{path}` does not exist ({shown(self.root, path)})",
                via[1],
                "paths in -r/-c lines are relative to the file that holds them",
            )
        if path not in self.acc.files:
            self.acc.files.append(path)
        self.stack.append(path)
        for number, raw in logical_lines(text):
            self.line(path, number, raw, constraint)
        self.stack.pop()

    def line(self, path: str, number: int, raw: str, constraint: bool) -> None:
        line = COMMENT.sub("", raw).strip()
        if not line:
            return
        if _ENV_VAR.search(line):
            self.acc.warnings.append(
                f"{shown(self.root, path)}:{number}: {', '.join(_ENV_VAR.findall(line))} "
                "left as is (pip would substitute the environment variable)"
            )

        def report(message: str, hint: str | None) -> SpecError:
            return _error(self.root, path, message, number, hint)

        tokens = line.split(" ")
        args: list[str] = []
        for token in tokens:
            if token.startswith("-"):
                break
            args.append(token)
        rest = " ".join(tokens[len(args) :])
        try:
            option_tokens = shlex.split(rest)
        except ValueError as exc:
            raise report(f"cannot split options: {exc}", "check quotes on this line") from None
        options = _options(option_tokens, report)
        spec = " ".join(args).strip()
        if spec:
            bad = [name for name, _ in options if name not in _PER_LINE]
            if bad:
                raise report(
                    f"`--{bad[0]}` must be on a line of its own",
                    "put global options such as --index-url on their own line",
                )
            self.requirement(path, number, spec, [v for n, v in options if n == "hash"], constraint)
            return
        for option, value in options:
            self.option(path, number, option, value, constraint, report)

    def option(
        self,
        path: str,
        number: int,
        option: str,
        value: str,
        constraint: bool,
        report: Callable[[str, str | None], SpecError],
    ) -> None:
        here = posixpath.dirname(path)
        if option in ("requirement", "constraint"):
            target = posixpath.normpath(posixpath.join(here, value))
            self.file(target, constraint=constraint or option == "constraint", via=(path, number))
        elif option == "editable":
            self.editable(path, number, value, report)
        elif option in ("index-url", "extra-index-url"):
            if not re.match(r"^https?://", value):
                raise report(f"`{value}` is not an http(s) index URL", None)
            self.acc.index(value)
        elif option == "find-links":
            raise report(
                f"`--find-links {value}` is not supported: envd installs from package indexes only",
                "publish the files on an index and use `--extra-index-url`, or name them "
                "directly as `name @ https://...#sha256=...`",
            )
        elif option == "no-index":
            raise report(
                "`--no-index` is not supported: envd resolves from package indexes",
                "remove it, and list extra indexes with `--extra-index-url`",
            )
        elif option in _PER_LINE:
            raise report(f"`--{option}` must follow a requirement on the same line", None)
        else:
            self.acc.warnings.append(
                f"{shown(self.root, path)}:{number}: `--{option}` ignored (envd decides this)"
            )

    def editable(
        self, path: str, number: int, value: str, report: Callable[[str, str | None], SpecError]
    ) -> None:
        if _URL_START.match(value):
            egg = _EGG.search(value)
            if not egg:
                raise report(
                    f"editable URL `{value}` has no `#egg=NAME`",
                    f"write `NAME @ {value}` instead",
                )
            url = value[: egg.start()].rstrip("#&")
            self.acc.requirements.append(str(Requirement(f"{egg.group(1)} @ {url}")))
            self.acc.requirement_lines.append((path, number))
            self.acc.warnings.append(
                f"{shown(self.root, path)}:{number}: `-e {value}` installed as a plain "
                f"(non-editable) package"
            )
            return
        where, target = localpath.locate(path, value)
        if where == "project":
            self.acc.project = "editable"
            self.acc.project_line = self.acc.project_line or (path, number)
            self.acc.notes.append(
                f"{shown(self.root, path)}:{number}: `-e {value}` is the project itself (editable)"
            )
        else:
            message, hint = (
                localpath.outside_message if where == "outside" else localpath.inside_message
            )(f"`-e {value}`:", target)
            raise report(message, hint)

    def requirement(
        self, path: str, number: int, spec: str, hashes: list[str], constraint: bool
    ) -> None:
        if spec in (".", "./") or spec.startswith(("./", "../", "/")) or spec == "..":
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), spec))
            if target == ".":
                self.acc.project = self.acc.project or "install"
                self.acc.project_line = self.acc.project_line or (path, number)
                self.acc.notes.append(
                    f"{shown(self.root, path)}:{number}: `{spec}` is the project itself"
                )
                return
            raise _error(
                self.root,
                path,
                f"`{spec}` is a local path other than the project",
                number,
                f"write `NAME @ file:///workspace/{target}`",
            )
        if _URL_START.match(spec):
            egg = _EGG.search(spec)
            wheel = _WHEEL.search(spec.split("#", 1)[0])
            if egg:
                spec = f"{egg.group(1)} @ {spec}"
            elif wheel:
                spec = f"{wheel.group(1)} @ {spec}"
            else:
                raise _error(
                    self.root,
                    path,
                    f"`{spec}` is a URL without a package name",
                    number,
                    f"write `NAME @ {spec}`",
                )
        req = _requirement(
            spec, self.root, path, number, "PEP 508, e.g. `numpy>=1.26` or `name @ https://...`"
        )
        digests: list[str] = []
        for value in hashes:
            algorithm, _, digest = value.partition(":")
            if algorithm != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise _error(
                    self.root,
                    path,
                    f"`--hash={value}` is not a sha256 digest",
                    number,
                    "write `--hash=sha256:<64 hex digits>` (pip-compile --generate-hashes does)",
                )
            digests.append(digest.lower())
        text = str(req)
        if constraint:
            if req.url is None and not req.specifier and not req.marker:
                self.acc.warnings.append(
                    f"{shown(self.root, path)}:{number}: constraint `{text}` constrains nothing"
                )
            self.acc.constraints.append(text)
            self.acc.constraint_lines.append((path, number))
            return
        pin = _pin_of(req, tuple(digests))
        if digests and (pin is None or (pin.version is None and pin.url is None)):
            raise _error(
                self.root,
                path,
                f"`{text}` has hashes but no exact version",
                number,
                f"pin it: `{req.name}==VERSION --hash=...`",
            )
        self.acc.requirements.append(text)
        self.acc.requirement_lines.append((path, number))
        if pin is not None:
            self.acc.pins.append(pin)


def parse_requirements(path: str, read: Read, *, root: str = "") -> Parsed:
    """A pip requirements file as pip reads it, with -r/-c includes relative to each file."""
    acc = _Acc(source=path, format="requirements")
    _RequirementsReader(read, root, acc).file(path, constraint=False, via=None)
    return acc.freeze()


def parse_constraints(path: str, read: Read, *, root: str = "") -> Parsed:
    """A pip constraints file (every requirement line is a constraint)."""
    acc = _Acc(source=path, format="constraints")
    _RequirementsReader(read, root, acc).file(path, constraint=True, via=None)
    return acc.freeze()


def _with(text: str, path: str, read: Read | None) -> Read:
    """`read`, with the top file's text already in hand."""
    return lambda wanted: text if wanted == path else (read or _nothing)(wanted)


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser): a requirements file."""
    return parse_requirements(path, _with(text, path, read), root=root)


def parse_as_constraints(
    text: str, path: str, *, root: str = "", read: Read | None = None
) -> Parsed:
    """The registry's signature (base.Parser): a constraints file."""
    return parse_constraints(path, _with(text, path, read), root=root)
