"""The dashboard's reads: aggregate SQL and one page of rows at a time, on SQLite and PostgreSQL.

Each function takes a session and returns frozen values for a template. Lists are
paginated on the server (``LIMIT``/``OFFSET`` of ``page_size`` rows, plus a count);
numbers are ``count``/``sum`` in the database, never rows counted in Python, except
over bundles and images, which are few next to devices and device images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from deltaport.fleet.models import (
    Bundle,
    BundleDevice,
    DeploymentDevice,
    DeploymentImage,
    DeploymentSet,
    Device,
    DeviceDeployment,
    DeviceImage,
    DownloadProgress,
    Event,
    Image,
)
from deltaport.fleet.states import ActivationState, ImageStatus, SetState

IN_PROGRESS_STATES = (SetState.PENDING.value, SetState.FAILED.value)  # not yet all present
SEARCH_MAX_CHARS = 200


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows, which page, how many rows in all."""

    rows: Sequence[Any]
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def _page(session: Session, query: Select[Any], number: int, size: int,
          total: int | None = None) -> Page:
    """One page of QUERY; its row count is counted unless the caller knows it (TOTAL)."""
    if total is None:
        total = session.scalar(select(func.count()).select_from(
            query.order_by(None).subquery())) or 0
    rows = session.execute(query.limit(size).offset((number - 1) * size)).all()
    return Page(rows, number, size, int(total))


# --- fleet overview -------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    """The fleet at a glance (see docs/dashboard.md for what each number means)."""

    devices: int
    online: int
    updating: int  # devices with an image in transit
    failed: int  # devices with a failed image
    deployments_in_progress: int
    failures_24h: int  # device images that failed in the last 24 hours
    bytes_sent: int  # bundle bytes sent to devices
    pull_bytes: int  # what layer pulls of the same images would have sent
    link_seconds_saved: float  # at each device's link rate

    @property
    def offline(self) -> int:
        return self.devices - self.online


def overview(session: Session, *, now: datetime, online_within: timedelta) -> Overview:
    """The overview's numbers, each one aggregate query."""
    total, online = session.execute(
        select(func.count(Device.id),
               func.coalesce(func.sum(case((Device.last_seen >= now - online_within, 1),
                                           else_=0)), 0))
    ).one()
    pairs = (  # DISTINCT in a subquery: hashed, where count(DISTINCT) would sort
        select(DeviceImage.status, DeviceImage.device_id).distinct()
        .where(DeviceImage.status.in_([ImageStatus.IN_TRANSIT.value, ImageStatus.FAILED.value]))
        .subquery()
    )
    by_status = dict(session.execute(
        select(pairs.c.status, func.count()).group_by(pairs.c.status)).tuples().all())
    in_progress = session.scalar(
        select(func.count()).where(DeploymentSet.state.in_(IN_PROGRESS_STATES))
    )
    failures = session.scalar(
        select(func.count()).where(Event.at >= now - timedelta(hours=24),
                                   Event.kind == "device_image",
                                   Event.to_status == ImageStatus.FAILED.value)
    )
    sent, pulled, saved = savings(session)
    return Overview(int(total), int(online), by_status.get(ImageStatus.IN_TRANSIT.value, 0),
                    by_status.get(ImageStatus.FAILED.value, 0), int(in_progress or 0),
                    int(failures or 0), sent, pulled, saved)


def bundle_pull_bytes(bundle: Bundle, layers: dict[str, list[tuple[str, int]]]) -> int:
    """What a layer pull of BUNDLE's targets would send: their layers it does not read."""
    have = set(bundle.sources)
    return sum(size for target in bundle.targets for diff_id, size in layers.get(target, [])
               if diff_id not in have)


def image_layers(session: Session, image_ids: set[str]) -> dict[str, list[tuple[str, int]]]:
    """Image ID → its (diff_id, uncompressed size) layers."""
    out: dict[str, list[tuple[str, int]]] = {}
    for image_id, diff_ids, sizes in session.execute(
        select(Image.image_id, Image.diff_ids, Image.layer_sizes)
        .where(Image.image_id.in_(image_ids))
    ):
        out[image_id] = [(d, int(s)) for d, s in zip(diff_ids, sizes, strict=False)]
    return out


