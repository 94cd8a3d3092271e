"""envctl lock."""

from __future__ import annotations

import click

from cli.context import AppContext
from cli.output import emit_json, follow
from cli.refs import project_ref


@click.command("lock")
@click.argument("project", required=False)
@click.option("--check", is_flag=True, help="Only check; exit 5 naming the reason when stale.")
@click.option("--upgrade", is_flag=True, help="Re-resolve every package (default: keep pins).")
@click.option(
    "--upgrade-package", "-P", "upgrade_packages", multiple=True, help="Re-resolve only PKG."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def lock_cmd(
    obj: AppContext,
    project: str | None,
    check: bool,
    upgrade: bool,
    upgrade_packages: tuple[str, ...],
    as_json: bool,
) -> None:
    """Resolve PROJECT's envd.yaml into envd.lock: exact versions and sha256 hashes."""
    from envd.v1 import envd_pb2 as pb

    as_json = as_json or obj.as_json
    request = pb.LockRequest(
        project=pb.ProjectRef(ref=project_ref(project)),
        check=check,
        upgrade=upgrade or False,
        upgrade_packages=list(upgrade_packages),
    )
    result = follow(obj.client().lock(request), as_json)
    if as_json:
        emit_json({"result": _dict(result)})
        return
    if check:
        click.echo(f"{result.lock_path} is up to date")
        return
    verb = "wrote" if result.changed else "unchanged:"
    click.echo(
        f"{verb} {result.lock_path} ({result.python_packages} Python packages, "
        f"{result.debian_packages} Debian packages, {result.accelerator or 'cpu'})"
    )
    if result.changed:
        for reason in result.reasons:
            click.echo(f"  - {reason}")


def _dict(message: object) -> object:
    from cli.output import message_dict

    return message_dict(message)
