"""`deltaport rollout …`: stage a manifest everywhere, activate it in waves (docs/hub-api.md).

Like `deltaport deploy`, against the local database by default, or a remote hub with
``--hub URL --token …``, which answers the same JSON: the table and ``--json`` output
are the same either way.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltaport.cli.deploy import _builder, _split_names, _work_parent
from deltaport.cli.fleet import (
    manifest_key_for,
    on_hub_or_db,
    open_db,
    print_json,
    print_table,
    refuse_insecure_on_hub,
    settings,
    store_for,
)
from deltaport.cli.hub import HubTokenOpt, HubUrlOpt, remote_hub
from deltaport.cli.manifest import EnvFileOpt, FromEnvOpt, VarOpt, read_manifest
from deltaport.config import Settings
from deltaport.errors import DeltaportError, UsageError
from deltaport.rollout.plan import DEFAULT_ERROR, DEFAULT_SUCCESS, DEFAULT_WAVES, RolloutAction

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from deltaport.notify.email import Email

app = typer.Typer(help="Rollouts: stage everywhere, then activate wave by wave.",
                  no_args_is_help=True)
RolloutIdArg = Annotated[str, typer.Argument(help="Rollout id (r-…).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("create")
def create_command(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(help="IoT Edge deployment or Compose file.")],
    devices: Annotated[list[str] | None, typer.Option(
        "--devices", help="Device names, comma separated; repeatable.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Select by k=v.")] = None,
    waves: Annotated[str, typer.Option(
        "--waves", help="Cumulative percentages of the devices per wave.")] = DEFAULT_WAVES,
    success: Annotated[str, typer.Option(
        "--success-threshold", help="Share of a wave active and healthy before the next."
    )] = DEFAULT_SUCCESS,
    error: Annotated[str, typer.Option(
        "--error-threshold", help="Failed devices (2% or 3) that pause the rollout."
    )] = DEFAULT_ERROR,
    approve_each: Annotated[bool, typer.Option(
        "--approve-each", help="Each next wave waits for `rollout approve`.")] = False,
    canary: Annotated[list[str] | None, typer.Option(
        "--canary", help="Device to activate first (repeatable).")] = None,
    retries: Annotated[int | None, typer.Option(
        "--retries", help="Automatic retries of a failed delivery (default: the hub's, 3).",
    )] = None,
    by: Annotated[str, typer.Option("--by", help="Who orders this rollout.")] = "",
    email: Annotated[str, typer.Option("--email", help="Contact email.")] = "",
    var: VarOpt = None,
    env_file: EnvFileOpt = None,
    from_env: FromEnvOpt = False,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Plain HTTP registries (local database only).")] = False,
    as_json: JsonOpt = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """Deliver MANIFEST to every device now; activate it wave by wave.

    Example: deltaport rollout create app.yaml --label site=north --waves 10%,100%
    --canary edge-07 --by alice --email alice@example.com
    """
    from deltaport.fleet.queries import parse_labels
    from deltaport.pipelines.image_to_device import DeployRequest
    from deltaport.pipelines.rollouts import parse_spec

    if not by or not email:
        raise UsageError("--by USER and --email ADDRESS are required")
    refuse_insecure_on_hub(hub, insecure)
    spec = parse_spec(waves=waves, success=success, error=error, approve_each=approve_each,
                      canaries=_split_names(canary), retries=retries)  # checked first
    read = read_manifest(manifest, var, env_file, None, from_env, None)
    client = remote_hub(hub, token)
    if client is not None:
        from deltaport.manifests.interpolation import referenced_names

        text = read.data.decode("utf-8-sig")
        used = {k: v for k, v in read.variables.items() if k in referenced_names(text)}
        body = {"manifest": text, "devices": list(_split_names(devices)),
                "labels": dict(parse_labels(label or [])), "by": by, "email": email,
                "vars": used, "manifest_name": str(manifest), "waves": waves,
                "success_threshold": success, "error_threshold": error,
                "approve_each": approve_each, "canaries": list(spec.canaries),
                **({"retries": retries} if retries is not None else {})}
        with client:
            doc = client.rollout_create(body)
    else:
        request = DeployRequest(manifest=read.manifest, requested_by=by, contact_email=email,
                                device_names=_split_names(devices),
                                labels=parse_labels(label or []))
        doc = _create_here(ctx, request, spec, insecure)
    _print(doc, as_json)


def _create_here(ctx: typer.Context, request: Any, spec: Any, insecure: bool) -> dict[str, Any]:
    from deltaport.pipelines.adapters import SignatureRanker
    from deltaport.pipelines.rollouts import deploy_in_waves

    s = settings(ctx)
    engine = open_db(s)
    try:
        with tempfile.TemporaryDirectory(prefix="rollout-", dir=_work_parent(s)) as work:
            doc, emails = deploy_in_waves(
                engine, request, spec, ranker=SignatureRanker(), builder=_builder(s, insecure),
                store=store_for(s), work_dir=Path(work), manifest_key=manifest_key_for(s))
    finally:
        engine.dispose()
    _send(s, emails)
    return doc


def _send(s: Settings, emails: Sequence[Email]) -> None:
    """Send the rollout's emails when SMTP is configured; a failure is a warning."""
    if s.smtp is None:
        return
    from deltaport.notify.email import SmtpNotifier

    notifier = SmtpNotifier(s.smtp)
    for message in emails:
        try:
            notifier.send(message)
        except DeltaportError as exc:
            typer.echo(f"warning: email to {message.to} not sent: {exc}", err=True)


