"""Signatures: who may read what, and that refusal happens before any member is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle import BundleReader, key_id, read_head
from deltaport.bundle.signing import SignatureEntry, encode_signatures, sign_index
from deltaport.errors import SignatureError, UsageError
from tests.bundle.helpers import build_bundle, reassemble, split_bundle, split_stored


@pytest.fixture(scope="module")
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def stranger() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _head_only(data: bytes) -> bytes:
    """A bundle cut right after its head: no member byte exists to be read."""
    index, sig, _ = split_bundle(data)
    return reassemble(index, b"", sig=sig)


def test_unsigned_allowed_only_without_trusted_keys(
    tmp_path: Path, signer: Ed25519PrivateKey
) -> None:
    path = tmp_path / "u.bundle"
    build_bundle(path)
    with BundleReader(path) as reader:
        reader.verify_all()
    with pytest.raises(SignatureError, match="unsigned"):
        BundleReader(path, trusted_keys=[signer.public_key()])


def test_signed_by_trusted_key_among_several(
    tmp_path: Path, signer: Ed25519PrivateKey, stranger: Ed25519PrivateKey
) -> None:
    path = tmp_path / "s.bundle"
    build_bundle(path, key=signer)
    keys = [stranger.public_key(), signer.public_key()]
    with BundleReader(path, trusted_keys=keys) as reader:
        assert reader.index.signer_key_id == key_id(signer.public_key())
        reader.verify_all()


def test_wrong_key_is_refused(
    tmp_path: Path, signer: Ed25519PrivateKey, stranger: Ed25519PrivateKey
) -> None:
    path = tmp_path / "w.bundle"
    build_bundle(path, key=stranger)
    with pytest.raises(SignatureError, match="none of which is trusted"):
        BundleReader(path, trusted_keys=[signer.public_key()])


def test_tampered_index_is_refused_before_any_member(
    tmp_path: Path, signer: Ed25519PrivateKey
) -> None:
    path = tmp_path / "t.bundle"
    build_bundle(path, key=signer, content={"target": "app:v1"})
    index, sig, payload = split_bundle(path.read_bytes())
    forged = index.replace(b"app:v1", b"app:v6")
    assert forged != index
    path.write_bytes(reassemble(forged, payload, sig=sig))
    with pytest.raises(SignatureError, match="does not verify"):
        BundleReader(path, trusted_keys=[signer.public_key()])
    # Even with no payload at all, the verdict is the signature one, not truncation:
    with pytest.raises(SignatureError):
        read_head(_head_only(path.read_bytes()), trusted_keys=[signer.public_key()])


def test_tampered_index_that_is_not_json_is_still_a_signature_error(
    tmp_path: Path, signer: Ed25519PrivateKey
) -> None:
    path = tmp_path / "t.bundle"
    build_bundle(path, key=signer)
    index, sig, payload = split_bundle(path.read_bytes())
    path.write_bytes(reassemble(b"{" + index[1:-1] + b"?", payload, sig=sig))
    with pytest.raises(SignatureError):
        BundleReader(path, trusted_keys=[signer.public_key()])


def test_tampered_signature_is_refused(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    path = tmp_path / "t.bundle"
    build_bundle(path, key=signer)
    index, _, payload = split_stored(path.read_bytes())
    entry = sign_index(index, signer)
    bad = bytearray(entry.signature)
    bad[10] ^= 1
    forged = encode_signatures([SignatureEntry(entry.key_id, bytes(bad))])
    path.write_bytes(reassemble(index, payload, sig=forged, stored=True))
    with pytest.raises(SignatureError, match="does not verify"):
        BundleReader(path, trusted_keys=[signer.public_key()])


def test_signature_swapped_from_another_bundle_is_refused(
    tmp_path: Path, signer: Ed25519PrivateKey
) -> None:
    build_bundle(tmp_path / "a.bundle", key=signer, content={"v": 1})
    build_bundle(tmp_path / "b.bundle", key=signer, content={"v": 2})
    _, sig_a, _ = split_bundle((tmp_path / "a.bundle").read_bytes())
    index_b, _, payload_b = split_bundle((tmp_path / "b.bundle").read_bytes())
    (tmp_path / "c.bundle").write_bytes(reassemble(index_b, payload_b, sig=sig_a))
    with pytest.raises(SignatureError):
        BundleReader(tmp_path / "c.bundle", trusted_keys=[signer.public_key()])


def test_non_canonical_base64_is_refused(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    path = tmp_path / "t.bundle"
    build_bundle(path, key=signer)
    index, sig, payload = split_bundle(path.read_bytes())
    doc = json.loads(sig)
    text = doc["signatures"][0]["signature"]
    # The last character before '==' carries 4 unused bits; setting one keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(text[-3]) ^ 1]
    doc["signatures"][0]["signature"] = text[:-3] + last + "=="
    forged = json.dumps(doc).encode()
    path.write_bytes(reassemble(index, payload, sig=forged))
    with pytest.raises(SignatureError, match="canonical"):
        BundleReader(path, trusted_keys=[signer.public_key()])


def test_untrusted_extra_signature_is_ignored(
    tmp_path: Path, signer: Ed25519PrivateKey, stranger: Ed25519PrivateKey
) -> None:
    path = tmp_path / "t.bundle"
    build_bundle(path, key=signer)
    index, _, payload = split_stored(path.read_bytes())
    both = encode_signatures([sign_index(index, stranger), sign_index(index, signer)])
    path.write_bytes(reassemble(index, payload, sig=both, stored=True))
    with BundleReader(path, trusted_keys=[signer.public_key()]) as reader:
        assert reader.index.signer_key_id == key_id(signer.public_key())
        reader.verify_all()


def test_optional_signature_mode(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    unsigned = tmp_path / "u.bundle"
    build_bundle(unsigned)
    with BundleReader(unsigned, trusted_keys=[signer.public_key()], require_signature=False) as r:
        assert r.index.signer_key_id is None
    signed = tmp_path / "s.bundle"
    build_bundle(signed, key=signer)
    index, sig, payload = split_bundle(signed.read_bytes())
    signed.write_bytes(reassemble(index.replace(b"test", b"tost"), payload, sig=sig))
    with pytest.raises(SignatureError):  # a bad signature by a trusted key still fails
        BundleReader(signed, trusted_keys=[signer.public_key()], require_signature=False)


def test_signature_required_without_keys_is_usage_error(tmp_path: Path) -> None:
    build_bundle(tmp_path / "u.bundle")
    with pytest.raises(UsageError):
        BundleReader(tmp_path / "u.bundle", require_signature=True)


def test_signed_bundle_readable_without_keys(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    build_bundle(tmp_path / "s.bundle", key=signer)
    with BundleReader(tmp_path / "s.bundle") as reader:
        assert reader.index.signer_key_id is None  # nothing was verified
        assert json.loads(reader.signature_bytes)["signatures"][0]["key_id"] == key_id(
            signer.public_key()
        )
