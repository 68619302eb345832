"""`deltaport demo` — a whole fleet deployment on this machine, on the embedded default."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from deltaport.errors import UsageError


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every process the demo started is stopped."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def demo(
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Keep every file of the run in this folder.")
    ] = None,
    devices: Annotated[int, typer.Option("--devices", help="How many devices (1-26).")] = 3,
    link_rate: Annotated[
        str, typer.Option("--link-rate", help="Each device's link: 1Mbit, 512kbit, …")
    ] = "1Mbit",
    image_scale: Annotated[
        float, typer.Option("--image-scale", hidden=True, help="Scale the demo images (tests).")
    ] = 1.0,
    timeout: Annotated[
        float, typer.Option("--timeout", hidden=True, help="Seconds each wait may take.")
    ] = 900.0,
    fault: Annotated[
        str | None, typer.Option("--fault", hidden=True, help="corrupt-bundle (tests).")
    ] = None,
    email: Annotated[
        bool, typer.Option("--email/--no-email", help="Run an SMTP server for the emails.")
    ] = True,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed where links drop.")] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the final state here as JSON.")
    ] = None,
) -> None:
    """Deploy v1, v2, then a broken v3 of a realistic image to a fleet over bad links.

    Starts a hub, registries, a container engine (podman) and an agent per device and
    their throttled, flaky links; every process it started is stopped on the way out.
    The devices run each version in real containers; the broken v3 fails its health
    gate and rolls back to v2. Exits non-zero unless every image arrived verified and
    every device ended running v2.
    """
    from dataclasses import replace

    from deltaport.demo.model import DEMO_SIZES, DemoOptions
    from deltaport.demo.run import run_demo
    from deltaport.fleet.queries import parse_link_rate

    if not 0 < image_scale <= 10:
        raise UsageError("--image-scale must be in (0, 10]")
    sizes = replace(DEMO_SIZES, base=int(DEMO_SIZES.base * image_scale),
                    runtime=int(DEMO_SIZES.runtime * image_scale))
    options = DemoOptions(keep=keep, devices=devices, link_bps=parse_link_rate(link_rate),
                          sizes=sizes, timeout=timeout, fault=fault, email=email, seed=seed,
                          report=report)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    _interrupt_on_sigterm()
    try:
        run_demo(console, options)
    except KeyboardInterrupt:
        # Every process the demo started is stopped by now (the context managers
        # unwound). Exit here: typer turns KeyboardInterrupt into a return value that
        # the entry point does not pass on.
        console.print("[bold red]interrupted[/]: every process the demo started is stopped")
        sys.exit(130)
