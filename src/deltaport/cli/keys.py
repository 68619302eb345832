"""`deltaport keys …` — Ed25519 key pairs, and the root-signed key list that certifies them.

``generate`` and ``show`` handle key pairs; ``root init``, ``certify``, ``revoke``,
``renew`` and ``list`` make and read key lists (docs/trust.md). Each change to a key list
writes a new version to ``--out`` (atomically), signed by the offline root key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from deltaport.trust import KeyList

app = typer.Typer(
    help="Ed25519 keys that sign bundles and desired manifests, and the key lists that let "
    "devices trust a root key instead (docs/trust.md).",
    no_args_is_help=True,
)
root_app = typer.Typer(help="The offline root key that certifies signing keys.",
                       no_args_is_help=True)
app.add_typer(root_app, name="root")

ROOT_OPTION = typer.Option(
    "--root", help="The root private key (root.key from 'deltaport keys root init'); it signs "
    "the new key list. Keep it offline: plug it in only for this."
)
OUT_OPTION = typer.Option(
    "--out", help="Key list file to write (atomically). When it exists and no --previous is "
    "given, it is the previous list: the new one gets the next version."
)
PREVIOUS_OPTION = typer.Option(
    "--previous", help="The current key list, when it is not the --out file."
)
LIST_DAYS_OPTION = typer.Option(
    "--list-days", help="Days the new key list is valid. Devices refuse an expired list, so "
    "sign a new one (deltaport keys renew) before then.", min=1
)


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


@root_app.command("init")
def root_init(
    directory: Annotated[Path, typer.Argument(help="Folder for root.key and root.pub (created).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create the root key pair: root.key (keep offline) and root.pub (for devices).

    Devices are provisioned with root.pub alone (root_keys in agent.toml); they learn
    the signing keys from key lists the root signs (deltaport keys certify).

    Example: deltaport keys root init /media/offline-usb/deltaport-root
    """
    from deltaport.bundle.keys import generate_keypair

    pair = generate_keypair(directory, "root")
    if as_json:
        typer.echo(json.dumps({"key_id": pair.key_id, "private_key": str(pair.private_key_path),
                               "public_key": str(pair.public_key_path)}))
        return
    typer.echo(f"root key id: {pair.key_id}")
    typer.echo(f"private key: {pair.private_key_path}  (keep offline; signs key lists)")
    typer.echo(f"public key:  {pair.public_key_path}  (give to devices: root_keys in agent.toml)")


def _change_list(root_path: Path, out: Path, previous_path: Path | None,
                 change: Callable[[KeyList | None, int], KeyList]) -> KeyList:
    """Read the previous list (checked against the root), apply CHANGE, sign, write OUT."""
    from deltaport.bundle.keys import load_private_key
    from deltaport.trust import encode_envelope, parse_envelope
    from deltaport.trust.files import read_envelope, write_envelope

    root = load_private_key(root_path)
    source = previous_path or (out if out.exists() else None)
    previous = (parse_envelope(read_envelope(source), [root.public_key()])
                if source is not None else None)
    envelope = encode_envelope(change(previous, int(time.time())), [root])
    write_envelope(out, envelope)
    return parse_envelope(envelope, [root.public_key()])


def _print_list(key_list: KeyList, path: Path, as_json: bool) -> None:
    from deltaport.trust.policy import utc

    keys = [{"key_id": k.key_id, "roles": sorted(k.roles), "not_before": k.not_before,
             "not_after": k.not_after} for k in key_list.keys]
    if as_json:
        typer.echo(json.dumps({"path": str(path), "version": key_list.version,
                               "issued_at": key_list.issued_at,
                               "expires_at": key_list.expires_at, "signer": key_list.signer,
                               "keys": keys, "revoked": sorted(key_list.revoked)}))
        return
    typer.echo(f"key list v{key_list.version}: {path}  (expires {utc(key_list.expires_at)})")
    for k in key_list.keys:
        typer.echo(f"  {k.key_id}  {','.join(sorted(k.roles))}  "
                   f"{utc(k.not_before)} .. {utc(k.not_after)}")
    for kid in sorted(key_list.revoked):
        typer.echo(f"  {kid}  revoked")


