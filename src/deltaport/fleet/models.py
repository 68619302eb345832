"""The fleet database: devices, images, what each device has, bundles, deployments, events.

SQLAlchemy 2 typed models. The schema is created only by the Alembic migrations in
``deltaport.fleet.migrations`` (a test checks they match these models). Columns use
portable types so the same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite drops the timezone; without this, rows read back from SQLite and from
    PostgreSQL would compare differently.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of all fleet models."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Device(Base):
    """An edge device: who it is, how to reach it, how fast its link is."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # every device request is looked up by its token hash (hub.auth): indexed, migration 0012
    token_hash: Mapped[str] = mapped_column(String(200), index=True)
    link_rate_bps: Mapped[int] = mapped_column(BigInteger)
    local_registry: Mapped[str] = mapped_column(String(255), default="localhost:5000")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_seen: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the latest runtime report (docs/device-runtime.md §4); its rows are device_modules
    runtime_digest: Mapped[str | None] = mapped_column(String(100), default=None)
    runtime_deployment_set_id: Mapped[str | None] = mapped_column(String(200), default=None)
    runtime_version: Mapped[int | None] = mapped_column(BigInteger, default=None)
    runtime_last_attempt: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    runtime_reported_at: Mapped[datetime | None] = mapped_column(default=None)


class Image(Base):
    """A registered image: name:tag plus the identity of its content."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("name", "image_id", name="uq_images_name_image_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(500), index=True)  # registry/repo:tag
    image_id: Mapped[str] = mapped_column(String(100), index=True)  # sha256 of the config
    manifest_digest: Mapped[str] = mapped_column(String(100))
    diff_ids: Mapped[list[Any]] = mapped_column()  # uncompressed layer digests, in order
    layer_sizes: Mapped[list[Any]] = mapped_column()  # uncompressed sizes, same order
    build_id: Mapped[str | None] = mapped_column(String(200), default=None)
    signature_path: Mapped[str | None] = mapped_column(String(1000), default=None)
    registered_by: Mapped[str | None] = mapped_column(String(200), default=None)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)


class Bundle(Base):
    """A built patch bundle: which targets it rebuilds from which source layers."""

    __tablename__ = "bundles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)  # see planner.bundle_key
    targets: Mapped[list[Any]] = mapped_column()  # target image IDs
    sources: Mapped[list[Any]] = mapped_column()  # source diff_ids the patch reads
    size: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(100))
    location: Mapped[str] = mapped_column(String(1000))
    deployment_set_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployment_sets.id"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BundleVersion(Base):
    """The last release version the hub signed for a target name, as devices store it.

    One counter per name (``demo/app:stable``), whatever the registry host: every
    bundle built for the name takes the next value, so a redeploy of an old image is a
    newer release and a replayed old bundle is older (docs/bundle-format.md, §9).
    """

    __tablename__ = "bundle_versions"

    target_name: Mapped[str] = mapped_column(String(300), primary_key=True)
    last_version: Mapped[int] = mapped_column(BigInteger)
    last_image_id: Mapped[str] = mapped_column(String(100))  # the image of that version


class BundleRelease(Base):
    """The release signed into a stored bundle: reused only while it is the newest."""

    __tablename__ = "bundle_releases"

    bundle_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    target_name: Mapped[str] = mapped_column(String(300))
    version: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)  # Unix seconds, as signed


class BundleDevice(Base):
    """Which device was sent which bundle, for which deployment set."""

    __tablename__ = "bundle_devices"

    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    deployment_set_id: Mapped[str] = mapped_column(
        ForeignKey("deployment_sets.id"), primary_key=True
    )


class DeploymentSet(Base):
    """One `deltaport deploy`: who ordered it, the manifest, the devices, its state."""

    __tablename__ = "deployment_sets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(200), index=True)
    contact_email: Mapped[str] = mapped_column(String(320))
    manifest_kind: Mapped[str] = mapped_column(String(20))  # "iotedge" | "compose"
    manifest: Mapped[dict[str, Any]] = mapped_column()  # the resolved manifest document
    state: Mapped[str] = mapped_column(String(20))
    # download order on the devices: lower is more urgent (docs/hub-api.md), then created_at
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class DeploymentDevice(Base):
    """A device that a deployment set targets; arrived_at is set once it has every image."""

    __tablename__ = "deployment_devices"
    __table_args__ = (Index("ix_deployment_devices_arrived", "deployment_set_id", "arrived_at"),)

    deployment_set_id: Mapped[str] = mapped_column(
        ForeignKey("deployment_sets.id"), primary_key=True
    )
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    arrived_at: Mapped[datetime | None] = mapped_column(default=None)


class DeploymentImage(Base):
    """An image a deployment set needs, and the reference the manifest used for it."""

    __tablename__ = "deployment_images"

    deployment_set_id: Mapped[str] = mapped_column(
        ForeignKey("deployment_sets.id"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), primary_key=True)
    reference: Mapped[str] = mapped_column(String(500))


class DeviceImage(Base):
    """One image's content on one device, as far as the agent has told us.

    Keyed by the content's image ID, not by a registration: the same content
    registered under two names is one device image.
    """

    __tablename__ = "device_images"
    __table_args__ = (
        UniqueConstraint("device_id", "image_id", name="uq_device_images_device_image"),
        Index("ix_device_images_image_status", "image_id", "status"),
        Index("ix_device_images_set", "deployment_set_id"),
        Index("ix_device_images_status_device", "status", "device_id"),  # the overview
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    image_id: Mapped[str] = mapped_column(String(100))  # content identity (config digest)
    status: Mapped[str] = mapped_column(String(20))
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id"), default=None)
    deployment_set_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployment_sets.id"), default=None
    )
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """Append-only log of every status change (the time series behind `status history`)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_at", "at"),
        # a message id is the device's own: another device may use the same one
        UniqueConstraint("device_id", "message_id", name="uq_events_device_message"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    message_id: Mapped[str | None] = mapped_column(String(200), default=None)
    kind: Mapped[str] = mapped_column(String(40))  # "device_image" | "deployment_set" | ...
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), default=None)
    image_id: Mapped[str | None] = mapped_column(String(100), default=None)
    deployment_set_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployment_sets.id"), default=None
    )
    from_status: Mapped[str | None] = mapped_column(String(20), default=None)
    to_status: Mapped[str | None] = mapped_column(String(20), default=None)
    detail: Mapped[str | None] = mapped_column(Text, default=None)


