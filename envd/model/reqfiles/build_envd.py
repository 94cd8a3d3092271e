"""build.envd (tensorchord/envd's Starlark build file), read without running it.

The file is parsed with Python's `ast` (Starlark's syntax is a subset of Python's) and never
executed: only the calls made in `def build():`, and in the top-level functions it calls, are
read, and only when their arguments are literals (strings, numbers, lists, dicts; a parameter
of a called function bound to a literal counts as one). Every other statement and call is left
out with a note "not taken: LINE: CALL", so nothing is silently dropped.
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from envd.model.reqfiles.base import (
    Parsed,
    Read,
    SetupStep,
    _Acc,
    _checked,
    _error,
    _nothing,
    _pin_of,
    shown,
)
from envd.model.reqfiles.requirements_txt import parse_requirements

MAX_CHARS = 1_000_000  # a build file, not data: larger is refused before parsing
MAX_CALL_DEPTH = 8  # build() -> helper() -> ...: deeper calls are not followed
MAX_LITERAL_DEPTH = 16  # nesting inside one argument
MAX_NOTE = 80  # characters of a call shown in a note
MAX_STATEMENTS = 200_000  # statements read, helpers' bodies once per call: bounds a fan-out
MAX_NOTES = 200  # "not taken" notes, one per statement; past that, one note with the count

_PYTHON = re.compile(r"python(?:(3(?:\.\d+){0,2}))?")
_VERSION = re.compile(r"3(?:\.\d+){1,2}")
_CUDA = re.compile(r"(\d{1,2})\.(\d{1,2})(?:\.\d+)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Calls that only matter to envd's own runtime or editor setup: named in the notes as not taken.
_NOT_ENVIRONMENT = {
    "install.conda": "envd builds a venv, not a conda environment",
    "shell": "envctl enter runs the image's sh",
}


class _TooMany(Exception):
    """More statements read (helpers called many times, from many places) than a build has."""


class _NotLiteral(Exception):
    """An argument that is not a literal (a variable, an f-string, a call...)."""


@dataclass
class _Reader:
    text: str
    path: str
    root: str
    read: Read
    functions: dict[str, ast.FunctionDef]
    acc: _Acc
    lines: list[str] = field(default_factory=list)
    skipped: int = 0
    statements: int = 0
    seen: set[tuple[str, str]] = field(default_factory=set)  # (what, item) already taken

    def first(self, what: str, item: str) -> bool:
        """Whether `item` is new to `what` (packages, system): one set lookup, not a scan."""
        if (what, item) in self.seen:
            return False
        self.seen.add((what, item))
        return True

    python_from: str = ""

    # ------------------------------------------------------------ walking

    def function(self, fn: ast.FunctionDef, bound: dict[str, Any], stack: tuple[str, ...]) -> None:
        for statement in fn.body:
            self.statements += 1
            if self.statements > MAX_STATEMENTS:
                raise _TooMany
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                continue  # a docstring
            if isinstance(statement, ast.Pass):
                continue
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
                self.call(statement.value, bound, stack)
            else:
                self.not_taken(statement)

    def call(self, node: ast.Call, bound: dict[str, Any], stack: tuple[str, ...]) -> None:
        name = _dotted(node.func)
        if name is None:
            self.not_taken(node)
            return
        helper = self.functions.get(name)
        if helper is not None:
            self.inline(node, helper, bound, stack)
            return
        handler = _HANDLERS.get(name)
        if handler is None:
            why = _NOT_ENVIRONMENT.get(name)
            self.not_taken(node, why)
            return
        try:
            args = [_literal(a, bound, 0) for a in node.args]
            kwargs = {k.arg: _literal(k.value, bound, 0) for k in node.keywords if k.arg}
            if any(k.arg is None for k in node.keywords):
                raise _NotLiteral
        except _NotLiteral:
            self.not_taken(node, "its arguments are not literals")
            return
        try:
            handler(self, node, args, kwargs)
        except _NotStrings:
            self.not_taken(node, "expected a list of strings")

    def inline(
        self,
        node: ast.Call,
        helper: ast.FunctionDef,
        bound: dict[str, Any],
        stack: tuple[str, ...],
    ) -> None:
        """A call of another top-level function: read its body with its parameters bound."""
        if helper.name in stack or len(stack) >= MAX_CALL_DEPTH:
            self.not_taken(node, "calls nested too deeply or recursive")
            return
        params = [a.arg for a in helper.args.posonlyargs + helper.args.args]
        defaults = helper.args.defaults
        values: dict[str, Any] = {}
        # Defaults that are literals; a parameter left unbound makes its uses non-literal.
        for param, default in zip(params[len(params) - len(defaults) :], defaults, strict=True):
            try:
                values[param] = _literal(default, {}, 0)
            except _NotLiteral:
                pass
        for kw in helper.args.kwonlyargs:
            values.pop(kw.arg, None)
        try:
            for param, arg in zip(params, node.args, strict=False):
                values[param] = _literal(arg, bound, 0)
            for keyword in node.keywords:
                if keyword.arg is None or keyword.arg not in params:
                    raise _NotLiteral
                values[keyword.arg] = _literal(keyword.value, bound, 0)
        except _NotLiteral:
            self.not_taken(node, "its arguments are not literals")
            return
        if len(node.args) > len(params) or helper.args.vararg or helper.args.kwarg:
            self.not_taken(node)
            return
        self.function(helper, values, (*stack, helper.name))

    # ------------------------------------------------------------ notes

    def not_taken(self, node: ast.AST, why: str | None = None) -> None:
        self.skipped += 1
        if self.skipped > MAX_NOTES:
            return  # parse_build_envd adds one note with the count
        line = getattr(node, "lineno", 1)
        end = getattr(node, "end_lineno", line)
        start_col = getattr(node, "col_offset", 0)
        # The node's first line, cut at its column (UTF-8 byte offsets, as ast gives them);
        # not ast.get_source_segment, which splits the whole file again for every node.
        raw = self.lines[line - 1].encode() if 0 < line <= len(self.lines) else b""
        end_col = getattr(node, "end_col_offset", None) if end == line else None
        text = raw[start_col:end_col].decode(errors="replace").rstrip()
        if len(text) > MAX_NOTE:
            text = text[: MAX_NOTE - 3] + "..."
        elif end != line:
            text += " ..."
        suffix = f" ({why})" if why else ""
        self.acc.notes.append(f"{self.path}: not taken: {line}: {text}{suffix}")

    # ------------------------------------------------------------ the calls envd reads

    def base(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        language = kwargs.get("language", args[1] if len(args) > 1 else None)
        if isinstance(language, str):
            found = _PYTHON.fullmatch(language)
            if found is None:
                self.acc.warnings.append(
                    f"{self.path}:{node.lineno}: base language {language!r} is not Python; "
                    "envd builds Python environments only"
                )
            elif found.group(1) and "." in found.group(1):
                self.python(found.group(1), node)
        os_name = kwargs.get("os", args[0] if args else None)
        if isinstance(os_name, str):
            self.acc.notes.append(
                f"{self.path}: base os {os_name} not taken: envd builds from Debian"
            )
        if kwargs.get("image"):
            self.not_taken(node, "a base image of envd's own making")
        elif set(kwargs) - {"os", "language"}:
            extra = ", ".join(sorted(set(kwargs) - {"os", "language"}))
            self.acc.notes.append(f"{self.path}: base({extra}=...) not taken")

    def install_python(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        version = kwargs.get("version", args[0] if args else None)
        if isinstance(version, str) and _VERSION.fullmatch(version):
            self.python(version, node)
        elif version is not None:
            self.not_taken(node, "not a Python version")

    def python(self, version: str, node: ast.Call) -> None:
        if self.acc.python and self.acc.python != version:
            self.acc.warnings.append(
                f"{self.path}:{node.lineno}: asks for Python {version}, line "
                f"{self.python_from} for {self.acc.python}; took {self.acc.python}"
            )
            return
        self.acc.python = version
        self.python_from = str(node.lineno)

    def python_packages(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        names = kwargs.get("name", args[0] if args else None)
        if names is not None:
            for item in _strings(names, node):
                self.requirement(item, node)
        requirements = kwargs.get("requirements")
        if requirements is not None:
            if not isinstance(requirements, str):
                self.not_taken(node, "requirements is not a file name")
            else:
                self.requirements_file(requirements, node)
        for key in kwargs:
            if key not in ("name", "requirements"):
                self.acc.notes.append(
                    f"{self.path}: not taken: {node.lineno}: install.python_packages({key}=...)"
                )

    def requirement(self, item: str, node: ast.Call) -> None:
        text, _, options = item.partition(" --")
        try:
            req = Requirement(text.strip())
        except InvalidRequirement:
            self.acc.warnings.append(
                f"{self.path}:{node.lineno}: `{item}` is not a PEP 508 requirement; left out"
            )
            return
        if options:
            self.acc.warnings.append(
                f"{self.path}:{node.lineno}: `{item}`: pip option --{options} not taken; "
                "name the index in envd.yaml `indexes:`"
            )
        if self.first("packages", str(req)):
            self.acc.requirements.append(str(req))
            pin = _pin_of(req)
            if pin is not None:
                self.acc.pins.append(pin)

    def requirements_file(self, name: str, node: ast.Call) -> None:
        relpath = posixpath.normpath(name)
        if name.startswith("/") or relpath.startswith(".."):
            self.acc.warnings.append(
                f"{self.path}:{node.lineno}: requirements file {name} is outside the project; "
                "left out: copy it into the project and name it in envd.yaml `requirements:`"
            )
            return
        included = parse_requirements(relpath, self.read, root=self.root)
        for path in (self.path, *included.files):
            if path not in self.acc.files:
                self.acc.files.append(path)
        if relpath not in self.acc.requirement_files:
            self.acc.requirement_files.append(relpath)
        for url in included.indexes:
            self.acc.index(url)
        self.acc.notes.extend(included.notes)
        self.acc.warnings.extend(included.warnings)

    def apt_packages(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        names = kwargs.get("name", args[0] if args else None)
        for item in _strings(names, node) if names is not None else []:
            if self.first("system", item):
                self.acc.system.append(item)

    def environ(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        env = kwargs.get("env", args[0] if args else None)
        if env is not None:
            if not isinstance(env, dict):
                self.not_taken(node, "env is not a dict")
            for key, value in env.items() if isinstance(env, dict) else []:
                if not (isinstance(key, str) and _ENV_NAME.fullmatch(key)) or not isinstance(
                    value, str | int
                ):
                    self.acc.warnings.append(
                        f"{self.path}:{node.lineno}: environment variable {key!r} left out: "
                        "names are letters, digits and _, values strings"
                    )
                    continue
                if "$" in str(value):
                    self.acc.warnings.append(
                        f"{self.path}:{node.lineno}: {key}={value} left out: envd.yaml `env:` "
                        "values are literal, without $VARIABLES"
                    )
                    continue
                self.acc.env.append((key, str(value)))
        if kwargs.get("extra_path"):
            self.acc.notes.append(
                f"{self.path}: not taken: {node.lineno}: runtime.environ(extra_path=...)"
            )

    def expose(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        port = kwargs.get("envd_port", args[0] if args else None)
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
            if port not in self.acc.ports:
                self.acc.ports.append(port)
        else:
            self.not_taken(node, "envd_port is not a port number")

    def run(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        commands = kwargs.get("commands", args[0] if args else None)
        if commands is None:
            return
        lines = [c.strip() for c in _strings(commands, node) if c.strip()]
        if kwargs.get("mount_host"):
            self.not_taken(node, "mount_host: setup steps see only the files they name")
            return
        if lines:
            # envd runs one call's commands in one shell, in order, stopping at the first failure
            self.acc.setup.append(SetupStep(run=" && ".join(lines)))

    def gpu(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.acc.gpu = True

    def cuda(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.acc.gpu = True
        version = kwargs.get("version", args[0] if args else None)
        found = _CUDA.fullmatch(version) if isinstance(version, str) else None
        if found:
            self.acc.cuda = f"{found.group(1)}.{found.group(2)}"
        elif version is not None:
            self.not_taken(node, "not a CUDA version")
        if "cudnn" in kwargs:
            self.acc.notes.append(
                f"{self.path}: cudnn {kwargs['cudnn']} not taken: envd's CUDA bases carry "
                "their own cuDNN"
            )

    def pip_index(self, node: ast.Call, args: list[Any], kwargs: dict[str, Any]) -> None:
        urls = [kwargs.get("url", args[0] if args else None), kwargs.get("extra_url")]
        for url in urls:
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                self.acc.index(url)


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _literal(node: ast.expr, bound: dict[str, Any], depth: int) -> Any:
    """The value of a literal expression; _NotLiteral for anything that would need running."""
    if depth > MAX_LITERAL_DEPTH:
        raise _NotLiteral
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name) and node.id in bound:
        return bound[node.id]
    if isinstance(node, ast.Name) and node.id in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[node.id]  # Starlark's spelling
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e, bound, depth + 1) for e in node.elts]
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise _NotLiteral  # **spread
            literal_key = _literal(key, bound, depth + 1)
            if isinstance(literal_key, list | dict):
                raise _NotLiteral
            out[literal_key] = _literal(value, bound, depth + 1)
        return out
    raise _NotLiteral


def _strings(value: Any, node: ast.Call) -> Iterator[str]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, str):
            yield item
        else:
            raise _NotStrings(node)


class _NotStrings(Exception):
    def __init__(self, node: ast.Call) -> None:
        self.node = node


_HANDLERS = {
    "base": _Reader.base,
    "install.python": _Reader.install_python,
    "install.python_packages": _Reader.python_packages,
    "install.apt_packages": _Reader.apt_packages,
    "install.cuda": _Reader.cuda,
    "config.gpu": _Reader.gpu,
    "config.pip_index": _Reader.pip_index,
    "runtime.environ": _Reader.environ,
    "runtime.expose": _Reader.expose,
    "run": _Reader.run,
}


@_checked
def parse_build_envd(text: str, read: Read, path: str = "build.envd", *, root: str = "") -> Parsed:
    """What build.envd's build() installs: python, packages, apt packages, env, ports, setup."""
    if len(text) > MAX_CHARS:
        raise _error(
            root,
            path,
            f"{len(text)} characters: too large for a build file (at most {MAX_CHARS})",
            None,
            "write envd.yaml by hand; `envctl init` reads build.envd only to start one",
        )
    try:
        module = ast.parse(text.removeprefix("\ufeff"), filename=path)
    except SyntaxError as exc:
        raise _error(
            root,
            path,
            f"not Starlark/Python syntax: {exc.msg}",
            exc.lineno,
            "check the file with `envd build`; init reads it without running it",
        ) from None
    except (MemoryError, RecursionError):
        raise _error(
            root, path, "nested too deeply to read", None, "write envd.yaml by hand"
        ) from None
    acc = _Acc(source=path, format="build.envd")
    functions = {n.name: n for n in module.body if isinstance(n, ast.FunctionDef)}
    reader = _Reader(
        text=text,
        path=path,
        root=root,
        read=read,
        functions=functions,
        acc=acc,
        lines=re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff")),
    )
    for statement in module.body:
        if isinstance(statement, ast.FunctionDef):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue
        reader.not_taken(statement)
    build = functions.get("build")
    if build is None:
        acc.warnings.append(
            f"{shown(root, path)}: no `def build():`; nothing taken (envd's default target)"
        )
        return acc.freeze()
    try:
        reader.function(build, {}, ("build",))
    except _TooMany:
        acc.warnings.append(
            f"{shown(root, path)}: stopped after {MAX_STATEMENTS} statements (functions called "
            "many times from many places); what came after is not taken: write envd.yaml by hand"
        )
    if reader.skipped > MAX_NOTES:
        acc.notes.append(
            f"{path}: not taken: {reader.skipped - MAX_NOTES} more statements or calls "
            f"(the first {MAX_NOTES} are listed)"
        )
    others = sorted(set(functions) - {"build"} - set(_called(build, functions)))
    if others:
        acc.notes.append(
            f"{path}: functions not called from build() not taken: {', '.join(others)}"
        )
    return acc.freeze()


def _called(fn: ast.FunctionDef, functions: dict[str, ast.FunctionDef]) -> list[str]:
    """Top-level functions reachable from fn by plain calls (without running anything)."""
    seen: list[str] = []
    pending = [fn]
    while pending:
        current = pending.pop()
        for node in ast.walk(current):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                if name in functions and name not in seen:
                    seen.append(name)
                    pending.append(functions[name])
    return seen


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_build_envd(text, read or _nothing, path, root=root)
