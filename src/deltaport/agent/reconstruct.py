"""Rebuilding a verified bundle's target image into the local registry.

Pure checks first (is the bundle for this device, how much disk it needs), then
``deltaport.delta.image.apply_image_delta`` with every image in the local registry as
a source. The registry never shows a half image: the manifest is pushed last, after
every layer hashed to its diff_id and the config to the image ID; a reconstruction
killed half-way is simply run again.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deltaport.agent.messages import LocalImage
from deltaport.agent.registry import LocalRegistry
from deltaport.agent.state import HeldRelease
from deltaport.bundle import BundleIndex, Release
from deltaport.delta.content import parse_content
from deltaport.delta.image import apply_image_delta
from deltaport.errors import (
    DeltaportError,
    FormatError,
    RegistryError,
    StorageError,
    TransferError,
    UsageError,
)
from deltaport.oci import parse_reference

SCRATCH_FACTOR = 2  # uncompressed target bytes held at once: spooled sources + new layer
EXPIRY_CLOCK_SKEW_SECONDS = 86_400.0
"""How far past its signed ``expires_at`` a bundle is still taken: a device clock may be
off (no RTC, no NTP over a satellite link) by up to this much."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What a bundle rebuilds, from its signed content."""

    name: str  # "demo/app:v2"
    image_id: str
    size: int  # uncompressed bytes of the target's layers (0 if unknown)
    deployment: str | None
    devices: tuple[str, ...] | None  # None: the bundle does not restrict devices
    release: Release | None = None  # the signed version and expiry (None: none signed)
    signer: str = ""  # key id of the trusted key that signed it ("" when not checked)


def target_of(index: BundleIndex) -> Target:
    """Pure: the target of a verified bundle.

    Raises:
        FormatError: not an image-delta bundle, or a malformed target/devices field.
    """
    content: Mapping[str, Any] = index.content
    parsed = parse_content(content)
    devices = content.get("devices")
    if devices is not None and (not isinstance(devices, list)
                                or not all(isinstance(d, str) for d in devices)):
        raise FormatError("bundle content: devices must be a list of device names")
    deployment = content.get("deployment")
    try:
        reference = parse_reference(f"docker://localhost/{parsed.target_name}")
    except UsageError as exc:
        raise FormatError(f"bundle target name {parsed.target_name!r}: {exc}") from exc
    if reference.name is None or reference.name.tag is None:
        raise FormatError(f"bundle target name {parsed.target_name!r} has no tag")
    return Target(
        name=parsed.target_name,
        image_id=parsed.image_id,
        size=parsed.target_size,
        deployment=deployment if isinstance(deployment, str) else None,
        devices=tuple(devices) if devices is not None else None,
        release=index.release,
        signer=index.trust_domain or index.signer_key_id or "",  # docs/trust.md section 5
    )


def refusal(target: Target, device: str) -> str | None:
    """Pure: why this device must not apply the bundle, or None if it may."""
    if target.devices is not None and device not in target.devices:
        listed = ", ".join(target.devices[:10]) or "no device"
        return f"bundle is for {listed}, not for device {device!r}"
    return None


def replay_refusal(target: Target, held: Mapping[str, HeldRelease], now: float,
                   skew: float = EXPIRY_CLOCK_SKEW_SECONDS) -> str | None:
    """Why applying ``target`` would be a replay or an expired bundle, or None if not.

    ``held`` is the device's highest accepted release of the target's name, per
    signer key id (``AgentState.releases``). A bundle is refused when it expired
    more than ``skew`` seconds ago, or when its version is below the one held from
    its signer (or equal to it for another image: never issued by an honest hub). A
    bundle without a release (format 2, or built by hand) is refused when the name
    has a held release from any signer, and taken with a warning otherwise.
    """
    release = target.release
    if release is None:
        if held:
            top = max(held.values(), key=lambda h: h.version)
            return (f"replay refused: the bundle for {target.name} has no signed release "
                    f"version, and this device already holds release {top.version} of it; "
                    "deploy it again from the hub to get a versioned bundle")
        log.warning("bundle for %s has no signed release version or expiry: "
                    "it cannot be checked against replay", target.name)
        return None
    if now > release.expires_at + skew:
        return (f"bundle for {target.name} (release {release.version}) expired at "
                f"{_utc(release.expires_at)}; the device clock says {_utc(now)}")
    mine = held.get(target.signer)
    if mine is None:
        return None
    if release.version < mine.version or (
            release.version == mine.version and target.image_id != mine.image_id):
        return (f"replay refused: the bundle is release {release.version} of "
                f"{target.name}, this device already holds release {mine.version} "
                f"({mine.image_id[:19]}) from signer {target.signer or 'unchecked'}; "
                "an operator rollback is a new deployment, with a higher version")
    return None


def held_release(target: Target) -> HeldRelease | None:
    """Pure: what applying ``target`` makes the device hold (None without a release)."""
    if target.release is None:
        return None
    return HeldRelease(target.name, target.signer, target.release.version, target.image_id)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def disk_needed(target: Target, bundle_bytes_to_come: int, min_free: int) -> int:
    """Pure: bytes of free disk a reconstruction needs (an estimate on the safe side)."""
    return bundle_bytes_to_come + SCRATCH_FACTOR * target.size + min_free