def savings(session: Session, *, device_id: int | None = None) -> tuple[int, int, float]:
    """(bundle bytes sent, layer-pull bytes, link seconds saved), for one device or all."""
    query = (
        select(BundleDevice.bundle_id, func.count(),
               func.sum(8.0 / func.nullif(Device.link_rate_bps, 0)))
        .join(Device, Device.id == BundleDevice.device_id)
        .group_by(BundleDevice.bundle_id)
    )
    if device_id is not None:
        query = query.where(BundleDevice.device_id == device_id)
    per_bundle = {b: (int(n), float(inv or 0.0)) for b, n, inv in session.execute(query)}
    if not per_bundle:
        return 0, 0, 0.0
    bundles = session.scalars(select(Bundle).where(Bundle.id.in_(per_bundle))).all()
    layers = image_layers(session, {t for b in bundles for t in b.targets})
    sent = pulled = 0
    saved = 0.0
    for b in bundles:
        count, seconds_per_byte = per_bundle[b.id]
        pull = bundle_pull_bytes(b, layers)
        sent += b.size * count
        pulled += pull * count
        saved += (pull - b.size) * seconds_per_byte
    return sent, pulled, saved


# --- deployments ----------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentFilter:
    by: str | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def deployments(session: Session, f: DeploymentFilter, *, page: int, size: int) -> Page:
    """Deployment sets, newest first, filtered; rows are (set, devices, arrived)."""
    members = (
        select(DeploymentDevice.deployment_set_id.label("sid"),
               func.count().label("devices"),
               func.count(DeploymentDevice.arrived_at).label("arrived"))
        .group_by(DeploymentDevice.deployment_set_id).subquery()
    )
    query = (
        select(DeploymentSet, func.coalesce(members.c.devices, 0),
               func.coalesce(members.c.arrived, 0))
        .outerjoin(members, members.c.sid == DeploymentSet.id)
        .order_by(DeploymentSet.created_at.desc(), DeploymentSet.id)
    )
    if f.by:
        query = query.where(DeploymentSet.requested_by == f.by)
    if f.state:
        query = query.where(DeploymentSet.state == f.state)
    if f.since is not None:
        query = query.where(DeploymentSet.created_at >= f.since)
    if f.until is not None:
        query = query.where(DeploymentSet.created_at < f.until)
    return _page(session, query, page, size)


def requesters(session: Session, limit: int = 200) -> list[str]:
    """Who ordered deployments (for the filter's choices)."""
    return list(session.scalars(
        select(DeploymentSet.requested_by).distinct().order_by(DeploymentSet.requested_by)
        .limit(limit)
    ))


def _set_image_ids(set_id: str) -> Select[Any]:
    return (select(Image.image_id).join(DeploymentImage, DeploymentImage.image_id == Image.id)
            .where(DeploymentImage.deployment_set_id == set_id))


def _set_cells(set_id: str) -> Select[Any]:
    """Every (device × image) of a deployment set with what the fleet knows of it."""
    status = func.coalesce(DeviceImage.status, ImageStatus.ABSENT.value)
    return (
        select(Device.name, Device.link_rate_bps, Image.name.label("image"), status.label("status"),
               DeviceImage.failure_reason, DeviceImage.updated_at, Image.image_id,
               Bundle.size.label("bundle_size"), DeviceDeployment.state.label("activation"),
               DeviceDeployment.reason.label("activation_reason"), DeploymentDevice.arrived_at,
               DeviceImage.bundle_id, DownloadProgress.bundle_id.label("progress_bundle"),
               DownloadProgress.bytes_received.label("progress_received"),
               DownloadProgress.reported_at.label("progress_at"),
               DownloadProgress.rate_bps.label("progress_rate"))
        .select_from(DeploymentDevice)
        .join(Device, Device.id == DeploymentDevice.device_id)
        .join(DeploymentImage,
              DeploymentImage.deployment_set_id == DeploymentDevice.deployment_set_id)
        .join(Image, Image.id == DeploymentImage.image_id)
        .outerjoin(DeviceImage, and_(DeviceImage.device_id == Device.id,
                                     DeviceImage.image_id == Image.image_id))
        .outerjoin(Bundle, Bundle.id == DeviceImage.bundle_id)
        .outerjoin(DownloadProgress, DownloadProgress.device_image_id == DeviceImage.id)
        .outerjoin(DeviceDeployment, and_(DeviceDeployment.device_id == Device.id,
                                          DeviceDeployment.deployment_set_id == set_id))
        .where(DeploymentDevice.deployment_set_id == set_id)
    )


