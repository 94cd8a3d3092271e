"""Run provenance as an in-toto Statement v1 with a SLSA Provenance v1 predicate.

Pure. `build_statement` turns a RunRecord into the statement (`runs export`); `statement_json`
writes it as canonical JSON (sorted keys, compact separators, UTF-8, one trailing newline), so
the same run always gives the same bytes. `check_statement` validates a statement strictly and
says whether a given file (name and sha256) is one of its subjects (`trace FILE --provenance`,
or a colleague checking a result handed to them).

Layout (https://slsa.dev/spec/v1.0/provenance):
  subject: the run's outputs, {name: project-relative path, digest: {sha256}}
  predicate.buildDefinition
    buildType: BUILD_TYPE
    externalParameters: {command: [...], params: {file: text}}
    internalParameters: {project, environmentHash, hostHash, exitCode, envdVersion}
    resolvedDependencies: data files, the code (digest gitCommit), the image (digest sha256,
      annotated with the environment hash) and envd.lock (digest sha256)
  predicate.runDetails
    builder.id: who ran it (envd on this host)
    metadata: invocationId (the run id), startedOn, finishedOn (RFC 3339, UTC)
    byproducts: the metrics, one descriptor: content base64 JSON, annotations {name: number}

Modules: statement (build and write), check (validate, is a file a subject), importing (a
statement from elsewhere as a RunRecord, `runs import`).
"""

from __future__ import annotations

from envd.model.provenance.check import (
    StatementCheck,
    check_statement,
)
from envd.model.provenance.importing import (
    StatementRefused,
    record_from_statement,
)
from envd.model.provenance.statement import (
    BUILD_TYPE,
    DEFAULT_WORKSPACE,
    MAX_CLOCK_SKEW_S,
    MAX_STATEMENT_CHARS,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    build_statement,
    rfc3339,
    statement_json,
)

__all__ = [
    "BUILD_TYPE",
    "DEFAULT_WORKSPACE",
    "MAX_CLOCK_SKEW_S",
    "MAX_STATEMENT_CHARS",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "StatementCheck",
    "StatementRefused",
    "build_statement",
    "check_statement",
    "record_from_statement",
    "rfc3339",
    "statement_json",
]
