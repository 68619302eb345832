"""`deltaport bundle inspect` — what a bundle file holds, checked, without applying it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from deltaport.bundle.signing import SignatureDocument

app = typer.Typer(help="Look inside bundle files.", no_args_is_help=True)


def _signature_document(path: Path) -> SignatureDocument:
    """The bundle's signature document, signatures not checked.

    Raises:
        FormatError, TruncatedError, SignatureError: not a bundle head.
        StorageError: the file cannot be read.
    """
    from deltaport.bundle import BundleLimits, read_head, required_head_bytes
    from deltaport.bundle.format import HEAD_FIXED_SIZE
    from deltaport.bundle.signing import parse_signature_document
    from deltaport.errors import StorageError

    limits = BundleLimits()
    try:
        with open(path, "rb") as f:
            data = f.read(HEAD_FIXED_SIZE)
            need = required_head_bytes(data, limits)  # bounded by the head limits
            data += f.read(max(0, need - len(data)))
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    _, signature_bytes, _ = read_head(data, limits=limits)
    return parse_signature_document(signature_bytes, limits)


def claimed_signers(path: Path) -> list[str]:
    """Key ids the bundle's signature document names, signatures not checked."""
    return [e.key_id for e in _signature_document(path).entries]


def carried_key_list(path: Path) -> dict[str, Any] | None:
    """The key list the bundle carries (format 4, docs/trust.md), root signature not
    checked: its version, expiry, the root key ids claimed, certified and revoked keys.

    Raises:
        FormatError: the carried key list is malformed.
    """
    from deltaport.trust import read_unverified

    envelope = _signature_document(path).key_list
    if envelope is None:
        return None
    key_list = read_unverified(envelope)
    return {"version": key_list.version, "expires_at": key_list.expires_at,
            "signed_by": [str(e.get("key_id")) for e in envelope["signatures"]
                          if isinstance(e, dict)],
            "keys": [{"key_id": k.key_id, "roles": sorted(k.roles)} for k in key_list.keys],
            "revoked": sorted(key_list.revoked)}


def signer_text(doc: dict[str, Any]) -> str:
    """How the signature stands, in words: verified, claimed but not checked, or none."""
    if doc["signature_checked"]:
        return f"{doc['signer']} (signature verified)"
    claimed = doc["signatures_claimed"]
    if not claimed:
        return "unsigned"
    return (f"signed by {', '.join(claimed)}: signature NOT checked "
            "(give --trust-key to check it)")


def bundle_summary(path: Path, trust_keys: list[Path], verify: bool) -> dict[str, Any]:
    """The checked head of a bundle (and, with ``verify``, every chunk and member) as data.

    Raises:
        SignatureError, FormatError, TruncatedError, IntegrityError: see BundleReader.
    """
    from deltaport.bundle import BundleReader, load_public_key

    keys = [load_public_key(k) for k in trust_keys]
    with BundleReader(path, trusted_keys=keys or None) as reader:
        if verify:
            reader.verify_all()
        index = reader.index
        content = dict(index.content)
        return {
            "path": str(path),
            "format_version": index.format_version,
            "size": index.bundle_size,
            "head_size": index.payload_offset,
            "index_digest": index.index_digest,
            "signer": index.signer_key_id,
            "signature_checked": bool(keys),
            "signatures_claimed": claimed_signers(path),
            "key_list": carried_key_list(path),
            "release": (
                None if index.release is None
                else {"version": index.release.version,
                      "expires_at": index.release.expires_at}
            ),
            "payload_verified": verify,
            "chunk_size": index.chunk_size,
            "chunks": index.chunk_count,
            "members": [
                {"name": m.name, "offset": m.offset, "size": m.size, "digest": m.digest,
                 "media_type": m.media_type}
                for m in index.members
            ],
            "content": content,
        }


def _print_summary(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from deltaport.cli.common import human_bytes, out_console, plural

    console = out_console()
    signer = signer_text(doc)
    console.print(
        f"[bold]{doc['path']}[/]: bundle format {doc['format_version']}, "
        f"{human_bytes(doc['size'])} (head {human_bytes(doc['head_size'])}), "
        f"{plural(doc['chunks'], 'chunk')} of {human_bytes(doc['chunk_size'])}",
        highlight=False,
    )
    verified = "yes" if doc["payload_verified"] else "no"
    console.print(f"signer: {signer}; payload verified: {verified}")
    key_list = doc["key_list"]
    if key_list is not None:
        keys = ", ".join(f"{k['key_id']} ({'/'.join(k['roles'])})" for k in key_list["keys"])
        console.print(f"key list: v{key_list['version']} (root signature not checked here), "
                      f"certifies {keys or 'no key'}")
    release = doc["release"]
    if release is None:
        console.print("release: none (no version or expiry: replay protection does not apply)")
    else:
        from datetime import UTC, datetime

        expires = datetime.fromtimestamp(release["expires_at"], UTC).isoformat()
        console.print(f"release: version {release['version']}, expires {expires}")
    members = Table("member", "offset", "size", "media type", "digest")
    for m in doc["members"]:
        members.add_row(m["name"], str(m["offset"]), human_bytes(m["size"]), m["media_type"],
                        m["digest"])
    console.print(members)
    content = doc["content"]
    if content.get("kind") == "deltaport.image-delta":
        target = content.get("target", {})
        console.print(f"image delta to {target.get('name')} ({target.get('image_id')})")
        layers = Table("layer", "encoding", "size", "sources")
        for i, layer in enumerate(content.get("layers", [])):
            srcs = layer.get("sources", [layer.get("source")])
            layers.add_row(
                str(i), str(layer.get("kind", layer.get("encoding"))),
                human_bytes(int(layer.get("length", 0))),
                ", ".join(str(s) for s in srcs if s is not None),
            )
        console.print(layers)
        for i, diff_id in enumerate(content.get("sources", [])):
            console.print(f"  source {i}: {diff_id}")


@app.command("inspect")
def inspect(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    trust_key: Annotated[
        list[Path] | None,
        typer.Option("--trust-key", help="Public key whose signature is required (repeatable)."),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Also check every chunk and member digest.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Show a bundle's format, signer, members and content (the head is always checked)."""
    doc = bundle_summary(bundle, list(trust_key or []), verify)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print_summary(doc)
