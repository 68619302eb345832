"""Image-to-device (`deltaport deploy`) and image registration (`deltaport image register`).

deploy: resolve the images a manifest needs → load what each device has → plan
(pure, ``planner``) → build each distinct bundle once, outside any transaction → put
it in the bundle store → in one transaction record the deployment set, the bundles,
and mark device images ``in_transit``. If nothing needs sending the set is complete
at once (and activated when a store is given).

The registry, signatures, ranking and bundle building are reached through the
Protocols in ``deltaport.pipelines.interfaces``.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.bundle import Release
from deltaport.errors import StateError, UnknownObjectError, UsageError
from deltaport.fleet import bulk, device_images, queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import (
    Bundle,
    BundleDevice,
    BundleRelease,
    BundleVersion,
    DeploymentDevice,
    DeploymentImage,
    DeploymentSet,
    Image,
)
from deltaport.fleet.states import ImageStatus, SetState
from deltaport.pipelines.interfaces import (
    BuiltBundle,
    BundleBuilder,
    BundleSpec,
    ImageIdentityReader,
    ImageInfo,
    SignatureMaker,
    SourceRanker,
)
from deltaport.pipelines.manifest import Manifest, normalize_reference
from deltaport.pipelines.manifest_to_device import activate
from deltaport.pipelines.planner import (
    UNSIGNED,
    DeviceInventory,
    Plan,
    PlannedBundle,
    plan_deployment,
)
from deltaport.pipelines.releases import (
    DEFAULT_RELEASE_TTL_SECONDS,
    assign_releases,
    device_target_name,
    release_is_current,
    save_releases,
)
from deltaport.storage.base import BundleStore

Progress = Callable[[int, int, str], None]  # (done, total, bundle key)

__all__ = ["DEFAULT_RELEASE_TTL_SECONDS", "device_target_name", "release_is_current"]

# --- register ----------------------------------------------------------------


def register(
    session: Session,
    *,
    reference: str,
    name: str | None,
    reader: ImageIdentityReader,
    signer: SignatureMaker,
    signatures_dir: Path,
    build_id: str | None = None,
    registered_by: str | None = None,
) -> Image:
    """Read REFERENCE's identity, write its signature file, record it under NAME.

    NAME defaults to the reference without its transport (``docker://host/app:v1`` →
    ``host/app:v1``).
    """
    identity = reader.read_identity(reference)
    signature = signer.make_signature(reference, identity, signatures_dir)
    return queries.register_image(
        session,
        name=name or normalize_reference(reference),
        identity=identity,
        build_id=build_id,
        signature_path=str(signature),
        registered_by=registered_by,
    )


def registered_image_doc(image: Image) -> dict[str, Any]:
    """IMAGE as JSON: what `image register --json` prints and the hub's POST /images answers."""
    return {
        "image": image.name,
        "image_id": image.image_id,
        "manifest_digest": image.manifest_digest,
        "layers": len(image.diff_ids),
        "signature": image.signature_path,
    }


# --- deploy ------------------------------------------------------------------

PRIORITY_LIMIT = 1_000_000  # |priority| at most this: plenty, and fits a 32-bit column


def check_priority(value: object) -> int:
    """VALUE as a deployment priority: an integer within ±PRIORITY_LIMIT (lower is more urgent).

    Raises:
        UsageError: not an integer, or out of range.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"priority must be an integer, not {value!r}")
    if abs(value) > PRIORITY_LIMIT:
        raise UsageError(f"priority must be between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}")
    return value


@dataclass(frozen=True)
class DeployRequest:
    """Who deploys what to which devices."""

    manifest: Manifest
    requested_by: str
    contact_email: str
    device_names: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0  # devices download lower first (docs/hub-api.md), then older sets
    unsigned: bool = False  # build unsigned bundles when the hub has no signing key

    def __post_init__(self) -> None:
        check_priority(self.priority)


@dataclass(frozen=True)
class DeviceDeployment:
    """One device's share of a deployment (a row of `deploy`'s output)."""

    device: str
    sending: tuple[str, ...]  # image names sent in bundles
    present: tuple[str, ...]
    waiting: tuple[str, ...]  # already in transit from an earlier deployment
    bundles: tuple[str, ...]  # bundle keys
    bytes: int
    link_rate_bps: int

    @property
    def eta_seconds(self) -> float:
        """Estimated transfer time at the device's link rate (no protocol overhead)."""
        return self.bytes * 8 / self.link_rate_bps


