"""The device agent: one orchestrator over the inbox, the hub, the registry and the outbox.

``Agent.run_once()`` is one pass, in this order:

1. list the local registry; queue an inventory check-in if it changed (or is due);
2. inbox: take every complete, verified bundle; leave partial ones; move the rest;
3. finish downloads already complete on disk (even with the hub unreachable);
4. hub (when configured and reachable): deliver the outbox, list bundles, download
   them one at a time in priority order and reconstruct each, fetch the desired
   manifest, deliver the outbox again.

Crash safety comes from ordering, not bookkeeping: a bundle's outcome and its status
message are committed in one SQLite transaction *after* the registry has the image
(manifest last) and *before* the bundle file is moved or deleted. A SIGKILL anywhere
leaves either the bundle in place (re-processed; the registry check makes that cheap)
or the outcome recorded (the file is just moved on the next pass).

What counts as final: a bundle that is bad, not for this device, or needs sources the
device lacks is *failed* (moved to ``failed/`` or dropped, and reported); one that
could not be applied for a local, passing reason (disk full, registry down) is
*deferred*: kept and retried each pass, a disk shortage reported once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from deltaport.agent.config import AgentConfig
from deltaport.agent.delivery import deliver
from deltaport.agent.engine import load_into_engine
from deltaport.agent.fetch import (
    assemble,
    discard,
    fetch_head,
    fetch_payload,
    load_offer,
    save_offer,
    work_dir,
)
from deltaport.agent.hub import BundleOffer, HubClient
from deltaport.agent.inbox import BundleOutcome
from deltaport.agent.inboxscan import InboxScanner
from deltaport.agent.keyring import current_keys, keys_for
from deltaport.agent.messages import (
    LocalImage,
    failure_message,
    inventory_document,
    success_message,
)
from deltaport.agent.passreport import PassReport, hub_failed
from deltaport.agent.progress import ProgressReporter, Sent
from deltaport.agent.reconstruct import (
    CAUSE_TEXT,
    TOLD_TO_HUB,
    DeferralCause,
    Target,
    check_disk,
    deferral_cause,
    disk_needed,
    held_release,
    reconstruct,
    refusal,
    replay_refusal,
    target_of,
)
from deltaport.agent.registry import LocalRegistry
from deltaport.agent.runtime.activation import Memory
from deltaport.agent.runtime.disk import DiskKeeper
from deltaport.agent.runtime.gc import sources_in_flight
from deltaport.agent.runtime.model import RuntimeKind
from deltaport.agent.runtime.service import DeviceRuntime, describe
from deltaport.agent.state import AgentState
from deltaport.agent.statedir import empty_scratch, lock_state
from deltaport.bundle import BundleIndex, BundleReader, TrustedKeys, load_public_key
from deltaport.errors import (
    AccessError,
    DeltaportError,
    FormatError,
    HubError,
    IntegrityError,
    MissingSourceError,
    RegistryError,
    StateError,
    StorageError,
    TransferError,
    UnknownObjectError,
)
from deltaport.oci import TransportOptions
from deltaport.transfer import DownloadConfig
from deltaport.trust import Role

log = logging.getLogger("deltaport.agent")

DONE, FAILED, DEFERRED = BundleOutcome.DONE, BundleOutcome.FAILED, BundleOutcome.DEFERRED
HUB_FAILURES = (AccessError, HubError, StateError, TransferError)  # what a hub call raises


@dataclass(frozen=True)
class _Job:
    """A complete, verified bundle about to be applied, and where it came from."""

    path: Path
    index: BundleIndex
    key: str
    offer: BundleOffer | None  # set for hub bundles: the hub vouches for image and device
    extra: dict[str, Any]  # timings and bytes of the transfer, for the status message


def offer_key(offer: BundleOffer) -> str:
    """Ledger key of a hub bundle: a redeployment (new deployment id) is a new attempt."""
    return f"{offer.key}:{offer.deployment or ''}"


class Agent:
    """The device daemon. One per state dir (a lock file enforces it)."""

    def __init__(self, config: AgentConfig, *, stop: threading.Event | None = None,
                 http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` (monotonic seconds) times how long inbox files have been quiet."""
        self.config = config
        self.stop = stop or threading.Event()
        self.keys: TrustedKeys = [load_public_key(p) for p in config.trusted_keys]
        self.downloads = config.state_dir / "downloads"
        self.scratch = config.state_dir / "scratch"
        for folder in (config.state_dir, config.inbox, self.downloads, self.scratch):
            folder.mkdir(parents=True, exist_ok=True)
        self.inbox = InboxScanner(config.inbox, self.keys, settle=config.inbox_settle_seconds,
                                  stale=config.inbox_stale_seconds, clock=clock)
        self.inbox.check_folders()  # refuses to start on a done/ or failed/ not its own
        self._lock_fd = lock_state(config.state_dir / "agent.lock")
        empty_scratch(self.scratch)  # what a killed agent left there is never resumed
        self.state = AgentState(config.database)
        self.keys = keys_for(config.root_keys, self.state, Role.BUNDLE, self.keys)
        self.inbox.keys = self.keys  # the keyring needs the state (docs/trust.md)
        self.registry = LocalRegistry(config.registry_host,
                                      TransportOptions(insecure=True, temp_dir=self.scratch))
        self.hub = HubClient(config.hub, http) if config.hub is not None else None
        self._next_forced_checkin = 0.0  # monotonic time; 0: at the first pass
        self._offers: list[BundleOffer] = []  # the hub's last bundle list (announced sources)
        self._progress_sent: dict[str, Sent] = {}  # last progress report per bundle digest
        self._progress_off: set[str] = set()  # the hub lacks the progress endpoint
        self.device_runtime = self._device_runtime()
        self.disk = DiskKeeper(config.runtime, device=config.device, state=self.state,
                               registry=self.registry, runtime=self.device_runtime,
                               on_removed=lambda: self._queue_inventory(force=True))

    def _device_runtime(self) -> DeviceRuntime | None:
        """The runtime the config names (docs/device-runtime.md), or None for images only."""
        settings = self.config.runtime
        if settings.kind is RuntimeKind.NONE:
            return None
        engine = None
        if settings.kind is RuntimeKind.ENGINE:
            from deltaport.agent.runtime.engine import DockerEngine  # the docker SDK: lazily

            assert settings.docker_host is not None  # checked by config_from_mapping
            engine = DockerEngine(settings.docker_host, self.config.registry_host)
        return DeviceRuntime(settings, device=self.config.device, state=self.state,
                             state_dir=self.config.state_dir, registry=self.registry,
                             keys=keys_for(self.config.root_keys, self.state, Role.MANIFEST,
                                           [load_public_key(p) for p in settings.manifest_keys]),
                             engine=engine, stop=self.stop, on_active=self._after_active)

    def _after_active(self, new: Memory, previous: Memory | None) -> None:
        """A proven activation: remove the images neither it nor its rollback needs."""
        self.disk.collect({*new.images.values(), *(previous.images.values() if previous else ())},
                          sources_in_flight(self._offers))

    def close(self) -> None:
        """Release the database, the hub connection and the state-dir lock."""
        if self.hub is not None:
            self.hub.close()
        self.state.close()
        os.close(self._lock_fd)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------------
    def run(self, *, install_signals: bool = True) -> None:
        """Pass after pass, ``poll_interval`` apart, until SIGTERM/SIGINT or ``stop``."""
        if install_signals and threading.current_thread() is threading.main_thread():
            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.info("signal %d: stopping after the current step", signum)
                self.stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        while not self.stop.is_set():
            try:
                self.run_once()
            except DeltaportError as exc:  # a local failure: log it, try again next pass
                log.error("pass failed: %s", exc)
            self.stop.wait(self.config.poll_interval)
        log.info("agent stopped")

    def run_once(self) -> PassReport:
        """One pass: inventory, inbox, finished downloads, then the hub (if any)."""
        report = PassReport()
        self._queue_inventory()
        self._scan_inbox(report)
        self._resume_downloads(report)
        if self.hub is not None and not self.stop.is_set():
            self._sync_hub(self.hub, report)
        if self.device_runtime is not None and not self.stop.is_set():
            self._run_runtime(self.device_runtime, report)
            if self.hub is not None and report.hub_error is None:
                self._deliver_quietly(self.hub, report)
        return report

    def _run_runtime(self, runtime: DeviceRuntime, report: PassReport) -> None:
        """Act on the kept desired manifest (even with the hub unreachable)."""
        try:
            result = runtime.step()
        except DeltaportError as exc:  # the engine is down: the journal makes it safe to retry
            report.runtime_error = f"{type(exc).__name__}: {exc}"
            log.error("device runtime: %s", exc)
            return
        report.runtime = describe(result)
        if result is not None and result.outcome is not None:
            self._queue_inventory(force=True)

    def _deliver_quietly(self, hub: HubClient, report: PassReport) -> None:
        try:
            self._deliver(hub, report)
        except HUB_FAILURES as exc:
            hub_failed(report, exc)

    # -- inventory -------------------------------------------------------------------
    def _images(self) -> list[LocalImage]:
        return self.registry.images()

    def _queue_inventory(self, *, force: bool = False) -> None:
        """Queue the current inventory for check-in if it changed, after a change, or
        when the periodic check-in is due."""
        try:
            images = self._images()
        except TransferError as exc:
            log.warning("local registry %s unreachable: %s", self.config.registry, exc)
            return
        due = time.monotonic() >= self._next_forced_checkin
        if due:
            self._next_forced_checkin = time.monotonic() + self.config.inventory_interval
        if self.state.set_inventory(inventory_document(images), force=force or due):
            log.debug("inventory queued: %d image(s)", len(images))

    # -- inbox -----------------------------------------------------------------------
    def _scan_inbox(self, report: PassReport) -> None:
        """Take the inbox's complete bundles (inboxscan.py); raises StorageError, unsafe."""
        def apply(path: Path, index: BundleIndex, key: str) -> tuple[str, str | None]:
            prior = self.state.outcome(key)
            if prior is not None:
                return prior.outcome, prior.reason
            return self._apply(_Job(path, index, key, None, {"via": "inbox"}), report)

        tally = self.inbox.scan(apply, self.stop)
        report.inbox_done += tally.done
        report.inbox_failed += tally.failed
        report.inbox_waiting += tally.waiting
        report.failures.extend(tally.failures)

    # -- applying a verified bundle ------------------------------------------------------
    def _apply(self, job: _Job, report: PassReport) -> tuple[str, str | None]:
        """Check, reconstruct and record one bundle; returns (outcome, reason)."""
        try:
            target = target_of(job.index)
        except FormatError as exc:
            return self._failed(job.key, job.offer, None, f"bundle content: {exc}", report)
        reason = refusal(target, self.config.device) or replay_refusal(
            target, self.state.releases(target.name), time.time())
        if reason is None and job.offer is not None and job.offer.image_id != target.image_id:
            reason = f"the hub offered {job.offer.image_id}, the bundle rebuilds {target.image_id}"
        if reason is not None:
            return self._failed(job.key, job.offer, target, reason, report)
        try:
            images = self._images()
            log.info("reconstructing %s (%s) from %d local image(s)", target.name,
                     target.image_id[:19], len(images))
            rebuilt = reconstruct(job.path, target, registry=self.registry, images=images,
                                  trusted_keys=current_keys(self.keys), scratch=self.scratch,
                                  min_free=self.config.min_free_bytes)
        except MissingSourceError as exc:
            missing = ", ".join(exc.missing) or str(exc)
            return self._failed(job.key, job.offer, target, f"missing source layers: {missing}",
                                report)
        except StorageError as exc:
            return self._deferred(job.key, job.offer, target, str(exc), report,
                                  deferral_cause(exc))
        except TransferError as exc:
            return self._deferred(job.key, job.offer, target, f"local registry: {exc}", report,
                                  deferral_cause(exc))
        except DeltaportError as exc:
            return self._failed(job.key, job.offer, target, f"{type(exc).__name__}: {exc}",
                                report)
        extra = {**job.extra, "reconstruct_seconds": round(rebuilt.seconds, 3),
                 "layers_patched": rebuilt.layers_patched,
                 "layers_from_source": rebuilt.layers_from_source,
                 "already_present": rebuilt.manifest_digest is None,
                 **self._load_into_engine(target)}
        message = success_message(self.config.device, target.image_id, target=target.name,
                                  deployment=_deployment(job.offer, target),
                                  bundle=job.key, extra=extra)
        self.state.record(job.key, DONE, image_id=target.image_id, message=message,
                          release=held_release(target))
        self.disk.note_delivery(target.image_id, _deployment(job.offer, target))
        self.state.put(f"deferred:{job.key}", "")
        log.info("%s is present (%s)", target.name, target.image_id)
        report.reconstructed += 1
        self._queue_inventory(force=True)
        return DONE, None

    def _load_into_engine(self, target: Target) -> dict[str, Any]:
        """With ``docker_host``, load the image into the engine; the result for the message.

        The image is in the registry whatever happens here, so an engine failure is
        reported alongside ``present`` rather than failing the bundle.
        """
        if self.config.docker_host is None:
            return {}
        try:
            name = load_into_engine(self.config.docker_host, self.registry, target.name,
                                    target.image_id, self.scratch)
        except DeltaportError as exc:
            log.error("loading %s into %s failed: %s", target.name, self.config.docker_host, exc)
            return {"engine": {"loaded": False, "error": str(exc)[:1000]}}
        log.info("%s loaded into %s", name, self.config.docker_host)
        return {"engine": {"loaded": True, "name": name}}

    def _failed(self, key: str, offer: BundleOffer | None, target: Target | None, reason: str,
                report: PassReport) -> tuple[str, str | None]:
        """Record a final failure; report it when the bundle is trustworthily ours.

        A hub bundle always is (the hub listed it for this device). An inbox bundle is
        when its signed content names this device or no device at all; a misrouted
        one is not this device's business to report.
        """
        image_id = target.image_id if target is not None else (
            offer.image_id if offer is not None else None)
        ours = offer is not None or (
            target is not None and refusal(target, self.config.device) is None)
        message = None
        if image_id is not None and ours:
            message = failure_message(
                self.config.device, image_id, reason,
                target=target.name if target else (offer.target if offer else None),
                deployment=_deployment(offer, target), bundle=key)
        self.state.record(key, FAILED, reason=reason, image_id=image_id, message=message)
        log.warning("bundle %s failed: %s", key, reason)
        report.failed += 1
        report.failures.append(reason)
        return FAILED, reason

    def _deferred(self, key: str, offer: BundleOffer | None, target: Target, reason: str,
                  report: PassReport, cause: DeferralCause) -> tuple[str, str | None]:
        """Keep the bundle for the next pass; tell the hub once per cause (not per byte
        count in the reason): again only when the cause changes or after it was cleared."""
        report.deferred += 1
        if self.state.get(f"deferred:{key}") == cause:
            log.debug("bundle %s still deferred (%s): %s", key, cause, reason)
            return DEFERRED, reason
        log.warning("bundle %s deferred (%s): %s", key, cause, reason)
        messages = [{**failure_message(
            self.config.device, target.image_id, f"deferred: {CAUSE_TEXT[cause]}: {reason}",
            target=target.name, deployment=_deployment(offer, target), bundle=key),
            "deferral_cause": str(cause)}] if cause in TOLD_TO_HUB else []
        self.state.commit({f"deferred:{key}": str(cause)}, messages)
        return DEFERRED, reason

    # -- hub downloads -----------------------------------------------------------------
    def _download_config(self, hub: HubClient, offer: BundleOffer) -> DownloadConfig:
        return DownloadConfig(max_rate=self.config.max_rate,
                              max_attempts=self.config.download_max_attempts,
                              headers=hub.download_headers(offer.url))

    def _resume_downloads(self, report: PassReport) -> None:
        """Apply bundles whose download finished before (a restart, or the hub is down)."""
        for folder in sorted(p for p in self.downloads.iterdir() if p.is_dir()):
            offer = load_offer(folder)
            if offer is None or self.stop.is_set():
                continue
            if self.state.outcome(offer_key(offer)) is not None:
                discard(folder)
            elif (folder / "bundle").exists():
                self._apply_downloaded(folder, offer, {"via": "hub"}, report)

    def _apply_downloaded(self, folder: Path, offer: BundleOffer, extra: dict[str, Any],
                          report: PassReport) -> None:
        key = offer_key(offer)
        try:
            with BundleReader(folder / "bundle", trusted_keys=self.keys) as reader:
                index = reader.index
        except DeltaportError as exc:
            self._failed(key, offer, None, f"{type(exc).__name__}: {exc}", report)
            discard(folder)
            return
        outcome, _ = self._apply(_Job(folder / "bundle", index, key, offer, extra), report)
        if outcome != DEFERRED:
            discard(folder)

    def _sync_hub(self, hub: HubClient, report: PassReport) -> None:
        try:
            self._deliver(hub, report)
            offers = hub.list_bundles()
            self._offers = offers
            self._drop_abandoned(offers)
            for offer in offers:
                if self.stop.is_set():
                    return
                self._take_offer(hub, offer, report)
                self._deliver(hub, report)
            self._fetch_desired_manifest(hub)
            self._deliver(hub, report)
        except HUB_FAILURES as exc:
            hub_failed(report, exc)

    def _drop_abandoned(self, offers: Sequence[BundleOffer]) -> None:
        """Remove unfinished downloads of bundles the hub no longer offers."""
        listed = {work_dir(self.downloads, o.digest).name for o in offers}
        for folder in self.downloads.iterdir():
            if folder.is_dir() and folder.name not in listed and not (folder / "bundle").exists():
                log.info("dropping the download of %s: no longer offered", folder.name)
                discard(folder)

    def _take_offer(self, hub: HubClient, offer: BundleOffer, report: PassReport) -> None:
        """Download (resuming) and apply one offered bundle, unless already handled."""
        key = offer_key(offer)
        if self.state.outcome(key) is not None:
            return
        refused = hub.offer_refusal(offer)
        if refused is not None:  # permanent for this offer; the others go on
            self._failed(key, offer, None, refused, report)
            return
        folder = work_dir(self.downloads, offer.digest)
        if not (folder / "offer.json").exists():
            save_offer(folder, offer)
        started = time.monotonic()
        fetched = 0
        if not (folder / "bundle").exists():
            config = self._download_config(hub, offer)
            try:
                index, fetched = fetch_head(offer, folder, config=config, trusted_keys=self.keys,
                                            probe=self.config.head_probe_bytes, stop=self.stop,
                                            client=hub.http)
                stopped = self._check_before_payload(offer, index, key, report)
                if stopped:
                    discard(folder)
                    return
                log.info("downloading %s (%d bytes) for %s", offer.digest[:19], offer.size,
                         offer.target or offer.image_id[:19])
                reporter = ProgressReporter(hub, offer, index.payload_offset, fetched == 0,
                                            self._progress_sent, disabled=self._progress_off)
                fetched += fetch_payload(offer, folder, index, config=config, stop=self.stop,
                                         client=hub.http, progress=reporter)
                assemble(offer, folder)
            except (FormatError, IntegrityError) as exc:  # includes Signature, Truncated
                self._failed(key, offer, None, f"{type(exc).__name__}: {exc}", report)
                discard(folder)
                return
            except StorageError as exc:
                report.deferred += 1
                log.warning("bundle %s deferred: %s", offer.digest[:19], exc)
                return
            except RegistryError as exc:
                if exc.transient:
                    raise  # the hub or the link is down: stop this pass
                report.hub_error = str(exc)  # refused or gone: the next listing decides
                log.warning("bundle %s skipped: %s", offer.digest[:19], exc)
                return
            finally:
                report.bytes_fetched += fetched
            report.downloaded += 1
        extra = {"via": "hub", "bytes": {"bundle": offer.size, "downloaded": fetched},
                 "download_seconds": round(time.monotonic() - started, 3)}
        self._apply_downloaded(folder, offer, extra, report)

    def _check_before_payload(self, offer: BundleOffer, index: BundleIndex, key: str,
                              report: PassReport) -> bool:
        """Refuse before downloading the payload what would be refused after it.

        Returns True when the bundle was failed (or deferred) and must not be fetched.
        Raises FormatError for a malformed content (failed by the caller).
        """
        target = target_of(index)
        reason = refusal(target, self.config.device) or replay_refusal(
            target, self.state.releases(target.name), time.time())
        if reason is None and offer.image_id != target.image_id:
            reason = f"the hub offered {offer.image_id}, the bundle rebuilds {target.image_id}"
        if reason is not None:
            self._failed(key, offer, target, reason, report)
            return True
        needed = disk_needed(target, 2 * offer.size, self.config.min_free_bytes)
        try:
            check_disk(self.downloads, needed)
        except StorageError as exc:
            self._deferred(key, offer, target, str(exc), report, deferral_cause(exc))
            return True
        try:
            self.disk.check_watermark(target.size, sources_in_flight(self._offers))
        except StorageError as exc:
            self._deferred(key, offer, target, str(exc), report, DeferralCause.DISK_WATERMARK)
            return True
        if self.state.get(f"deferred:{key}"):
            self.state.put(f"deferred:{key}", "")  # cleared: a later shortage is news again
        return False

    # -- outbox delivery and desired manifest ----------------------------------------------
    def _deliver(self, hub: HubClient, report: PassReport) -> None:
        """Everything waiting for the hub: status messages, inventory, runtime report."""
        delivered, rejected = deliver(hub, self.state, self.device_runtime, self.stop)
        report.delivered += delivered
        report.rejected += rejected

    def _fetch_desired_manifest(self, hub: HubClient) -> None:
        """Keep the desired manifest the hub serves; the runtime checks and acts on it."""
        runtime = self.device_runtime
        if runtime is None:
            return
        etag = self.state.get("desired_manifest_etag") if runtime.kept() is not None else None
        try:
            manifest = hub.desired_manifest(etag)
        except UnknownObjectError:
            return  # none published for this device yet
        if manifest is None:
            return
        runtime.receive(manifest.body)
        self.state.put("desired_manifest_etag", manifest.etag or "")
        log.info("desired manifest received (%d bytes)", len(manifest.body))


def _deployment(offer: BundleOffer | None, target: Target | None) -> str | None:
    """The deployment a bundle belongs to: the hub's word first, else the signed content."""
    if offer is not None and offer.deployment:
        return offer.deployment
    return target.deployment if target is not None else None
