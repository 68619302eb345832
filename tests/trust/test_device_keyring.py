"""The device keyring over a real agent state file: bundles read through it, desired
manifests decoded through it, the agent config's root_keys, the hub's signer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.agent.config import config_from_mapping
from deltaport.agent.keyring import TRUST_DOMAIN, DeviceKeyring, current_keys, keys_for
from deltaport.agent.state import AgentState
from deltaport.bundle import BundleReader, Signer, generate_keypair, key_id, load_private_key
from deltaport.bundle.head import encode_index_bytes
from deltaport.bundle.signing import encode_signatures, sign_index
from deltaport.desired import decode_envelope, encode_envelope
from deltaport.errors import SignatureError, UsageError
from deltaport.trust import KeyList, Role
from deltaport.trust import encode_envelope as sign_key_list
from deltaport.trust.files import KEY_LIST_FILE_NAME, load_signer, write_envelope
from deltaport.trust.issue import certify
from tests.agent.runtime.fakes import iotedge_state
from tests.bundle.helpers import build_bundle, reassemble, split_bundle

ROOT = Ed25519PrivateKey.generate()
A, B = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
NOW = int(time.time())
V1 = certify(None, A.public_key(), [Role.BUNDLE], now=NOW, days=90)
V2 = certify(V1, B.public_key(), [Role.MANIFEST], now=NOW, days=90)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[AgentState]:
    db = AgentState(tmp_path / "agent.db")
    yield db
    db.close()


def _ring(state: AgentState, role: Role = Role.BUNDLE) -> DeviceKeyring:
    return DeviceKeyring(roots=[ROOT.public_key()], state=state, role=role)


def test_a_bundle_carrying_a_key_list_is_read_through_the_keyring(
        tmp_path: Path, state: AgentState) -> None:
    path = tmp_path / "b.bundle"
    info = build_bundle(path, key=Signer(A, sign_key_list(V1, [ROOT])))  # type: ignore[arg-type]
    assert info.signer_key_id == key_id(A.public_key())
    with BundleReader(path, trusted_keys=_ring(state)) as reader:
        assert reader.index.format_version == 4
        assert reader.index.signer_key_id == key_id(A.public_key())
        assert reader.index.trust_domain == TRUST_DOMAIN  # releases shared across rotations
        reader.verify_all()
    assert state.key_list() is not None and state.key_list()[0] == 1  # type: ignore[index]
    # once held, the list need not travel again; pinned-key readers still read the bundle
    plain = tmp_path / "plain.bundle"
    build_bundle(plain, key=A)
    with BundleReader(plain, trusted_keys=_ring(state)) as reader:
        assert reader.index.signer_key_id == key_id(A.public_key())
    with BundleReader(path, trusted_keys=[A.public_key()]) as reader:
        assert reader.index.trust_domain is None


def test_a_manifest_key_cannot_sign_bundles(tmp_path: Path, state: AgentState) -> None:
    path = tmp_path / "b.bundle"
    build_bundle(path, key=Signer(B, sign_key_list(V2, [ROOT])))  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="for manifest, not bundle"):
        BundleReader(path, trusted_keys=_ring(state))


def test_a_format_3_bundle_may_not_carry_a_key_list(tmp_path: Path, state: AgentState) -> None:
    path = tmp_path / "b.bundle"
    build_bundle(path, key=A)
    index, _, payload = split_bundle(path.read_bytes())
    index = index.replace(b'"format_version":4', b'"format_version":3')
    # sign again, now with a key list, and mark the fixed head as format 3
    stored = encode_index_bytes(index)
    sig = encode_signatures([sign_index(stored, A)], sign_key_list(V1, [ROOT]))
    data = reassemble(stored, payload, sig=sig, stored=True)
    data = data[:8] + (3).to_bytes(2, "big") + data[10:]
    path.write_bytes(data)
    with pytest.raises(SignatureError, match="format-3 bundle may not carry a key_list"):
        BundleReader(path, trusted_keys=_ring(state))


def test_pinned_keys_stay_trusted_beside_the_keyring(tmp_path: Path, state: AgentState) -> None:
    ring = DeviceKeyring(roots=[ROOT.public_key()], state=state, role=Role.BUNDLE,
                         pinned=[B.public_key()])
    path = tmp_path / "b.bundle"
    build_bundle(path, key=B)
    with BundleReader(path, trusted_keys=ring) as reader:
        assert reader.index.signer_key_id == key_id(B.public_key())
        assert reader.index.trust_domain is None  # a pinned key counts releases on its own
    assert [key_id(k) for k in current_keys(ring)] == [key_id(B.public_key())]
    assert keys_for([], state, Role.BUNDLE, [A.public_key()]) == [A.public_key()]


def test_a_desired_manifest_carries_the_key_list_of_its_signer(state: AgentState) -> None:
    desired = iotedge_state("dev-1", 3, {"app": "sha256:" + "ab" * 32})
    envelope = encode_envelope(desired, [Signer(B, sign_key_list(V2, [ROOT]))])
    got = decode_envelope(envelope, _ring(state, Role.MANIFEST), device="dev-1")
    assert got.signer == key_id(B.public_key()) and got.version == 3
    assert state.key_list()[0] == 2  # type: ignore[index]
    # the bundle key A may not sign desired manifests
    with pytest.raises(SignatureError, match="for bundle, not manifest"):
        decode_envelope(encode_envelope(desired, [A]), _ring(state, Role.MANIFEST),
                        device="dev-1")
    # pinned manifest keys work as before
    assert decode_envelope(encode_envelope(desired, [A]), [A.public_key()],
                           device="dev-1").signer == key_id(A.public_key())


def test_a_keyring_with_no_list_refuses_with_the_reason(state: AgentState) -> None:
    desired = iotedge_state("dev-1", 1, {"app": "sha256:" + "ab" * 32})
    with pytest.raises(SignatureError, match="no key list is held"):
        decode_envelope(encode_envelope(desired, [B]), _ring(state, Role.MANIFEST),
                        device="dev-1")


def test_an_agent_config_may_give_root_keys_alone(tmp_path: Path) -> None:
    base = {"device": "d", "inbox": "in", "state_dir": "st", "registry": "docker://h:5000"}
    config = config_from_mapping({**base, "root_keys": ["keys/root.pub"],
                                  "desired_manifest": "desired.json"}, tmp_path)
    assert config.root_keys == (tmp_path / "keys/root.pub",) and config.trusted_keys == ()
    with pytest.raises(UsageError, match="root_keys"):
        config_from_mapping(base, tmp_path)
    with pytest.raises(UsageError, match="root_keys must be a list"):
        config_from_mapping({**base, "root_keys": "keys/root.pub"}, tmp_path)


def test_the_hub_signer_embeds_its_key_list_and_refuses_one_that_does_not_certify_it(
        tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "keys")
    key = load_private_key(pair.private_key_path)
    assert not isinstance(load_signer(pair.private_key_path), Signer)  # no list: pinned mode
    listed = certify(None, key.public_key(), [Role.BUNDLE], now=NOW, days=90)
    write_envelope(tmp_path / "keys" / KEY_LIST_FILE_NAME, sign_key_list(listed, [ROOT]))
    signer = load_signer(pair.private_key_path)
    assert isinstance(signer, Signer) and signer.key_list is not None
    with pytest.raises(UsageError, match="for bundle, not manifest"):
        load_signer(pair.private_key_path, Role.MANIFEST)
    other = KeyList(2, NOW, NOW + 86_400, ())
    write_envelope(tmp_path / "keys" / KEY_LIST_FILE_NAME, sign_key_list(other, [ROOT]))
    with pytest.raises(UsageError, match="is not certified in key list v2"):
        load_signer(pair.private_key_path)


def test_the_hub_builder_signs_with_the_key_list_of_its_data_dir(tmp_path: Path) -> None:
    from deltaport.config import Settings
    from deltaport.hub.settings import HubServerSettings
    from deltaport.hub.toolkit import real_toolkit

    fleet = Settings(data_dir=tmp_path, db_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    pair = generate_keypair(fleet.keys_dir)
    key = load_private_key(pair.private_key_path)
    listed = certify(None, key.public_key(), [Role.BUNDLE], now=NOW, days=90)
    write_envelope(fleet.keys_dir / KEY_LIST_FILE_NAME, sign_key_list(listed, [ROOT]))
    builder = real_toolkit(HubServerSettings(fleet=fleet)).builder
    signer = getattr(builder, "signing_key", None)
    assert isinstance(signer, Signer) and signer.key_list is not None


def test_the_hub_manifest_key_carries_the_key_list_into_desired_manifests(
        tmp_path: Path, state: AgentState) -> None:
    from deltaport.pipelines.manifest_to_device import load_manifest_key

    pair = generate_keypair(tmp_path / "keys", "manifest")
    key = load_private_key(pair.private_key_path)
    listed = certify(None, key.public_key(), [Role.MANIFEST], now=NOW, days=90)
    write_envelope(tmp_path / "keys" / KEY_LIST_FILE_NAME, sign_key_list(listed, [ROOT]))
    signer = load_manifest_key(pair.private_key_path)
    desired = iotedge_state("dev-1", 1, {"app": "sha256:" + "cd" * 32})
    got = decode_envelope(encode_envelope(desired, [signer]), _ring(state, Role.MANIFEST),
                          device="dev-1")
    assert got.signer == pair.key_id
