"""Provenance: in-toto Statement v1 with a SLSA Provenance v1 predicate, and its checker."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from typing import Any

import pytest

from envd.errors import EnvdError
from envd.model.provenance import (
    BUILD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    StatementRefused,
    build_statement,
    check_statement,
    record_from_statement,
    rfc3339,
    statement_json,
)
from envd.model.runrecord import CodeState, RunRecord


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


COMMIT = "c" * 40
BUILDER = "https://github.com/envd/envd/daemon@laptop"


def record() -> RunRecord:
    return RunRecord(
        id="run-42",
        project="churn",
        command=("python", "-m", "churn.train"),
        started_at=1_700_000_000.0,
        ended_at=1_700_000_061.25,
        exit_code=0,
        image="sha256:" + h("image"),
        environment_hash=h("env"),
        host_hash=h("host"),
        lock_sha256=h("lock"),
        code=CodeState(COMMIT, True, h("diff")),
        params={"params.yaml": "lr: 0.1\n"},
        data={"data/train.csv": h("train"), "data/a b.csv": h("ab")},
        outputs={
            "models/model.pkl": h("model"),
            "metrics.json": h("metrics"),
            "models/latest": "symlink:model.pkl",
        },
        metrics={"accuracy": 0.93},
    )


def statement() -> dict[str, Any]:
    return build_statement(record(), builder_id=BUILDER, envd_version="0.1.0")


def test_statement_layout() -> None:
    s = statement()
    assert s["_type"] == STATEMENT_TYPE
    assert s["predicateType"] == PREDICATE_TYPE
    assert s["subject"] == [
        {"name": "metrics.json", "digest": {"sha256": h("metrics")}},
        {"name": "models/model.pkl", "digest": {"sha256": h("model")}},
    ]  # sorted; the symlink is no subject
    bd = s["predicate"]["buildDefinition"]
    assert bd["buildType"] == BUILD_TYPE
    assert bd["externalParameters"] == {
        "command": ["python", "-m", "churn.train"],
        "params": {"params.yaml": "lr: 0.1\n"},
    }
    assert bd["internalParameters"]["environmentHash"] == h("env")
    deps = {d["name"]: d for d in bd["resolvedDependencies"]}
    assert deps["data/a b.csv"]["uri"] == "file:///workspace/data/a%20b.csv"
    assert deps["data/train.csv"]["digest"] == {"sha256": h("train")}
    assert deps["code"]["digest"] == {"gitCommit": COMMIT}
    assert deps["code"]["annotations"] == {"dirty": True, "diffSha256": h("diff")}
    assert deps["image"]["digest"] == {"sha256": h("image")}
    assert deps["image"]["annotations"] == {"environmentHash": h("env")}
    assert deps["envd.lock"]["digest"] == {"sha256": h("lock")}
    rd = s["predicate"]["runDetails"]
    assert rd["builder"] == {"id": BUILDER, "version": {"envd": "0.1.0"}}
    assert rd["metadata"] == {
        "invocationId": "run-42",
        "startedOn": "2023-11-14T22:13:20Z",
        "finishedOn": "2023-11-14T22:14:21.250Z",
    }
    assert rd["byproducts"][0]["annotations"] == {"accuracy": 0.93}
    assert json.loads(base64.b64decode(rd["byproducts"][0]["content"])) == {"accuracy": 0.93}


def test_rfc3339_is_utc() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1.5) == "1970-01-01T00:00:01.500Z"


def test_json_is_canonical_and_deterministic() -> None:
    text = statement_json(statement())
    assert text == statement_json(statement())
    assert text.endswith("}\n") and "\n" not in text[:-1]
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")) + "\n"


def test_builder_id_must_be_a_uri() -> None:
    with pytest.raises(ValueError):
        build_statement(record(), builder_id="laptop")


def test_a_run_without_outputs_has_nothing_to_attest() -> None:
    with pytest.raises(ValueError, match="no output"):
        build_statement(RunRecord(id="r", outputs={"l": "symlink:x"}), builder_id=BUILDER)


def test_check_accepts_own_output_and_finds_the_subject() -> None:
    text = statement_json(statement())
    result = check_statement(text, "models/model.pkl", h("model"))
    assert result.valid, result.errors
    assert result.ok and result.subject == "models/model.pkl" and result.name_matches
    absolute = check_statement(text, "/home/me/churn/models/model.pkl", h("model"))
    assert absolute.ok and absolute.name_matches
    renamed = check_statement(text, "copy.pkl", h("model"))
    assert renamed.ok and not renamed.name_matches
    other = check_statement(text, "models/model.pkl", h("something else"))
    assert other.valid and not other.ok and other.subject == ""


def _broken(mutate: Any) -> list[str]:
    s = copy.deepcopy(statement())
    mutate(s)
    return list(check_statement(json.dumps(s), "models/model.pkl", h("model")).errors)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"), "_type"),
        (lambda s: s.update(predicateType="https://slsa.dev/provenance/v0.2"), "predicateType"),
        (lambda s: s.pop("subject"), "missing 'subject'"),
        (lambda s: s.update(subject=[]), "subject: empty"),
        (lambda s: s.update(extra=1), "unknown field 'extra'"),
        (lambda s: s["subject"][0]["digest"].update(sha256="ABC"), "lowercase hex"),
        (lambda s: s["subject"][0]["digest"].update(sha256="ab"), "hex digits"),
        (lambda s: s["subject"][0].update(name=3), "expected a string"),
        (lambda s: s["subject"][0].update(digest={}), "no digest"),
        (lambda s: s["predicate"]["buildDefinition"].pop("buildType"), "buildType"),
        (lambda s: s["predicate"]["buildDefinition"].update(buildType="not a uri"), "URI"),
        (lambda s: s["predicate"]["buildDefinition"].update(externalParameters=[]), "object"),
        (lambda s: s["predicate"]["runDetails"]["builder"].pop("id"), "missing 'id'"),
        (lambda s: s["predicate"]["runDetails"]["metadata"].update(startedOn="yesterday"), "RFC"),
        (
            lambda s: s["predicate"]["runDetails"]["metadata"].update(
                finishedOn="2000-01-01T00:00:00Z"
            ),
            "before",
        ),
        (
            lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"][0].update(
                digest={"gitCommit": "abc"}
            ),
            "hex digits",
        ),
        (
            lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"].append(
                {"name": "x"}
            ),
            "at least one of",
        ),
        (lambda s: s["predicate"].update(runDetails="x"), "expected an object"),
        (lambda s: s["predicate"]["runDetails"]["byproducts"][0].update(content="@@"), "base64"),
    ],
)
def test_check_refuses_malformed_statements(mutate: Any, expected: str) -> None:
    errors = _broken(mutate)
    assert errors, "a malformed statement passed"
    assert any(expected in e for e in errors), errors


def test_check_refuses_bad_json() -> None:
    assert not check_statement("{", "f", h("f")).valid
    assert not check_statement("[]", "f", h("f")).valid
    dup = '{"_type": "a", "_type": "b"}'
    assert "duplicate" in check_statement(dup, "f", h("f")).errors[0]
    text = statement_json(statement()).replace("0.93", "NaN")
    assert not check_statement(text, "models/model.pkl", h("model")).valid
    assert not check_statement(statement_json(statement()), "f", "nothex").valid
    assert "deeply" in check_statement("[" * 100_000 + "]" * 100_000, "f", h("f")).errors[0]
    s = statement()
    s["predicate"]["buildDefinition"]["externalParameters"]["deep"] = json.loads(
        "[" * 900 + "]" * 900
    )
    assert check_statement(json.dumps(s), "models/model.pkl", h("model")).valid in (True, False)


def test_a_statement_reads_back_as_its_run() -> None:
    original = record()
    back = record_from_statement(statement_json(statement()))
    links = {k: v for k, v in original.outputs.items() if v.startswith("symlink:")}
    assert links  # a link is not a subject, so it does not come back
    expected = RunRecord.from_dict(
        {
            **original.to_dict(),
            "outputs": {k: v for k, v in original.outputs.items() if k not in links},
            "origin": "a provenance statement",
        }
    )
    assert back == expected
    assert back.imported


def test_reading_back_refuses_other_statements() -> None:
    other = statement()
    other["predicate"]["buildDefinition"]["buildType"] = "https://example.com/other/v1"
    with pytest.raises(ValueError, match="build type"):
        record_from_statement(statement_json(other))
    broken = statement()
    broken["subject"][0]["digest"]["sha256"] = "XYZ"
    with pytest.raises(ValueError, match="invalid statement"):
        record_from_statement(statement_json(broken))


NOW = 1_700_000_100.0  # just after record()'s run ended


def test_an_imported_run_carries_where_it_came_from() -> None:
    back = record_from_statement(statement_json(statement()), origin="s.json", now=NOW)
    assert back.imported and back.origin == "s.json"


@pytest.mark.parametrize("field", ["startedOn", "finishedOn"])
def test_a_statement_dated_in_the_future_is_refused(field: str) -> None:
    """F8: a run from 2099 would be the newest producer of every file it lists."""
    forged = statement()
    metadata = forged["predicate"]["runDetails"]["metadata"]
    metadata[field] = "2099-01-01T00:00:00Z"
    if field == "startedOn":
        metadata["finishedOn"] = "2099-01-01T00:00:01Z"
    with pytest.raises(StatementRefused, match=f"s.json: {field} 2099-01-01T00:00:00Z is in the"):
        record_from_statement(statement_json(forged), origin="s.json", now=NOW)
    # within a day of clock skew it is accepted
    metadata[field] = rfc3339(NOW + 3600)
    metadata["finishedOn"] = rfc3339(NOW + 3600)
    record_from_statement(statement_json(forged), origin="s.json", now=NOW)


def _set(path: str, value: Any) -> Any:
    def mutate(s: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = s
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return mutate


BD = "predicate.buildDefinition"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set("subject.0.name", "../../home/u/.bashrc"), "climbs out"),
        (_set("subject.0.name", "/etc/passwd"), "absolute path"),
        (_set(f"{BD}.resolvedDependencies.0.name", "a/../../b"), "climbs out"),
        (_set(f"{BD}.externalParameters.params", {"../p.yaml": "x"}), "climbs out"),
        (_set(f"{BD}.externalParameters.params", {"p.yaml": 3}), "not {file: text}"),
        (_set(f"{BD}.externalParameters.command", "rm -rf ~"), "not a list of strings"),
        (_set(f"{BD}.externalParameters.command", [["sh"]]), "not a list of strings"),
        (_set(f"{BD}.internalParameters.exitCode", "0"), "not an exit status"),
        (_set(f"{BD}.internalParameters.exitCode", 2**40), "not an exit status"),
        (_set(f"{BD}.internalParameters.exitCode", True), "not an exit status"),
        (_set(f"{BD}.internalParameters.environmentHash", "x" * 100), "not in the form"),
        (_set(f"{BD}.internalParameters.environmentHash", ["sha256:"]), "not a string"),
        (_set(f"{BD}.internalParameters.project", "p" * 300), "300 characters"),
        (_set("predicate.runDetails.metadata.invocationId", "x" * 100_000), "not in the form"),
        (_set("predicate.runDetails.metadata.invocationId", "%"), "not in the form"),
        (_set("predicate.runDetails.metadata", {}), "names no run id"),
        (_set(f"{BD}.resolvedDependencies.2.annotations", {"dirty": "yes"}), "annotations"),
        (_set(f"{BD}.buildType", "https://example.com/other/v1"), "build type"),
        (_set("subject", [1]), "invalid statement"),
        (_set("predicate", []), "invalid statement"),
    ],
)
def test_reading_back_refuses_fields_envd_does_not_write(mutate: Any, expected: str) -> None:
    """Every refusal is an EnvdError (exit 9) naming the statement, never a KeyError."""
    forged = statement()
    mutate(forged)
    with pytest.raises(EnvdError, match=re.escape(expected)) as caught:
        record_from_statement(statement_json(forged), origin="s.json", now=NOW)
    assert caught.value.exit_code == 9
    assert "s.json" in caught.value.message


@pytest.mark.parametrize(
    "text", ["", "[]", "{}", '{"subject": {}}', "1e400", "[" * 100_000, '"\\ud800"', "\x00"]
)
def test_reading_back_anything_else_is_a_refusal(text: str) -> None:
    with pytest.raises(StatementRefused):
        record_from_statement(text, origin="x", now=NOW)


def test_the_fuzz_target_refuses_or_accepts_its_seed_corpus() -> None:
    from pathlib import Path

    from tests.fuzz.fuzz_provenance import target

    seeds = sorted((Path(__file__).parents[2] / "fuzz" / "corpus" / "provenance").iterdir())
    accepted = 0
    for seed in seeds:
        try:
            target(seed.read_bytes())
            accepted += 1
        except EnvdError:
            pass
    assert len(seeds) >= 5 and accepted == 1  # valid.json only
