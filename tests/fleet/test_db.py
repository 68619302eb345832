"""The database layer on SQLite and real PostgreSQL: migrations, errors mapped clearly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Engine

from deltaport.errors import StateError, StorageError, UsageError
from deltaport.fleet import queries
from deltaport.fleet.db import alembic_config, init_db, make_engine, migrate, session_scope
from deltaport.fleet.models import Base, DeploymentSet, Device
from tests.fixtures.services import free_port

TABLES = {
    "devices",
    "images",
    "device_images",
    "bundles",
    "bundle_versions",
    "bundle_releases",
    "bundle_devices",
    "deployment_sets",
    "deployment_devices",
    "deployment_images",
    "events",
    "desired_manifests",
    "device_deployments",
    "device_modules",
    "audit_log",
    "ui_sessions",
    "rollouts",
    "rollout_devices",
    "notify_events",
    "deliveries",
    "queued_deployments",
    "patch_builds",
    "deployment_retries",
    "delivery_retries",
    "download_progress",
    "alembic_version",
}


def test_migrations_create_exactly_the_models(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) == TABLES
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_init_is_idempotent_and_downgrade_works(engine: Engine) -> None:
    migrate(engine)
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    migrate(engine)
    assert set(inspect(engine).get_table_names()) == TABLES


def test_priority_migration_keeps_existing_sets_at_priority_0(db_url: str) -> None:
    """0001 → 0002 adds deployment_sets.priority (0 for old rows); downgrade drops it."""
    engine = make_engine(db_url)
    try:
        migrate(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO deployment_sets (id, requested_by, contact_email,"
                    " manifest_kind, manifest, state, created_at)"
                    " VALUES ('d-old', 'ci', 'c@x', 'compose', '{}', 'pending',"
                    " '2026-11-27 10:00:00+00:00')"
                )
            )
        migrate(engine)
        with session_scope(engine) as s:
            old = s.get(DeploymentSet, "d-old")
            assert old is not None and old.priority == 0
            old.priority = -4
        with session_scope(engine) as s:
            assert s.scalar(select(DeploymentSet.priority)) == -4
        command.downgrade(alembic_config(engine), "0001")
        columns = {c["name"] for c in inspect(engine).get_columns("deployment_sets")}
        assert "priority" not in columns and "state" in columns
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM deployment_sets")).scalars().all() == ["d-old"]
    finally:
        engine.dispose()


def test_round_trip_keeps_utc_and_json(engine: Engine) -> None:
    with session_scope(engine) as s:
        _, token = queries.add_device(
            s, name="dev-1", link_rate_bps=1_000_000, labels={"site": "x"}
        )
    with session_scope(engine) as s:
        got = s.scalar(select(Device).where(Device.name == "dev-1"))
        assert got is not None
        assert got.labels == {"site": "x"} and got.created_at.tzinfo is not None
        assert got.token_hash != token and token not in got.token_hash
        assert queries.authenticate_device(s, name="dev-1", token=token).id == got.id
        with pytest.raises(StateError):
            queries.authenticate_device(s, name="dev-1", token="wrong")


def test_duplicate_device_is_a_state_error(engine: Engine) -> None:
    with session_scope(engine) as s:
        queries.add_device(s, name="dev-1", link_rate_bps=1)
    with pytest.raises(StateError, match="already exists"), session_scope(engine) as s:
        queries.add_device(s, name="dev-1", link_rate_bps=1)


def test_locked_sqlite_is_a_clear_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    init_db(f"sqlite:///{path}").dispose()
    locker = sqlite3.connect(path)
    locker.execute("BEGIN EXCLUSIVE")
    engine = make_engine(f"sqlite:///{path}", busy_timeout=0.2)
    try:
        with pytest.raises(StorageError, match="locked"), session_scope(engine) as s:
            queries.add_device(s, name="d", link_rate_bps=1)
    finally:
        locker.rollback()
        locker.close()
        engine.dispose()


def test_postgres_gone_is_a_clear_storage_error() -> None:
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    with pytest.raises(StorageError, match="unreachable"):
        migrate(engine)


def test_postgres_stopped_mid_life(postgres: object, tmp_path: Path) -> None:
    """A database that disappears after it was opened (dropped) gives StorageError."""
    from tests.fleet.conftest import PostgresServer

    assert isinstance(postgres, PostgresServer)
    name = postgres.new_database()
    engine = init_db(postgres.url(name))
    engine.dispose()
    postgres.admin(f"DROP DATABASE {name}")
    with pytest.raises(StorageError, match="unreachable or failed"), session_scope(engine) as s:
        queries.get_device(s, "x")


def test_sqlite_folder_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create database folder"):
        init_db(f"sqlite:///{blocker}/sub/fleet.db")


def test_schema_missing_is_explained(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StorageError, match="no deltaport schema"), session_scope(engine) as s:
        queries.get_device(s, "x")


def test_bad_urls() -> None:
    with pytest.raises(UsageError):
        make_engine("mysql://x/y")
    with pytest.raises(UsageError):
        make_engine("::::")


def test_a_device_is_found_by_its_token_hash_through_an_index(engine: Engine) -> None:
    """Every device request looks its token up: a scan of the devices table would cost
    each request ~11 ms at 100,000 devices (issue 15)."""
    indexes = {tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("devices")}
    assert ("token_hash",) in indexes
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            plan = conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM devices WHERE token_hash = 'x'")).all()
        assert any("ix_devices_token_hash" in str(row) for row in plan), plan
