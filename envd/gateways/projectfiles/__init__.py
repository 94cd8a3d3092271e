"""Reading a project's own files (envd.yaml, the requirements it names, envd.lock).

The one place envd reads files a user controls, so the checks every such read needs live
here; the parsing itself is pure (envd.model).

Every read is bounded, before any byte is decoded:

- the path must name a regular file (after following symlinks). It is opened with
  O_NONBLOCK and checked with fstat on the open descriptor, so a FIFO never blocks the
  daemon, and a directory, a socket or a device such as /dev/zero is refused;
- at most a size limit is read (``SPEC_MAX_BYTES``, ``REQUIREMENTS_MAX_BYTES``,
  ``LOCK_MAX_BYTES``): the file's size is checked, and then at most limit + 1 bytes are
  read, so a file that grows, or lies about its size (procfs), cannot exhaust memory;
- the bytes must be UTF-8; the error names the absolute file and the line of the first
  bad byte;
- every file must lie inside the project directory, also after resolving symlinks (a link
  inside the project may point to another file inside it), envd.yaml included (the spec parser
  already refuses absolute paths and `..`). The resolved path is then opened one component
  at a time without following links (`files.open_beneath`), so a link planted meanwhile (by
  a container, which can write the project) fails the read instead of leading outside.

Spec and requirements problems are SpecError (exit 1), lock problems LockError.

Parsing costs milliseconds (YAML, the lock's integrity check) and `enter` reads both on every
call, so the last parse of each envd.yaml and envd.lock is kept: a read whose bytes (and, for
envd.yaml, the outcome of every read of the files it names) equal the last one's gets that
parse again. Files are still read every time, so every check above still applies to each
call, and an edit is seen however fast it follows (no timestamps are trusted).

    confined    the bounded, confined reads (`read_beneath`, `read_run_file`, `read_bounded`...)
    loading     envd.yaml and envd.lock: `load_spec`, `read_lock`, the parse cache
    setupfiles  the files `setup:` steps name; the project's package and executables
"""

from __future__ import annotations

from envd.gateways.projectfiles.confined import (
    MIB,
    _NotReadable,
    decode_utf8,
    read_beneath,
    read_bounded,
    read_run_file,
    read_text_bounded,
    read_user_file,
)
from envd.gateways.projectfiles.loading import (
    LOCK_FORMAT_MAX_BYTES,
    LOCK_MAX_BYTES,
    REQUIREMENTS_MAX_BYTES,
    SPEC_MAX_BYTES,
    forget_parses,
    load_spec,
    parse_lock,
    parse_spec_text,
    read_lock,
    read_lock_text,
    read_project_file,
)
from envd.gateways.projectfiles.setupfiles import (
    SETUP_FILE_MAX_BYTES,
    SETUP_FILES_MAX_BYTES,
    SETUP_FILES_MAX_COUNT,
    find_project_package,
    is_executable_file,
    read_setup_files,
)

__all__ = [
    "LOCK_FORMAT_MAX_BYTES",
    "LOCK_MAX_BYTES",
    "MIB",
    "REQUIREMENTS_MAX_BYTES",
    "SETUP_FILES_MAX_BYTES",
    "SETUP_FILES_MAX_COUNT",
    "SETUP_FILE_MAX_BYTES",
    "SPEC_MAX_BYTES",
    "_NotReadable",
    "decode_utf8",
    "find_project_package",
    "forget_parses",
    "is_executable_file",
    "load_spec",
    "parse_lock",
    "parse_spec_text",
    "read_beneath",
    "read_bounded",
    "read_lock",
    "read_lock_text",
    "read_project_file",
    "read_run_file",
    "read_setup_files",
    "read_text_bounded",
    "read_user_file",
]