def deployment_counts(session: Session, set_id: str) -> dict[str, int]:
    """Device images of the set per status (absent, in_transit, present, failed, removed).

    Counted from device_images (by the (image, status) index), absent as the rest of
    devices × images: no (device × image) cross product is built.
    """
    devices = session.scalar(select(func.count()).where(
        DeploymentDevice.deployment_set_id == set_id)) or 0
    images = session.scalar(select(func.count()).where(
        DeploymentImage.deployment_set_id == set_id)) or 0
    members = select(DeploymentDevice.device_id).where(
        DeploymentDevice.deployment_set_id == set_id)
    out = {s: int(n) for s, n in session.execute(
        select(DeviceImage.status, func.count())
        .where(DeviceImage.image_id.in_(_set_image_ids(set_id)),
               DeviceImage.device_id.in_(members))
        .group_by(DeviceImage.status))}
    absent = int(devices) * int(images) - sum(out.values())
    if absent:
        out[ImageStatus.ABSENT.value] = absent
    return out


def activation_counts(session: Session, set_id: str) -> dict[str, int]:
    """Devices of the set per activation state (pending/delivered when no message came)."""
    state = func.coalesce(
        DeviceDeployment.state,
        case((DeploymentDevice.arrived_at.is_(None), ActivationState.PENDING.value),
             else_=ActivationState.DELIVERED.value),
    )
    return {s: int(n) for s, n in session.execute(
        select(state, func.count())
        .select_from(DeploymentDevice)
        .outerjoin(DeviceDeployment, and_(
            DeviceDeployment.device_id == DeploymentDevice.device_id,
            DeviceDeployment.deployment_set_id == DeploymentDevice.deployment_set_id))
        .where(DeploymentDevice.deployment_set_id == set_id)
        .group_by(state))}


def deployment_cells(session: Session, set_id: str, *, status: str | None, page: int,
                     size: int, counts: dict[str, int] | None = None) -> Page:
    """One page of the set's (device × image) cells, by device name.

    Unfiltered, a page is SIZE devices (each with all its images): the devices are
    paged first (a top-N of the set's devices), then only their cells are joined.
    With a STATUS other than absent, the index on (image, status) finds the cells.
    COUNTS, the set's :func:`deployment_counts` when the caller has them, give a
    status's number of cells (the same cells), so they are not counted twice.
    """
    known = None if counts is None or not status else counts.get(status, 0)
    if status and status != ImageStatus.ABSENT.value:
        query = (_set_cells(set_id).where(DeviceImage.status == status)
                 .where(DeviceImage.image_id.in_(_set_image_ids(set_id)))
                 .order_by(Device.name, Image.name))
        return _page(session, query, page, size, known)
    if status:  # absent: no device_images row at all
        query = _set_cells(set_id).where(DeviceImage.id.is_(None)).order_by(Device.name)
        return _page(session, query, page, size, known)
    total = session.scalar(select(func.count()).where(
        DeploymentDevice.deployment_set_id == set_id)) or 0
    chosen = (select(Device.id).join(DeploymentDevice, DeploymentDevice.device_id == Device.id)
              .where(DeploymentDevice.deployment_set_id == set_id)
              .order_by(Device.name).limit(size).offset((page - 1) * size))
    ids = list(session.scalars(chosen))
    rows = session.execute(_set_cells(set_id).where(Device.id.in_(ids))
                           .order_by(Device.name, Image.name)).all() if ids else []
    return Page(rows, page, size, int(total))


# --- devices --------------------------------------------------------------------

DEVICE_SORTS = {"name": Device.name, "last_seen": Device.last_seen,
                "link_rate": Device.link_rate_bps, "created": Device.created_at}


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


def devices(session: Session, *, search: str, sort: str, descending: bool, page: int,
            size: int) -> Page:
    """Devices matching SEARCH (a part of the name, or ``key=value`` of a label), sorted."""
    query = select(Device)
    search = search.strip()[:SEARCH_MAX_CHARS]
    if "=" in search:
        key, _, value = search.partition("=")
        query = query.where(Device.labels[key.strip()].as_string() == value.strip())
    elif search:
        query = query.where(or_(func.lower(Device.name).like(_like(search), escape="\\"),
                                func.lower(cast(Device.labels, String)).like(_like(search),
                                                                             escape="\\")))
    column = DEVICE_SORTS.get(sort, Device.name)
    query = query.order_by(column.desc() if descending else column.asc(), Device.id)
    return _page(session, query, page, size)