@dataclass(frozen=True)
class DeployResult:
    """What `deploy` did."""

    deployment_id: str
    state: str
    devices: tuple[DeviceDeployment, ...]
    built: tuple[str, ...]  # bundle keys built by this deployment
    reused: tuple[str, ...]  # bundle keys an earlier deployment had built
    activated: bool = False
    priority: int = 0


def deploy_result_doc(result: DeployResult) -> dict[str, Any]:
    """RESULT as JSON: what `deploy --json` prints and the hub's POST /deployments answers."""
    return {
        "deployment": result.deployment_id,
        "state": result.state,
        "activated": result.activated,
        "priority": result.priority,
        "built": list(result.built),
        "reused": list(result.reused),
        "devices": [
            {
                "device": d.device,
                "sending": list(d.sending),
                "present": list(d.present),
                "waiting": list(d.waiting),
                "bundles": list(d.bundles),
                "bytes": d.bytes,
                "link_rate_bps": d.link_rate_bps,
                "eta_seconds": round(d.eta_seconds, 1),
            }
            for d in result.devices
        ],
    }


@dataclass(frozen=True)
class PlanningInput:
    """Everything the planner needs, loaded in one read transaction."""

    images: tuple[Image, ...]  # the registrations the manifest needs, deduplicated
    references: tuple[str, ...]  # the manifest reference of each, same order
    devices: tuple[queries.DeviceRef, ...]
    statuses: Mapping[int, Mapping[str, str]]  # device id → image ID → status
    catalog: Mapping[str, ImageInfo]
    existing: Mapping[str, Bundle]  # bundle key → bundle already built
    releases: Mapping[str, BundleRelease] = field(default_factory=dict)  # bundle key → release
    counters: Mapping[str, BundleVersion] = field(default_factory=dict)  # by target name


def bundle_store_key(key: str) -> str:
    """Store key of a bundle file."""
    return f"bundles/{key}.dpb"


def order_store_key(device: str, set_id: str) -> str:
    """Store key of the per-device order listing a deployment's bundles for it."""
    return f"devices/{device}/orders/{set_id}.json"


def new_deployment_id() -> str:
    """d-YYYYmmddHHMMSS-xxxxxx: sortable by time, unique."""
    return f"d-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def load_planning_input(session: Session, request: DeployRequest) -> PlanningInput:
    """Resolve images and devices, and load inventories and known bundles.

    Raises:
        UnknownObjectError: images not registered or devices unknown (all listed).
    """
    resolved = _resolve_images(session, request.manifest)
    images = [img for _, img in resolved]
    devices = queries.select_devices(
        session, names=request.device_names, labels=dict(request.labels)
    )
    statuses = device_images.device_statuses(session, [d.id for d in devices])
    on_devices = {i for per in statuses.values() for i in per}
    catalog = {
        i: queries.image_info(img)
        for i, img in queries.images_by_content(session, on_devices).items()
    }
    catalog.update((img.image_id, queries.image_info(img)) for img in images)
    existing = {b.key: b for b in session.scalars(select(Bundle))}
    releases = {r.bundle_key: r for r in session.scalars(select(BundleRelease))}
    counters = {c.target_name: c for c in session.scalars(select(BundleVersion))}
    return PlanningInput(
        images=tuple(images),
        references=tuple(ref for ref, _ in resolved),
        devices=tuple(devices),
        statuses=statuses,
        catalog=catalog,
        existing=existing,
        releases=releases,
        counters=counters,
    )


