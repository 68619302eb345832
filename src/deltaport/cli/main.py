"""Entry point: assembles the command groups and maps errors to exit codes."""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from deltaport.cli.common import out_console
from deltaport.errors import DeltaportError

app = typer.Typer(
    name="deltaport",
    help="Deploy container images to edge devices over slow, intermittent links.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


# (module under deltaport.cli, command group name); each module defines ``app``.
COMMAND_GROUPS: list[tuple[str, str]] = [
    ("image", "image"),
    ("keys", "keys"),
    ("bundle", "bundle"),
    ("signature", "signature"),
    ("delta", "delta"),
    ("device", "device"),
    ("event", "event"),
    ("status", "status"),
    ("agent", "agent"),
    ("hub", "hub"),
    ("manifest", "manifest"),
]


# (module under deltaport.cli, function name, command name): top-level commands.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "demo", "demo"),
    ("deploy", "deploy_command", "deploy"),
    ("fleet", "activate_command", "activate"),
]

# (module under deltaport.cli, function): called with the root app, e.g. to add
# global options (--data-dir, --db) through a root callback.
ROOT_HOOKS: list[tuple[str, str]] = [
    ("fleet", "add_global_options"),
]


def _register_groups() -> None:
    import importlib

    for module_name, group in COMMAND_GROUPS:
        module = importlib.import_module(f"deltaport.cli.{module_name}")
        app.add_typer(module.app, name=group)
    for module_name, function, command in COMMANDS:
        module = importlib.import_module(f"deltaport.cli.{module_name}")
        app.command(command)(getattr(module, function))
    for module_name, function in ROOT_HOOKS:
        getattr(importlib.import_module(f"deltaport.cli.{module_name}"), function)(app)


def main() -> None:
    """Run the CLI; a DeltaportError becomes a one-line message and its exit code."""
    _register_groups()
    try:
        code = app(standalone_mode=False)
    except DeltaportError as exc:
        # one line whatever its length (a log, grep); markup in the message is not parsed
        message = Text.assemble(("error:", "bold red"), " ", str(exc))
        out_console(stderr=True).print(message, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        out_console(stderr=True).print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    # standalone_mode=False returns Ctrl-C (130) and typer.Exit codes instead of exiting
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