class DesiredManifest(Base):
    """One signed desired manifest published for a device: its version counter.

    The version is max + 1 per device, taken in the publishing transaction; the
    unique (device, version) constraint makes a concurrent publisher that took the
    same number insert nothing, and it takes the next one
    (``deltaport.pipelines.manifest_to_device``). The envelope itself is in the store.
    """

    __tablename__ = "desired_manifests"
    __table_args__ = (
        UniqueConstraint("device_id", "version", name="uq_desired_manifests_device_version"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    version: Mapped[int] = mapped_column(BigInteger)
    deployment_set_id: Mapped[str] = mapped_column(ForeignKey("deployment_sets.id"))
    digest: Mapped[str] = mapped_column(String(100))  # sha256 of the envelope bytes
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeviceDeployment(Base):
    """How activating one deployment set went on one device (activation messages, §3)."""

    __tablename__ = "device_deployments"
    __table_args__ = (Index("ix_device_deployments_set", "deployment_set_id"),)

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    deployment_set_id: Mapped[str] = mapped_column(
        ForeignKey("deployment_sets.id"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger)  # desired manifest version reported on
    state: Mapped[str] = mapped_column(String(20))  # fleet.states.ActivationState
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeviceModule(Base):
    """One module as the device's latest runtime report shows it (§4); a report replaces all."""

    __tablename__ = "device_modules"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    module: Mapped[str] = mapped_column(String(200), primary_key=True)
    deployment_set_id: Mapped[str | None] = mapped_column(String(200), default=None)
    desired_image_id: Mapped[str | None] = mapped_column(String(100), default=None)
    running_image_id: Mapped[str | None] = mapped_column(String(100), default=None)
    runtime_status: Mapped[str] = mapped_column(String(20))
    health: Mapped[str | None] = mapped_column(String(20), default=None)
    exit_code: Mapped[int | None] = mapped_column(BigInteger, default=None)
    restart_count: Mapped[int | None] = mapped_column(BigInteger, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    exited_at: Mapped[datetime | None] = mapped_column(default=None)
    status_description: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One change an operator asked for: who, what, on what, when, from where, and how it went.

    Written by the hub for every operator request that changes something (``remote``
    is the client address, ``outcome`` the HTTP status) and by the local CLI (``remote``
    is ``"local"``, ``outcome`` 0 for done). Append-only; ``fleet.audit`` reads it.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    operator: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))  # fleet.audit.AuditAction
    target: Mapped[str | None] = mapped_column(String(300), default=None)
    remote: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[int] = mapped_column(Integer)


class UiSession(Base):
    """A signed-in dashboard session (``deltaport.hub.ui.sessions``), shared by every hub.

    ``id`` is the sha256 of the cookie's secret (the secret itself is never stored);
    ``csrf`` the token its forms carry; ``role`` the operator token's role then.
    """

    __tablename__ = "ui_sessions"
    __table_args__ = (Index("ix_ui_sessions_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(71), primary_key=True)  # sha256:<hex>
    operator: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # hub.settings.OperatorRole
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Rollout(Base):
    """A deployment set staged on all its devices and activated wave by wave (issue 14).

    ``state`` is a ``rollout.plan.RolloutState``; the thresholds are kept as written
    (``95%``, ``2%`` or ``3``) and parsed by ``rollout.plan.parse_threshold``.
    """

    __tablename__ = "rollouts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    deployment_set_id: Mapped[str] = mapped_column(ForeignKey("deployment_sets.id"), unique=True)
    state: Mapped[str] = mapped_column(String(20))
    waves: Mapped[list[Any]] = mapped_column()  # cumulative percentages, e.g. [1, 10, 50, 100]
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    success_threshold: Mapped[str] = mapped_column(String(10))
    error_threshold: Mapped[str] = mapped_column(String(10))
    approve_each: Mapped[bool] = mapped_column(default=False)
    approved_wave: Mapped[int] = mapped_column(Integer, default=0)
    failures_accepted: Mapped[int] = mapped_column(Integer, default=0)
    requested_by: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str | None] = mapped_column(Text, default=None)  # why it waits
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class RolloutDevice(Base):
    """A device of a rollout: its wave, its place in the order, when its wave activated it."""

    __tablename__ = "rollout_devices"

    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    activated_at: Mapped[datetime | None] = mapped_column(default=None)


class NotifyEvent(Base):
    """One event told to other systems (``deltaport.notify.events``, docs/events.md).

    Written in the transaction of the state change it tells about; ``id`` is unique
    (``evt-<hex>``) and is what receivers deduplicate on.
    """

    __tablename__ = "notify_events"
    __table_args__ = (Index("ix_notify_events_at", "at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))  # notify.events.EventKind
    subject: Mapped[str] = mapped_column(String(300))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Delivery(Base):
    """One event (or email) to deliver to one webhook endpoint or one address: the outbox.

    ``state`` is a ``notify.outbox.DeliveryState``; a dispatcher claims a due row by a
    compare-and-set on ``claim`` (and ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two
    hubs never deliver one attempt at the same time; a claim older than its lease is
    taken again (delivered at least once).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", "target", name="uq_deliveries_event_target"),
        Index("ix_deliveries_due", "state", "next_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(10))  # notify.outbox.Channel
    target: Mapped[str] = mapped_column(String(320))  # endpoint name, or email address
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # an email's text
    state: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(default=utcnow)
    claim: Mapped[str | None] = mapped_column(String(40), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class QueuedDeployment(Base):
    """A deployment whose patches build in workers (``deltaport.jobs``), by the id the
    operator was given; ``state`` is a ``jobs.queue.BuildState``. The set is recorded
    under the same id in ``deployment_sets`` once assembled."""

    __tablename__ = "queued_deployments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the DeployRequest, as JSON
    state: Mapped[str] = mapped_column(String(12))
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class PatchBuild(Base):
    """One layer patch a queued deployment waits for; done once it is in the shared cache.

    ``built_by`` names the worker that really built it (None: found already built).
    """

    __tablename__ = "patch_builds"
    __table_args__ = (Index("ix_patch_builds_key", "patch_key"),)

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("queued_deployments.id"), primary_key=True
    )
    patch_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    done_at: Mapped[datetime | None] = mapped_column(default=None)
    built_by: Mapped[str | None] = mapped_column(String(200), default=None)


class DeploymentRetry(Base):
    """How often a deployment set's failed deliveries are retried (``--retries N``), and,
    for a set made by a retry, the set it retries (``pipelines.retry``, issue 14)."""

    __tablename__ = "deployment_retries"

    deployment_set_id: Mapped[str] = mapped_column(
        ForeignKey("deployment_sets.id"), primary_key=True
    )
    retries: Mapped[int | None] = mapped_column(Integer, default=None)  # None: the default
    retry_of: Mapped[str | None] = mapped_column(
        ForeignKey("deployment_sets.id"), default=None, index=True
    )


class DeliveryRetry(Base):
    """The automatic retry of one failed image on one device of a deployment set.

    ``state`` is a ``pipelines.retry_policy.RetryState``; ``retries_made`` counts the
    retry deployments made (``retry_set_id`` is the newest).
    """

    __tablename__ = "delivery_retries"
    __table_args__ = (
        UniqueConstraint("deployment_set_id", "device_id", "image_id",
                         name="uq_delivery_retries_set_device_image"),
        Index("ix_delivery_retries_due", "state", "next_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_set_id: Mapped[str] = mapped_column(ForeignKey("deployment_sets.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    image_id: Mapped[str] = mapped_column(String(100))  # content identity (config digest)
    state: Mapped[str] = mapped_column(String(20))
    retries_made: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime | None] = mapped_column(default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)  # the last failure
    retry_set_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployment_sets.id"), default=None
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DownloadProgress(Base):
    """How much of its bundle a device has received, as its agent last said (issue 12).

    One row per device image (latest report wins). It describes the in-transit episode
    it was reported in: shown only while the device image is ``in_transit`` with the
    same ``bundle_id`` and ``reported_at`` is not older than the image's ``updated_at``
    (``deltaport.fleet.progress``). ``rate_bps`` (bytes/s) is the hub's smoothed rate
    between consecutive reports, None until two reports of the episode arrived.
    """

    __tablename__ = "download_progress"

    device_image_id: Mapped[int] = mapped_column(ForeignKey("device_images.id"),
                                                 primary_key=True)
    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id"))
    bytes_received: Mapped[int] = mapped_column(BigInteger)
    reported_at: Mapped[datetime] = mapped_column()
    rate_bps: Mapped[float | None] = mapped_column(default=None)
