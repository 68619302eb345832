"""`deltaport hub init | serve | token create`: set up and run the hub, mint operator tokens.

``--data-dir`` and ``--db`` may be given here or before the command (the global
options); here wins. The hub config file is ``--config``, else
``$DELTAPORT_HUB_CONFIG``, else ``<data dir>/hub.toml`` (see ``deltaport.hub.settings``).

Commands run against a remote hub (``--hub URL``) verify its https certificate
against ``$DELTAPORT_HUB_CA_FILE`` (else the system trust store); plain ``http://``
to another machine needs ``DELTAPORT_HUB_INSECURE=1``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deltaport.cli.fleet import GlobalOptions, print_json
from deltaport.errors import StateError, UsageError

if TYPE_CHECKING:  # imported when used: every command imports this module
    from deltaport.hub.client import HubClient

app = typer.Typer(help="The hub: HTTP API for devices and operators.", no_args_is_help=True)
token_app = typer.Typer(
    help="Operator tokens (stored hashed in the hub config).", no_args_is_help=True
)
app.add_typer(token_app, name="token")

DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="State folder (default: deltaport's --data-dir, else "
                 "$DELTAPORT_HOME, else ~/.local/share/deltaport)."),
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="Database URL (sqlite:///… | postgresql://…).")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Hub config file (default: DATA_DIR/hub.toml).")
]

# For commands that can run against a remote hub instead of the local database
# (deploy, activate, status): add these two options and call ``remote_hub``.
HubUrlOpt = Annotated[
    str | None,
    typer.Option("--hub", envvar="DELTAPORT_HUB", help="Hub URL: run against a remote hub."),
]
HubTokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="DELTAPORT_HUB_TOKEN", help="Operator token for --hub."),
]


def remote_hub(url: str | None, token: str | None) -> HubClient | None:
    """A client for --hub URL with --token, or None to use the local database.

    Raises:
        UsageError: --hub without --token.
    """
    if not url:
        return None
    if not token:
        raise UsageError("--hub needs --token (or DELTAPORT_HUB_TOKEN)")
    from deltaport.hub.client import HubClient

    ca_file = os.environ.get("DELTAPORT_HUB_CA_FILE")
    insecure = os.environ.get("DELTAPORT_HUB_INSECURE", "") in ("1", "true", "yes")
    return HubClient(url, token, ca_file=Path(ca_file) if ca_file else None, insecure=insecure)


def _globals(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root().obj
    return root if isinstance(root, GlobalOptions) else GlobalOptions(None, None)


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="The hub's data dir (created).")],
    self_signed: Annotated[str | None, typer.Option(
        "--self-signed", metavar="HOST[,HOST...]",
        help="Also make a starter CA and hub certificate for these names/IPs "
             "(plus localhost, 127.0.0.1, ::1).")] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Listen address (default 0.0.0.0 with --self-signed, else 127.0.0.1)."
    )] = None,
    port: Annotated[int, typer.Option("--port", help="Listen port.")] = 8443,
    operator: Annotated[str | None, typer.Option(
        "--operator", help="Also mint a first operator token for NAME (printed once).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was made as JSON.")] = False,
) -> None:
    """Write a starter DIRECTORY/hub.toml, the signing keys (DIRECTORY/keys/), and with
    --self-signed a starter CA and certificate (DIRECTORY/tls/); --operator NAME mints
    a first operator token.

    Nothing existing is overwritten (keys already there are kept). Give devices
    DIRECTORY/keys/deltaport.pub and manifest.pub, and devices and operators
    DIRECTORY/tls/ca.crt as their CA file. Example: deltaport hub init
    /var/lib/deltaport-hub --self-signed hub.example.org,192.0.2.10 --operator alice
    """
    from deltaport.hub.settings import HUB_CONFIG_NAME, add_operator_token, starter_config_text
    from deltaport.tlsutil import parse_hosts, starter_pair, write_new

    hosts = parse_hosts(self_signed) if self_signed is not None else None
    config = directory / HUB_CONFIG_NAME
    tls = directory / "tls"
    targets = [config, *([tls / "ca.crt", tls / "hub.crt", tls / "hub.key"] if hosts else [])]
    existing = [str(p) for p in targets if p.exists() or p.is_symlink()]
    if existing:
        raise StateError(f"refusing to overwrite {', '.join(existing)}")
    listen = host or ("0.0.0.0" if hosts else "127.0.0.1")
    files = [(config, starter_config_text(host=listen, port=port, tls=bool(hosts)).encode(),
              0o600)]
    if hosts:
        pair = starter_pair(hosts)
        files += [(tls / "hub.key", pair.key_pem, 0o600), (tls / "hub.crt", pair.cert_pem, 0o644),
                  (tls / "ca.crt", pair.ca_pem, 0o644)]
    written: list[Path] = []
    try:
        for path, data, mode in files:
            write_new(path, data, mode=mode)
            written.append(path)
    except BaseException:  # nothing half-written: remove what this run wrote
        for path in written:
            path.unlink(missing_ok=True)
        raise
    keys = _starter_keys(directory / "keys")
    token = add_operator_token(config, operator) if operator is not None else None
    if as_json:
        print_json({"config": str(config), "tls": str(tls) if hosts else None,
                    "keys": [str(k) for k in keys], "operator": operator, "token": token})
        return
    typer.echo(f"wrote {config}")
    if hosts:
        typer.echo(f"wrote {tls}/hub.crt and hub.key for {', '.join(hosts)}; "
                   f"devices and operators trust {tls / 'ca.crt'}")
    for key in keys:
        typer.echo(f"wrote {key} (and .pub: give it to devices)")
    if token is not None:
        typer.echo(f"operator {operator}: token (store it now, it is not shown again):")
        typer.echo(token)


def _starter_keys(keys_dir: Path) -> list[Path]:
    """The hub's bundle and manifest key pairs in KEYS_DIR, made where absent."""
    from deltaport.bundle.keys import KEY_PAIR_NAME, generate_keypair
    from deltaport.pipelines.manifest_to_device import MANIFEST_KEY_NAME

    made = []
    for name in (KEY_PAIR_NAME, MANIFEST_KEY_NAME.removesuffix(".key")):
        if not (keys_dir / f"{name}.key").exists():
            made.append(generate_keypair(keys_dir, name).private_key_path)
    return made


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port.")] = None,
    data_dir: DataDirOpt = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve the device and operator API until SIGTERM / Ctrl-C."""
    from deltaport.hub.server import serve as run
    from deltaport.hub.settings import load_hub_settings

    g = _globals(ctx)
    settings = load_hub_settings(
        config=config,
        data_dir=data_dir or g.data_dir,
        db_url=db or g.db,
        host=host,
        port=port,
        env=os.environ,
    )
    run(settings, log_level=log_level)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    operator: Annotated[str, typer.Option("--operator", help="Who the token is for.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    role: Annotated[str, typer.Option(
        "--role", help="viewer (only looks) or operator (also deploys, activates, retries)."
    )] = "operator",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Mint an operator token: printed once, its hash appended to the hub config file.

    A running hub reads the config file at start: restart it to accept the new token.
    """
    from deltaport.config import resolve_data_dir
    from deltaport.hub.settings import OperatorRole, add_operator_token, hub_config_path

    if role not in {r.value for r in OperatorRole}:
        raise UsageError(f"--role must be 'viewer' or 'operator', not {role!r}")
    root = resolve_data_dir(data_dir or _globals(ctx).data_dir, os.environ)
    path = hub_config_path(config, root, os.environ)
    token = add_operator_token(path, operator, OperatorRole(role))
    if as_json:
        print_json({"operator": operator, "role": role, "token": token, "config": str(path)})
        return
    typer.echo(f"operator {operator} ({role}): token added to {path} "
               "(store it now, it is not shown again):")
    typer.echo(token)
