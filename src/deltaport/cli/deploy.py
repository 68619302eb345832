"""`deltaport deploy MANIFEST`: the image-to-device pipeline from the command line.

Against the local database by default; with ``--hub URL --token …`` the hub runs the
pipeline (its registry access, its signing key, its bundle store) and answers with
the same JSON, so the table and ``--json`` output are the same either way.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress

from deltaport.cli.common import human_bytes
from deltaport.cli.fleet import (
    human_duration,
    human_rate,
    manifest_key_for,
    open_db,
    print_json,
    print_table,
    refuse_insecure_on_hub,
    settings,
    store_for,
)
from deltaport.cli.hub import HubTokenOpt, HubUrlOpt, remote_hub
from deltaport.cli.manifest import (
    EnvFileOpt,
    FromEnvOpt,
    OverrideOpt,
    ProfileOpt,
    VarOpt,
    read_manifest,
)
from deltaport.config import Settings
from deltaport.errors import UsageError

if TYPE_CHECKING:  # the pipeline (SQLAlchemy, delta) is imported when a deploy runs
    from sqlalchemy.engine import Engine

    from deltaport.hub.client import HubClient
    from deltaport.pipelines.image_to_device import DeployRequest, DeployResult


def _split_names(values: list[str] | None) -> tuple[str, ...]:
    return tuple(n.strip() for v in values or [] for n in v.split(",") if n.strip())


def _builder(s: Settings, insecure: bool) -> Any:
    """The real bundle builder, signing with the data dir's key when there is one."""
    from deltaport.bundle.keys import PRIVATE_KEY_NAME
    from deltaport.oci import TransportOptions
    from deltaport.pipelines.adapters import DeltaBundleBuilder
    from deltaport.trust.files import load_signer

    key_path = s.keys_dir / PRIVATE_KEY_NAME
    key = load_signer(key_path) if key_path.exists() else None  # with keys/keylist.json
    return DeltaBundleBuilder(TransportOptions(insecure=insecure), key, s.patch_cache_dir)


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
    var: VarOpt = None,
    env_file: EnvFileOpt = None,
    profile: ProfileOpt = None,
    from_env: FromEnvOpt = False,
    file_over: OverrideOpt = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Plain HTTP registries (local database only).")
    ] = False,
    priority: Annotated[
        int,
        typer.Option(
            "--priority", help="Download order on the devices: lower is more urgent (default 0)."
        ),
    ] = 0,
    unsigned: Annotated[
        bool,
        typer.Option("--unsigned", help="Send unsigned bundles when there is no signing key "
                     "(only devices without trusted keys take them)."),
    ] = False,
    retries: Annotated[int | None, typer.Option(
        "--retries", help="Automatic retries of a failed delivery (default: the hub's, 3)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """Send each device the smallest bundles that give it every image of MANIFEST."""
    from deltaport.fleet.queries import parse_labels
    from deltaport.pipelines.image_to_device import DeployRequest

    if not by or not email:
        raise UsageError("--by USER and --email ADDRESS are required")
    if retries is not None:
        from deltaport.pipelines.retry_policy import check_retries

        check_retries(retries)
    refuse_insecure_on_hub(hub, insecure)
    if hub and (profile or file_over):
        raise UsageError(
            "--profile and --file are not sent to a hub yet; deploy with the local database"
        )
    read = read_manifest(manifest, var, env_file, profile, from_env, file_over)  # checked here
    data, variables = read.data, read.variables
    for warning in read.manifest.warnings:
        typer.echo(f"warning: {warning}", err=True)
    request = DeployRequest(
        manifest=read.manifest,
        requested_by=by,
        contact_email=email,
        device_names=_split_names(devices),
        labels=parse_labels(label or []),
        priority=priority,
        unsigned=unsigned,
    )
    if unsigned:
        typer.echo("warning: --unsigned: bundles built without a signing key are refused by "
                   "every device that trusts a key", err=True)
    client = remote_hub(hub, token)
    if client is not None:
        with client:
            doc = _deploy_on_hub(client, request, data, variables, str(manifest), retries)
    else:
        doc = _deploy_here(ctx, request, insecure, progress=not as_json, retries=retries)
    _print(doc, as_json)


def _deploy_on_hub(
    client: HubClient,
    request: DeployRequest,
    data: bytes,
    variables: Mapping[str, str],
    manifest_name: str,
    retries: int | None = None,
) -> dict[str, Any]:
    """POST the manifest with only the values it may use (not this whole environment)."""
    from deltaport.manifests.interpolation import referenced_names

    text = data.decode("utf-8-sig")  # parse_manifest accepted it: UTF-8
    names = referenced_names(text)
    used = {k: v for k, v in variables.items() if k in names}
    return client.deploy(
        text,
        by=request.requested_by,
        email=request.contact_email,
        devices=request.device_names,
        labels=dict(request.labels),
        variables=used,
        manifest_name=manifest_name,
        priority=request.priority,
        unsigned=request.unsigned,
        retries=retries,
    )


def _deploy_here(
    ctx: typer.Context, request: DeployRequest, insecure: bool, *, progress: bool,
    retries: int | None = None,
) -> dict[str, Any]:
    """Run the pipeline on the local database: bundles built here, or (``builds =
    "workers"`` on PostgreSQL) enqueued for `deltaport worker`, returning at once."""
    from deltaport.fleet import audit
    from deltaport.fleet.db import session_scope
    from deltaport.jobs.queue import deploy_via_workers, uses_workers
    from deltaport.pipelines.adapters import SignatureRanker
    from deltaport.pipelines.image_to_device import deploy_result_doc

    s = settings(ctx)
    engine = open_db(s)
    try:
        if uses_workers(s):
            result = deploy_via_workers(engine, s, request, ranker=SignatureRanker(),
                                        builder=_builder(s, insecure), store=store_for(s),
                                        retries=retries)
        else:
            result = _build_here(s, engine, request, insecure, progress=progress,
                                 retries=retries)
        with session_scope(engine) as session:
            audit.record_local(session, audit.AuditAction.DEPLOY, result.deployment_id)
    finally:
        engine.dispose()
    return deploy_result_doc(result)


def _build_here(
    s: Settings, engine: Engine, request: DeployRequest, insecure: bool, *, progress: bool,
    retries: int | None = None,
) -> DeployResult:
    """The deploy pipeline in this process, with a progress bar while bundles build."""
    from deltaport.pipelines.adapters import SignatureRanker
    from deltaport.pipelines.image_to_device import deploy
    from deltaport.pipelines.retry import retries_recorder

    with (
        tempfile.TemporaryDirectory(prefix="deploy-", dir=_work_parent(s)) as work,
        Progress(transient=True, disable=not progress) as bar,
    ):
        task = bar.add_task("building bundles", total=None)
        return deploy(
            engine,
            request,
            ranker=SignatureRanker(),
            builder=_builder(s, insecure),
            store=store_for(s),
            work_dir=Path(work),
            progress=lambda done, total, _key: bar.update(task, completed=done, total=total),
            manifest_key=manifest_key_for(s),
            on_recorded=retries_recorder(retries),
        )


def _work_parent(s: Settings) -> Path:
    s.data_dir.mkdir(parents=True, exist_ok=True)
    return s.data_dir


def _print(doc: dict[str, Any], as_json: bool) -> None:
    """The deploy answer (``deploy_result_doc``) as JSON, or a table per device."""
    if as_json:
        print_json(doc)
        return
    if doc["state"] == "building":  # builds = "workers": nothing planned per device yet
        typer.echo(f"deployment {doc['deployment']} building: its patches are built by "
                   f"`deltaport worker`; see deltaport status deployment {doc['deployment']}")
        return
    print_table(
        f"deployment {doc['deployment']} ({doc['state']}, priority {doc.get('priority', 0)})",
        ["device", "images sent", "bundles", "size", "link", "est. time"],
        [
            [
                r["device"],
                ", ".join(r["sending"]) or "-",
                len(r["bundles"]),
                human_bytes(int(r["bytes"])),
                human_rate(r["link_rate_bps"]),
                human_duration(r["eta_seconds"]),
            ]
            for r in doc["devices"]
        ],
    )
    typer.echo(f"bundles built: {len(doc['built'])}, reused: {len(doc['reused'])}")
