"""Downloading one bundle from the hub, resumable across restarts, in a work folder.

Layout of ``<state>/downloads/<digest hex>/`` (nothing here is trusted on restart;
everything is re-verified):

- ``offer.json``  the hub's listing entry, so a finished download is reconstructed
  even while the hub is unreachable;
- ``head``        the bundle head (fixed part, index, signatures), written once it verified;
- ``payload`` / ``payload.part``  the payload region, grown by ``deltaport.transfer``
  against the signed chunk digests;
- ``bundle``      head + payload, written once the whole file hashed to the offer's
  digest: its presence means "downloaded".

The head is fetched first with ``fetch_range``, growing the request until
``read_head`` has what it needs (at most ``MAX_HEAD_ROUNDS``); bytes fetched past the
head seed ``payload.part``, so nothing that crossed the link is fetched twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from deltaport.agent.hub import BundleOffer
from deltaport.bundle import BundleIndex, TrustedKeys, read_head, required_head_bytes
from deltaport.errors import FormatError, IntegrityError, StorageError
from deltaport.fsutil import write_atomic
from deltaport.transfer import (
    ChunkPlan,
    DownloadConfig,
    Progress,
    download,
    fetch_range,
    part_path,
)

MAX_HEAD_ROUNDS = 4  # fetch_range calls to get a head (3 suffice for a valid one)
COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    """A downloaded bundle and what getting it cost in this process."""

    path: Path
    bytes_fetched: int  # body bytes read from the network for this bundle
    seconds: float


def work_dir(downloads: Path, digest: str) -> Path:
    """The work folder of the bundle with this digest."""
    return downloads / digest.removeprefix("sha256:")


def save_offer(folder: Path, offer: BundleOffer) -> None:
    """Write ``offer.json`` atomically (first thing, before any byte is fetched)."""
    write_atomic(folder / "offer.json", json.dumps(asdict(offer)).encode())


def load_offer(folder: Path) -> BundleOffer | None:
    """The offer saved in ``folder``, or None if absent or unreadable."""
    try:
        return BundleOffer(**json.loads((folder / "offer.json").read_bytes()))
    except (OSError, ValueError, TypeError):
        return None


def fetch_head(offer: BundleOffer, folder: Path, *, config: DownloadConfig,
               trusted_keys: TrustedKeys, probe: int,
               stop: threading.Event | None = None,
               client: httpx.Client | None = None) -> tuple[BundleIndex, int]:
    """The verified head of the offered bundle (from disk, or fetched); and bytes fetched.

    Raises:
        SignatureError, FormatError, TruncatedError: the head is bad (never retried).
        TransferError and subclasses: the hub could not be reached or refused.
    """
    saved = folder / "head"
    if saved.exists():
        index, _, _ = read_head(saved.read_bytes(), trusted_keys=trusted_keys)
        return index, 0
    data = b""
    want = min(probe, offer.size)
    for _ in range(MAX_HEAD_ROUNDS):
        if want > len(data):
            data += fetch_range(offer.url, len(data), want - len(data), config=config,
                                client=client, stop=stop)
        need = required_head_bytes(data)
        if need <= len(data) or len(data) >= offer.size:
            break
        want = min(need, offer.size)
    index, _, payload_offset = read_head(data, trusted_keys=trusted_keys)
    if index.bundle_size != offer.size:
        raise FormatError(f"bundle {offer.digest}: the hub says {offer.size} bytes, "
                          f"its signed index {index.bundle_size}")
    write_atomic(saved, data[:payload_offset])
    _seed_payload(folder, data[payload_offset:])
    return index, len(data)


def _seed_payload(folder: Path, extra: bytes) -> None:
    """Keep bytes fetched past the head as the start of the payload download."""
    part = part_path(folder / "payload")
    if extra and not part.exists() and not (folder / "payload").exists():
        write_atomic(part, extra)


def fetch_payload(offer: BundleOffer, folder: Path, index: BundleIndex, *,
                  config: DownloadConfig, stop: threading.Event | None = None,
                  client: httpx.Client | None = None, progress: Progress | None = None) -> int:
    """Download the payload region against the signed chunk digests; return bytes fetched.

    ``progress(done, total)`` hears of the payload bytes in hand as they arrive.

    Raises:
        IntegrityError: a chunk kept failing its digest.
        TransferError and subclasses: the retry limits ran out, or the hub refused.
    """
    plan = ChunkPlan(index.payload_size, index.chunk_size, index.chunk_digests,
                     region_offset=index.payload_offset)
    result = download(offer.url, folder / "payload", plan, config=config, client=client,
                      stop=stop, progress=progress)
    return result.bytes_fetched


def assemble(offer: BundleOffer, folder: Path) -> Path:
    """Join head and payload into ``bundle``, checking the offer's whole-file digest.

    Raises:
        IntegrityError: the joined file does not hash to the offer's digest.
        StorageError: the disk failed.
    """
    target = folder / "bundle"
    tmp = folder / ".bundle.tmp"
    hasher = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for name in ("head", "payload"):
                with open(folder / name, "rb") as src:
                    while block := src.read(COPY_BLOCK):
                        hasher.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if "sha256:" + hasher.hexdigest() != offer.digest:
            tmp.unlink()
            raise IntegrityError(f"bundle {offer.digest}: the downloaded file hashes to "
                                 f"sha256:{hasher.hexdigest()}")
        os.replace(tmp, target)
        (folder / "payload").unlink()
    except OSError as exc:
        raise StorageError(f"cannot assemble bundle in {folder}: {exc}") from exc
    return target


def discard(folder: Path) -> None:
    """Remove a bundle's work folder (after its outcome is recorded)."""
    shutil.rmtree(folder, ignore_errors=True)
