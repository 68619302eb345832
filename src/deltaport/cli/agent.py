"""`deltaport agent run | status` — the device agent (docs/hub-api.md is its hub contract).

The agent modules (reconstruction, patching, bundles) are imported inside the
commands, so other ``deltaport`` commands do not pay for them at start-up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from deltaport.cli.common import plural

app = typer.Typer(help="The device agent: inbox, hub downloads, reconstruction, outbox.",
                  no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The agent.toml file.")]
REJECTED_SHOWN = 20  # newest rejected status messages `agent status` lists


def _setup_logging(verbose: bool) -> None:
    """Rich log lines on a terminal; piped (a log file, journald, `podman logs`), plain
    lines, one per record: not wrapped at 80 columns, not padded."""
    from rich.console import Console
    from rich.logging import RichHandler

    handler: logging.Handler
    console = Console(stderr=True)
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt,
                        handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command("run")
def run(
    config: ConfigOption,
    once: Annotated[bool, typer.Option("--once", help="Do one pass, then exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the agent until SIGTERM (or one pass with --once).

    With --once the exit code tells how the hub sync went: 0 done, else the code of the
    error that stopped it (11 token refused, 13 other refusal, 5 hub unreachable...).

    Example: deltaport agent run -c /etc/deltaport/agent.toml
    """
    from deltaport.agent import Agent, load_config

    _setup_logging(verbose)
    settings = load_config(config)
    with Agent(settings) as agent:
        if not once:
            agent.run()
            return
        report = agent.run_once()
        logging.getLogger("deltaport.agent").info(
            "pass: %d reconstructed, %d failed, %d deferred, %d inbox waiting, "
            "%d messages delivered, %d rejected by the hub%s", report.reconstructed,
            report.failed + report.inbox_failed, report.deferred, report.inbox_waiting,
            report.delivered, report.rejected,
            f", hub: {report.hub_error}" if report.hub_error else "")
    if report.hub_failure is not None:  # already logged as what it is
        raise typer.Exit(report.hub_failure.exit_code)


@app.command("status")
def status(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Outbox depth, messages the hub rejected, bundles waiting (safe while the agent runs)."""
    from deltaport.agent import AgentState, load_config
    from deltaport.agent.fetch import load_offer
    from deltaport.agent.inbox import candidates

    settings = load_config(config)
    state = AgentState(settings.database)
    try:
        counts = state.counts()
        rejected = state.rejected_messages(REJECTED_SHOWN)
    finally:
        state.close()
    downloads = settings.state_dir / "downloads"
    pending = sorted(
        (offer.target or offer.image_id, "complete" if (d / "bundle").exists() else "partial")
        for d in (downloads.iterdir() if downloads.is_dir() else [])
        if (offer := load_offer(d)) is not None
    )
    doc = {
        "device": settings.device,
        "outbox": {"pending": counts.messages_pending, "delivered": counts.messages_delivered,
                   "rejected": counts.messages_rejected,
                   "inventory_pending": counts.inventory_pending},
        "rejected": [
            {"message_id": r.message_id, "error": r.error, "rejected_at": r.rejected_at,
             "status": r.message.get("status"), "image_id": r.message.get("image_id"),
             "deployment": r.message.get("deployment")}
            for r in rejected
        ],
        "downloads": [{"target": t, "state": s} for t, s in pending],
        "inbox": [p.name for p in candidates(settings.inbox)],
    }
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"device:    {settings.device}")
    typer.echo(f"outbox:    {plural(counts.messages_pending, 'message')} pending, "
               f"{counts.messages_delivered} delivered, "
               f"{counts.messages_rejected} rejected by the hub"
               + (", inventory check-in pending" if counts.inventory_pending else ""))
    for r in rejected:
        typer.echo(f"  rejected {r.message_id} ({r.message.get('status')} "
                   f"{r.message.get('image_id')}): {r.error}")
    typer.echo(f"downloads: {len(pending)}" + "".join(f"\n  {t} ({s})" for t, s in pending))
    typer.echo(f"inbox:     {plural(len(doc['inbox']), 'file')}")
