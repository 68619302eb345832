"""Fleet commands at the root: global ``--data-dir`` / ``--db`` and ``activate``.

Also the helpers the other fleet command modules (device, status, event) share:
reading settings from the global options, opening the database, printing a table or
JSON, and :func:`on_hub_or_db`: the commands an operator endpoint also serves take
``--hub URL --token …`` (``deltaport.cli.hub.HubUrlOpt`` / ``HubTokenOpt``) and then
ask that hub instead of the local database; the hub answers with the very JSON the
local path builds, so both print the same. ``deltaport.cli.main`` registers
``activate_command`` and calls ``add_global_options``.

Every ``deltaport`` command imports this module, so SQLAlchemy, the migrations
(alembic), the store and the notifier are imported inside the helpers that use them,
not here: a command that does not open the database does not pay for them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from deltaport.cli.common import VersionOpt, human_bytes, out_console, plural
from deltaport.config import Settings, load_settings
from deltaport.errors import FormatError, StorageError, UsageError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from deltaport.hub.client import HubClient
    from deltaport.notify.email import Notifier
    from deltaport.storage.base import BundleStore

INPUT_MAX_BYTES = 64 * 1024 * 1024  # any document a fleet command reads from a file
T = TypeVar("T")


@dataclass(frozen=True)
class GlobalOptions:
    """The root command's options, kept on the click context for subcommands."""

    data_dir: Path | None
    db: str | None


def _root_callback(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="State folder (default: $DELTAPORT_HOME or per-user)."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="DELTAPORT_DB", help="Database URL (sqlite:///… or postgresql://…)."
        ),
    ] = None,
    version: VersionOpt = False,
) -> None:
    """Deploy container images to edge devices over slow, intermittent links.

    Start with `deltaport demo` to see a whole fleet deployment on this machine.
    """
    ctx.obj = GlobalOptions(data_dir=data_dir, db=db)


def settings(ctx: typer.Context) -> Settings:
    """Settings from the global options, the environment and the data dir's config.toml."""
    root = ctx.find_root().obj
    opts = root if isinstance(root, GlobalOptions) else GlobalOptions(None, None)
    return load_settings(opts.data_dir, opts.db, os.environ)


def open_db(s: Settings) -> Engine:
    """The database, migrated to the newest schema."""
    from deltaport.fleet.db import init_db

    return init_db(s.db_url, busy_timeout=s.db_busy_timeout)


@contextmanager
def db_session(ctx: typer.Context) -> Iterator[tuple[Settings, Engine, Session]]:
    """Settings, engine and one transaction, for commands that only touch the database."""
    from deltaport.fleet.db import session_scope

    s = settings(ctx)
    engine = open_db(s)
    try:
        with session_scope(engine) as session:
            yield s, engine, session
    finally:
        engine.dispose()


def on_hub_or_db(
    ctx: typer.Context,
    hub: str | None,
    token: str | None,
    remote: Callable[[HubClient], T],
    local: Callable[[Session], T],
) -> T:
    """REMOTE(client) when --hub is given, else LOCAL(session) in one transaction.

    Raises:
        UsageError: --hub without --token. Whatever the hub or the query raises.
    """
    client = hub_cli.remote_hub(hub, token)
    if client is not None:
        with client:
            return remote(client)
    with db_session(ctx) as (_, _, session):
        return local(session)


def refuse_insecure_on_hub(hub: str | None, insecure: bool) -> None:
    """--insecure is about the registry this process talks to; with --hub, the hub does.

    Raises:
        UsageError: both given (the hub's own ``registry_insecure`` setting decides).
    """
    if hub and insecure:
        raise UsageError(
            "--insecure does not apply with --hub: the hub reaches the registry itself "
            "(set registry_insecure in its hub.toml)"
        )


def store_for(s: Settings) -> BundleStore:
    """The bundle store: config ``store`` (s3://bucket/prefix), else the outbox folder."""
    from deltaport.storage import open_store

    return open_store(s.store, s.store_dir, s3_endpoint=s.s3_endpoint)


def manifest_key_for(s: Settings) -> Path:
    """The hub's manifest-signing key file (``DATA_DIR/keys/manifest.key``)."""
    from deltaport.pipelines.manifest_to_device import manifest_key_path

    return manifest_key_path(s.keys_dir)


def notifier_for(s: Settings) -> Notifier | None:
    """An SMTP notifier if config.toml has an [smtp] table."""
    from deltaport.notify.email import SmtpNotifier

    return SmtpNotifier(s.smtp) if s.smtp is not None else None


def read_input(path: Path, limit: int = INPUT_MAX_BYTES) -> bytes:
    """Read a user-given file (``-`` for stdin) up to LIMIT bytes.

    Raises:
        StorageError: unreadable. FormatError: larger than LIMIT.
    """
    try:
        if str(path) == "-":
            data: bytes = sys.stdin.buffer.read(limit + 1)
        else:
            with path.open("rb") as fh:
                data = fh.read(limit + 1)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if len(data) > limit:
        raise FormatError(f"{path} is larger than {human_bytes(limit)}")
    return data


def print_json(data: Any) -> None:
    """JSON on stdout (no rich markup)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout; no cell is ever cut short (IDs fold onto a second line
    on a narrow terminal, and piped output is not wrapped at all)."""
    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    out_console().print(table)


