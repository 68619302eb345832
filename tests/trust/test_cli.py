"""deltaport keys root init | certify | revoke | renew | list, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltaport.bundle import generate_keypair, load_public_key
from deltaport.trust import parse_envelope
from deltaport.trust.files import read_envelope
from tests.bundle.helpers import deltaport_cli


def _json(*args: str) -> Any:
    done = deltaport_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_rotation_with_the_cli(tmp_path: Path) -> None:
    root = _json("keys", "root", "init", str(tmp_path / "root"))
    old = generate_keypair(tmp_path / "hub")
    new = generate_keypair(tmp_path / "hub", "next")
    out = tmp_path / "keylist.json"
    key_root = str(tmp_path / "root" / "root.key")
    v1 = _json("keys", "certify", "--root", key_root, "--key", str(old.public_key_path),
               "--role", "bundle", "--role", "manifest", "--days", "30", "--out", str(out))
    assert v1["version"] == 1 and v1["signer"] == root["key_id"]
    v2 = _json("keys", "certify", "--root", key_root, "--key", str(new.public_key_path),
               "--role", "bundle", "--out", str(out))
    assert v2["version"] == 2
    assert {k["key_id"] for k in v2["keys"]} == {old.key_id, new.key_id}
    v3 = _json("keys", "revoke", "--root", key_root, str(old.public_key_path), "--out", str(out))
    assert v3["version"] == 3 and v3["revoked"] == [old.key_id]
    assert [k["key_id"] for k in v3["keys"]] == [new.key_id]
    v4 = _json("keys", "renew", "--root", key_root, "--out", str(out), "--list-days", "10")
    assert v4["version"] == 4 and v4["revoked"] == [old.key_id]
    # what a device would check: the file verifies against root.pub
    held = parse_envelope(read_envelope(out), [load_public_key(tmp_path / "root" / "root.pub")])
    assert held.version == 4
    shown = deltaport_cli("keys", "list", str(out), "--root-key", str(tmp_path / "root" /
                                                                       "root.pub"))
    assert shown.returncode == 0 and "key list v4" in shown.stdout and "revoked" in shown.stdout


def test_mistakes_fail_with_their_exit_code_and_leave_the_list_alone(tmp_path: Path) -> None:
    deltaport_cli("keys", "root", "init", str(tmp_path / "root"))
    other = _json("keys", "root", "init", str(tmp_path / "other"))
    signing = generate_keypair(tmp_path / "hub")
    out = tmp_path / "keylist.json"
    key_root = str(tmp_path / "root" / "root.key")
    _json("keys", "certify", "--root", key_root, "--key", str(signing.public_key_path),
          "--role", "bundle", "--out", str(out))
    before = out.read_bytes()
    wrong_role = deltaport_cli("keys", "certify", "--root", key_root, "--key",
                               str(signing.public_key_path), "--role", "root", "--out", str(out))
    assert wrong_role.returncode == 2 and "--role must be" in wrong_role.stderr
    twice = deltaport_cli("keys", "revoke", "--root", key_root, signing.key_id, "--out", str(out))
    assert twice.returncode == 0
    again = deltaport_cli("keys", "revoke", "--root", key_root, signing.key_id, "--out", str(out))
    assert again.returncode == 2 and "already revoked" in again.stderr
    # a root that did not sign the previous list cannot continue it
    before = out.read_bytes()
    stranger = deltaport_cli("keys", "renew", "--root", str(tmp_path / "other" / "root.key"),
                             "--out", str(out))
    assert stranger.returncode == 4 and "not a trusted root key" in stranger.stderr
    assert other["key_id"] in stranger.stderr
    assert out.read_bytes() == before
    listed = deltaport_cli("keys", "list", str(out), "--root-key",
                           str(tmp_path / "other" / "root.pub"))
    assert listed.returncode == 4


def test_bundle_inspect_shows_the_carried_key_list(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from deltaport.bundle import Signer
    from deltaport.trust import Role, encode_envelope
    from deltaport.trust.issue import certify
    from tests.bundle.helpers import build_bundle

    root, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    listed = certify(None, key.public_key(), [Role.BUNDLE], now=1_800_000_000, days=9)
    path = tmp_path / "b.bundle"
    build_bundle(path, key=Signer(key, encode_envelope(listed, [root])))  # type: ignore[arg-type]
    doc = _json("bundle", "inspect", str(path))
    assert doc["format_version"] == 4 and doc["key_list"]["version"] == 1
    assert doc["key_list"]["keys"] == [{"key_id": doc["signatures_claimed"][0],
                                        "roles": ["bundle"]}]
    text = deltaport_cli("bundle", "inspect", str(path))
    assert text.returncode == 0 and "key list: v1" in text.stdout
    plain = tmp_path / "plain.bundle"
    build_bundle(plain, key=key)
    assert _json("bundle", "inspect", str(plain))["key_list"] is None
