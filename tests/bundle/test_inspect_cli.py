"""`deltaport bundle inspect`: the user's view of a bundle, through the real CLI process."""

from __future__ import annotations

import json
from pathlib import Path

from deltaport.bundle import FORMAT_VERSION, generate_keypair
from tests.bundle.helpers import DEFAULT_MEMBERS, build_bundle, deltaport_cli


def test_inspect_shows_signer_members_and_verifies(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "keys")
    from deltaport.bundle import load_private_key

    path = tmp_path / "b.bundle"
    info = build_bundle(path, key=load_private_key(pair.private_key_path))
    done = deltaport_cli(
        "bundle", "inspect", str(path), "--trust-key", str(pair.public_key_path), "--verify",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["size"] == info.size == path.stat().st_size
    assert doc["signer"] == pair.key_id and doc["payload_verified"] is True
    assert [m["name"] for m in doc["members"]] == [n for n, _ in DEFAULT_MEMBERS]
    table = deltaport_cli("bundle", "inspect", str(path))
    assert table.returncode == 0 and "layer-0.patch" in table.stdout
    text = " ".join(table.stdout.split())
    assert f"signed by {pair.key_id}: signature NOT checked" in text
    assert "unsigned or not checked" not in text
    checked = deltaport_cli("bundle", "inspect", str(path), "--trust-key",
                            str(pair.public_key_path))
    assert f"{pair.key_id} (signature verified)" in " ".join(checked.stdout.split())


def test_inspect_says_unsigned_and_shows_the_release(tmp_path: Path) -> None:
    from deltaport.bundle import BundleWriter, Release

    path = tmp_path / "b.bundle"
    with BundleWriter(path) as writer:
        writer.add_member("payload", b"x")
        writer.finish({"kind": "test"}, None, Release(5, 2_000_000_000))
    doc = json.loads(deltaport_cli("bundle", "inspect", str(path), "--json").stdout)
    assert doc["signatures_claimed"] == [] and doc["signature_checked"] is False
    assert doc["release"] == {"version": 5, "expires_at": 2_000_000_000}
    text = " ".join(deltaport_cli("bundle", "inspect", str(path)).stdout.split())
    assert "signer: unsigned" in text
    assert "release: version 5, expires 2033-05-18T03:33:20+00:00" in text


def test_inspect_fails_with_exit_codes_on_bad_bundles(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    build_bundle(path)
    other = generate_keypair(tmp_path / "other")
    unsigned = deltaport_cli(
        "bundle", "inspect", str(path), "--trust-key", str(other.public_key_path)
    )
    assert unsigned.returncode == 4 and "unsigned" in unsigned.stderr
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last member
    path.write_bytes(bytes(data))
    head_only = deltaport_cli("bundle", "inspect", str(path))
    assert head_only.returncode == 0  # the head is intact; members are not read
    damaged = deltaport_cli("bundle", "inspect", str(path), "--verify")
    assert damaged.returncode == 4 and "does not match" in damaged.stderr
    path.write_bytes(bytes(data[:-10]))
    assert deltaport_cli("bundle", "inspect", str(path)).returncode == 3
