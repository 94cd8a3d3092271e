"""envctl's click application: a lazy command group (help text lives here, imports do not).

Exit codes: 0 ok, 1 user error, 2 usage, 3 bug (crash log written), 4 not found, 5 lock stale,
6 build failed, 7 host cannot run it (GPU/CUDA), 8 registry, 9 verification failed,
10 container died, 11 daemon unreachable, 12 engine unreachable, 130 interrupted.
`envctl enter P -- CMD` exits with CMD's own status.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from envd import __version__

# name -> (module, attribute, short help). Help text lives here so `envctl --help` imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("cli.commands.projects", "init_cmd", "Create envd.yaml from a template."),
    "add": ("cli.commands.projects", "add_cmd", "Register a project directory."),
    "ls": ("cli.commands.projects", "ls_cmd", "List projects and their state."),
    "rm": ("cli.commands.projects", "rm_cmd", "Forget a project or remove an image."),
    "validate": ("cli.commands.projects", "validate_cmd", "Check a project's envd.yaml."),
    "status": ("cli.commands.projects", "status_cmd", "Show one project: state, lock, containers."),
    "lock": ("cli.commands.lock", "lock_cmd", "Resolve every dependency into envd.lock."),
    "build": ("cli.commands.build", "build_cmd", "Build the project's image from envd.lock."),
    "export": ("cli.commands.build", "export_cmd", "Render the build plan, e.g. as a Dockerfile."),
    "images": ("cli.commands.build", "images_cmd", "List images envd has built."),
    "gc": ("cli.commands.build", "gc_cmd", "Remove images no current lock needs."),
    "enter": ("cli.commands.enter", "enter_cmd", "Open a shell or run a command in a project."),
    "ps": ("cli.commands.enter", "ps_cmd", "List warm environments."),
    "stop": ("cli.commands.enter", "stop_cmd", "Stop warm environments."),
    "info": ("cli.commands.info", "info_cmd", "Show the host: CPU, memory, engine, GPUs."),
    "fingerprint": (
        "cli.commands.fingerprint",
        "fingerprint_cmd",
        "Print an environment's fingerprint.",
    ),
    "diff": ("cli.commands.fingerprint", "diff_cmd", "Name what differs between two environments."),
    "verify": (
        "cli.commands.fingerprint",
        "verify_cmd",
        "Check an environment against its fingerprint.",
    ),
    "runs": ("cli.commands.runs", "runs_cmd", "List recorded runs: params and metrics that vary."),
    "trace": ("cli.commands.runs", "trace_cmd", "Which run produced this file, and from what."),
    "rerun": ("cli.commands.runs", "rerun_cmd", "Run a recorded run again; are outputs identical?"),
    "new": ("cli.commands.runs", "new_cmd", "Create a whole project from a template."),
    "share": ("cli.commands.share", "share_cmd", "Share an image to a registry or a file."),
    "pull": ("cli.commands.share_run", "pull_cmd", "Pull a shared image or run, and verify it."),
    "load": ("cli.commands.share", "load_cmd", "Load a shared archive and verify it."),
    "events": ("cli.commands.daemon", "events_cmd", "Stream what the daemon does."),
    "config": ("cli.commands.daemon", "config_cmd", "Show or change daemon settings."),
    "daemon": ("cli.commands.daemon", "daemon_cmd", "Manage the envd daemon."),
}

# group -> subcommands kept in their own modules: name -> (module, attribute).
SUBCOMMANDS: dict[str, dict[str, tuple[str, str]]] = {
    "runs": {"report": ("cli.commands.report", "report_cmd")},
    "share": {"run": ("cli.commands.share_run", "share_run")},
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

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


def _available(name: str) -> bool:
    return importlib.util.find_spec(COMMANDS[name][0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="envctl", message="%(prog)s %(version)s")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def cli(ctx: click.Context, as_json: bool) -> None:
    """envd: reproducible, pinned container environments for ML projects.

    PROJECT is a registered name or a directory holding envd.yaml.
    """
    from cli.context import AppContext

    ctx.obj = AppContext(as_json=as_json)
