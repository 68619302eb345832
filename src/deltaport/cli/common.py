"""Small helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported when called: deltaport.oci is heavy for a CLI's start-up
    from deltaport.oci import TransportOptions


# Top-level modules that only the hub extras install (pyproject: [project.optional-dependencies]
# hub, with fastapi's own starlette and pydantic): a device installs deltaport without them.
HUB_EXTRAS_MODULES = frozenset(
    {"fastapi", "starlette", "pydantic", "uvicorn", "sqlalchemy", "alembic", "psycopg", "aiosmtpd"}
)
# The ones every hub-side command needs; psycopg (PostgreSQL) and aiosmtpd (the demo's
# mail server) are checked by their callers.
HUB_EXTRAS_REQUIRED = ("fastapi", "uvicorn", "sqlalchemy", "alembic")
HUB_EXTRAS_MESSAGE = "this command needs the hub extras: pip install 'deltaport[hub]'"

PIPED_WIDTH = 1000  # columns of output that is not a terminal: tables and lines stay whole


def out_console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr): the terminal's width on a terminal, else
    PIPED_WIDTH, so piped output (a file, grep, a log) is not wrapped at 80 columns.

    Built per use: the stream may be redirected after import (tests, callers)."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH)


def package_version() -> str:
    """The installed deltaport's version, from the package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deltaport")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def print_version(value: bool) -> None:
    """--version: print ``deltaport X.Y.Z`` and exit (an eager option's callback)."""
    if value:
        typer.echo(f"deltaport {package_version()}")
        raise typer.Exit()


VersionOpt = Annotated[bool, typer.Option(
    "--version", callback=print_version, is_eager=True, expose_value=True,
    help="Print the version and exit.")]

CaFileOpt = Annotated[Path | None, typer.Option(
    "--ca-file", help="PEM bundle of extra CAs to trust for registries (self-signed).")]


def transport_options(insecure: bool, ca_file: Path | None = None) -> TransportOptions:
    """Transport options from the common command-line flags (--insecure, --ca-file)."""
    from deltaport.oci import TransportOptions

    return TransportOptions(insecure=insecure, ca_file=ca_file)


def plural(count: int, word: str, many: str | None = None) -> str:
    """(1, 'layer') -> '1 layer'; (3, 'layer') -> '3 layers'; MANY for irregular plurals."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def human_bytes(n: int | float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as link rates are quoted)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def hub_extras_installed() -> bool:
    """Whether the hub extras are importable (found, not imported: start-up stays quick)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in HUB_EXTRAS_REQUIRED)


def is_missing_hub_extra(exc: ImportError) -> bool:
    """Whether EXC says a module of the hub extras is not installed."""
    name = exc.name or ""
    return isinstance(exc, ModuleNotFoundError) and name.split(".")[0] in HUB_EXTRAS_MODULES
