"""A deployment's patch builds through the queue: enqueue, progress, assembly.

:func:`enqueue_deploy` plans like ``image_to_device.deploy``, records a
:class:`~deltaport.fleet.models.QueuedDeployment` (state ``building``) with one
:class:`~deltaport.fleet.models.PatchBuild` row per distinct layer patch, and defers
one ``build_patch`` job per patch not yet in the shared cache, with the patch key as
its ``lock`` (a job for it enqueued while another runs waits, then finds it built),
unless a job for it waits already (:func:`defer_build`). :func:`mark_done` is called
by the job once the patch is shared; it returns the deployments whose every patch is
then done, for ``assemble_deployment`` (:func:`assemble`), which runs the deploy
pipeline (every patch a cache hit) and records the set under the queued id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from procrastinate import App
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from deltaport.config import Settings
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import DeploymentSet, PatchBuild, QueuedDeployment
from deltaport.jobs.app import ASSEMBLE, BUILD_PATCH, ensure_schema, is_postgresql, make_app
from deltaport.jobs.identity import PatchJob, bundle_patch_jobs, distinct_jobs
from deltaport.jobs.patches import is_shared
from deltaport.manifests import Manifest, ModuleImage
from deltaport.pipelines.image_to_device import (
    DEFAULT_RELEASE_TTL_SECONDS,
    DeployRequest,
    DeployResult,
    _spec,
    check_signing,
    load_planning_input,
    make_plan,
    new_deployment_id,
)
from deltaport.pipelines.interfaces import BundleBuilder, SourceRanker
from deltaport.storage.base import BundleStore

log = logging.getLogger(__name__)


class BuildState(StrEnum):
    """Where a queued deployment stands (``queued_deployments.state``)."""

    BUILDING = "building"  # its patches are being built by workers
    RECORDED = "recorded"  # assembled: the set is in deployment_sets under the same id
    FAILED = "failed"  # assembly failed for good (``error`` says why)


RETRIES_KEY = "retries"  # a queued request's --retries N (absent: the hub's default)


def retries_of(doc: dict[str, Any]) -> int | None:
    """The ``--retries`` a queued request doc carries (None: the hub's default)."""
    value = doc.get(RETRIES_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def request_doc(request: DeployRequest) -> dict[str, Any]:
    """REQUEST as JSON (kept in ``queued_deployments.request``)."""
    m = request.manifest
    return {
        "manifest": {
            "kind": str(m.kind),
            "document": m.document,
            "modules": [{"module": x.module, "reference": x.reference} for x in m.modules],
            "warnings": list(m.warnings),
        },
        "requested_by": request.requested_by,
        "contact_email": request.contact_email,
        "device_names": list(request.device_names),
        "labels": dict(request.labels),
        "priority": request.priority,
        "unsigned": request.unsigned,
    }


def request_from_doc(doc: dict[str, Any]) -> DeployRequest:
    """Inverse of :func:`request_doc`."""
    m = doc["manifest"]
    manifest = Manifest(
        kind=m["kind"],
        document=m["document"],
        modules=tuple(ModuleImage(x["module"], x["reference"]) for x in m["modules"]),
        warnings=tuple(m["warnings"]),
    )
    return DeployRequest(
        manifest=manifest,
        requested_by=doc["requested_by"],
        contact_email=doc["contact_email"],
        device_names=tuple(doc["device_names"]),
        labels=dict(doc["labels"]),
        priority=int(doc["priority"]),
        unsigned=bool(doc["unsigned"]),
    )


def enqueue_deploy(
    engine: Engine,
    app: App,
    request: DeployRequest,
    *,
    ranker: SourceRanker,
    builder: BundleBuilder,
    store: BundleStore,
    release_ttl: float = DEFAULT_RELEASE_TTL_SECONDS,
    retries: int | None = None,
) -> DeployResult:
    """Plan REQUEST, record it ``building`` and enqueue its patch builds; returns at once.

    RETRIES (``--retries N``; None: the hub's default) is kept with the request and
    recorded with the set when a worker assembles it (``pipelines.retry``).

    Raises:
        UnknownObjectError: unknown images or devices.
        StateError: bundles to send unsigned without ``unsigned``.
    """
    with session_scope(engine) as session:
        data = load_planning_input(session, request)
    signer = builder.signer
    plan = make_plan(data, ranker, store, release_ttl=release_ttl, signer=signer)
    check_signing(plan, signer, request)
    jobs = distinct_jobs(
        j for planned in plan.to_build for j in bundle_patch_jobs(_spec(planned, data.catalog))
    )
    shared = {j.key for j in jobs if is_shared(store, j.key)}
    set_id, now = new_deployment_id(), datetime.now(UTC)
    with session_scope(engine) as session:
        doc = request_doc(request)
        if retries is not None:
            doc[RETRIES_KEY] = retries
        session.add(QueuedDeployment(id=set_id, request=doc, state=BuildState.BUILDING.value))
        session.flush()
        session.add_all(
            PatchBuild(deployment_id=set_id, patch_key=j.key,
                       done_at=now if j.key in shared else None)
            for j in jobs
        )
    todo = [j for j in jobs if j.key not in shared]
    with app.open():
        for job in todo:
            defer_build(app, job)
        if not todo:
            defer_assemble(app, set_id)
    log.info("deployment %s: %d patch build(s) queued, %d already built",
             set_id, len(todo), len(shared))
    return DeployResult(deployment_id=set_id, state=BuildState.BUILDING.value, devices=(),
                        built=(), reused=(), priority=request.priority)


def defer_build(app: App, job: PatchJob) -> int | None:
    """Enqueue JOB's build unless one for the same patch waits already (then None).

    The patch key is the job's ``lock``: jobs for one patch run one after the other,
    and the later ones find it built. It is not its ``queueing_lock``: procrastinate
    retries a job by putting it back to ``todo``, which violates that unique index when
    another deployment enqueued the same patch meanwhile, and the job then stays
    ``doing``, holding its lock, for good (seen in the race test). Waiting jobs are
    looked up instead; two deploys enqueueing at the very same moment may both add one.
    """
    return _defer_once(app, BUILD_PATCH, job.key, job.to_args())


def defer_assemble(app: App, set_id: str) -> int | None:
    """Enqueue the assembly of SET_ID unless one waits already (then None); it is
    idempotent, so a second one that slips in finds the set recorded."""
    return _defer_once(app, ASSEMBLE, f"assemble:{set_id}", {"deployment_id": set_id})


def _defer_once(app: App, task: str, lock: str, args: dict[str, Any]) -> int | None:
    if app.job_manager.list_jobs(task=task, lock=lock, status="todo"):
        return None
    return app.configure_task(task, lock=lock).defer(**args)


def mark_done(engine: Engine, key: str, built_by: str | None) -> list[str]:
    """Mark patch KEY done for every deployment waiting for it; the deployments now ready.

    The update commits first, then the count reads: of two jobs finishing a
    deployment's last two patches at once, the later count sees both.
    """
    with session_scope(engine) as session:
        session.execute(
            update(PatchBuild)
            .where(PatchBuild.patch_key == key, PatchBuild.done_at.is_(None))
            .values(done_at=datetime.now(UTC), built_by=built_by)
        )
    with session_scope(engine) as session:
        waiting = select(PatchBuild.deployment_id).where(PatchBuild.patch_key == key)
        open_ = select(PatchBuild.deployment_id).where(PatchBuild.done_at.is_(None))
        return list(session.scalars(
            select(QueuedDeployment.id).where(
                QueuedDeployment.id.in_(waiting),
                QueuedDeployment.id.not_in(open_),
                QueuedDeployment.state == BuildState.BUILDING.value,
            )
        ))


def progress(engine: Engine, set_id: str) -> tuple[int, int]:
    """(patches done, patches needed) of a queued deployment."""
    with session_scope(engine) as session:
        row = session.execute(
            select(func.count(PatchBuild.done_at), func.count())
            .where(PatchBuild.deployment_id == set_id)
        ).one()
    return int(row[0]), int(row[1])


def patch_keys(engine: Engine, set_id: str) -> list[str]:
    """The patch keys SET_ID waits for."""
    with session_scope(engine) as session:
        return list(session.scalars(
            select(PatchBuild.patch_key).where(PatchBuild.deployment_id == set_id)
        ))


def finish(engine: Engine, set_id: str, state: BuildState, error: str | None = None) -> bool:
    """Move a queued deployment from ``building`` to STATE (compare-and-set); True if moved."""
    with session_scope(engine) as session:
        moved = session.execute(
            update(QueuedDeployment)
            .where(QueuedDeployment.id == set_id,
                   QueuedDeployment.state == BuildState.BUILDING.value)
            .values(state=state.value, error=error, finished_at=datetime.now(UTC))
        )
        return bool(getattr(moved, "rowcount", 0))


def fail_waiting(engine: Engine, key: str, error: str) -> list[str]:
    """Fail every deployment still building that waits for patch KEY; their ids."""
    with session_scope(engine) as session:
        waiting = select(PatchBuild.deployment_id).where(PatchBuild.patch_key == key)
        ids = list(session.scalars(select(QueuedDeployment.id).where(
            QueuedDeployment.id.in_(waiting),
            QueuedDeployment.state == BuildState.BUILDING.value,
        )))
    return [i for i in ids if finish(engine, i, BuildState.FAILED, error)]


def queued(engine: Engine, set_id: str) -> QueuedDeployment | None:
    """The queued deployment SET_ID, None if it is not one."""
    with session_scope(engine) as session:
        return session.get(QueuedDeployment, set_id)


def recorded(engine: Engine, set_id: str) -> bool:
    """Whether the set SET_ID is recorded in deployment_sets."""
    with session_scope(engine) as session:
        return session.get(DeploymentSet, set_id) is not None


def builders_of(engine: Engine, keys: Iterable[str]) -> dict[str, Sequence[str | None]]:
    """Patch key → who built it, per waiting deployment (None: found built)."""
    out: dict[str, list[str | None]] = {}
    with session_scope(engine) as session:
        for key, by in session.execute(
            select(PatchBuild.patch_key, PatchBuild.built_by)
            .where(PatchBuild.patch_key.in_(list(keys)))
        ):
            out.setdefault(key, []).append(by)
    return dict(out)


def uses_workers(settings: Settings) -> bool:
    """Whether deploys with SETTINGS enqueue their builds: ``builds = "workers"`` on
    PostgreSQL. On SQLite (the embedded default) bundles always build in-process."""
    return settings.builds == "workers" and is_postgresql(settings.db_url)


def deploy_via_workers(
    engine: Engine,
    settings: Settings,
    request: DeployRequest,
    *,
    ranker: SourceRanker,
    builder: BundleBuilder,
    store: BundleStore,
    retries: int | None = None,
) -> DeployResult:
    """:func:`enqueue_deploy` on SETTINGS' database, applying the queue's schema if needed."""
    ensure_schema(settings.db_url)
    return enqueue_deploy(engine, make_app(settings.db_url), request, ranker=ranker,
                          builder=builder, store=store, retries=retries)
