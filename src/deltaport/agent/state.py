"""The agent's durable memory: the outbox and the bundle ledger, in one SQLite file.

- ``outbox``: status messages waiting for the hub. Each gets its uuid4 ``message_id``
  once, when it is enqueued, in the same transaction that records the outcome it
  reports, so a crash can neither lose it nor mint a second id for the same event.
  Delivery is at least once; the hub deduplicates by ``message_id``. A message the
  hub *rejects* (its ``rejected`` list: an unknown deployment, a change its state
  machine refuses) is marked ``rejected`` with the hub's error and not sent again:
  re-sending would be refused again on every pass. It is kept for inspection
  (``deltaport agent status``) for REJECTED_KEEP_SECONDS.
- ``inventory``: the latest inventory snapshot to check in. Only the newest matters,
  so a new snapshot replaces an undelivered older one.
- ``bundles``: the outcome of every bundle handled (by key: ``hub:<digest>`` or
  ``index:<index digest>``), so a bundle is not downloaded or reported twice.
- ``kv``: small values (desired manifest ETag, time of the last check-in).
- ``key_list``: the newest root-signed key list seen (docs/trust.md); never lowered.

WAL journal with ``synchronous=FULL``: a committed message survives SIGKILL and power loss.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaport.errors import StorageError

DELIVERED_KEEP_SECONDS = 7 * 86_400.0  # delivered messages are kept this long, for `status`
REJECTED_KEEP_SECONDS = 30 * 86_400.0  # rejected messages are kept this long, for inspection

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered REAL,
    rejected REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS inventory (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body TEXT NOT NULL,
    created REAL NOT NULL,
    delivered REAL
);
CREATE TABLE IF NOT EXISTS bundles (
    key TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    reason TEXT,
    image_id TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    name TEXT NOT NULL,
    signer TEXT NOT NULL,
    version INTEGER NOT NULL,
    image_id TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (name, signer)
);
CREATE TABLE IF NOT EXISTS key_list (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    updated REAL NOT NULL
);
"""

_OUTBOX_ADDED_COLUMNS = {"rejected": "REAL", "error": "TEXT"}
"""Columns added to ``outbox`` after its first release: added to an older file on open."""


def _upgrade(db: sqlite3.Connection) -> None:
    """Add the outbox columns an agent state file from an older agent lacks."""
    have = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    for name, kind in _OUTBOX_ADDED_COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")


@dataclass(frozen=True)
class Outcome:
    """What became of a bundle: ``done`` or ``failed`` (with a reason)."""

    outcome: str
    reason: str | None
    image_id: str | None


@dataclass(frozen=True)
class OutboxCounts:
    """How much is waiting for the hub."""

    messages_pending: int
    messages_delivered: int
    inventory_pending: bool
    messages_rejected: int = 0


@dataclass(frozen=True)
class RejectedMessage:
    """A status message the hub refused for good, as kept in the outbox."""

    message_id: str
    message: dict[str, Any]  # the body as it was sent
    error: str  # the hub's reason
    rejected_at: float  # time.time() when the refusal arrived


@dataclass(frozen=True)
class HeldRelease:
    """The highest signed release version accepted for a target name from one signer."""

    name: str  # target name, "demo/app:stable"
    signer: str  # key id of the signer ("" when the bundle was not checked)
    version: int
    image_id: str


STATE_FILE_MODE = 0o600  # the state holds the device's history and offers: owner only
IN_MEMORY = ":memory:"


