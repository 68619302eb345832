"""`deltaport hub serve | token create`: run the hub, mint operator tokens.

``--data-dir`` and ``--db`` may be given here or before the command (the global
options); here wins. The hub config file is ``--config``, else
``$DELTAPORT_HUB_CONFIG``, else ``<data dir>/hub.toml`` (see ``deltaport.hub.settings``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deltaport.cli.fleet import GlobalOptions, print_json
from deltaport.errors import UsageError

if TYPE_CHECKING:  # imported when used: every command imports this module
    from deltaport.hub.client import HubClient

app = typer.Typer(help="The hub: HTTP API for devices and operators.", no_args_is_help=True)
token_app = typer.Typer(
    help="Operator tokens (stored hashed in the hub config).", no_args_is_help=True
)
app.add_typer(token_app, name="token")

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="State folder (default: global/--env).")
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

    return HubClient(url, token)


def _globals(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root().obj
    return root if isinstance(root, GlobalOptions) else GlobalOptions(None, None)


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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Mint an operator token: printed once, its hash appended to the hub config file.

    A running hub reads the config file at start: restart it to accept the new token.
    """
    from deltaport.config import resolve_data_dir
    from deltaport.hub.settings import add_operator_token, hub_config_path

    root = resolve_data_dir(data_dir or _globals(ctx).data_dir, os.environ)
    path = hub_config_path(config, root, os.environ)
    token = add_operator_token(path, operator)
    if as_json:
        print_json({"operator": operator, "token": token, "config": str(path)})
        return
    typer.echo(f"operator {operator}: token added to {path} (store it now, it is not shown again):")
    typer.echo(token)