def image_counts_by_device(session: Session, device_ids: list[int]) -> dict[int, dict[str, int]]:
    """Device id → its device images per status, for the devices of one page."""
    out: dict[int, dict[str, int]] = {d: {} for d in device_ids}
    for device_id, status, n in session.execute(
        select(DeviceImage.device_id, DeviceImage.status, func.count())
        .where(DeviceImage.device_id.in_(device_ids))
        .group_by(DeviceImage.device_id, DeviceImage.status)
    ):
        out[device_id][status] = int(n)
    return out


def device_events(session: Session, device_id: int, *, page: int, size: int) -> Page:
    """A device's events, newest first."""
    query = (select(Event).where(Event.device_id == device_id)
             .order_by(Event.at.desc(), Event.id.desc()))
    return _page(session, query, page, size)


def image_names(session: Session, image_ids: set[str]) -> dict[str, str]:
    """Image ID → one registered name (the first in sort order)."""
    return dict(session.execute(
        select(Image.image_id, func.min(Image.name)).where(Image.image_id.in_(image_ids))
        .group_by(Image.image_id)).tuples().all())


# --- images ---------------------------------------------------------------------


def images(session: Session, *, search: str, page: int, size: int) -> Page:
    """Registered images, newest first, with how many devices have each (present)."""
    present = (
        select(DeviceImage.image_id.label("iid"), func.count().label("n"))
        .where(DeviceImage.status == ImageStatus.PRESENT.value)
        .group_by(DeviceImage.image_id).subquery()
    )
    query = (select(Image, func.coalesce(present.c.n, 0))
             .outerjoin(present, present.c.iid == Image.image_id)
             .order_by(Image.registered_at.desc(), Image.id))
    search = search.strip()[:SEARCH_MAX_CHARS]
    if search:
        query = query.where(func.lower(Image.name).like(_like(search), escape="\\"))
    return _page(session, query, page, size)


def image_counts(session: Session, image_id: str) -> dict[str, int]:
    """Devices per status of the image (content identity)."""
    return {s: int(n) for s, n in session.execute(
        select(DeviceImage.status, func.count()).where(DeviceImage.image_id == image_id)
        .group_by(DeviceImage.status))}


def image_devices(session: Session, image_id: str, *, status: str | None, page: int,
                  size: int, counts: dict[str, int] | None = None) -> Page:
    """Devices holding the image in some status: (name, status, reason, updated).

    COUNTS, the image's :func:`image_counts` when the caller has them, give the number
    of rows (the same device images), so they are not counted twice.
    """
    query = (select(Device.name, DeviceImage.status, DeviceImage.failure_reason,
                    DeviceImage.updated_at)
             .join(Device, Device.id == DeviceImage.device_id)
             .where(DeviceImage.image_id == image_id)
             .order_by(Device.name))
    if status:
        query = query.where(DeviceImage.status == status)
    known = None if counts is None else (counts.get(status, 0) if status
                                         else sum(counts.values()))
    return _page(session, query, page, size, known)


@dataclass(frozen=True)
class BundleRow:
    key: str
    size: int
    pull_bytes: int
    devices: int
    created_at: datetime


def image_bundles(session: Session, image_id: str, limit: int = 100) -> list[BundleRow]:
    """Bundles built for the image (newest first), with a layer pull's size next to each."""
    found = session.scalars(
        select(Bundle).where(cast(Bundle.targets, String).like(_like(image_id), escape="\\"))
        .order_by(Bundle.created_at.desc()).limit(limit)
    ).all()
    found = [b for b in found if image_id in b.targets]
    if not found:
        return []
    counts = dict(session.execute(
        select(BundleDevice.bundle_id, func.count())
        .where(BundleDevice.bundle_id.in_([b.id for b in found]))
        .group_by(BundleDevice.bundle_id)).tuples().all())
    layers = image_layers(session, {t for b in found for t in b.targets})
    return [BundleRow(b.key, b.size, bundle_pull_bytes(b, layers), int(counts.get(b.id, 0)),
                      b.created_at) for b in found]