def human_rate(bps: int) -> str:
    """1000000 → '1.0 Mbit/s'."""
    for unit, size in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bps >= size:
            return f"{bps / size:.1f} {unit}"
    return f"{bps} bit/s"


def human_duration(seconds: float) -> str:
    """3725 → '1h 02m'."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


# --- root commands -----------------------------------------------------------


def activate_command(
    ctx: typer.Context,
    deployment: Annotated[str, typer.Argument(help="Deployment set id (d-…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: hub_cli.HubUrlOpt = None,
    token: hub_cli.HubTokenOpt = None,
) -> None:
    """Tell a deployment's devices to run it, once every image is on them.

    Publishes a signed desired manifest to each device (a new version each).

    Example: deltaport activate d-20261202T143000-1a2b
    """
    from deltaport.fleet import audit
    from deltaport.pipelines.manifest_to_device import activate, activation_doc

    def local(session: Session) -> dict[str, Any]:
        s = settings(ctx)
        result = activate(
            session, set_id=deployment, store=store_for(s), manifest_key=manifest_key_for(s)
        )
        audit.record_local(session, audit.AuditAction.ACTIVATE, deployment)
        return activation_doc(result)

    doc = on_hub_or_db(ctx, hub, token, lambda c: c.activate(deployment), local)
    if as_json:
        print_json(doc)
        return
    versions = doc.get("versions", {})
    print_table(
        f"deployment {doc['deployment']} activated",
        ["device", "version", "desired manifest"],
        [[d, versions.get(d, "-"), where] for d, where in sorted(doc["desired"].items())],
    )


def image_register_command(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="Image to register, e.g. docker://host/app:v1.")],
    name: Annotated[
        str | None, typer.Option("--name", help="NAME:TAG to record (default: from REF).")
    ] = None,
    build_id: Annotated[str | None, typer.Option("--build-id", help="CI build id.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who registers it.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Plain HTTP registry (local database only).")
    ] = False,
    prebuild: Annotated[
        bool,
        typer.Option(
            "--prebuild",
            help="Also build every layer's self-contained patch into the patch cache now "
            "(with --hub: in the background), so first-image bundles cost no compression.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: hub_cli.HubUrlOpt = None,
    token: hub_cli.HubTokenOpt = None,
) -> None:
    """Record an image that CI pushed, so it can be deployed.

    Reads the image from its registry and keeps its signature file (the index of its
    layers and files that later bundles are built against). With --hub, the hub reads
    the registry and keeps the signature file; without --by it records the operator
    the token belongs to.

    Example: deltaport image register docker://localhost:5000/app:v1 --build-id 1234
    """
    from deltaport.fleet import audit
    from deltaport.oci import TransportOptions
    from deltaport.pipelines.adapters import DeltaSignatureMaker, OciIdentityReader
    from deltaport.pipelines.image_to_device import register as register_image
    from deltaport.pipelines.image_to_device import registered_image_doc

    refuse_insecure_on_hub(hub, insecure)

    def local(session: Session) -> dict[str, Any]:
        image = register_image(
            session,
            reference=reference,
            name=name,
            reader=OciIdentityReader(TransportOptions(insecure=insecure)),
            signer=DeltaSignatureMaker(TransportOptions(insecure=insecure)),
            signatures_dir=settings(ctx).signatures_dir,
            build_id=build_id,
            registered_by=by,
        )
        doc = registered_image_doc(image)
        audit.record_local(session, audit.AuditAction.IMAGE_REGISTER, doc["image"])
        return doc

    def remote(client: HubClient) -> dict[str, Any]:
        return client.register_image(
            reference, name=name, build_id=build_id, by=by, prebuild=prebuild
        )

    doc = on_hub_or_db(ctx, hub, token, remote, local)
    if prebuild and not hub:  # after the database session: it takes a while
        doc["prebuilt_layers"] = _prebuild_here(ctx, reference, insecure)
    if as_json:
        print_json(doc)
        return
    typer.echo(f"registered {doc['image']} ({doc['image_id']}, {plural(doc['layers'], 'layer')})")
    if "prebuilt_layers" in doc:
        patches = plural(doc["prebuilt_layers"], "layer patch", "layer patches")
        typer.echo(f"prebuilt {patches} into the patch cache")
    elif doc.get("prebuild") == "started":
        typer.echo("the hub is prebuilding its layer patches in the background")


def _prebuild_here(ctx: typer.Context, reference: str, insecure: bool) -> int:
    """Build REFERENCE's self-contained layer patches into the data dir's patch cache."""
    from rich.console import Console

    from deltaport.oci import TransportOptions
    from deltaport.pipelines.adapters import DeltaBundleBuilder

    s = settings(ctx)
    builder = DeltaBundleBuilder(TransportOptions(insecure=insecure), None, s.patch_cache_dir)
    with Console(stderr=True).status(f"prebuilding the layer patches of {reference}"):
        return builder.prebuild(reference, s.data_dir)


def add_global_options(app: typer.Typer) -> None:
    """Give the root app the global --data-dir / --db options (a root callback)."""
    app.callback()(_root_callback)


# Last, because deltaport.cli.hub imports GlobalOptions and print_json from here: the
# names are then bound whichever of the two modules is imported first, and typer
# reads the HubUrlOpt / HubTokenOpt annotations above only when the CLI is assembled.
from deltaport.cli import hub as hub_cli  # noqa: E402
