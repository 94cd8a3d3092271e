"""envctl share image, pull, load."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from cli.context import AppContext
from cli.output import emit_json, follow, message_dict
from cli.refs import project_ref

if TYPE_CHECKING:
    from envd.v1 import envd_pb2 as pb


@click.group("share")
def share_cmd() -> None:
    """Share an environment with colleagues."""


@share_cmd.command("image")
@click.argument("project")
@click.option("--to", "to", default="", help="Push to REGISTRY/REPO[:TAG].")
@click.option("--output", "-o", default="", help="Write a compressed archive instead.")
@click.option("--pin", is_flag=True, help="Write the pushed digest into envd.lock.")
@click.pass_obj
def share_image(obj: AppContext, project: str, to: str, output: str, pin: bool) -> None:
    """Push PROJECT's image (lock and fingerprint as labels), or write it to a file.

    Prints the pushed reference as NAME@sha256:DIGEST.
    """
    from envd.v1 import envd_pb2 as pb

    request = pb.ShareRequest(
        project=pb.ProjectRef(ref=project_ref(project)),
        to=to,
        output=os.path.abspath(output) if output else "",
        pin=pin,
    )
    result = follow(obj.client().share(request), obj.as_json)
    if obj.as_json:
        emit_json({"result": message_dict(result)})
        return
    click.echo(result.reference)
    if to:
        click.echo(
            f"layers: {result.layers_pushed} pushed, {result.layers_skipped} already there",
            err=True,
        )
    if result.pinned:
        click.echo("pinned in envd.lock: colleagues' `envctl enter` pulls it", err=True)


def _received(obj: AppContext, result: pb.PullResult) -> None:
    if obj.as_json:
        emit_json({"result": message_dict(result)})
        return
    click.echo(f"verified {result.image} (environment {result.environment_hash})")
    if result.project:
        click.echo(f"registered for project {result.project}: `envctl enter {result.project}`")
    else:
        click.echo("no registered project has this lock; `envctl add DIR` one that does")


@click.command("pull")
@click.argument("reference")
@click.pass_obj
def pull_cmd(obj: AppContext, reference: str) -> None:
    """Pull a shared image, check it against its fingerprint, and register it."""
    from envd.v1 import envd_pb2 as pb

    events = obj.client().pull(pb.PullRequest(reference=reference))
    _received(obj, follow(events, obj.as_json))


@click.command("load")
@click.argument("path", type=click.Path(dir_okay=False))
@click.pass_obj
def load_cmd(obj: AppContext, path: str) -> None:
    """Load a shared archive, check it against its fingerprint, and register it."""
    from envd.v1 import envd_pb2 as pb

    events = obj.client().load(pb.LoadRequest(path=os.path.abspath(path)))
    _received(obj, follow(events, obj.as_json))
