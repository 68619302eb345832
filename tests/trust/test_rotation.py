"""Key rotation and revocation end to end (issue 11, item 4), through the agent's inbox.

The device is provisioned with the root public key only (``root_keys``, no
``trusted_keys``). Bundles are built by the real ``create_image_delta`` and carry the
root-signed key list in their signature document (bundle format 4); the agent learns
signing keys from them, keeps the newest list in its SQLite state, and refuses key
rollback, revoked keys, expired certifications and lists not signed by the root.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.agent import Agent
from deltaport.bundle import BundleReader, Signer, generate_keypair, key_id, load_private_key
from deltaport.delta.image import create_image_delta
from deltaport.trust import CertifiedKey, KeyList, Role, encode_envelope
from deltaport.trust.issue import certify, revoke
from tests.agent.conftest import DEVICE, OPTS, World, agent_config, image_id_in
from tests.agent.hubdouble import HubDouble
from tests.fixtures.services import Registry

DAY = 86_400
NOW = int(time.time())


@dataclass(frozen=True)
class Keys:
    root: Ed25519PrivateKey
    root_pub: Path
    a: Ed25519PrivateKey
    b: Ed25519PrivateKey
    c: Ed25519PrivateKey
    v1: Mapping[str, Any]  # certifies A
    v2: Mapping[str, Any]  # certifies B, drops A
    v4: Mapping[str, Any]  # revokes B (v3), then certifies C (v4)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("trust-keys")
    root = generate_keypair(folder, "root")
    root_key = load_private_key(root.private_key_path)
    a, b, c = (Ed25519PrivateKey.generate() for _ in range(3))
    l1 = certify(None, a.public_key(), [Role.BUNDLE], now=NOW, days=90)
    l2 = certify(l1, b.public_key(), [Role.BUNDLE], now=NOW, days=90)
    l2 = KeyList(l2.version, l2.issued_at, l2.expires_at,
                 tuple(k for k in l2.keys if k.key_id != key_id(a.public_key())))
    l4 = certify(revoke(l2, key_id(b.public_key()), now=NOW), c.public_key(), [Role.BUNDLE],
                 now=NOW, days=90)
    return Keys(root_key, root.public_key_path, a, b, c, encode_envelope(l1, [root_key]),
                encode_envelope(l2, [root_key]), encode_envelope(l4, [root_key]))


def _bundle(world: World, out: Path, tag: str, signer: Signer) -> Path:
    """A bundle of demo/app:TAG from v1, for this device, signed (and carrying SIGNER's list)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    create_image_delta(world.cloud.ref(f"demo/app:{tag}"), [world.cloud.ref("demo/app:v1")],
                       out, signing_key=signer, options=OPTS,
                       extra_content={"devices": [DEVICE], "deployment": f"dep-{out.stem}"})
    return out


def _present(registry: Registry, bundle: Path) -> bool:
    """Whether the device registry holds the image BUNDLE rebuilds, under its target name."""
    with BundleReader(bundle) as reader:
        return image_id_in(registry, str(reader.index.content["target"]["name"])) is not None


def _drop(agent: Agent, bundle: Path) -> str | None:
    """Put BUNDLE in the inbox, run one pass; the refusal reason, or None if taken."""
    inbox = agent.config.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, inbox / bundle.name)
    agent.run_once()
    reason = inbox / "failed" / f"{bundle.name}.reason"
    if reason.exists():
        return reason.read_text()
    assert (inbox / "done" / bundle.name).exists(), "neither taken nor refused"
    return None


def _root_only_agent(tmp_path: Path, world: World, registry: Registry, keys: Keys) -> Agent:
    config = agent_config(tmp_path, world, registry.host, trusted_keys=(),
                          root_keys=(keys.root_pub,), inbox_settle_seconds=0.0)
    return Agent(config)


def _held_version(agent: Agent) -> int | None:
    held = agent.state.key_list()
    return held[0] if held is not None else None


def test_rotation_then_key_rollback_and_revocation_are_refused(
        tmp_path: Path, world: World, device_registry: Registry, keys: Keys) -> None:
    out = tmp_path / "bundles"
    with _root_only_agent(tmp_path, world, device_registry, keys) as agent:
        # key A, certified by key list v1: taken by a device that knows only the root
        a1 = _bundle(world, out / "a1.bundle", "v2", Signer(keys.a, keys.v1))
        assert _drop(agent, a1) is None
        assert _present(device_registry, a1) and _held_version(agent) == 1

        # rotate to B (v2 certifies B, drops A): no change to the device config
        b2 = _bundle(world, out / "b2.bundle", "v3", Signer(keys.b, keys.v2))
        assert _drop(agent, b2) is None
        assert _present(device_registry, b2) and _held_version(agent) == 2

        # a bundle by A carrying the old v1: key rollback, refused
        reason = _drop(agent, _bundle(world, out / "a-old.bundle", "v2", Signer(keys.a, keys.v1)))
        assert reason is not None
        assert f"{key_id(keys.a.public_key())} is not certified in key list v2" in reason
        assert "older than the held v2" in reason
        assert _held_version(agent) == 2

        # v4 revokes B and certifies C: C is taken, B (even with its v2) is refused
        assert _drop(agent, _bundle(world, out / "c4.bundle", "v2", Signer(keys.c, keys.v4))) \
            is None
        reason = _drop(agent, _bundle(world, out / "b-old.bundle", "v3", Signer(keys.b, keys.v2)))
        assert reason is not None
        assert f"{key_id(keys.b.public_key())} is revoked in key list v4" in reason


