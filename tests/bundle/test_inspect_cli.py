"""`deltaport bundle inspect`: the user's view of a bundle, through the real CLI process."""

from __future__ import annotations

import json
from pathlib import Path

from deltaport.bundle import generate_keypair
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
    assert doc["format_version"] == 2 and doc["size"] == info.size == path.stat().st_size
    assert doc["signer"] == pair.key_id and doc["payload_verified"] is True
    assert [m["name"] for m in doc["members"]] == [n for n, _ in DEFAULT_MEMBERS]
    table = deltaport_cli("bundle", "inspect", str(path))
    assert table.returncode == 0 and "layer-0.patch" in table.stdout


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
