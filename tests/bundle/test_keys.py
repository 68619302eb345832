"""Ed25519 key files, and the `deltaport keys` commands run as a real process."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from typer.testing import CliRunner

from deltaport.bundle import generate_keypair, key_id, load_private_key, load_public_key
from deltaport.cli import keys as keys_cli
from deltaport.cli.main import COMMAND_GROUPS
from deltaport.errors import FormatError, StorageError, UsageError
from tests.bundle.helpers import deltaport_cli


def test_generate_writes_a_usable_pair(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "keys")
    assert pair.private_key_path.name == "deltaport.key"
    assert pair.public_key_path.name == "deltaport.pub"
    assert stat.S_IMODE(pair.private_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert pair.private_key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    private = load_private_key(pair.private_key_path)
    public = load_public_key(pair.public_key_path)
    assert key_id(private.public_key()) == key_id(public) == pair.key_id
    public.verify(private.sign(b"m"), b"m")
    assert sorted(os.listdir(tmp_path / "keys")) == ["deltaport.key", "deltaport.pub"]


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path)
    before = pair.private_key_path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        generate_keypair(tmp_path)
    pair.public_key_path.unlink()  # even half a pair is kept
    with pytest.raises(UsageError):
        generate_keypair(tmp_path)
    assert pair.private_key_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["deltaport.key"]


def test_key_id_format_is_stable() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    zero = Ed25519PublicKey.from_public_bytes(bytes(32))
    # sha256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20
    assert key_id(zero) == "ed25519:66687aadf862bd776c8fc18b8e9f8e20"


def test_loading_bad_key_files(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        load_public_key(tmp_path / "missing.pub")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(FormatError):
        load_private_key(junk)
    with pytest.raises(FormatError):
        load_public_key(junk)
    big = tmp_path / "big.pem"
    big.write_bytes(b"-" * 100_000)
    with pytest.raises(FormatError, match="larger"):
        load_public_key(big)
    ec = generate_private_key(SECP256R1())
    ec_file = tmp_path / "ec.key"
    ec_file.write_bytes(
        ec.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(FormatError, match="Ed25519"):
        load_private_key(ec_file)
    pair = generate_keypair(tmp_path / "k")
    with pytest.raises(FormatError):
        load_public_key(pair.private_key_path)  # a private key where a public one goes


def test_keys_group_is_registered() -> None:
    assert ("keys", "keys") in COMMAND_GROUPS


def test_cli_generate_then_refuse(tmp_path: Path) -> None:
    target = tmp_path / "signing"
    first = deltaport_cli("keys", "generate", str(target))
    assert first.returncode == 0, first.stderr
    private, public = target / "deltaport.key", target / "deltaport.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    expected_id = key_id(load_public_key(public))
    assert expected_id in first.stdout
    assert str(private) in first.stdout and str(public) in first.stdout
    key_before = private.read_bytes()

    second = deltaport_cli("keys", "generate", str(target))
    assert second.returncode == UsageError.exit_code
    assert "already exists" in second.stderr
    assert private.read_bytes() == key_before

    shown = deltaport_cli("keys", "show", str(public), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["key_id"] == expected_id


def test_cli_in_process_json_show_private_and_unwritable(tmp_path: Path) -> None:
    """The remaining command paths, in-process (a process start costs seconds here)."""
    runner = CliRunner()
    made = runner.invoke(keys_cli.app, ["generate", str(tmp_path / "j"), "--json"])
    assert made.exit_code == 0, made.output
    made_id = json.loads(made.stdout)["key_id"]
    shown = runner.invoke(keys_cli.app, ["show", str(tmp_path / "j" / "deltaport.key")])
    assert shown.exit_code == 0 and shown.stdout.strip() == made_id
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    failed = runner.invoke(keys_cli.app, ["generate", str(blocker / "sub")])
    assert isinstance(failed.exception, StorageError)
