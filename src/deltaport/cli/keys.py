"""`deltaport keys generate | show` — Ed25519 key pairs that sign bundles and desired manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Ed25519 keys that sign and verify bundles.", no_args_is_help=True)


@app.command("generate")
def generate(
    directory: Annotated[
        Path, typer.Argument(help="Folder for NAME.key and NAME.pub (created).")
    ],
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="Key pair name: 'deltaport' signs bundles, 'manifest' the hub's desired "
            "manifests (DATA_DIR/keys/manifest.key).",
        ),
    ] = "deltaport",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write a new key pair; never overwrites an existing key.

    The hub signs bundles with DATA_DIR/keys/deltaport.key; devices trust the matching
    .pub file.

    Example: deltaport keys generate ./keys
    """
    from deltaport.bundle.keys import generate_keypair

    pair = generate_keypair(directory, name)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "key_id": pair.key_id,
                    "private_key": str(pair.private_key_path),
                    "public_key": str(pair.public_key_path),
                }
            )
        )
        return
    typer.echo(f"key id:      {pair.key_id}")
    signs, trust = (
        ("desired manifests", "runtime.manifest_keys in agent.toml")
        if name == "manifest"
        else ("bundles", "--trust-key")
    )
    typer.echo(f"private key: {pair.private_key_path}  (keep secret; signs {signs})")
    typer.echo(f"public key:  {pair.public_key_path}  (give to devices: {trust})")


@app.command("show")
def show(
    key_file: Annotated[Path, typer.Argument(help="A public (or private) key PEM file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Print the key id of a key file, as bundles name their signer.

    Example: deltaport keys show ./keys/deltaport.pub
    """
    from deltaport.bundle.keys import key_id, load_private_key, load_public_key

    try:
        with open(key_file, "rb") as f:
            head = f.read(64)  # the PEM label; the loaders report unreadable files
    except OSError:
        head = b""
    if b"PRIVATE KEY" in head:
        public = load_private_key(key_file).public_key()
    else:
        public = load_public_key(key_file)
    kid = key_id(public)
    typer.echo(json.dumps({"key_id": kid, "path": str(key_file)}) if as_json else kid)
