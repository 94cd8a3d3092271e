"""envctl's click application: a lazy command group (its table and help: cli/catalog.py).

Exit codes: 0 ok, 1 user error, 2 usage, 3 bug (crash log written), 4 not found, 5 lock stale,
6 build failed, 7 host cannot run it (GPU/CUDA), 8 registry, 9 verification failed,
10 container died, 11 daemon unreachable, 12 engine unreachable, 130 interrupted.
`envctl enter P -- CMD` exits with CMD's own status.
"""

from __future__ import annotations

import importlib

import click

from cli.catalog import COMMANDS, GROUP_HELP, HELP_OPTIONS, JSON_HELP, available
from envd import __version__

__all__ = ["COMMANDS", "cli"]

# group -> subcommands kept in their own modules: name -> (module, attribute).
SUBCOMMANDS: dict[str, dict[str, tuple[str, str]]] = {
    "runs": {"report": ("cli.commands.report", "report_cmd")},
    "share": {"run": ("cli.commands.share_run", "share_run")},
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command = getattr(module, attr, None)
        if isinstance(command, click.Group):
            for sub, (sub_module, sub_attr) in SUBCOMMANDS.get(cmd_name, {}).items():
                command.add_command(getattr(importlib.import_module(sub_module), sub_attr), sub)
        return command if isinstance(command, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, help=GROUP_HELP, context_settings={"help_option_names": list(HELP_OPTIONS)}
)
@click.version_option(__version__, "--version", prog_name="envctl", message="%(prog)s %(version)s")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def cli(ctx: click.Context, as_json: bool) -> None:
    from cli.context import AppContext

    ctx.obj = AppContext(as_json=as_json)
