"""`envctl rerun ID`: may a recorded run's command run again here, in the same environment,
and were its outputs the same bytes? Apart from `runs.py` because only a rerun builds."""

from __future__ import annotations

import os

from envd.errors import Conflict, NotFound, UsageError, VerificationError
from envd.gateways.store import ProjectRow
from envd.model.runrecord import RunRecord
from envd.progress import Progress, Reporter
from envd.services.builder import Builder
from envd.services.fingerprints import Fingerprints
from envd.services.images import Images
from envd.services.projects import Projects
from envd.services.runs import Runs


def compare_outputs(original: RunRecord, again: RunRecord) -> tuple[int, list[str]]:
    """(outputs of `original` that `again` wrote with identical bytes, the ones that differ)."""
    identical = 0
    differing: list[str] = []
    for path, digest in sorted(original.outputs.items()):
        if again.outputs.get(path) == digest:
            identical += 1
        else:
            differing.append(path)
    return identical, differing


class Reruns:
    """`envctl rerun ID`: may the recorded command run again here, in the same environment?"""

    def __init__(
        self,
        runs: Runs,
        projects: Projects,
        images: Images,
        builder: Builder,
        fingerprints: Fingerprints,
    ) -> None:
        self._runs = runs
        self._projects = projects
        self._images = images
        self._builder = builder
        self._fingerprints = fingerprints

    def check(
        self, run_id: str, force: bool, progress: Reporter, project: str = ""
    ) -> tuple[RunRecord, ProjectRow, list[str], str, str]:
        """(the run, its project, what changed in code and data, what was done about the
        environment, the directory it ran in). The project is `project` (a registered name
        or path) if given, else the one the run names. Refuses an imported run without an
        environment hash, a different environment, a directory gone from the project, and
        changed inputs unless `force`."""
        record = self._runs.record(run_id)
        if not record.command:
            raise UsageError(f"run {record.id} has no command to run again")
        if record.imported and not record.environment_hash:
            raise VerificationError(
                f"run {record.id} was imported from {record.origin} and records no environment "
                "hash: envd cannot check that it would run in the environment it ran in; "
                "not rerun",
                hint="rerun only imported runs whose statement names their environment "
                "(`envctl runs export` writes it), or run the command yourself with "
                "`envctl enter`",
            )
        row = self._projects.resolve_registered(project or record.project)
        directory = os.path.join(row.path, record.workdir) if record.workdir else row.path
        if not os.path.isdir(directory):
            raise NotFound(
                f"run {record.id} ran in {record.workdir}/ of {row.name}, which is not in "
                f"{row.path} now",
                hint="check out the code the run used (`envctl runs show` has its commit)",
            )
        spec = self._projects.spec(row)
        image = self._images.current_image(row)
        words = "the project's current image"
        if image is None:
            progress(Progress("build", f"building {row.name} from envd.lock"))
            image = self._builder.build(row, progress).image
            words = "built from envd.lock"
        env_hash, _ = self._fingerprints.hashes(self._images.image_id(image))
        if record.environment_hash and env_hash != record.environment_hash:
            raise VerificationError(
                f"run {record.id} ran in environment {record.environment_hash[:19]}; "
                f"{row.name}'s current environment is {env_hash[:19] or 'unknown'}",
                hint="check out the envd.yaml and envd.lock the run used "
                f"(envd.lock sha256 {record.lock_sha256[:12] or '-'}), then rerun",
            )
        words += f", environment {env_hash[:19]}" if env_hash else ", environment not recorded"
        changes = self._runs.input_changes(record, row.path, spec.runs)
        if changes and not force:
            raise Conflict(
                f"run {record.id}'s inputs changed: " + "; ".join(changes),
                hint="`envctl rerun --force` runs it anyway; the outputs are compared all the same",
            )
        return record, row, changes, words, directory

    def compare(self, original: str, again: str) -> tuple[int, int, list[str]]:
        first = self._runs.record(original)
        second = self._runs.record(again)
        identical, differing = compare_outputs(first, second)
        return identical, len(first.outputs), differing