@app.command("status")
def status_command(ctx: typer.Context, rollout: RolloutIdArg, as_json: JsonOpt = False,
                   hub: HubUrlOpt = None, token: HubTokenOpt = None) -> None:
    """Each wave of a rollout, its counts, and why the rollout waits."""
    from deltaport.pipelines import rollouts

    def local(session: Session) -> dict[str, Any]:
        return rollouts.rollout_doc(session, rollouts.get(session, rollout))

    _print(on_hub_or_db(ctx, hub, token, lambda c: c.rollout(rollout), local), as_json)


def _action(action: RolloutAction) -> Any:
    def command(ctx: typer.Context, rollout: RolloutIdArg, as_json: JsonOpt = False,
                hub: HubUrlOpt = None, token: HubTokenOpt = None) -> None:
        from deltaport.pipelines import rollouts

        emails: list[Email] = []

        def local(session: Session) -> dict[str, Any]:
            s = settings(ctx)
            done, mails = rollouts.act(session, rollout, action,
                                       rollouts.Activator(store_for(s), manifest_key_for(s)))
            emails.extend(mails)
            return rollouts.rollout_doc(session, done)

        doc = on_hub_or_db(ctx, hub, token, lambda c: c.rollout_action(rollout, action.value),
                           local)
        _send(settings(ctx), emails)
        _print(doc, as_json)

    command.__doc__ = {
        RolloutAction.PAUSE: "Pause a rollout: no further wave starts.",
        RolloutAction.RESUME: "Resume a paused rollout (its failures so far are accepted).",
        RolloutAction.APPROVE: "Approve the next wave of an --approve-each rollout.",
        RolloutAction.CANCEL: "Cancel a rollout (activated devices stay as they are).",
    }[action]
    return command


for _a in RolloutAction:
    app.command(_a.value)(_action(_a))


def _print(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(doc)
        return
    print_table(
        f"rollout {doc['rollout']} of {doc['deployment']}: {doc['state']} "
        f"(success {doc['success_threshold']}, error {doc['error_threshold']})",
        ["wave", "percent", "devices", "delivered", "active", "failed", "started"],
        [[w["wave"], f"{w['percent']}%", ", ".join(w["devices"]), w["delivered"], w["active"],
          w["failed"], "yes" if w["started"] else "no"] for w in doc["waves"]],
    )
    typer.echo(f"why: {doc['reason']}")
