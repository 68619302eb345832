"""Small helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported when called: deltaport.oci is heavy for a CLI's start-up
    from deltaport.oci import TransportOptions


CaFileOpt = Annotated[Path | None, typer.Option(
    "--ca-file", help="PEM bundle of extra CAs to trust for registries (self-signed).")]


def transport_options(insecure: bool, ca_file: Path | None = None) -> TransportOptions:
    """Transport options from the common command-line flags (--insecure, --ca-file)."""
    from deltaport.oci import TransportOptions

    return TransportOptions(insecure=insecure, ca_file=ca_file)


def human_bytes(n: int | float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as link rates are quoted)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
