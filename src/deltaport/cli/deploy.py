"""`deltaport deploy MANIFEST`: the image-to-device pipeline from the command line."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from deltaport.cli.fleet import (
    human_duration,
    human_rate,
    load_manifest,
    open_db,
    print_json,
    print_table,
    settings,
    store_for,
)
from deltaport.config import Settings
from deltaport.fleet.queries import parse_labels
from deltaport.pipelines.image_to_device import DeployRequest, DeployResult, deploy


def _split_names(values: list[str] | None) -> tuple[str, ...]:
    return tuple(n.strip() for v in values or [] for n in v.split(",") if n.strip())


def _builder(s: Settings, insecure: bool) -> Any:
    """The real bundle builder, signing with the data dir's key when there is one."""
    from deltaport.bundle.keys import PRIVATE_KEY_NAME, load_private_key
    from deltaport.oci import TransportOptions
    from deltaport.pipelines.adapters import DeltaBundleBuilder

    key_path = s.keys_dir / PRIVATE_KEY_NAME
    key = load_private_key(key_path) if key_path.exists() else None
    return DeltaBundleBuilder(TransportOptions(insecure=insecure), key)


def deploy_command(
    ctx: typer.Context,
    manifest: Annotated[
        Path, typer.Argument(help="IoT Edge deployment(.template).json or Compose file.")
    ],
    devices: Annotated[
        list[str] | None,
        typer.Option("--devices", help="Device names, comma separated; repeatable."),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Select devices by k=v.")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who orders this deployment.")] = "",
    email: Annotated[str, typer.Option("--email", help="Contact email for this deployment.")] = "",
    var: Annotated[list[str] | None, typer.Option("--var", help="NAME=VALUE for ${NAME}.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain HTTP registries.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Send each device the smallest bundles that give it every image of MANIFEST."""
    from deltaport.errors import UsageError
    from deltaport.pipelines.adapters import SignatureRanker

    if not by or not email:
        raise UsageError("--by USER and --email ADDRESS are required")
    request = DeployRequest(
        manifest=load_manifest(manifest, var or []),
        requested_by=by,
        contact_email=email,
        device_names=_split_names(devices),
        labels=parse_labels(label or []),
    )
    s = settings(ctx)
    engine = open_db(s)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="deploy-", dir=_work_parent(s)) as work,
            Progress(transient=True, disable=as_json) as bar,
        ):
            task = bar.add_task("building bundles", total=None)
            result = deploy(
                engine,
                request,
                ranker=SignatureRanker(),
                builder=_builder(s, insecure),
                store=store_for(s),
                work_dir=Path(work),
                progress=lambda done, total, _key: bar.update(task, completed=done, total=total),
            )
    finally:
        engine.dispose()
    _print(result, as_json)


def _work_parent(s: Settings) -> Path:
    s.data_dir.mkdir(parents=True, exist_ok=True)
    return s.data_dir


def _print(result: DeployResult, as_json: bool) -> None:
    rows: list[dict[str, Any]] = [
        {
            "device": d.device,
            "sending": list(d.sending),
            "present": list(d.present),
            "waiting": list(d.waiting),
            "bundles": list(d.bundles),
            "bytes": d.bytes,
            "link_rate_bps": d.link_rate_bps,
            "eta_seconds": round(d.eta_seconds, 1),
        }
        for d in result.devices
    ]
    if as_json:
        print_json(
            {
                "deployment": result.deployment_id,
                "state": result.state,
                "built": list(result.built),
                "reused": list(result.reused),
                "devices": rows,
            }
        )
        return
    print_table(
        f"deployment {result.deployment_id} ({result.state})",
        ["device", "images sent", "bundles", "bytes", "link", "est. time"],
        [
            [
                r["device"],
                ", ".join(r["sending"]) or "-",
                len(r["bundles"]),
                r["bytes"],
                human_rate(r["link_rate_bps"]),
                human_duration(r["eta_seconds"]),
            ]
            for r in rows
        ],
    )
    typer.echo(f"bundles built: {len(result.built)}, reused: {len(result.reused)}")
