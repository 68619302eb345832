"""The inbox folder a third-party transfer tool fills, and the rule for taking a file.

The rule (docs/hub-api.md, "Inbox"), decided by :func:`judge` from the error that
checking the file raised and how long the file has been untouched:

- complete (size reached, head parses, signature by a trusted key, every chunk
  verifies): **ready**, taken at once;
- shorter than its head or its declared size: **wait** (a file still growing is not
  an error); once untouched for ``inbox_stale_seconds`` it is **rejected** as
  truncated (0 disables this: wait forever);
- anything else wrong (bad signature, malformed, a chunk that does not verify): it may
  be a tool that preallocates and fills in place, so **wait** until the file has been
  untouched for ``inbox_settle_seconds``, then **reject** with the reason.

Names starting with ``.`` or ending in ``.part``, ``.partial``, ``.tmp``, ``.reason``
are someone's work in progress and ignored. Rejected files go to ``failed/`` with a
``<name>.reason`` text file; processed ones to ``done/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deltaport.bundle import BundleIndex, BundleReader
from deltaport.errors import DeltaportError, StorageError, TruncatedError

log = logging.getLogger(__name__)

MAX_FILES_PER_SCAN = 1000  # inbox entries looked at in one pass
IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".reason", ".crdownload")
DONE_DIR = "done"
FAILED_DIR = "failed"


class Verdict(Enum):
    READY = "ready"
    WAIT = "wait"
    REJECT = "reject"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""


def judge(error: DeltaportError | None, quiet_for: float, *, settle: float,
          stale: float) -> Judgement:
    """Pure: what to do with an inbox file, given the error checking it raised (or None).

    ``quiet_for`` is the seconds since the file last changed.
    """
    if error is None:
        return Judgement(Verdict.READY)
    if isinstance(error, TruncatedError):
        if stale > 0 and quiet_for >= stale:
            return Judgement(Verdict.REJECT,
                             f"truncated and unchanged for {quiet_for:.0f}s: {error}")
        return Judgement(Verdict.WAIT, str(error))
    if isinstance(error, StorageError):
        return Judgement(Verdict.WAIT, str(error))  # unreadable now; maybe not later
    if quiet_for >= settle:
        return Judgement(Verdict.REJECT, f"{type(error).__name__}: {error}")
    return Judgement(Verdict.WAIT, str(error))


def is_candidate(name: str) -> bool:
    """Whether an inbox entry name may be a bundle (not someone's temp file)."""
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)


def candidates(inbox: Path) -> list[Path]:
    """Regular files of the inbox that may be bundles, oldest first (bounded)."""
    found: list[tuple[int, str, Path]] = []
    try:
        with os.scandir(inbox) as it:
            for entry in it:
                if not is_candidate(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    found.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
                except FileNotFoundError:
                    continue  # taken away by its writer meanwhile
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot list inbox {inbox}: {exc}") from exc
    found.sort()
    return [path for _, _, path in found[:MAX_FILES_PER_SCAN]]


def check_file(path: Path, trusted_keys: Sequence[Ed25519PublicKey]) -> BundleIndex:
    """Open the bundle (size, head, signature) and verify every chunk; return its index.

    Raises:
        TruncatedError, FormatError, SignatureError, IntegrityError, StorageError.
    """
    with BundleReader(path, trusted_keys=trusted_keys) as reader:
        reader.verify_all()
        return reader.index


def file_key(path: Path, index: BundleIndex) -> str:
    """Ledger key of one arrival of a bundle: the same file after a restart has the
    same key; the same bundle dropped again later (new mtime) is a new arrival."""
    st = path.stat()
    return f"inbox:{index.index_digest}:{path.name}:{st.st_size}:{st.st_mtime_ns}"


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    n = 1
    while target.exists() or target.with_name(target.name + ".reason").exists():
        target = directory / f"{name}.{n}"
        n += 1
    return target


def move_done(inbox: Path, path: Path) -> Path:
    """Move a processed bundle to ``done/``."""
    return _move(inbox / DONE_DIR, path)


def move_failed(inbox: Path, path: Path, reason: str) -> Path:
    """Move a rejected bundle to ``failed/`` next to a ``.reason`` file saying why."""
    directory = inbox / FAILED_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = _free_name(directory, path.name)
        reason_file = target.with_name(target.name + ".reason")
        tmp = reason_file.with_name("." + reason_file.name + ".tmp")
        tmp.write_text(reason.rstrip() + "\n", encoding="utf-8")
        os.replace(tmp, reason_file)
        os.replace(path, target)
    except OSError as exc:
        raise StorageError(f"cannot move {path} to {directory}: {exc}") from exc
    return target


def _move(directory: Path, path: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = _free_name(directory, path.name)
        os.replace(path, target)
    except OSError as exc:
        raise StorageError(f"cannot move {path} to {directory}: {exc}") from exc
    return target