def _resolve_images(session: Session, manifest: Manifest) -> list[tuple[str, Image]]:
    found: dict[int, tuple[str, Image]] = {}
    unknown = []
    for ref in manifest.references:
        try:
            img = queries.find_image(session, ref)
            found.setdefault(img.id, (ref, img))
        except UnknownObjectError:
            unknown.append(ref)
    if unknown:
        raise UnknownObjectError(
            "images not registered (run deltaport image register): " + ", ".join(unknown)
        )
    return list(found.values())


def inventories(data: PlanningInput) -> list[DeviceInventory]:
    """The planner's view of each device: images present, images in transit."""
    present_s, moving_s = ImageStatus.PRESENT.value, ImageStatus.IN_TRANSIT.value
    empty: Mapping[str, str] = {}
    out = []
    for d in data.devices:
        per = data.statuses.get(d.id, empty)
        present = frozenset(i for i, s in per.items() if s == present_s)
        moving = frozenset(i for i, s in per.items() if s == moving_s)
        out.append(DeviceInventory(d.name, present, moving))
    return out


def make_plan(data: PlanningInput, ranker: SourceRanker, store: BundleStore, *,
              release_ttl: float = DEFAULT_RELEASE_TTL_SECONDS,
              signer: str | None = None) -> Plan:
    """Plan the deployment; a known bundle counts only if its file is still in the store
    and its signed release is current (:func:`release_is_current`)."""
    now = datetime.now(UTC).timestamp()
    reusable = set()
    for key in data.existing:
        release, image_id = data.releases.get(key), data.existing[key].targets[0]
        last = data.counters.get(release.target_name) if release is not None else None
        if release_is_current(release, str(image_id), last, now, release_ttl) and store.exists(
                bundle_store_key(key)):
            reusable.add(key)
    targets = [data.catalog[img.image_id] for img in data.images]
    return plan_deployment(
        inventories(data), targets, data.catalog, ranker.choose_sources, reusable,
        signer=signer or UNSIGNED,
    )


def check_signing(plan: Plan, signer: str | None, request: DeployRequest) -> None:
    """Refuse to send unsigned bundles unless the request says so (``--unsigned``).

    Raises:
        StateError: bundles to send, no signing key, and no ``unsigned``.
    """
    if plan.bundles and signer is None and not request.unsigned:
        raise StateError(
            f"no bundle signing key: the {len(plan.bundles)} bundle(s) this deployment "
            "needs would be unsigned, and devices refuse unsigned bundles. Create the "
            "hub's key (deltaport keys generate DATA_DIR/keys, or deltaport hub init), "
            "or deploy with --unsigned for devices that run without trusted keys"
        )


def build_bundles(
    plan: Plan,
    catalog: Mapping[str, ImageInfo],
    *,
    builder: BundleBuilder,
    store: BundleStore,
    work_dir: Path,
    progress: Progress | None = None,
    releases: Mapping[str, BundleRelease] | None = None,
) -> dict[str, tuple[BuiltBundle, str]]:
    """Build each bundle the plan needs, once, and put it in the store.

    ``releases`` (bundle key → release, :func:`assign_releases`) are signed into them.
    Returns bundle key → (built bundle, store location).
    """
    out = {}
    todo = plan.to_build
    for n, planned in enumerate(todo):
        spec = _spec(planned, catalog)
        row = (releases or {}).get(planned.key)
        if row is not None:
            spec = dataclasses.replace(spec, release=Release(row.version, row.expires_at))
        built = builder.build(spec, work_dir)
        location = store.put_file(bundle_store_key(planned.key), built.path)
        built.path.unlink(missing_ok=True)
        out[planned.key] = (built, location)
        if progress is not None:
            progress(n + 1, len(todo), planned.key)
    return out


def _spec(planned: PlannedBundle, catalog: Mapping[str, ImageInfo]) -> BundleSpec:
    """The builder's order: registered images whose every layer is a chosen source
    (so a builder reading them whole uses nothing the device lacks)."""
    wanted = set(planned.sources)
    holders = tuple(
        info
        for info in catalog.values()
        if info.diff_ids and set(info.diff_ids) <= wanted and info != planned.target
    )
    base = catalog.get(planned.config_base) if planned.config_base else None
    return BundleSpec(planned.key, planned.target, planned.sources, holders, config_base=base)


