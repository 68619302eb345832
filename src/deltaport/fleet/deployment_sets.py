"""Deployment sets and desired manifests: a set's state changes go through
:func:`transition_set` (the pure state machine, compare-and-set, the event log); desired
manifest versions only go up, one row per device and version. Callers own the
transaction (``deltaport.fleet.db.session_scope``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from deltaport.errors import StateError, UnknownObjectError
from deltaport.fleet.device_images import log_event
from deltaport.fleet.models import (
    DeploymentDevice,
    DeploymentImage,
    DeploymentSet,
    DesiredManifest,
    Device,
    Image,
    utcnow,
)
from deltaport.fleet.states import (
    FINISHED_SET_STATES,
    SetEvent,
    SetState,
    next_set_state,
)

SET_RETRIES = 5  # re-decisions of a set transition that lost a race


# --- deployment sets ---------------------------------------------------------


def get_deployment_set(session: Session, set_id: str) -> DeploymentSet:
    """The deployment set SET_ID.

    Raises:
        UnknownObjectError: no deployment set has that id.
    """
    dset = session.get(DeploymentSet, set_id)
    if dset is None:
        raise UnknownObjectError(f"unknown deployment {set_id!r}")
    return dset


def transition_set(
    session: Session, dset: DeploymentSet, event: SetEvent, detail: str | None = None
) -> SetState:
    """Apply EVENT to a deployment set through the state machine and log it.

    Compare-and-set (``WHERE state = :before``): if another writer moved the set
    meanwhile, the state machine decides again from the state the row now holds (the
    decision depends on nothing else), a bounded number of times.

    Raises:
        StateError: EVENT is illegal from the state the set holds, or the set kept
            changing under us.
    """
    session.flush()
    table = cast(Table, DeploymentSet.__table__)
    current = SetState(dset.state)
    for _ in range(SET_RETRIES):
        new = next_set_state(current, event)
        if new is current:
            set_committed_value(dset, "state", current.value)
            return new
        values: dict[str, Any] = {"state": new.value}
        if new in FINISHED_SET_STATES and dset.finished_at is None:
            values["finished_at"] = utcnow()
        done = session.execute(
            update(table)
            .where(table.c.id == dset.id, table.c.state == current.value)
            .values(**values)
            .returning(table.c.id)
        ).first()
        if done is not None:
            for key, value in values.items():  # what the row now holds, no second write
                set_committed_value(dset, key, value)
            log_event(
                session,
                kind="deployment_set",
                deployment_set_id=dset.id,
                from_status=current.value,
                to_status=new.value,
                detail=detail,
            )
            return new
        held = session.execute(select(table.c.state).where(table.c.id == dset.id)).scalar()
        if held is None:
            raise UnknownObjectError(f"deployment {dset.id!r} was deleted meanwhile")
        current = SetState(held)
    raise StateError(f"deployment {dset.id} kept changing meanwhile (now {current}): try again")


def set_members(session: Session, set_id: str) -> tuple[list[Device], list[DeploymentImage]]:
    """The devices and the image rows of deployment set SET_ID."""
    devices = list(
        session.scalars(
            select(Device)
            .join(DeploymentDevice, DeploymentDevice.device_id == Device.id)
            .where(DeploymentDevice.deployment_set_id == set_id)
            .order_by(Device.name)
        )
    )
    images = list(
        session.scalars(select(DeploymentImage).where(DeploymentImage.deployment_set_id == set_id))
    )
    return devices, images


def set_image_ids(session: Session, set_id: str) -> list[str]:
    """Content image IDs a deployment set needs."""
    return list(
        session.scalars(
            select(Image.image_id)
            .join(DeploymentImage, DeploymentImage.image_id == Image.id)
            .where(DeploymentImage.deployment_set_id == set_id)
        )
    )


# --- desired manifests ---------------------------------------------------------


def next_desired_version(session: Session, *, device_id: int) -> int:
    """One more than the newest desired-manifest version of the device (1 for the first)."""
    newest = session.scalar(
        select(func.max(DesiredManifest.version)).where(DesiredManifest.device_id == device_id)
    )
    return int(newest or 0) + 1


def insert_desired_manifest(
    session: Session,
    *,
    device_id: int,
    version: int,
    deployment_set_id: str,
    digest: str,
    at: datetime | None = None,
) -> bool:
    """Record VERSION as published for the device; False if that version is taken already.

    ``INSERT … ON CONFLICT DO NOTHING`` on the unique (device, version): a concurrent
    publisher that took the same number makes this insert nothing (on PostgreSQL it
    waits for that transaction to end first) instead of failing the transaction, so
    the caller can take the next number and try again.
    """
    dialect = session.get_bind().dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        make(DesiredManifest)
        .values(
            device_id=device_id,
            version=version,
            deployment_set_id=deployment_set_id,
            digest=digest,
            published_at=at or utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["device_id", "version"])
        .returning(DesiredManifest.id)
    )
    return session.execute(stmt).scalar() is not None


def latest_desired_manifest(session: Session, *, device_id: int) -> DesiredManifest | None:
    """The newest desired manifest published for the device, if any."""
    return session.scalar(
        select(DesiredManifest)
        .where(DesiredManifest.device_id == device_id)
        .order_by(DesiredManifest.version.desc())
        .limit(1)
    )
