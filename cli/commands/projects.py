"""envctl init, add, ls, ps, rm, validate, status (ls, ps, status print through cli.everyday)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from cli.context import AppContext
from cli.everyday import print_ls, print_ps, print_status
from cli.output import emit_json, table
from cli.refs import project_ref

if TYPE_CHECKING:
    from envd.v1 import envd_pb2 as pb


def notice_takeover(before: Iterable[pb.Project], project: pb.Project) -> None:
    """Say so (on stderr) when the new project took its name over from one whose directory
    is gone."""
    for old in before:
        if old.name == project.name and old.path != project.path:
            click.echo(
                f"notice: project `{old.name}` was registered at {old.path}, which is gone; "
                f"the name now belongs to {project.path}",
                err=True,
            )


@click.command("init")
@click.argument("directory", required=False, default=".")
@click.option(
    "--template",
    "-t",
    default="",
    help="Template name (default: adopt the directory's files, else the `default` template); "
    "with existing files, merged under them.",
)
@click.option("--list", "list_only", is_flag=True, help="List the templates and exit.")
@click.pass_obj
def init_cmd(obj: AppContext, directory: str, template: str, list_only: bool) -> None:
    """Write DIRECTORY/envd.yaml and register the project (never overwrites).

    In a directory with requirements.txt, pyproject.toml, uv.lock, environment.yml and the
    like, envd.yaml is adopted from them (and says what it took from where); otherwise it is
    the template's.
    """
    from envd.v1 import envd_pb2 as pb

    client = obj.client()
    if list_only:
        reply = client.list_templates(pb.ListTemplatesRequest())
        if obj.as_json:
            emit_json(reply)
        else:
            table(["template", "description"], [(t.name, t.description) for t in reply.templates])
        return
    path = os.path.abspath(os.path.expanduser(directory))
    before = client.list_projects(pb.ListProjectsRequest()).projects
    made = client.init_project(pb.InitProjectRequest(directory=path, template=template))
    project = made.project
    notice_takeover(before, project)
    if obj.as_json:
        emit_json(made)
        return
    if made.adopted:
        merged = f" (merged over template `{made.template}`)" if made.template else ""
        click.echo(f"wrote {project.path}/envd.yaml from {', '.join(made.files)}{merged}")
        for note in made.notes:
            click.echo(f"  {note}")
        for warning in made.warnings:
            click.echo(f"  warning: {warning}")
    else:
        click.echo(f"wrote {project.path}/envd.yaml from template `{made.template}`")
    click.echo(f"registered project `{project.name}`; next: envctl lock {project.name}")


@click.command("add")
@click.argument("path", default=".")
@click.pass_obj
def add_cmd(obj: AppContext, path: str) -> None:
    """Register the project in PATH (a directory with envd.yaml)."""
    from envd.v1 import envd_pb2 as pb

    client = obj.client()
    before = client.list_projects(pb.ListProjectsRequest()).projects
    project = client.add_project(
        pb.AddProjectRequest(path=os.path.abspath(os.path.expanduser(path)))
    )
    notice_takeover(before, project)
    if obj.as_json:
        emit_json(project)
    else:
        click.echo(f"registered project `{project.name}` at {project.path}")


@click.command("ls")
@click.pass_obj
def ls_cmd(obj: AppContext) -> None:
    """List registered projects: name, path, state."""
    print_ls(obj.client(), obj.as_json)


@click.command("ps")
@click.pass_obj
def ps_cmd(obj: AppContext) -> None:
    """List warm environments."""
    print_ps(obj.client(), obj.as_json)


@click.command("rm")
@click.argument("name")
@click.option("--image", "is_image", is_flag=True, help="NAME is an image to remove.")
@click.pass_obj
def rm_cmd(obj: AppContext, name: str, is_image: bool) -> None:
    """Forget project NAME (deletes nothing on disk), or with --image remove an image."""
    from envd.v1 import envd_pb2 as pb

    client = obj.client()
    if is_image:
        removed_images = client.remove_image(pb.RemoveImageRequest(image=name))
        if obj.as_json:
            emit_json(removed_images)
        else:
            for removed in removed_images.removed:
                click.echo(f"removed {removed}")
        return
    reply = client.remove_project(pb.ProjectRef(ref=project_ref(name)))
    if obj.as_json:
        emit_json(reply)
    else:
        click.echo(f"forgot project `{reply.project.name}` ({reply.project.path} is untouched)")


@click.command("validate")
@click.argument("project", required=False)
@click.pass_obj
def validate_cmd(obj: AppContext, project: str | None) -> None:
    """Check PROJECT's envd.yaml (default: the current directory)."""
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().validate(pb.ProjectRef(ref=project_ref(project)))
    if obj.as_json:
        emit_json(reply)
    else:
        click.echo(f"{reply.spec_path}: valid (project `{reply.project.name}`)")


@click.command("status")
@click.argument("project", required=False)
@click.pass_obj
def status_cmd(obj: AppContext, project: str | None) -> None:
    """Show PROJECT's state, why it is stale, its lock and warm containers."""
    print_status(obj.client(), project, obj.as_json)