def test_a_bundle_without_a_key_list_is_refused_by_a_root_only_device(
        tmp_path: Path, world: World, device_registry: Registry, keys: Keys) -> None:
    bare = _bundle(world, tmp_path / "bare.bundle", "v2", Signer(keys.a))
    with _root_only_agent(tmp_path, world, device_registry, keys) as agent:
        reason = _drop(agent, bare)
        assert reason is not None and "no key list is held" in reason
        assert not _present(device_registry, bare)


def test_an_expired_certification_is_refused(
        tmp_path: Path, world: World, device_registry: Registry, keys: Keys) -> None:
    old = CertifiedKey(keys.a.public_key(), frozenset({Role.BUNDLE}), NOW - 100 * DAY,
                       NOW - 3 * DAY)
    expired = encode_envelope(KeyList(1, NOW, NOW + 90 * DAY, (old,)), [keys.root])
    late = _bundle(world, tmp_path / "late.bundle", "v2", Signer(keys.a, expired))
    with _root_only_agent(tmp_path, world, device_registry, keys) as agent:
        reason = _drop(agent, late)
        assert reason is not None and "certification in key list v1 expired at" in reason
        assert not _present(device_registry, late)


def test_an_expired_key_list_certifies_nothing(
        tmp_path: Path, world: World, device_registry: Registry, keys: Keys) -> None:
    entry = CertifiedKey(keys.a.public_key(), frozenset({Role.BUNDLE}), NOW - 100 * DAY,
                         NOW + 90 * DAY)
    stale = encode_envelope(KeyList(1, NOW - 100 * DAY, NOW - 3 * DAY, (entry,)), [keys.root])
    frozen = _bundle(world, tmp_path / "frozen.bundle", "v2", Signer(keys.a, stale))
    with _root_only_agent(tmp_path, world, device_registry, keys) as agent:
        reason = _drop(agent, frozen)
        assert reason is not None and "key list v1 expired at" in reason
        assert not _present(device_registry, frozen)


def test_a_key_list_signed_by_a_non_root_key_is_refused(
        tmp_path: Path, world: World, device_registry: Registry, keys: Keys) -> None:
    entry = CertifiedKey(keys.a.public_key(), frozenset({Role.BUNDLE}), NOW, NOW + 90 * DAY)
    # A certifies itself, with a version above anything the root signed
    forged = encode_envelope(KeyList(99, NOW, NOW + 90 * DAY, (entry,)), [keys.a])
    bundle = _bundle(world, tmp_path / "forged.bundle", "v2", Signer(keys.a, forged))
    with _root_only_agent(tmp_path, world, device_registry, keys) as agent:
        reason = _drop(agent, bundle)
        assert reason is not None and "which is not a trusted root key" in reason
        assert _held_version(agent) is None
        assert not _present(device_registry, bundle)


def test_the_held_key_list_survives_a_restart(
        tmp_path: Path, world: World, device_registry: Registry, keys: Keys) -> None:
    b2 = _bundle(world, tmp_path / "b2.bundle", "v2", Signer(keys.b, keys.v2))
    a1 = _bundle(world, tmp_path / "a1.bundle", "v3", Signer(keys.a, keys.v1))
    with _root_only_agent(tmp_path, world, device_registry, keys) as agent:
        assert _drop(agent, b2) is None
    with _root_only_agent(tmp_path, world, device_registry, keys) as agent:
        reason = _drop(agent, a1)
        assert reason is not None and "older than the held v2" in reason
        assert not _present(device_registry, a1)


def _offer(hub: HubDouble, bundle: Path) -> str:
    """Offer BUNDLE to the device through the hub; the image ID it rebuilds."""
    with BundleReader(bundle) as reader:
        target = reader.index.content["target"]
    hub.add_bundle(DEVICE, bundle, image_id=str(target["image_id"]), target=str(target["name"]),
                   deployment=f"dep-{bundle.stem}")
    return str(target["image_id"])


def test_hub_offers_rotate_keys_and_a_rolled_back_key_is_reported(
        tmp_path: Path, world: World, device_registry: Registry, keys: Keys) -> None:
    b2 = _bundle(world, tmp_path / "b2.bundle", "v3", Signer(keys.b, keys.v2))
    old = _bundle(world, tmp_path / "a-old.bundle", "v2", Signer(keys.a, keys.v1))
    with HubDouble(tokens={"tok-1": DEVICE}) as hub:
        config = agent_config(tmp_path, world, device_registry.host, hub_url=hub.url,
                              trusted_keys=(), root_keys=(keys.root_pub,))
        with Agent(config) as agent:
            _offer(hub, b2)
            agent.run_once()  # head fetched and checked through the keyring, then applied
            assert _present(device_registry, b2) and _held_version(agent) == 2
            old_id = _offer(hub, old)
            report = agent.run_once()
            assert report.failed == 1 and not _present(device_registry, old)
            agent.run_once()  # deliver the failure
        failed = [m for m in hub.statuses(old_id) if m["status"] == "failed"]
    assert len(failed) == 1
    assert f"{key_id(keys.a.public_key())} is not certified in key list v2" in failed[0]["reason"]
