"""`deltaport status …`: what the fleet database knows, as tables or JSON."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from deltaport.cli.fleet import db_session, print_json, print_table
from deltaport.fleet import status as q

app = typer.Typer(help="Where deployments, devices and images stand.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("deployment")
def deployment(
    ctx: typer.Context,
    deployment_id: Annotated[str, typer.Argument(help="Deployment set id.")],
    as_json: JsonOpt = False,
) -> None:
    """One deployment: its state and every device's images."""
    with db_session(ctx) as (_, _, session):
        data = q.deployment_status(session, deployment_id)
    if as_json:
        print_json(data)
        return
    typer.echo(f"deployment {data['id']}: {data['state']} (by {data['requested_by']})")
    print_table(
        f"deployment {data['id']}",
        ["device", *data["images"], "arrived"],
        [[r["device"], *r["images"].values(), r["arrived_at"] or "-"] for r in data["devices"]],
    )


@app.command("device")
def device(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Device name.")],
    as_json: JsonOpt = False,
) -> None:
    """One device: its images and their status."""
    with db_session(ctx) as (_, _, session):
        data = q.device_status(session, name)
    if as_json:
        print_json(data)
        return
    typer.echo(f"device {data['device']}: last seen {data['last_seen'] or 'never'}")
    print_table(
        f"images on {name}",
        ["image", "status", "updated", "deployment", "reason"],
        [
            [r["image"], r["status"], r["updated_at"], r["deployment"], r["failure_reason"]]
            for r in data["images"]
        ],
    )


@app.command("image")
def image(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="NAME:TAG (or sha256:… image ID).")],
    as_json: JsonOpt = False,
) -> None:
    """One image: which devices have it."""
    with db_session(ctx) as (_, _, session):
        data = q.image_status(session, reference)
    if as_json:
        print_json(data)
        return
    typer.echo(f"{data['image']} {data['image_id']} counts={data['counts']}")
    print_table(
        data["image"], ["device", "status"], [[r["device"], r["status"]] for r in data["devices"]]
    )


@app.command("deployments")
def deployments(
    ctx: typer.Context,
    by: Annotated[str | None, typer.Option("--by", help="Only those ordered by USER.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Recent deployments, newest first."""
    with db_session(ctx) as (_, _, session):
        data = q.deployments(session, by=by, limit=limit)
    if as_json:
        print_json(data)
        return
    cols = ["id", "state", "requested_by", "created_at", "finished_at"]
    print_table("deployments", cols, [[r[c] for c in cols] for r in data])


@app.command("history")
def history(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="24h, 7d, or an ISO time.")] = "24h",
    every: Annotated[str, typer.Option("--every", help="minute | hour | day")] = "hour",
    as_json: JsonOpt = False,
) -> None:
    """Device-image status changes over time (counts per bucket)."""
    with db_session(ctx) as (_, _, session):
        data = q.history(session, since=q.parse_since(since), every=every)
    if as_json:
        print_json(data)
        return
    statuses = sorted({s for r in data for s in r["counts"]})
    rows: list[list[Any]] = [[r["start"], *(r["counts"].get(s, 0) for s in statuses)] for r in data]
    print_table(f"status changes per {every}", ["from", *statuses], rows)