def deploy(
    engine: Engine,
    request: DeployRequest,
    *,
    ranker: SourceRanker,
    builder: BundleBuilder,
    store: BundleStore,
    work_dir: Path,
    progress: Progress | None = None,
    activate_when_complete: bool = True,
    manifest_key: Path | None = None,
    release_ttl: float = DEFAULT_RELEASE_TTL_SECONDS,
    on_recorded: Callable[[Session, DeployResult], None] | None = None,
    set_id: str | None = None,
) -> DeployResult:
    """The image-to-device pipeline (see the module docstring).

    SET_ID: record the set under this id (a queued deployment's, ``deltaport.jobs``);
    default a new one.

    ON_RECORDED runs in the transaction that records the set (a rollout is made
    there, so no status message can see the set complete without its rollout).

    A set with nothing to send is complete at once; it is activated (signed with
    MANIFEST_KEY, the hub's manifest key file) when ACTIVATE_WHEN_COMPLETE and a
    MANIFEST_KEY is given, and stays ``complete`` otherwise.

    Raises:
        UnknownObjectError: unknown images or devices.
        StateError: a concurrent change to the same devices.
        MissingSourceError / TransferError / StorageError from building and storing.
    """
    with session_scope(engine) as session:
        data = load_planning_input(session, request)
    signer = builder.signer
    plan = make_plan(data, ranker, store, release_ttl=release_ttl, signer=signer)
    check_signing(plan, signer, request)
    releases = assign_releases(engine, plan, release_ttl=release_ttl)
    built = build_bundles(
        plan, data.catalog, builder=builder, store=store, work_dir=work_dir, progress=progress,
        releases=releases,
    )
    with session_scope(engine) as session:
        result = record_deployment(session, request, data, plan, built, store, set_id=set_id)
        save_releases(session, releases, built)
        if on_recorded is not None:
            on_recorded(session, result)
        complete = result.state == SetState.COMPLETE.value
        if complete and activate_when_complete and manifest_key is not None:
            activate(
                session, set_id=result.deployment_id, store=store, manifest_key=manifest_key
            )
            result = dataclasses.replace(result, state=SetState.ACTIVE.value, activated=True)
    return result


def record_deployment(
    session: Session,
    request: DeployRequest,
    data: PlanningInput,
    plan: Plan,
    built: Mapping[str, tuple[BuiltBundle, str]],
    store: BundleStore,
    *,
    set_id: str | None = None,
) -> DeployResult:
    """Write the deployment set, bundles, orders and in_transit device images."""
    set_id = set_id or new_deployment_id()
    nothing = plan.nothing_to_send and not any(p.waiting for p in plan.devices)
    dset = DeploymentSet(
        id=set_id,
        requested_by=request.requested_by,
        contact_email=request.contact_email,
        manifest_kind=request.manifest.kind,
        manifest=_manifest_record(request.manifest),
        state=SetState.COMPLETE.value if nothing else SetState.PENDING.value,
        priority=request.priority,
    )
    session.add(dset)
    session.flush()
    device_images.log_event(
        session, kind="deployment_set", deployment_set_id=set_id, to_status=dset.state
    )
    bundles = _bundle_rows(session, set_id, plan, data.existing, built)
    by_name = {d.name: d for d in data.devices}
    _members(session, set_id, data, plan)
    sends = [
        (by_name[dp.device].id, bundles[k].targets[0], bundles[k].id)
        for dp in plan.devices
        for k in dp.bundle_keys
    ]
    device_images.send_images(session, sends=sends, current=data.statuses, deployment_set_id=set_id)
    links = (  # COPY on PostgreSQL: one row per device and bundle
        (bundles[k].id, by_name[dp.device].id, set_id)
        for dp in plan.devices
        for k in dp.bundle_keys
    )
    bulk.copy_rows(session, cast(Table, BundleDevice.__table__),
                   ("bundle_id", "device_id", "deployment_set_id"), links)
    rows = _device_rows(plan, data, bundles)
    _write_orders(store, set_id, plan, bundles)
    if nothing:
        dset.finished_at = dset.created_at
    return DeployResult(
        deployment_id=set_id,
        state=dset.state,
        devices=rows,
        built=tuple(built),
        reused=tuple(b.key for b in plan.bundles if b.exists),
        priority=dset.priority,
    )