class DeferralCause(StrEnum):
    """Why a bundle waits for a later pass: the stable key its deferral is reported by.

    A reason text carries byte counts that change every pass; the cause does not, so
    the hub hears of a deferral once per cause (again when the cause changes, or after
    it was cleared), not once per pass.
    """

    DISK_FULL = "disk_full"  # the agent's disk has less free than a reconstruction needs
    DISK_WATERMARK = "disk_watermark"  # it would eat into runtime.keep_free, even after GC
    REGISTRY_DISK_FULL = "registry_disk_full"  # the device registry cannot store: disk full
    REGISTRY_UNREACHABLE = "registry_unreachable"  # the device registry is down or failing
    STORAGE = "storage"  # the agent's disk failed otherwise (unwritable, I/O error)


CAUSE_TEXT = {
    DeferralCause.DISK_FULL: "not enough free disk on the device",
    DeferralCause.DISK_WATERMARK: "the registry disk's kept-free share would be used",
    DeferralCause.REGISTRY_DISK_FULL: "the device registry's disk is full",
    DeferralCause.REGISTRY_UNREACHABLE: "the device registry is unreachable",
    DeferralCause.STORAGE: "the device's disk failed",
}
TOLD_TO_HUB = frozenset({DeferralCause.DISK_FULL, DeferralCause.DISK_WATERMARK,
                         DeferralCause.REGISTRY_DISK_FULL, DeferralCause.STORAGE})
"""Causes the operator can act on (free disk); a registry that is down is the device's
own passing trouble, retried every pass without a message."""

REGISTRY_DISK_FULL_MARKS = ("no space left on device", "disk quota exceeded",
                            "insufficient storage", "enospc")
"""What Docker Distribution (and others) put in a 5xx answer when their disk is full."""


class NotEnoughDiskError(StorageError):
    """A file system has less free space than a step needs (see :func:`check_disk`)."""


def check_disk(where: Path, needed: int) -> None:
    """Raises NotEnoughDiskError when the file system of ``where`` has less than ``needed``
    free; the message has the byte counts, :func:`deferral_cause` the stable cause."""
    free = shutil.disk_usage(where).free
    if free < needed:
        raise NotEnoughDiskError(f"not enough free disk in {where}: {free} bytes free, "
                                 f"{needed} needed")


def deferral_cause(error: DeltaportError) -> DeferralCause:
    """Pure: the stable cause of a deferring error (disk, registry disk, registry down)."""
    if isinstance(error, NotEnoughDiskError) or _enospc(error):
        return DeferralCause.DISK_FULL
    if isinstance(error, RegistryError) and (
            error.status == 507 or ((error.status or 0) >= 500 and any(
                mark in str(error).lower() for mark in REGISTRY_DISK_FULL_MARKS))):
        return DeferralCause.REGISTRY_DISK_FULL
    if isinstance(error, TransferError):
        return DeferralCause.REGISTRY_UNREACHABLE
    return DeferralCause.STORAGE


def _enospc(error: BaseException) -> bool:
    """Whether an OSError with ENOSPC/EDQUOT is in the chain of ``error``."""
    seen: BaseException | None = error
    for _ in range(10):  # a cause chain is short; bound it anyway
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def already_present(target: Target, images: Sequence[LocalImage]) -> bool:
    """Pure: the registry already has the target under its name with the right image ID."""
    return any(i.name == target.name and i.image_id == target.image_id for i in images)


@dataclass(frozen=True)
class Rebuilt:
    """The result of a reconstruction."""

    image_id: str
    manifest_digest: str | None  # None when the image was already there
    layers_patched: int
    layers_from_source: int
    seconds: float


def reconstruct(bundle: Path, target: Target, *, registry: LocalRegistry,
                images: Sequence[LocalImage], trusted_keys: Sequence[Ed25519PublicKey],
                scratch: Path, min_free: int) -> Rebuilt:
    """Rebuild ``target`` from ``bundle`` into the local registry (or see it is there).

    Raises:
        StorageError: not enough disk (checked first), or the disk failed.
        MissingSourceError: the device lacks source layers (``.missing`` lists them).
        SignatureError, FormatError, IntegrityError: a bad bundle or a bad rebuild.
        TransferError/RegistryError: the local registry failed.
    """
    started = time.monotonic()
    if already_present(target, images):
        return Rebuilt(target.image_id, None, 0, 0, 0.0)
    scratch.mkdir(parents=True, exist_ok=True)
    check_disk(scratch, disk_needed(target, 0, min_free))
    summary = apply_image_delta(
        bundle, registry.source_refs(list(images)), registry.ref(target.name),
        trusted_keys=trusted_keys, options=registry.options, scratch=scratch,
    )
    return Rebuilt(summary.image_id, summary.manifest_digest, summary.layers_patched,
                   summary.layers_from_source, time.monotonic() - started)
