"""The team's runs at a glance: `envctl runs --from REGISTRY/REPO` and `runs diff` against a
shared run.

The runs shared in a repository are found through the referrers fallback indexes (one small
read per environment image) and the tags that are run ids; each run's config is read once, by
digest, and cached under $ENVD_HOME, so a second listing reads only the tag list, the indexes
and what is new. Every config goes through the same checks as `pull run` (runartifact);
the daemon remembers what it parsed, by digest, so a listing again parses only what is new.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from envd.errors import NotFound, UsageError, VerificationError
from envd.gateways.projectfiles import read_bounded
from envd.gateways.registry import RegistryClient
from envd.model.runartifact import (
    MAX_CONFIG,
    MAX_MANIFEST,
    RUN_ID,
    SharedRun,
    parse_config,
    parse_manifest,
)
from envd.model.runrecord import RunRecord, filter_runs, parse_where
from envd.model.runrecord import sort_runs as sort_records
from envd.services.runrefs import ENV_TAG_PREFIX, check_repository, split_run_reference

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PARSED_MAX = 20_000  # configs remembered parsed, by manifest digest


@dataclass(frozen=True)
class Listed:
    run: SharedRun
    reference: str


class TeamRuns:
    def __init__(self, registry: RegistryClient, cache: Path) -> None:
        self._registry = registry
        self._cache = cache  # run configs read from registries, by manifest digest
        self._parsed: dict[tuple[str, str], SharedRun] = {}  # (repository, digest): parsed

    def list_shared(
        self, source: str, where: Iterable[str] = (), sort: str = "", limit: int = 50
    ) -> tuple[list[Listed], int]:
        """The runs shared in REGISTRY/REPO (the newest first), and how many manifests were
        read from the registry (the rest came from the cache, by digest)."""
        repository = check_repository(source)
        try:
            wheres = [parse_where(w) for w in where]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        tags = self._registry.tags(repository)
        digests: dict[str, str] = {}
        for tag in tags:
            if tag.startswith("sha256-"):
                found = self._registry.get_manifest(repository, tag, limit=MAX_MANIFEST)
                if found is None:
                    continue
                try:
                    manifests = json.loads(found[0]).get("manifests") or []
                except (ValueError, AttributeError):
                    continue
                for m in manifests:  # (the index is the registry's word: digests checked)
                    if isinstance(m, dict) and _DIGEST.fullmatch(str(m.get("digest", ""))):
                        run_id = (m.get("annotations") or {}).get(RUN_ID, "")
                        digests.setdefault(str(m["digest"]), str(run_id))
        named = set(digests.values())
        for tag in tags:
            if tag.startswith(("sha256-", ENV_TAG_PREFIX)) or tag in named:
                continue
            digest = self._registry.manifest_digest(repository, tag)
            if digest:
                digests.setdefault(digest, tag)
        read = 0
        listed: list[Listed] = []
        for digest in sorted(digests):
            known = self._parsed.get((str(repository), digest))
            if known is not None:
                listed.append(Listed(known, f"{repository}:{known.record.id}"))
                continue
            cached = self._cached(digest)
            if cached is None:
                manifest = self._registry.get_manifest(repository, digest, limit=MAX_MANIFEST)
                if manifest is None:
                    continue
                read += 1
                try:
                    artifact = parse_manifest(manifest[0], f"{repository}@{digest}")
                except VerificationError:
                    continue  # not a run: another artifact beside the image
                config = self._registry.get_blob(repository, artifact.config_digest, MAX_CONFIG)
                self._store_cached(digest, config)
                cached = config
            where_from = f"{repository}@{digest}"
            try:
                shared = parse_config(cached, where_from, time.time())
            except VerificationError:
                continue
            run = replace(
                shared, record=replace(shared.record, origin=f"{repository}:{shared.record.id}")
            )
            if len(self._parsed) < _PARSED_MAX:
                self._parsed[(str(repository), digest)] = run
            listed.append(Listed(run, f"{repository}:{shared.record.id}"))
        by_id = {item.run.record.id: item for item in listed}
        records = filter_runs((i.run.record for i in listed), wheres)
        ordered = (
            sort_records(records, sort)
            if sort
            else sorted(records, key=lambda r: r.started_at, reverse=True)
        )
        return [by_id[r.id] for r in ordered][:limit], read

    def shared_record(self, reference: str) -> RunRecord:
        """The run shared as REGISTRY/REPO:RUN (for `runs diff` across homes); its config is
        read by digest and cached."""
        repository, ref = split_run_reference(reference)
        found = self._registry.get_manifest(repository, ref, limit=MAX_MANIFEST)
        if found is None:
            raise NotFound(f"no run {reference} in the registry")
        config = self._cached(found[1])
        if config is None:
            artifact = parse_manifest(found[0], reference)
            config = self._registry.get_blob(repository, artifact.config_digest, MAX_CONFIG)
            self._store_cached(found[1], config)
        shared = parse_config(config, reference, time.time())
        return replace(shared.record, origin=reference)

    def _cached(self, digest: str) -> bytes | None:
        """A config read before, by its manifest's digest (checked: the digest names a file);
        read with the config's bound."""
        if not _DIGEST.fullmatch(digest):
            return None
        try:
            return read_bounded(self._cache / "runs" / digest.replace(":", "-"), MAX_CONFIG)
        except Exception:  # missing, or not a plain bounded file: read it again
            return None

    def _store_cached(self, digest: str, config: bytes) -> None:
        if not _DIGEST.fullmatch(digest):
            return
        folder = self._cache / "runs"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / digest.replace(":", "-")
        tmp = folder / f".{path.name}.tmp"
        tmp.write_bytes(config)
        os.replace(tmp, path)
