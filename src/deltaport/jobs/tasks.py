"""The queue's tasks and what a worker process runs them with (:class:`Runtime`).

``build_patch`` builds one layer patch into the worker's local patch cache and
publishes it to the shared one (``jobs.patches``), unless it is there already: each
distinct patch is built once fleet-wide. The engine runs in the worker process (a
``deltaport worker``, never the threaded hub); procrastinate runs a sync task in a
thread of it, and the engine's own processes come from a fork server
(``delta.pool``). ``assemble_deployment`` fetches a deployment's patches and runs
the deploy pipeline on them (:func:`assemble`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procrastinate import App, JobContext, RetryStrategy
from sqlalchemy.engine import Engine

from deltaport.config import Settings
from deltaport.delta.patchcache import PatchCache
from deltaport.errors import DeltaportError, StateError
from deltaport.jobs import patches
from deltaport.jobs.app import ASSEMBLE, BUILD_PATCH
from deltaport.jobs.identity import PatchJob
from deltaport.jobs.queue import (
    BuildState,
    defer_assemble,
    fail_waiting,
    finish,
    mark_done,
    patch_keys,
    queued,
    recorded,
    request_from_doc,
    retries_of,
)
from deltaport.oci import TransportOptions
from deltaport.storage.base import BundleStore

log = logging.getLogger(__name__)

RUNTIME = "deltaport_runtime"  # the worker context key holding the Runtime
BUILD_ATTEMPTS = 3  # a transient build failure is tried this many times in all
ASSEMBLE_ATTEMPTS = 5  # a StateError (the world moved) re-plans this many times, then fails


@dataclass(frozen=True)
class Runtime:
    """What a worker process builds and records with."""

    settings: Settings
    engine: Engine
    store: BundleStore
    options: TransportOptions
    name: str  # the worker's name, recorded as ``patch_builds.built_by``

    @property
    def cache(self) -> PatchCache:
        """The worker's local patch cache (the data dir's, as the in-process builder's)."""
        return PatchCache(self.settings.patch_cache_dir)

    @property
    def work_dir(self) -> Path:
        """Scratch space for builds (under the data dir)."""
        path = self.settings.data_dir / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _runtime(context: JobContext) -> Runtime:
    rt = (context.additional_context or {}).get(RUNTIME)
    if not isinstance(rt, Runtime):
        raise StateError("this procrastinate worker was not started by `deltaport worker`")
    return rt


class RetryableError(Exception):
    """A transient failure (registry or store away, a conflicting deploy): try the job again."""


def build_patch(context: JobContext, /, **args: Any) -> str:
    """Build one layer patch once fleet-wide; returns "built" or "found".

    A failure for good (or the last attempt's) fails every deployment waiting for the
    patch, with the reason, instead of leaving it ``building``.
    """
    rt, job = _runtime(context), PatchJob.from_args(args)
    attempts = context.job.attempts if context.job is not None else 0
    try:
        outcome = _build(rt, job)
    except DeltaportError as exc:
        if exc.transient and attempts + 1 < BUILD_ATTEMPTS:
            raise RetryableError(str(exc)) from exc
        failed = fail_waiting(rt.engine, job.key, f"patch {job.key} not built: {exc}")
        log.error("patch %s not built (%s); failed: %s", job.key, exc, ", ".join(failed))
        raise
    for set_id in mark_done(rt.engine, job.key, rt.name if outcome == "built" else None):
        defer_assemble(context.app, set_id)
    return outcome


def _build(rt: Runtime, job: PatchJob) -> str:
    if patches.is_shared(rt.store, job.key):
        return "found"
    outcome = "found"
    if rt.cache.get(job.key) is None:
        patches.build_patch_file(job, rt.cache, rt.work_dir, rt.options)
        outcome = "built"
        log.info("built patch %s (layer %s of %s)", job.key, job.diff_id, job.target_ref)
    patches.publish(rt.store, rt.cache, job.key)
    return outcome


def assemble_deployment(context: JobContext, deployment_id: str) -> str:
    """Assemble and record a queued deployment; returns its final BuildState value."""
    rt = _runtime(context)
    attempts = context.job.attempts if context.job is not None else 0
    return assemble(rt, deployment_id, last_attempt=attempts + 1 >= ASSEMBLE_ATTEMPTS).value


def assemble(rt: Runtime, set_id: str, *, last_attempt: bool = True) -> BuildState:
    """Fetch SET_ID's patches, run the deploy pipeline under SET_ID, mark it recorded.

    Before the last attempt, a transient error (registry, store) or a StateError (a
    device's images changed, another deployment recorded the same bundle: the pipeline
    plans again) is raised as RetryableError; any other error, and any error of the
    last attempt, fails the deployment (``queued_deployments.error``).
    """
    from deltaport.hub.settings import HubServerSettings
    from deltaport.hub.toolkit import real_toolkit
    from deltaport.pipelines.image_to_device import deploy
    from deltaport.pipelines.manifest_to_device import manifest_key_path
    from deltaport.pipelines.retry import retries_recorder

    row = queued(rt.engine, set_id)
    if row is None or row.state != BuildState.BUILDING.value:
        return BuildState(row.state) if row is not None else BuildState.FAILED
    if recorded(rt.engine, set_id):  # recorded by an attempt killed before it said so
        finish(rt.engine, set_id, BuildState.RECORDED)
        return BuildState.RECORDED
    toolkit = real_toolkit(HubServerSettings(fleet=rt.settings,
                                             registry_insecure=rt.options.insecure))
    try:
        for key in patch_keys(rt.engine, set_id):
            patches.fetch(rt.store, rt.cache, key, rt.work_dir)
        with tempfile.TemporaryDirectory(prefix="assemble-", dir=rt.work_dir) as work:
            deploy(rt.engine, request_from_doc(row.request), ranker=toolkit.ranker,
                   builder=toolkit.builder, store=rt.store, work_dir=Path(work),
                   manifest_key=manifest_key_path(rt.settings.keys_dir), set_id=set_id,
                   on_recorded=retries_recorder(retries_of(row.request)))
    except DeltaportError as exc:
        if not last_attempt and (exc.transient or isinstance(exc, StateError)):
            raise RetryableError(str(exc)) from exc
        log.error("deployment %s failed: %s", set_id, exc)
        finish(rt.engine, set_id, BuildState.FAILED, str(exc))
        return BuildState.FAILED
    finish(rt.engine, set_id, BuildState.RECORDED)
    log.info("deployment %s assembled and recorded", set_id)
    return BuildState.RECORDED


def register(app: App) -> None:
    """Declare deltaport's tasks on APP."""
    app.task(name=BUILD_PATCH, pass_context=True,
             retry=RetryStrategy(max_attempts=BUILD_ATTEMPTS - 1, wait=2,
                                 retry_exceptions={RetryableError}))(build_patch)
    app.task(name=ASSEMBLE, pass_context=True,
             retry=RetryStrategy(max_attempts=ASSEMBLE_ATTEMPTS - 1, wait=2,
                                 retry_exceptions={RetryableError}))(assemble_deployment)