@app.command("certify")
def certify_command(
    root: Annotated[Path, ROOT_OPTION],
    key: Annotated[Path, typer.Option("--key", help="Public key file of the signing key.")],
    out: Annotated[Path, OUT_OPTION],
    role: Annotated[
        list[str], typer.Option("--role", help="What the key may sign: bundle or manifest "
                                "(repeat for both).")
    ],
    days: Annotated[int, typer.Option("--days", help="Days the key is certified from now.",
                                      min=1)] = 90,
    previous: Annotated[Path | None, PREVIOUS_OPTION] = None,
    list_days: Annotated[int, LIST_DAYS_OPTION] = 365,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new list as JSON.")] = False,
) -> None:
    """Certify a signing key for a role, in a new version of the key list.

    The other keys of the previous list stay certified (those whose certification ended
    are dropped). To rotate: certify the new key, deploy with it, then revoke the old one.
    Put the file on the hub as DATA_DIR/keys/keylist.json: the hub embeds it in every
    bundle and desired manifest, so devices learn the new key without a visit.

    Example: deltaport keys certify --root /media/usb/root.key --key keys/deltaport.pub
    --role bundle --days 90 --out keys/keylist.json
    """
    from deltaport.bundle.keys import load_public_key
    from deltaport.errors import UsageError
    from deltaport.trust import Role
    from deltaport.trust.issue import certify

    try:
        roles = [Role(r) for r in role]
    except ValueError as exc:
        raise UsageError(f"--role must be {' or '.join(Role)}, got {exc}") from exc
    public = load_public_key(key)
    new = _change_list(root, out, previous, lambda prev, now: certify(
        prev, public, roles, now=now, days=days, list_days=list_days))
    _print_list(new, out, as_json)


@app.command("revoke")
def revoke_command(
    root: Annotated[Path, ROOT_OPTION],
    key: Annotated[str, typer.Argument(help="Key id (ed25519:...) or public key file to revoke.")],
    out: Annotated[Path, OUT_OPTION],
    previous: Annotated[Path | None, PREVIOUS_OPTION] = None,
    list_days: Annotated[int, LIST_DAYS_OPTION] = 365,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new list as JSON.")] = False,
) -> None:
    """Revoke a signing key for good, in a new version of the key list.

    A device that has seen the new list refuses anything the key signs from then on,
    even with an older list attached. Revoke a key that leaked, or an old one after
    a rotation.

    Example: deltaport keys revoke --root /media/usb/root.key keys/old.pub --out keys/keylist.json
    """
    from deltaport.bundle.keys import key_id, load_public_key
    from deltaport.trust.issue import revoke

    kid = key if key.startswith("ed25519:") else key_id(load_public_key(Path(key)))

    def change(prev: KeyList | None, now: int) -> KeyList:
        from deltaport.errors import UsageError

        if prev is None:
            raise UsageError(f"no key list to revoke {kid} from (give --previous or an "
                             "existing --out)")
        return revoke(prev, kid, now=now, list_days=list_days)

    _print_list(_change_list(root, out, previous, change), out, as_json)


@app.command("renew")
def renew_command(
    root: Annotated[Path, ROOT_OPTION],
    out: Annotated[Path, OUT_OPTION],
    previous: Annotated[Path | None, PREVIOUS_OPTION] = None,
    list_days: Annotated[int, LIST_DAYS_OPTION] = 365,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new list as JSON.")] = False,
) -> None:
    """Sign the same keys again as a new version with a new expiry.

    Devices refuse an expired key list (so a stale hub cannot freeze them on old
    software for ever); renew well before the list expires.

    Example: deltaport keys renew --root /media/usb/root.key --out keys/keylist.json
    """
    from deltaport.errors import UsageError
    from deltaport.trust.issue import renew

    def change(prev: KeyList | None, now: int) -> KeyList:
        if prev is None:
            raise UsageError("no key list to renew (give --previous or an existing --out)")
        return renew(prev, now=now, list_days=list_days)

    _print_list(_change_list(root, out, previous, change), out, as_json)


@app.command("list")
def list_command(
    key_list: Annotated[Path, typer.Argument(help="A key list file (keylist.json).")],
    root_key: Annotated[
        Path | None, typer.Option("--root-key", help="Check the list against this root "
                                  "public key (root.pub), as a device would.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """Show a key list: its version, expiry, certified keys and revoked ones.

    Example: deltaport keys list keys/keylist.json --root-key root.pub
    """
    from deltaport.bundle.keys import load_public_key
    from deltaport.trust import parse_envelope, read_unverified
    from deltaport.trust.files import read_envelope

    envelope = read_envelope(key_list)
    parsed = (parse_envelope(envelope, [load_public_key(root_key)]) if root_key is not None
              else read_unverified(envelope))
    _print_list(parsed, key_list, as_json)
