"""envctl build, export, images, gc."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.context import AppContext
from cli.everyday import print_images
from cli.output import emit_json, follow, human_bytes, message_dict, table
from cli.refs import project_ref

if TYPE_CHECKING:
    from envd.v1 import envd_pb2 as pb

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 10GB, 500MiB)")
    unit = (match.group(2) or "").lower()
    binary = "i" in unit
    factor = _UNITS.get(unit[:1], 1)
    if binary and unit[:1]:
        factor = 1024 ** ("kmgt".index(unit[0]) + 1)
    return int(float(match.group(1)) * factor)


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 7d, 12h, 30m)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def run_build(obj: AppContext, ref: str, dry_run: bool, as_json: bool) -> pb.BuildResult:
    """Stream a build, showing progress; returns the BuildResult."""
    from envd.v1 import envd_pb2 as pb

    request = pb.BuildRequest(project=pb.ProjectRef(ref=ref), dry_run=dry_run)
    return follow(obj.client().build(request), as_json)


@click.command("build")
@click.argument("project", required=False)
@click.option("--dry-run", is_flag=True, help="Print the plan: each step's key, cached or not.")
@click.option("--json", "as_json", is_flag=True, help="Progress and result as JSON lines.")
@click.pass_obj
def build_cmd(obj: AppContext, project: str | None, dry_run: bool, as_json: bool) -> None:
    """Build PROJECT's image from envd.lock (locking first when there is none)."""
    as_json = as_json or obj.as_json
    result = run_build(obj, project_ref(project), dry_run, as_json)
    if as_json:
        emit_json({"result": message_dict(result)})
        return
    if dry_run:
        table(
            ["step", "key", "cached", "what"],
            [(s.name, s.key[:12], "yes" if s.cached else "no", s.summary) for s in result.steps],
        )
        click.echo(f"image: {result.image}")
        return
    ran = [s.name for s in result.steps if not s.cached]
    if result.cached:
        click.echo(f"{result.image} is up to date")
    else:
        click.echo(f"built {result.image} in {result.elapsed_s:.1f}s (ran: {', '.join(ran)})")
    if result.environment_hash:
        click.echo(f"environment {result.environment_hash}")


@click.group("export")
def export_cmd() -> None:
    """Render the build plan for building elsewhere."""


@export_cmd.command("dockerfile")
@click.argument("project", required=False)
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Write the files to DIR.")
@click.pass_obj
def export_dockerfile(obj: AppContext, project: str | None, output: str | None) -> None:
    """Print PROJECT's plan as a Dockerfile (with --output, write it and requirements.lock.txt)."""
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().export_dockerfile(pb.ProjectRef(ref=project_ref(project)))
    if not output:
        click.echo(reply.dockerfile, nl=False)
        return
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "Dockerfile").write_text(reply.dockerfile)
    (out / "requirements.lock.txt").write_text(reply.requirements)
    click.echo(f"wrote {out / 'Dockerfile'} and {out / 'requirements.lock.txt'}")


def _write_or_print(text: str, output: str | None, what: str) -> None:
    if not output:
        click.echo(text, nl=False)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path} ({what})", err=True)


@export_cmd.command("pylock")
@click.argument("project", required=False)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write it to FILE.")
@click.pass_obj
def export_pylock(obj: AppContext, project: str | None, output: str | None) -> None:
    """Print PROJECT's envd.lock as a PEP 751 pylock.toml (for uv, pip), each file by URL."""
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().export_pylock(pb.ProjectRef(ref=project_ref(project)))
    if obj.as_json:
        emit_json(reply)
        return
    _write_or_print(reply.pylock, output, f"{reply.packages} packages from {reply.lock_path}")


@export_cmd.command("sbom")
@click.argument("project", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cyclonedx", "spdx"]),
    default="cyclonedx",
    show_default=True,
    help="CycloneDX 1.6 JSON or SPDX 2.3 JSON.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write it to FILE.")
@click.pass_obj
def export_sbom(obj: AppContext, project: str | None, fmt: str, output: str | None) -> None:
    """Print an SBOM of PROJECT's built image: every Debian package and Python distribution."""
    from envd.v1 import envd_pb2 as pb

    request = pb.ExportSbomRequest(
        project=pb.ProjectRef(ref=project_ref(project)),
        format=pb.SBOM_FORMAT_SPDX if fmt == "spdx" else pb.SBOM_FORMAT_CYCLONEDX,
    )
    reply = obj.client().export_sbom(request)
    if obj.as_json:
        emit_json(reply)
        return
    _write_or_print(
        reply.document, output, f"{fmt}, {reply.components} components of {reply.image}"
    )


@export_cmd.command("devcontainer")
@click.argument("project", required=False)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write it to FILE (default: PROJECT/.devcontainer/devcontainer.json); `-` prints it.",
)
@click.option("--force", is_flag=True, help="Replace an existing devcontainer.json.")
@click.pass_obj
def export_devcontainer(
    obj: AppContext, project: str | None, output: str | None, force: bool
) -> None:
    """Write a devcontainer.json that opens PROJECT's built image (VS Code, devcontainer CLI)."""
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().export_devcontainer(pb.ProjectRef(ref=project_ref(project)))
    if obj.as_json:
        emit_json(reply)
        return
    if output == "-":
        click.echo(reply.devcontainer, nl=False)
        return
    path = (
        Path(output) if output else Path(reply.project_dir) / ".devcontainer" / "devcontainer.json"
    )
    if path.exists() and not force and path.read_text(encoding="utf-8") != reply.devcontainer:
        raise click.ClickException(f"{path} already exists; pass --force to replace it")
    _write_or_print(reply.devcontainer, str(path), f"opens {reply.image}")


@click.command("images")
@click.pass_obj
def images_cmd(obj: AppContext) -> None:
    """List the images and cached build steps envd keeps."""
    print_images(obj.client(), obj.as_json)


@click.command("gc")
@click.option("--keep-storage", default="", help="Keep at most this much, e.g. 10GB.")
@click.option("--keep-duration", default="", help="Keep what was used within, e.g. 7d.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_obj
def gc_cmd(obj: AppContext, keep_storage: str, keep_duration: str, dry_run: bool) -> None:
    """Remove images and steps that no registered project's current lock needs, and the
    kept copies of run files no recorded run names (--keep-storage covers both)."""
    from envd.v1 import envd_pb2 as pb

    request = pb.GcRequest(
        keep_storage_bytes=parse_size(keep_storage) if keep_storage else 0,
        keep_duration_s=parse_duration(keep_duration) if keep_duration else 0.0,
        dry_run=dry_run,
    )
    reply = obj.client().gc(request)
    if obj.as_json:
        emit_json(reply)
        return
    verb = "would remove" if dry_run else "removed"
    for image in reply.removed:
        click.echo(f"{verb} {image.image} ({image.kind}, {human_bytes(image.size_bytes)})")
    files = sum(1 for image in reply.removed if image.kind == "run file")
    kept = f" and {files} kept run files" if files else ""
    click.echo(
        f"{verb} {len(reply.removed) - files} images{kept}, {human_bytes(reply.freed_bytes)}"
    )
