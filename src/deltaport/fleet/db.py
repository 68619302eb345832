"""Database engine and sessions: SQLite by default, PostgreSQL (psycopg 3) for real fleets.

This is the adapter boundary for SQLAlchemy: a locked, missing or unreachable
database becomes :class:`~deltaport.errors.StorageError` with a sentence an operator
can act on; a constraint violation from a concurrent writer becomes
:class:`~deltaport.errors.StateError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from deltaport.config import normalize_db_url
from deltaport.errors import StateError, StorageError, UsageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds SQLite waits on a lock before giving up
MIGRATION_LOCK = 0x64656C7461  # PostgreSQL advisory lock key held while migrating


def make_engine(url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Engine:
    """An engine for URL, with SQLite tuned for one writer and many readers (WAL).

    A SQLite file's folder is created if missing.

    Raises:
        UsageError: the URL cannot be parsed or names an unsupported database.
    """
    url = normalize_db_url(url)
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise UsageError(f"cannot parse database URL {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, parsed.database, busy_timeout)
    if backend == "postgresql":
        # bulk writes go through psycopg 3's pipelined executemany (one round trip per
        # batch); multi-row VALUES pages were measured slower (client-side query parsing)
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    raise UsageError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _sqlite_engine(url: str, database: str | None, busy_timeout: float) -> Engine:
    if database and database != ":memory:":
        folder = Path(database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create database folder {folder}: {exc}") from exc
        _create_owner_only(Path(database))
    engine = create_engine(url, connect_args={"timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


DB_FILE_MODE = 0o600  # the database holds device token hashes: owner only


def _create_owner_only(path: Path) -> None:
    """Create the SQLite file PATH with DB_FILE_MODE if it does not exist yet.

    SQLite gives its -wal and -shm files the database file's mode, so they follow.
    An existing file keeps its mode (the operator may have chosen it).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, DB_FILE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"cannot create database {path}: {exc}") from exc
    try:
        os.fchmod(fd, DB_FILE_MODE)  # whatever the umask
    finally:
        os.close(fd)


def alembic_config(engine: Engine) -> Config:
    """An Alembic config that runs this package's migrations on ENGINE."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run the migrations on ENGINE up to REVISION.

    Raises:
        StorageError: the database is locked, missing or unreachable.
    """
    with db_errors(engine), _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, one process migrates at a time; the others wait, then find it done.

    Several hubs started together on a new database would otherwise run the same DDL
    at once and deadlock on its locks (seen: hangs for good). SQLite locks the file.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})


def init_db(url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Engine:
    """Open the database at URL and bring its schema to the newest revision."""
    engine = make_engine(url, busy_timeout=busy_timeout)
    migrate(engine)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit if the block succeeds, roll back if it raises.

    Raises:
        StorageError: the database is locked, missing or unreachable.
        StateError: a concurrent writer made the change conflict.
    """
    with db_errors(engine), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def db_errors(engine: Engine) -> Iterator[None]:
    """Translate SQLAlchemy's errors into deltaport's, naming the database."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise StateError(f"conflicting change in {where}: {_first_line(exc)}") from exc
    except sa_exc.DBAPIError as exc:
        raise StorageError(_describe(where, exc)) from exc


def _describe(where: str, exc: sa_exc.DBAPIError) -> str:
    """An operator-readable sentence for a database failure."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "database is locked" in text:
        return f"database {where} is locked by another process (gave up waiting)"
    if "unable to open database file" in text:
        return f"database {where} cannot be opened (folder missing or unwritable)"
    if "connection" in text.lower() and ("failed" in text or "refused" in text):
        return f"database {where} is unreachable or failed: {first}"
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return f"database {where} has no deltaport schema (was it initialised?): {first}"
    return f"database {where} is unreachable or failed: {first}"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
