"""Entry point: assembles the command groups and maps errors to exit codes."""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import typer
from rich.text import Text

from deltaport.cli.common import (
    HUB_EXTRAS_MESSAGE,
    hub_extras_installed,
    is_missing_hub_extra,
    out_console,
)
from deltaport.errors import DeltaportError, UsageError

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
    ("rollout", "rollout"),
]


# (module under deltaport.cli, function name, command name): top-level commands.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "demo", "demo"),
    ("deploy", "deploy_command", "deploy"),
    ("fleet", "activate_command", "activate"),
    ("worker", "worker_command", "worker"),
]

# (module under deltaport.cli, function): called with the root app, e.g. to add
# global options (--data-dir, --db) through a root callback.
ROOT_HOOKS: list[tuple[str, str]] = [
    ("fleet", "add_global_options"),
]


# Command paths that run only where the hub extras are installed. On a device (plain
# `deltaport`, or `deltaport[agent]`) each answers HUB_EXTRAS_MESSAGE, --help included.
# Commands that may run against a remote hub (--hub URL) are not listed: they answer the
# same message only when they reach for the local database (see ``main``).
HUB_ONLY_COMMANDS: list[tuple[str, ...]] = [
    ("hub", "init"),
    ("hub", "serve"),
    ("hub", "token", "create"),
    ("demo",),
    ("worker",),
]


def _needs_hub_extras() -> None:
    raise UsageError(HUB_EXTRAS_MESSAGE)


def _stub_hub_only(root: click.Group) -> None:
    """Replace each of HUB_ONLY_COMMANDS by a command that takes any arguments and
    raises the hub-extras UsageError (its one-line help stays in the listings)."""
    for path in HUB_ONLY_COMMANDS:
        group = root
        for name in path[:-1]:
            sub = group.commands[name]
            assert isinstance(sub, click.Group), path
            group = sub
        original = group.commands[path[-1]]
        group.commands[path[-1]] = click.Command(
            path[-1],
            callback=_needs_hub_extras,
            help=original.help,
            short_help=original.short_help,
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )


def _fail(exc: DeltaportError) -> NoReturn:
    """Print EXC as one line on stderr and exit with its code."""
    # one line whatever its length (a log, grep); markup in the message is not parsed
    message = Text.assemble(("error:", "bold red"), " ", str(exc))
    out_console(stderr=True).print(message, highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


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
    """Run the CLI; a DeltaportError becomes a one-line message and its exit code.

    Without the hub extras, HUB_ONLY_COMMANDS and any command that imports one of
    them say so (HUB_EXTRAS_MESSAGE, exit 2) instead of an ImportError traceback."""
    _register_groups()
    command = typer.main.get_command(app)
    if isinstance(command, click.Group) and not hub_extras_installed():
        _stub_hub_only(command)
    try:
        code = command.main(standalone_mode=False)
    except DeltaportError as exc:
        _fail(exc)
    except ImportError as exc:
        if not is_missing_hub_extra(exc):
            raise
        _fail(UsageError(HUB_EXTRAS_MESSAGE))
    except typer.Abort:
        out_console(stderr=True).print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    # standalone_mode=False returns Ctrl-C (130) and typer.Exit codes instead of exiting
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