def _private_file(path: Path) -> None:
    """Create PATH owner-only before SQLite opens it, or make an existing one so.

    SQLite gives its -wal and -shm files the database file's mode, so they follow.
    A symlink at PATH is refused (``O_NOFOLLOW``): the state is not written through one.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, STATE_FILE_MODE)
    try:
        os.fchmod(fd, STATE_FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists() and not side.is_symlink():
            side.chmod(STATE_FILE_MODE)


class AgentState:
    """The SQLite file under the state dir. Not thread-safe: one agent, one thread."""

    def __init__(self, path: Path) -> None:
        try:
            if str(path) != IN_MEMORY:  # SQLite's name for a database without a file
                path.parent.mkdir(parents=True, exist_ok=True)
                _private_file(path)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            _upgrade(self._db)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open agent state {path}: {exc}") from exc
        self.path = path

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite errors become StorageError."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"agent state {self.path}: {exc}") from exc

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise StorageError(f"agent state {self.path}: {exc}") from exc

    # -- bundles and their status messages -----------------------------------------
    def record(self, key: str, outcome: str, *, reason: str | None = None,
               image_id: str | None = None,
               message: Mapping[str, Any] | None = None,
               release: HeldRelease | None = None) -> str | None:
        """Record a bundle's outcome and enqueue its status message, atomically.

        ``message`` is the status message without ``message_id``; the id is minted
        here, once. ``release`` (of an applied bundle) raises the held release of its
        name and signer in the same transaction; it never lowers it. Returns the id
        (None when there is no message).
        """
        message_id = None
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO bundles (key, outcome, reason, image_id, updated) "
                "VALUES (?, ?, ?, ?, ?)", (key, outcome, reason, image_id, time.time()))
            if release is not None:
                self._hold(db, release)
            if message is not None:
                message_id = self._enqueue(db, message)
        return message_id

    def enqueue(self, message: Mapping[str, Any]) -> str:
        """Enqueue a status message alone; returns its new ``message_id``."""
        with self._tx() as db:
            return self._enqueue(db, message)

    @staticmethod
    def _enqueue(db: sqlite3.Connection, message: Mapping[str, Any]) -> str:
        message_id = str(uuid.uuid4())
        body = json.dumps({"message_id": message_id, **message}, sort_keys=True)
        db.execute("INSERT INTO outbox (message_id, body, created) VALUES (?, ?, ?)",
                   (message_id, body, time.time()))
        return message_id

    @staticmethod
    def _hold(db: sqlite3.Connection, release: HeldRelease) -> None:
        db.execute(
            "INSERT INTO releases (name, signer, version, image_id, updated) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, signer) DO UPDATE SET "
            "version = excluded.version, image_id = excluded.image_id, "
            "updated = excluded.updated WHERE excluded.version > releases.version",
            (release.name, release.signer, release.version, release.image_id, time.time()))

    def releases(self, name: str) -> dict[str, HeldRelease]:
        """The held release of target ``name`` per signer key id."""
        rows = self._query(
            "SELECT signer, version, image_id FROM releases WHERE name = ?", (name,))
        return {str(s): HeldRelease(name, str(s), int(v), str(i)) for s, v, i in rows}

    # -- the key list (docs/trust.md) ------------------------------------------------------
    def key_list(self) -> tuple[int, str] | None:
        """The held key list: its version and its envelope JSON, or None."""
        rows = self._query("SELECT version, envelope FROM key_list WHERE id = 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def hold_key_list(self, version: int, envelope: str) -> None:
        """Keep ENVELOPE (verified by the caller) as the held key list if VERSION is newer."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO key_list (id, version, envelope, updated) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                "envelope = excluded.envelope, updated = excluded.updated "
                "WHERE excluded.version > key_list.version",
                (version, envelope, time.time()))

    def outcome(self, key: str) -> Outcome | None:
        """The recorded outcome of bundle ``key``, if any."""
        rows = self._query("SELECT outcome, reason, image_id FROM bundles WHERE key = ?", (key,))
        return Outcome(*rows[0]) if rows else None

    def forget(self, key: str) -> None:
        """Drop a bundle's outcome (a deferred attempt that may now be retried)."""
        with self._tx() as db:
            db.execute("DELETE FROM bundles WHERE key = ?", (key,))

    # -- the outbox ---------------------------------------------------------------------
    def pending_messages(self, limit: int) -> list[dict[str, Any]]:
        """Undelivered status messages, oldest first."""
        rows = self._query(
            "SELECT body FROM outbox WHERE delivered IS NULL AND rejected IS NULL "
            "ORDER BY seq LIMIT ?", (limit,))
        return [json.loads(body) for (body,) in rows]

    def note_attempt(self, message_ids: Sequence[str]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE message_id = ?",
                           [(m,) for m in message_ids])

    def mark_delivered(self, message_ids: Sequence[str]) -> None:
        """The hub accepted these; prune old delivered ones on the way."""
        now = time.time()
        with self._tx() as db:
            db.executemany("UPDATE outbox SET delivered = ? WHERE message_id = ? "
                           "AND delivered IS NULL", [(now, m) for m in message_ids])
            db.execute("DELETE FROM outbox WHERE delivered < ?", (now - DELIVERED_KEEP_SECONDS,))

    def mark_rejected(self, rejections: Mapping[str, str]) -> None:
        """The hub refused these (message_id -> its error): keep them, never re-send.

        A message already delivered stays delivered. Old rejected ones are pruned.
        """
        now = time.time()
        with self._tx() as db:
            db.executemany("UPDATE outbox SET rejected = ?, error = ? WHERE message_id = ? "
                           "AND delivered IS NULL AND rejected IS NULL",
                           [(now, error, m) for m, error in rejections.items()])
            db.execute("DELETE FROM outbox WHERE rejected < ?", (now - REJECTED_KEEP_SECONDS,))

    def rejected_messages(self, limit: int) -> list[RejectedMessage]:
        """The messages the hub refused, newest first, at most LIMIT."""
        rows = self._query(
            "SELECT message_id, body, error, rejected FROM outbox WHERE rejected IS NOT NULL "
            "ORDER BY seq DESC LIMIT ?", (limit,))
        return [RejectedMessage(str(m), json.loads(body), str(error or ""), float(at))
                for m, body, error, at in rows]

    # -- inventory -----------------------------------------------------------------------
    def set_inventory(self, inventory: Mapping[str, Any], *, force: bool = False) -> bool:
        """Queue ``inventory`` for check-in unless it equals the last one delivered.

        Returns whether it was queued. ``force`` queues it anyway (periodic check-in).
        """
        body = json.dumps(inventory, sort_keys=True)
        with self._tx() as db:
            row = db.execute("SELECT body, delivered FROM inventory WHERE id = 1").fetchone()
            if row is not None and row[0] == body and not force:
                return row[1] is None
            db.execute("INSERT OR REPLACE INTO inventory (id, body, created, delivered) "
                       "VALUES (1, ?, ?, NULL)", (body, time.time()))
        return True

    def pending_inventory(self) -> tuple[dict[str, Any], float] | None:
        """The inventory to check in and its creation time, if not delivered yet."""
        rows = self._query("SELECT body, created FROM inventory WHERE id = 1 "
                           "AND delivered IS NULL")
        return (json.loads(rows[0][0]), float(rows[0][1])) if rows else None

    def mark_inventory_delivered(self, created: float) -> None:
        """Mark delivered the snapshot created at ``created`` (not a newer one)."""
        with self._tx() as db:
            db.execute("UPDATE inventory SET delivered = ? WHERE id = 1 AND created = ?",
                       (time.time(), created))

    def last_checkin(self) -> float | None:
        rows = self._query("SELECT delivered FROM inventory WHERE id = 1")
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- small values --------------------------------------------------------------------
    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def put(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    def items(self, prefix: str) -> dict[str, str]:
        """Every small value whose key starts with PREFIX (key → value)."""
        rows = self._query("SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?",
                           (len(prefix), prefix))
        return {str(k): str(v) for k, v in rows}

    def commit(self, values: Mapping[str, str | None],
               messages: Sequence[Mapping[str, Any]] = ()) -> list[str]:
        """Set (None: delete) small values and enqueue messages in ONE transaction.

        What the runtime's crash safety rests on: a recorded outcome and the message
        reporting it are never apart. Returns the new message ids.
        """
        with self._tx() as db:
            for key, value in values.items():
                if value is None:
                    db.execute("DELETE FROM kv WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                               (key, value))
            return [self._enqueue(db, m) for m in messages]

    def counts(self) -> OutboxCounts:
        pending = self._query(
            "SELECT COUNT(*) FROM outbox WHERE delivered IS NULL AND rejected IS NULL")[0][0]
        done = self._query("SELECT COUNT(*) FROM outbox WHERE delivered IS NOT NULL")[0][0]
        rejected = self._query("SELECT COUNT(*) FROM outbox WHERE rejected IS NOT NULL")[0][0]
        return OutboxCounts(int(pending), int(done), self.pending_inventory() is not None,
                            int(rejected))
