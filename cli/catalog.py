"""envctl's commands and their one-line help, and `envctl --help` rendered without click.

cli/app.py builds the click group from this table; `envctl --help` prints `help_text()`, the
same text click would print (tests/unit/cli/test_cli.py compares them), in a tenth of the time.
"""

from __future__ import annotations

import os

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
    "ps": ("cli.commands.projects", "ps_cmd", "List warm environments."),
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

GROUP_HELP = """envd: reproducible, pinned container environments for ML projects.

PROJECT is a registered name or a directory holding envd.yaml."""

JSON_HELP = "Machine-readable output."
HELP_OPTIONS = ("-h", "--help")
# (option, help) as click lists them: --version and --help are click's own words.
OPTION_ROWS = (
    ("--version", "Show the version and exit."),
    ("--json", JSON_HELP),
    (", ".join(HELP_OPTIONS), "Show this message and exit."),
)
MAX_WIDTH = 80  # click's default: help is wrapped at max(min(terminal width, 80) - 2, 50)


def available(name: str) -> bool:
    """Whether a command's module is installed (a slim install may leave some out)."""
    import importlib.util

    return importlib.util.find_spec(COMMANDS[name][0]) is not None


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    first = max(len(name) for name, _ in rows)
    return [f"  {name:<{first}}  {text}" for name, text in rows]


def help_text(width: int | None = None) -> str | None:
    """`envctl --help` as click prints it, or None when the terminal is too narrow for the
    lines as they stand (click would wrap them: let click do it)."""
    lines = [
        "Usage: envctl [OPTIONS] COMMAND [ARGS]...",
        "",
        *(f"  {line}" if line else "" for line in GROUP_HELP.splitlines()),
        "",
        "Options:",
        *_rows(list(OPTION_ROWS)),
        "",
        "Commands:",
        *_rows([(name, entry[2]) for name, entry in COMMANDS.items() if available(name)]),
    ]
    usable = max(min(width if width is not None else terminal_columns(), MAX_WIDTH) - 2, 50)
    if any(len(line) > usable for line in lines):
        return None
    return "\n".join(lines) + "\n"


def terminal_columns() -> int:
    """The width click would use: $COLUMNS, else the terminal's, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return MAX_WIDTH
