"""One pass over the inbox, safe against the other user who writes it.

The inbox is written by a third-party transfer tool, often running as another user,
while the agent runs as root. So nothing here follows a symbolic link an inbox writer
could have planted, nor opens what could block:

- ``done/`` and ``failed/`` are created by the agent and opened with
  ``O_DIRECTORY | O_NOFOLLOW`` relative to the opened inbox; a symbolic link there, or
  a folder owned by another uid, stops the pass with a :class:`StorageError` (the
  agent refuses to work rather than write where the other user points it);
- every later step is relative to those open descriptors (``dir_fd=``): ``lstat`` an
  entry, open a regular file with ``O_NOFOLLOW | O_NONBLOCK`` and check ``S_ISREG`` on
  the descriptor (a FIFO swapped in meanwhile is never read), rename into ``done/`` or
  ``failed/``, and write a ``.reason`` through a fresh ``O_CREAT | O_EXCL | O_NOFOLLOW``
  temp file renamed into place;
- the bundle is checked and applied through ``/proc/self/fd/N`` of the opened file,
  so the inode checked is the inode applied, whatever happens to the name;
- symbolic links, FIFOs and folders dropped into the inbox are moved aside, unopened,
  to ``failed/`` with a reason.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deltaport.agent.inbox import (
    DONE_DIR,
    FAILED_DIR,
    MAX_FILES_PER_SCAN,
    BundleOutcome,
    EntryKind,
    Sightings,
    Verdict,
    check_file,
    entry_kind,
    file_key,
    is_candidate,
    judge,
    not_regular_reason,
)
from deltaport.bundle import BundleIndex, TrustedKeys
from deltaport.errors import DeltaportError, StorageError

log = logging.getLogger("deltaport.agent")

DIR_MODE = 0o755  # done/ and failed/: the inbox writer may read them, not write them
REASON_MODE = 0o644
TEMP_NAME_ATTEMPTS = 8  # fresh random temp names tried before giving up
FREE_NAME_ATTEMPTS = 1000  # name.1, name.2, ... tried in done/ or failed/

ApplyFn = Callable[[Path, BundleIndex, str], tuple[str, str | None]]
"""Apply a verified bundle (its readable path, index, ledger key): (outcome, reason)."""
Clock = Callable[[], float]


@dataclass
class InboxTally:
    """What one inbox pass did."""

    done: int = 0
    failed: int = 0
    waiting: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InboxDirs:
    """Open descriptors of the inbox and of its ``done/`` and ``failed/`` folders."""

    path: Path
    inbox: int
    done: int
    failed: int

    def close(self) -> None:
        for fd in (self.failed, self.done, self.inbox):
            os.close(fd)


# -- folders -----------------------------------------------------------------------------
def _kind_of(dir_fd: int, name: str) -> str:
    try:
        return str(entry_kind(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode))
    except OSError as exc:
        return f"entry that cannot be looked at ({exc.strerror})"


def _own_subdir(inbox_fd: int, inbox: Path, name: str, uid: int) -> int:
    """Open (creating it if absent) ``inbox/name``, refusing a link or another's folder."""
    try:
        os.mkdir(name, DIR_MODE, dir_fd=inbox_fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot create {inbox / name}: {exc.strerror}") from exc
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=inbox_fd)
    except OSError as exc:
        raise StorageError(
            f"refusing to work: {inbox / name} is a {_kind_of(inbox_fd, name)}, not a folder "
            "of the agent's own; someone who can write the inbox may be redirecting the "
            f"agent's writes. Remove {inbox / name} and start the agent again") from exc
    owner = os.fstat(fd).st_uid
    if owner != uid:
        os.close(fd)
        raise StorageError(
            f"refusing to work: {inbox / name} is owned by uid {owner}, not by the agent "
            f"(uid {uid}); another user could place links in it. Remove it (the agent "
            "creates it) or chown it to the agent's user")
    return fd


