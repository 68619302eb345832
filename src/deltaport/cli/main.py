"""Entry point: assembles the command groups and maps errors to exit codes."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from deltaport.errors import DeltaportError

app = typer.Typer(
    name="deltaport",
    help="Deploy container images to edge devices over slow, intermittent links.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True)


# (module under deltaport.cli, command group name); each module defines ``app``.
COMMAND_GROUPS: list[tuple[str, str]] = [
    ("image", "image"),
]


def _register_groups() -> None:
    import importlib

    for module_name, group in COMMAND_GROUPS:
        module = importlib.import_module(f"deltaport.cli.{module_name}")
        app.add_typer(module.app, name=group)


def main() -> None:
    """Run the CLI; a DeltaportError becomes a one-line message and its exit code."""
    _register_groups()
    try:
        app(standalone_mode=False)
    except DeltaportError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
