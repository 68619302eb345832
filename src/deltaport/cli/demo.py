"""`deltaport demo` — the end-to-end demo on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def demo(
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Keep the demo's files in this folder.")
    ] = None,
) -> None:
    """Deploy v1 then v2 of a realistic image to a device registry as signed bundles."""
    from deltaport.demo.run import run_demo

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    run_demo(console, keep)