def open_dirs(inbox: Path, uid: int) -> InboxDirs:
    """Open the inbox and its own ``done/`` and ``failed/`` (created if absent).

    Raises:
        StorageError: the inbox cannot be opened, or ``done/``/``failed/`` is a symbolic
            link, not a folder, or not owned by ``uid``: the agent must not work.
    """
    try:
        inbox_fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"cannot open inbox {inbox}: {exc.strerror}") from exc
    opened: list[int] = []
    try:
        for name in (DONE_DIR, FAILED_DIR):
            opened.append(_own_subdir(inbox_fd, inbox, name, uid))
    except BaseException:
        for fd in (*opened, inbox_fd):
            os.close(fd)
        raise
    return InboxDirs(inbox, inbox_fd, opened[0], opened[1])


# -- entries -----------------------------------------------------------------------------
def list_entries(dirs: InboxDirs) -> list[tuple[str, os.stat_result]]:
    """Candidate entries of the inbox with their ``lstat``, oldest mtime first (bounded)."""
    found: list[tuple[int, str, os.stat_result]] = []
    try:
        with os.scandir(dirs.inbox) as it:
            for entry in it:
                if len(found) >= MAX_FILES_PER_SCAN:
                    break
                if not is_candidate(entry.name):
                    continue
                try:
                    st = os.stat(entry.name, dir_fd=dirs.inbox, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # taken away by its writer meanwhile
                found.append((st.st_mtime_ns, entry.name, st))
    except OSError as exc:
        raise StorageError(f"cannot list inbox {dirs.path}: {exc.strerror}") from exc
    found.sort(key=lambda f: (f[0], f[1]))
    return [(name, st) for _, name, st in found]


@contextmanager
def open_regular(dirs: InboxDirs, name: str) -> Iterator[tuple[int, os.stat_result] | None]:
    """The open descriptor and ``fstat`` of regular file ``name``, or None if it is not
    one (now a link, a FIFO, gone): never follows a link, never blocks on a FIFO."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dirs.inbox)
    except OSError:
        yield None  # ELOOP (a link), ENOENT (gone), ENXIO...: looked at again next pass
        return
    try:
        st = os.fstat(fd)
        yield (fd, st) if stat.S_ISREG(st.st_mode) else None
    finally:
        os.close(fd)


def fd_path(fd: int) -> Path:
    """A path that opens exactly the file of ``fd`` (Linux procfs)."""
    return Path(f"/proc/self/fd/{fd}")


def still_same(dirs: InboxDirs, name: str, st: os.stat_result) -> bool:
    """Whether ``name`` is still the inode ``st`` describes (not swapped meanwhile)."""
    try:
        now = os.stat(name, dir_fd=dirs.inbox, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


# -- moving ------------------------------------------------------------------------------
def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _free_name(dir_fd: int, name: str) -> str:
    for n in range(FREE_NAME_ATTEMPTS):
        target = name if n == 0 else f"{name}.{n}"
        if not _exists(dir_fd, target) and not _exists(dir_fd, target + ".reason"):
            return target
    raise StorageError(f"no free name for {name}: {FREE_NAME_ATTEMPTS} taken")


def _write_reason(dir_fd: int, name: str, reason: str) -> None:
    """Write ``name`` in ``dir_fd`` atomically through a fresh, exclusive temp file."""
    data = (reason.rstrip() + "\n").encode("utf-8", "replace")
    for _ in range(TEMP_NAME_ATTEMPTS):
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         REASON_MODE, dir_fd=dir_fd)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        return
    raise StorageError(f"cannot create a temp file for {name}: names taken")


def move_done(dirs: InboxDirs, name: str) -> str:
    """Move inbox entry ``name`` into ``done/``; returns its name there."""
    try:
        target = _free_name(dirs.done, name)
        os.rename(name, target, src_dir_fd=dirs.inbox, dst_dir_fd=dirs.done)
        os.fsync(dirs.done)
    except OSError as exc:
        raise StorageError(f"cannot move {name} to {dirs.path / DONE_DIR}: {exc.strerror}") \
            from exc
    return target


def move_failed(dirs: InboxDirs, name: str, reason: str) -> str:
    """Move inbox entry ``name`` (of any kind) into ``failed/`` next to ``<name>.reason``."""
    try:
        target = _free_name(dirs.failed, name)
        _write_reason(dirs.failed, target + ".reason", reason)
        os.rename(name, target, src_dir_fd=dirs.inbox, dst_dir_fd=dirs.failed)
        os.fsync(dirs.failed)
    except OSError as exc:
        raise StorageError(f"cannot move {name} to {dirs.path / FAILED_DIR}: {exc.strerror}") \
            from exc
    return target


# -- the pass ------------------------------------------------------------------------------
class InboxScanner:
    """The inbox pass: list, judge by the agent's own clock, apply, move."""

    def __init__(self, inbox: Path, keys: TrustedKeys, *, settle: float,
                 stale: float, clock: Clock = time.monotonic, uid: int | None = None) -> None:
        self.inbox = inbox
        self.keys = keys
        self.settle, self.stale = settle, stale
        self.clock = clock
        self.uid = os.geteuid() if uid is None else uid
        self.sightings = Sightings()

    def check_folders(self) -> None:
        """Create and check ``done/`` and ``failed/``. Raises StorageError: unsafe."""
        open_dirs(self.inbox, self.uid).close()

    def scan(self, apply: ApplyFn, stop: threading.Event) -> InboxTally:
        """One pass. Raises StorageError when the inbox's own folders are unsafe."""
        tally = InboxTally()
        dirs = open_dirs(self.inbox, self.uid)
        try:
            entries = list_entries(dirs)
            self.sightings.keep_only({name for name, _ in entries})
            for name, st in entries:
                if stop.is_set():
                    break
                try:
                    self._entry(dirs, name, st, apply, tally)
                except DeltaportError as exc:  # one stuck file must not stop the pass
                    log.error("inbox %s: %s", name, exc)
        finally:
            dirs.close()
        return tally

    def _entry(self, dirs: InboxDirs, name: str, st: os.stat_result, apply: ApplyFn,
               tally: InboxTally) -> None:
        kind = entry_kind(st.st_mode)
        if kind is not EntryKind.REGULAR:
            self._reject(dirs, name, not_regular_reason(kind), tally)
            return
        with open_regular(dirs, name) as opened:
            if opened is None:
                return  # swapped for something else since listed: judged next pass
            self._file(dirs, name, *opened, apply, tally)

    def _file(self, dirs: InboxDirs, name: str, fd: int, st: os.stat_result, apply: ApplyFn,
              tally: InboxTally) -> None:
        quiet_for = self.sightings.quiet_for(name, st, self.clock())
        error: DeltaportError | None = None
        index = None
        try:
            index = check_file(fd_path(fd), self.keys)
        except DeltaportError as exc:
            exc.args = (str(exc).replace(str(fd_path(fd)), str(self.inbox / name)),)
            error = exc
        judgement = judge(error, quiet_for, settle=self.settle, stale=self.stale)
        if judgement.verdict is Verdict.WAIT:
            tally.waiting += 1
            log.debug("inbox %s: waiting (%s)", name, judgement.reason)
            return
        if judgement.verdict is Verdict.REJECT or index is None:
            self._reject(dirs, name, judgement.reason, tally)
            return
        outcome, reason = apply(fd_path(fd), index, file_key(name, st, index))
        if outcome == BundleOutcome.DEFERRED:
            return
        if not still_same(dirs, name, st):
            log.warning("inbox %s: replaced while it was applied; left in place", name)
            return
        if outcome == BundleOutcome.DONE:
            move_done(dirs, name)
            tally.done += 1
        else:
            move_failed(dirs, name, reason or "failed")
            tally.failed += 1

    def _reject(self, dirs: InboxDirs, name: str, reason: str, tally: InboxTally) -> None:
        log.warning("inbox %s: rejected: %s", name, reason)
        move_failed(dirs, name, reason)
        tally.failed += 1
        tally.failures.append(reason)
