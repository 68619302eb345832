"""`deltaport status …`: what the fleet database knows, as tables or JSON.

Every subcommand runs against the local database, or with ``--hub URL --token …``
against a hub's operator API, which answers with the same JSON (both call
``deltaport.fleet.status``): the output is the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from deltaport.cli.common import out_console
from deltaport.cli.fleet import on_hub_or_db, print_json, print_table
from deltaport.cli.hub import HubTokenOpt, HubUrlOpt
from deltaport.fleet.states import ImageStatus

app = typer.Typer(help="Where deployments, devices and images stand.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

HISTORY_BAR_WIDTH = 40  # characters of the longest bar in `status history`
HISTORY_GAPS_MAX = 500  # buckets: fill empty ones between events up to this many rows
STATUS_MARKS = {  # order, bar character and colour of each status in `status history`
    ImageStatus.PRESENT.value: ("█", "green"),
    ImageStatus.IN_TRANSIT.value: ("▒", "yellow"),
    ImageStatus.FAILED.value: ("x", "red"),
    ImageStatus.REMOVED.value: ("-", "magenta"),
}
OTHER_MARK = ("?", "cyan")  # a status this version does not know (a newer hub)
RUNTIME_ID_CHARS = 12  # hex digits of an image ID shown in `status device`
AUDIT_LIMIT_MAX = 1000  # = deltaport.fleet.audit.AUDIT_LIMIT_MAX (not imported: start-up time)


@app.command("deployment")
def deployment(
    ctx: typer.Context,
    deployment_id: Annotated[str, typer.Argument(help="Deployment set id.")],
    as_json: JsonOpt = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """One deployment: its state and every device's images.

    Example: deltaport status deployment d-20261202T143000-1a2b
    """
    from deltaport.fleet import status as q

    data = on_hub_or_db(
        ctx,
        hub,
        token,
        lambda c: c.deployment(deployment_id),
        lambda s: q.deployment_status(s, deployment_id),
    )
    if as_json:
        print_json(data)
        return
    typer.echo(
        f"deployment {data['id']}: {data['state']} (by {data['requested_by']}, "
        f"priority {data.get('priority', 0)})"
    )
    if "builds" in data:  # patches built by workers (deltaport.jobs)
        typer.echo(f"patches built: {data['builds']['done']}/{data['builds']['total']}"
                   + (f"; error: {data['error']}" if data.get("error") else ""))
    print_table(
        f"deployment {data['id']}",
        ["device", *data["images"], "arrived", "activation", "version", "reason"],
        [
            [r["device"], *r["images"].values(), r["arrived_at"] or "-", *_activation_cells(r)]
            for r in data["devices"]
        ],
    )


def _activation_cells(row: dict[str, Any]) -> list[Any]:
    """activation state, version (reported / published), reason — for one device row."""
    act = row.get("activation") or {}
    reported, published = act.get("version"), act.get("published_version")
    version = f"v{reported or published}" if reported or published else "-"
    if published and reported and published != reported:
        version = f"v{reported} (published v{published})"
    return [act.get("state", "-"), version, act.get("reason") or ""]


@app.command("device")
def device(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Device name.")],
    as_json: JsonOpt = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """One device: its images, and what it should run next to what it runs.

    Example: deltaport status device edge-1
    """
    from deltaport.fleet import status as q

    data = on_hub_or_db(
        ctx, hub, token, lambda c: c.device(name), lambda s: q.device_status(s, name)
    )
    if as_json:
        print_json(data)
        return
    typer.echo(f"device {data['device']}: last seen {data['last_seen'] or 'never'}")
    print_table(
        f"images on {data['device']}",
        ["image", "status", "updated", "deployment", "reason"],
        [
            [r["image"], r["status"], r["updated_at"], r["deployment"], r["failure_reason"]]
            for r in data["images"]
        ],
    )
    runtime = data.get("runtime")
    if runtime is not None:
        _print_runtime(data["device"], runtime)


def _short(image_id: str | None) -> str:
    """sha256:0123456789ab… → sha256:0123456789ab (enough to tell images apart)."""
    return image_id[: len("sha256:") + RUNTIME_ID_CHARS] if image_id else "-"


def _mismatch(module: dict[str, Any]) -> str:
    """' ≠' when the module runs another image than the desired one."""
    both = module["desired_image_id"] and module["running_image_id"]
    return " ≠" if both and not module["matches"] else ""


def _print_runtime(device: str, runtime: dict[str, Any]) -> None:
    """The desired deployment, the running one, the last attempt, and the modules table."""
    desired, running, last = runtime["desired"], runtime["running"], runtime["last_attempt"]
    typer.echo(
        "desired: "
        + (f"{desired['deployment']} v{desired['version']}" if desired else "nothing published")
    )
    typer.echo(
        "running: "
        + (f"{running['id']} v{running['version']}" if running else "nothing reported")
        + f" (reported {runtime['reported_at'] or 'never'})"
    )
    if last:
        why = f": {last['reason']}" if last.get("reason") else ""
        typer.echo(f"last attempt: {last['id']} v{last['version']} {last['outcome']}{why}")
    print_table(
        f"modules on {device}: desired vs running",
        ["module", "desired image", "desired ID", "running ID", "status", "health",
         "exit", "restarts", "since"],
        [
            [
                m["module"],
                m["desired_image"] or "-",
                _short(m["desired_image_id"]),
                _short(m["running_image_id"]) + _mismatch(m),
                m["runtime_status"] or "-",
                m["health"] or "-",
                m["exit_code"],
                m["restart_count"],
                (m["started_at"] if m["runtime_status"] == "running" else m["exited_at"])
                or m["started_at"] or "-",
            ]
            for m in runtime["modules"]
        ],
    )


@app.command("image")
def image(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="NAME:TAG (or sha256:… image ID).")],
    as_json: JsonOpt = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """One image: which devices have it.

    Example: deltaport status image app:v1
    """
    from deltaport.fleet import status as q

    data = on_hub_or_db(
        ctx, hub, token, lambda c: c.image(reference), lambda s: q.image_status(s, reference)
    )
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
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000,
                                       help="Show at most this many.")] = 100,
    as_json: JsonOpt = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """Recent deployments, newest first."""
    from deltaport.fleet import status as q

    data = on_hub_or_db(
        ctx,
        hub,
        token,
        lambda c: c.deployments(by=by, limit=limit),
        lambda s: q.deployments(s, by=by, limit=limit),
    )
    if as_json:
        print_json(data)
        return
    cols = ["id", "state", "priority", "requested_by", "created_at", "finished_at"]
    print_table("deployments", cols, [[r[c] for c in cols] for r in data])


@app.command("history")
def history(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="24h, 7d, or an ISO time.")] = "24h",
    every: Annotated[str, typer.Option("--every", help="minute | hour | day")] = "hour",
    as_json: JsonOpt = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """Device-image status changes over time: counts per bucket, as a bar chart or JSON.

    Example: deltaport status history --since 7d --every day
    """
    from deltaport.fleet import status as q

    data = on_hub_or_db(
        ctx,
        hub,
        token,
        lambda c: c.history(since=since, every=every),
        lambda s: q.history(s, since=q.parse_since(since), every=every),
    )
    if as_json:
        print_json(data)
        return
    out_console().print(history_table(data, every))


def history_table(buckets: Sequence[dict[str, Any]], every: str) -> Table:
    """A table with one row per bucket: counts per new status, total, and a stacked bar.

    Empty buckets between the first and the last are shown (as zeros) so the bars
    read as a time axis, unless that would take more than HISTORY_GAPS_MAX rows.
    """
    from deltaport.fleet import status as q

    rows = fill_gaps(buckets, q.BUCKETS.get(every, 0))
    seen = {s for r in rows for s in r["counts"]}
    statuses = [s for s in STATUS_MARKS if s in seen] + sorted(seen - STATUS_MARKS.keys())
    widest = max((sum(r["counts"].values()) for r in rows), default=0)
    table = Table(title=f"status changes per {every}", caption=_legend(statuses))
    table.add_column("from")
    for s in statuses:
        table.add_column(s, justify="right", style=STATUS_MARKS.get(s, OTHER_MARK)[1])
    table.add_column("total", justify="right")
    table.add_column("", no_wrap=True)
    for r in rows:
        counts = [r["counts"].get(s, 0) for s in statuses]
        table.add_row(
            _bucket_label(r["start"], every),
            *(str(n) for n in counts),
            str(sum(counts)),
            _bar(list(zip(statuses, counts, strict=True)), widest),
        )
    if not rows:
        table.add_row("(no status changes)", *("" for _ in statuses), "0", "")
    return table


def fill_gaps(buckets: Sequence[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """BUCKETS with the empty ones between them added (zero counts), when few enough."""
    if len(buckets) < 2 or step <= 0:
        return list(buckets)
    starts = [datetime.fromisoformat(b["start"]) for b in buckets]
    span = int((starts[-1] - starts[0]).total_seconds()) // step + 1
    if span > HISTORY_GAPS_MAX:
        return list(buckets)
    by_start = dict(zip(starts, buckets, strict=True))
    out = []
    for i in range(span):
        at = starts[0] + timedelta(seconds=i * step)
        out.append(by_start.get(at, {"start": at.isoformat(), "counts": {}}))
    return out


def _bucket_label(start: str, every: str) -> str:
    at = datetime.fromisoformat(start)
    text = at.strftime("%Y-%m-%d" if every == "day" else "%Y-%m-%d %H:%M")
    return f"{text} {at.tzname()}" if at.tzname() else text


def _bar(parts: list[tuple[str, int]], widest: int) -> Text:
    """One stacked bar, HISTORY_BAR_WIDTH long for the busiest bucket (≥1 char per count>0).

    Each status has its own character as well as its colour, so the bars still read
    when the output is not a colour terminal (a pipe, a log).
    """
    bar = Text()
    for status, n in parts:
        if n and widest:
            mark, style = STATUS_MARKS.get(status, OTHER_MARK)
            bar.append(mark * max(1, round(n * HISTORY_BAR_WIDTH / widest)), style=style)
    return bar


def _legend(statuses: Sequence[str]) -> Text:
    legend = Text("bar: ")
    for s in statuses:
        mark, style = STATUS_MARKS.get(s, OTHER_MARK)
        legend.append(mark, style=style).append(f" {s}  ")
    return legend


@app.command("audit")
def audit_log(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", help="24h, 7d, or an ISO time.")
    ] = None,
    operator: Annotated[
        str | None, typer.Option("--operator", help="Only what NAME did.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=AUDIT_LIMIT_MAX,
                                       help="Show at most this many.")] = 100,
    as_json: JsonOpt = False,
    hub: HubUrlOpt = None,
    token: HubTokenOpt = None,
) -> None:
    """Who changed what, when, from where (the hub's operators, or local CLI users).

    Example: deltaport status audit --since 7d --operator alice
    """
    from deltaport.fleet import audit
    from deltaport.fleet import status as q

    data = on_hub_or_db(
        ctx,
        hub,
        token,
        lambda c: c.audit(since=since, operator=operator, limit=limit),
        lambda s: audit.entries(
            s,
            since=q.parse_since(since) if since is not None else None,
            operator=operator,
            limit=limit,
        ),
    )
    if as_json:
        print_json(data)
        return
    cols = ["at", "operator", "action", "target", "remote", "outcome"]
    print_table("audit log", cols, [[r[c] for c in cols] for r in data])


@app.command("webhooks")
def webhooks(
    ctx: typer.Context,
    replay: Annotated[
        str | None, typer.Option("--replay", help="Queue every delivery of EVENT_ID again.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000,
                                       help="Show at most this many.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Webhook and email deliveries of the outbox: state, attempts, last error (local db).

    Example: deltaport status webhooks --replay evt-0123456789abcdef01234567
    """
    from deltaport.cli.fleet import db_session
    from deltaport.notify import outbox

    with db_session(ctx) as (_, _, session):
        if replay is not None:
            typer.echo(f"queued {outbox.replay(session, replay)} deliveries of {replay}")
            return
        data = outbox.deliveries_doc(session, limit)
    if as_json:
        print_json(data)
        return
    cols = ["event", "kind", "channel", "target", "state", "attempts", "last_error"]
    print_table("deliveries", cols, [[r[c] for c in cols] for r in data])
