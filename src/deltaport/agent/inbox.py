"""The inbox folder a third-party transfer tool fills, and the rule for taking a file.

The rule (docs/hub-api.md, "Inbox"), decided by :func:`judge` from the error that
checking the file raised and how long the file has been quiet:

- complete (size reached, head parses, signature by a trusted key, every chunk
  verifies): **ready**, taken at once;
- shorter than its head or its declared size: **wait** (a file still growing is not
  an error); once quiet for ``inbox_stale_seconds`` it is **rejected** as truncated
  (0 disables this: wait forever);
- anything else wrong (bad signature, malformed, a chunk that does not verify): it may
  be a tool that preallocates and fills in place, so **wait** until the file has been
  quiet for ``inbox_settle_seconds``, then **reject** with the reason.

"Quiet" is measured by the agent's own monotonic clock from when it first saw this
file (this name and inode) or last saw its size or mtime change — never from the
file's mtime, which a transfer tool sets as it likes (``rsync -a --partial`` leaves a
cut transfer dated 1970-01-01). :class:`Sightings` remembers that, in memory: after a
restart every file is first seen again, which only makes the agent wait longer.

Names starting with ``.`` or ending in ``.part``, ``.partial``, ``.tmp``, ``.reason``
are someone's work in progress and ignored. Rejected files go to ``failed/`` with a
``<name>.reason`` text file; processed ones to ``done/``. What is not a regular file
(a symbolic link, a FIFO, a folder) is never opened: it is moved aside to ``failed/``
(``inboxscan`` does the file system work, without following symbolic links).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from pathlib import Path

from deltaport.bundle import BundleIndex, BundleReader, TrustedKeys
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


class BundleOutcome(StrEnum):
    """What became of a bundle (the ledger's ``outcome`` column)."""

    DONE = "done"
    FAILED = "failed"
    DEFERRED = "deferred"


class EntryKind(StrEnum):
    """What an inbox entry is, from ``lstat`` (symbolic links are not followed)."""

    REGULAR = "regular file"
    SYMLINK = "symbolic link"
    FIFO = "FIFO"
    DIRECTORY = "folder"
    OTHER = "special file"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""


def judge(error: DeltaportError | None, quiet_for: float, *, settle: float,
          stale: float) -> Judgement:
    """Pure: what to do with an inbox file, given the error checking it raised (or None).

    ``quiet_for`` is the seconds since the agent first saw the file or saw it change.
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


def entry_kind(mode: int) -> EntryKind:
    """Pure: the kind of an entry from its ``lstat`` mode."""
    if stat.S_ISREG(mode):
        return EntryKind.REGULAR
    if stat.S_ISLNK(mode):
        return EntryKind.SYMLINK
    if stat.S_ISFIFO(mode):
        return EntryKind.FIFO
    if stat.S_ISDIR(mode):
        return EntryKind.DIRECTORY
    return EntryKind.OTHER


def not_regular_reason(kind: EntryKind) -> str:
    """Pure: the reason written next to a non-regular entry moved aside."""
    return (f"not a regular file but a {kind}: a bundle must be a regular file; "
            "moved aside without being opened or followed")


# -- when the agent saw a file change -------------------------------------------------
@dataclass(frozen=True)
class Sighting:
    """One inbox file as the agent last saw it, and when (monotonic seconds) it changed."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    changed_at: float  # first seen, or last seen with another size or mtime


def sight(previous: Sighting | None, st: os.stat_result, now: float) -> Sighting:
    """Pure: the sighting after looking at a file whose ``stat`` is ``st`` at ``now``.

    Another inode under the same name is a new file; a new size or mtime is a change.
    """
    if previous is None or (previous.dev, previous.ino) != (st.st_dev, st.st_ino):
        return Sighting(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, now)
    if (previous.size, previous.mtime_ns) != (st.st_size, st.st_mtime_ns):
        return replace(previous, size=st.st_size, mtime_ns=st.st_mtime_ns, changed_at=now)
    return previous


class Sightings:
    """Per inbox name, the last :class:`Sighting` (bounded by what one scan lists)."""

    def __init__(self) -> None:
        self._seen: dict[str, Sighting] = {}

    def quiet_for(self, name: str, st: os.stat_result, now: float) -> float:
        """Record a look at ``name``; seconds it has been quiet, by the agent's clock."""
        sighting = sight(self._seen.get(name), st, now)
        self._seen[name] = sighting
        return max(0.0, now - sighting.changed_at)

    def keep_only(self, names: set[str]) -> None:
        """Forget files no longer in the inbox (taken, moved, or removed by their writer)."""
        for name in set(self._seen) - names:
            del self._seen[name]


# -- names and files --------------------------------------------------------------------
def is_candidate(name: str) -> bool:
    """Whether an inbox entry name may be a bundle (not someone's temp file)."""
    return (not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)
            and name not in (DONE_DIR, FAILED_DIR))


def candidates(inbox: Path) -> list[Path]:
    """Regular files of the inbox that may be bundles, oldest first (bounded; for status)."""
    found: list[tuple[int, str, Path]] = []
    try:
        with os.scandir(inbox) as it:
            for entry in it:
                if not is_candidate(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name,
                                  Path(entry.path)))
                except FileNotFoundError:
                    continue  # taken away by its writer meanwhile
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot list inbox {inbox}: {exc}") from exc
    found.sort()
    return [path for _, _, path in found[:MAX_FILES_PER_SCAN]]


def check_file(path: Path, trusted_keys: TrustedKeys) -> BundleIndex:
    """Open the bundle (size, head, signature) and verify every chunk; return its index.

    Raises:
        TruncatedError, FormatError, SignatureError, IntegrityError, StorageError.
    """
    with BundleReader(path, trusted_keys=trusted_keys) as reader:
        reader.verify_all()
        return reader.index


def file_key(name: str, st: os.stat_result, index: BundleIndex) -> str:
    """Ledger key of one arrival of a bundle: the same file after a restart has the
    same key; the same bundle dropped again later (new mtime) is a new arrival."""
    return f"inbox:{index.index_digest}:{name}:{st.st_size}:{st.st_mtime_ns}"
