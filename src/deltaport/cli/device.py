"""`deltaport device …`: add devices, record what they report, list them.

``device add`` and ``device label`` also run against a hub (``--hub URL --token …``),
which answers with the same JSON; ``report`` and ``list`` work on the local database only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltaport.cli.common import plural
from deltaport.cli.fleet import (
    db_session,
    human_rate,
    on_hub_or_db,
    print_json,
    print_table,
    read_input,
)
from deltaport.cli.hub import HubTokenOpt, HubUrlOpt

if TYPE_CHECKING:  # the fleet modules (SQLAlchemy) are imported inside the commands
    from sqlalchemy.orm import Session

    from deltaport.hub.client import HubClient

app = typer.Typer(help="Edge devices: add them, record what they have.", no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Device name (letters, digits, . _ -).")],
    link_rate: Annotated[
        str, typer.Option("--link-rate", help="Link rate, e.g. 1Mbit, 512kbit.")
    ] = "1Mbit",
    label: Annotated[list[str] | None, typer.Option("--label", help="k=v; repeatable.")] = None,
    local_registry: Annotated[
        str, typer.Option("--local-registry", help="The device's local registry host:port.")
    ] = "localhost:5000",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """Add a device and print its token (shown once; only its hash is stored).

    Example: deltaport device add edge-1 --link-rate 512kbit --label site=north
    """
    from deltaport.fleet import audit, queries

    rate = queries.parse_link_rate(link_rate)  # checked here either way
    labels = queries.parse_labels(label or [])

    def local(session: Session) -> dict[str, Any]:
        device, device_token = queries.add_device(
            session, name=name, link_rate_bps=rate, labels=labels, local_registry=local_registry
        )
        audit.record_local(session, audit.AuditAction.DEVICE_ADD, device.name)
        return {
            "device": device.name,
            "token": device_token,
            "link_rate_bps": rate,
            "labels": labels,
        }

    def remote(client: HubClient) -> dict[str, Any]:
        return client.add_device(
            name, link_rate=link_rate, labels=labels, local_registry=local_registry
        )

    doc = on_hub_or_db(ctx, hub, token, remote, local)
    if as_json:
        print_json(doc)
        return
    typer.echo(f"device {doc['device']} added; its token (store it now, it is not shown again):")
    typer.echo(doc["token"])


@app.command("report")
def report(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Device name.")],
    inventory: Annotated[Path, typer.Argument(help="Inventory JSON file ('-' for stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Record what a device says it has (the same document the agent sends).

    Example: deltaport device report edge-1 inventory.json
    """
    from deltaport.fleet import device_images, queries
    from deltaport.fleet.documents import INVENTORY_MAX_BYTES, parse_inventory

    inv = parse_inventory(read_input(inventory, INVENTORY_MAX_BYTES))
    with db_session(ctx) as (_, _, session):
        device = queries.get_device(session, name)
        change = device_images.record_inventory(session, device=device, inventory=inv)
    if as_json:
        print_json({"device": name, "present": change.now_present, "removed": change.now_removed})
        return
    typer.echo(
        f"{name}: {plural(len(inv.images), 'image')} reported, "
        f"{len(change.now_present)} newly present, {len(change.now_removed)} removed"
    )


@app.command("list")
def list_devices(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List devices with their link rate, labels and last contact."""
    from sqlalchemy import select

    from deltaport.fleet.models import Device

    with db_session(ctx) as (_, _, session):
        devices = list(session.scalars(select(Device).order_by(Device.name)))
        rows: list[dict[str, Any]] = [
            {
                "device": d.name,
                "link_rate_bps": d.link_rate_bps,
                "labels": d.labels,
                "last_seen": d.last_seen.isoformat() if d.last_seen else None,
            }
            for d in devices
        ]
    if as_json:
        print_json(rows)
        return
    print_table(
        "devices",
        ["device", "link rate", "labels", "last seen"],
        [
            [
                r["device"],
                human_rate(r["link_rate_bps"]),
                ",".join(f"{k}={v}" for k, v in r["labels"].items()),
                r["last_seen"] or "never",
            ]
            for r in rows
        ],
    )


@app.command("label")
def label_device(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Device name.")],
    labels: Annotated[list[str] | None, typer.Argument(help="k=v to set; repeatable.")] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="Label key to remove; repeatable.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """Set or remove a device's labels (local database, or a hub with --hub).

    Example: deltaport device label edge-07 'maintenance-window=Mon-Fri 02:00-04:00 Europe/Berlin'
    (a maintenance window is checked here, and signed into the device's next desired manifest)
    """
    from deltaport.fleet import queries
    from deltaport.pipelines.device_labels import checked, relabel

    wanted, gone = checked(queries.parse_labels(labels or []), remove or [])

    def local(session: Session) -> dict[str, Any]:
        return relabel(session, name, wanted, gone)

    def remote(client: HubClient) -> dict[str, Any]:
        return client.label_device(name, wanted, gone)

    doc = on_hub_or_db(ctx, hub, token, remote, local)
    if as_json:
        print_json(doc)
        return
    shown = ", ".join(f"{k}={v}" for k, v in sorted(doc["labels"].items())) or "none"
    typer.echo(f"device {name}: labels {shown}")
