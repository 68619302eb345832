"""`deltaport event apply MESSAGE.json`: apply device status messages by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deltaport.cli.common import plural
from deltaport.cli.fleet import (
    manifest_key_for,
    notifier_for,
    open_db,
    print_json,
    print_table,
    read_input,
    settings,
    store_for,
)
from deltaport.errors import StateError

app = typer.Typer(help="Device status messages.", no_args_is_help=True)


@app.command("apply")
def apply(
    ctx: typer.Context,
    message: Annotated[Path, typer.Argument(help="Message JSON (one, or {messages: […]}).")],
    keep_going: Annotated[
        bool,
        typer.Option("--keep-going", help="Apply the good messages of a batch, report the bad."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Apply status messages as the hub would: state, emails, activation.

    Example: deltaport event apply message.json
    """
    from deltaport.fleet.documents import MESSAGE_MAX_BYTES, parse_status_messages
    from deltaport.pipelines.events import handle_status_messages

    messages = parse_status_messages(read_input(message, MESSAGE_MAX_BYTES))
    s = settings(ctx)
    engine = open_db(s)
    try:
        result = handle_status_messages(
            engine,
            messages,
            notifier=notifier_for(s),
            store=store_for(s),
            manifest_key=manifest_key_for(s),
            strict=not keep_going,
        )
    finally:
        engine.dispose()
    rows = [r.__dict__ for r in result.results]
    if as_json:
        print_json(
            {
                "results": rows,
                "completed": result.completed,
                "activated": result.activated,
                "emails_sent": result.emails_sent,
                "email_errors": result.email_errors,
            }
        )
    else:
        print_table(
            "status messages",
            ["message", "outcome", "status", "error"],
            [[r["message_id"], r["outcome"], r["status"], r["error"]] for r in rows],
        )
        for set_id in result.completed:
            typer.echo(
                f"deployment {set_id} complete"
                + (", activated" if set_id in result.activated else "")
            )
        for err in result.email_errors:
            typer.echo(f"warning: {err}", err=True)
    rejected = [r for r in result.results if r.outcome == "rejected"]
    if rejected:
        raise StateError(f"{plural(len(rejected), 'message')} rejected")