def _manifest_record(manifest: Manifest) -> dict[str, object]:
    return {
        "document": manifest.document,
        "modules": [{"module": m.module, "reference": m.reference} for m in manifest.modules],
    }


def _bundle_rows(
    session: Session,
    set_id: str,
    plan: Plan,
    existing: Mapping[str, Bundle],
    built: Mapping[str, tuple[BuiltBundle, str]],
) -> dict[str, Bundle]:
    """Bundle rows for every planned bundle: reused as they are, new or rebuilt updated."""
    rows: dict[str, Bundle] = {}
    for planned in plan.bundles:
        row = existing.get(planned.key)
        if row is not None:
            row = session.merge(row)
        if planned.key in built:
            made, location = built[planned.key]
            if row is None:
                row = Bundle(key=planned.key, deployment_set_id=set_id)
                session.add(row)
            row.targets, row.sources = [planned.target.image_id], list(planned.sources)
            row.size, row.digest, row.location = made.size, made.digest, location
        if row is None:
            raise StateError(f"bundle {planned.key} was neither built nor found")
        rows[planned.key] = row
    session.flush()
    return rows


def _members(session: Session, set_id: str, data: PlanningInput, plan: Plan) -> None:
    """deployment_devices (arrived_at set where everything is already present) and images."""
    by_name = {d.name: d for d in data.devices}
    now = datetime.now(UTC)
    members = (  # COPY on PostgreSQL: one row per device
        (set_id, by_name[dp.device].id, now if not dp.bundle_keys and not dp.waiting else None)
        for dp in plan.devices
    )
    bulk.copy_rows(session, cast(Table, DeploymentDevice.__table__),
                   ("deployment_set_id", "device_id", "arrived_at"), members)
    session.add_all(
        DeploymentImage(deployment_set_id=set_id, image_id=img.id, reference=ref)
        for img, ref in zip(data.images, data.references, strict=True)
    )


def _device_rows(
    plan: Plan, data: PlanningInput, bundles: Mapping[str, Bundle]
) -> tuple[DeviceDeployment, ...]:
    names = {i.image_id: i.name for i in plan.targets}
    rates = {d.name: d.link_rate_bps for d in data.devices}
    return tuple(
        DeviceDeployment(
            device=dp.device,
            sending=tuple(names[bundles[k].targets[0]] for k in dp.bundle_keys),
            present=tuple(names[i] for i in dp.present),
            waiting=tuple(names[i] for i in dp.waiting),
            bundles=dp.bundle_keys,
            bytes=sum(bundles[k].size for k in dp.bundle_keys),
            link_rate_bps=rates[dp.device],
        )
        for dp in plan.devices
    )


def _write_orders(
    store: BundleStore, set_id: str, plan: Plan, bundles: Mapping[str, Bundle]
) -> None:
    """Per device, the list of bundles this deployment sends it (what the agent fetches)."""
    for dp in plan.devices:
        if not dp.bundle_keys:
            continue
        order = {
            "deployment": set_id,
            "bundles": [
                {
                    "key": k,
                    "store_key": bundle_store_key(k),
                    "location": bundles[k].location,
                    "digest": bundles[k].digest,
                    "size": bundles[k].size,
                    "target": bundles[k].targets[0],
                }
                for k in dp.bundle_keys
            ],
        }
        store.put_bytes(order_store_key(dp.device, set_id), json.dumps(order).encode())
