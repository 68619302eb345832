"""Keeping the device disk bounded: the watermark before a bundle, image GC after activation.

docs/device-runtime.md §5. The choices are pure (``gc.choose_removals``,
``gc.free_needed``); this class sequences them for the agent between bundles — never
while one is being applied, since the agent is single-threaded — and reports each
removed image ``removed`` so the hub never plans a patch from it again.

An image delivered for a deployment the device has not tried yet is kept too: over
slow links a fleet is staged first and activated later (rollouts), and removing
staged images would throw away days of transfer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection

from deltaport.agent.registry import LocalRegistry
from deltaport.agent.runtime.gc import (
    GcCommandError,
    GcResult,
    check_watermark,
    collect_garbage,
    removed_message,
)
from deltaport.agent.runtime.model import RuntimeSettings
from deltaport.agent.runtime.service import DeviceRuntime
from deltaport.agent.state import AgentState
from deltaport.errors import DeltaportError, StorageError

log = logging.getLogger("deltaport.agent.runtime")

DELIVERED_PREFIX = "delivered."  # kv: image ID → {"deployment", "at"} of its delivery
STAGED_KEEP_SECONDS = 30 * 86_400.0  # an image staged for a deployment never tried is kept so long


class DiskKeeper:
    """The agent's disk policy over its local registry."""

    def __init__(self, settings: RuntimeSettings, *, device: str, state: AgentState,
                 registry: LocalRegistry, runtime: DeviceRuntime | None,
                 on_removed: Callable[[], None]) -> None:
        self.settings = settings
        self.device = device
        self.state = state
        self.registry = registry
        self.runtime = runtime.runtime if runtime is not None else None
        self.on_removed = on_removed  # e.g. queue an inventory check-in

    def kept(self) -> set[str]:
        """Image IDs the running deployment references."""
        running = self.runtime.running if self.runtime is not None else None
        return set(running.images.values()) if running is not None else set()

    def note_delivery(self, image_id: str, deployment: str | None) -> None:
        """Remember that IMAGE_ID arrived for DEPLOYMENT (staged until it is tried)."""
        self.state.put(DELIVERED_PREFIX + image_id,
                       json.dumps({"deployment": deployment or "", "at": time.time()}))

    def staged(self, now: float | None = None) -> set[str]:
        """Image IDs delivered for a deployment neither running nor last tried, recently."""
        runtime = self.runtime
        tried = set()
        if runtime is not None:
            for deployed in (runtime.running, runtime.last_attempt):
                if deployed is not None:
                    tried.add(deployed.deployment)
        now = time.time() if now is None else now
        staged: set[str] = set()
        stale: dict[str, str | None] = {}
        for key, value in self.state.items(DELIVERED_PREFIX).items():
            doc = json.loads(value)
            if now - doc["at"] >= STAGED_KEEP_SECONDS:
                stale[key] = None  # forgotten: the ledger does not grow without bound
            elif doc["deployment"] not in tried:
                staged.add(key.removeprefix(DELIVERED_PREFIX))
        if stale:
            self.state.commit(stale)
        return staged

    def collect(self, keep: Collection[str], sources: Collection[str]) -> int:
        """Delete every image neither in KEEP nor an announced source; the bytes freed.

        Does nothing without ``registry_gc_command`` (deleting manifests without
        reclaiming their blobs frees nothing and loses delta sources).
        """
        if not self.settings.registry_gc_command or not keep:
            return 0
        try:
            result = collect_garbage(self.registry, keep={*keep, *self.staged()}, sources=sources,
                                     settings=self.settings,
                                     engine=self.runtime.engine if self.runtime else None)
        except GcCommandError as exc:
            log.error("image GC: %s", exc)
            result = exc.result
        except DeltaportError as exc:
            log.error("image GC failed: %s", exc)
            return 0
        self._report(result)
        return result.bytes_freed

    def _report(self, result: GcResult) -> None:
        for error in result.errors:
            log.warning("image GC: %s", error)
        if not result.removed:
            return
        self.state.commit({}, [removed_message(self.device, image, result.bytes_freed)
                               for image in result.removed])
        log.info("image GC removed %d image(s), freed %d bytes", len(result.removed),
                 result.bytes_freed)
        self.on_removed()

    def check_watermark(self, incoming: int, sources: Collection[str]) -> None:
        """Refuse INCOMING bytes that would eat into the kept-free share of the registry's
        disk; first try to make room by removing images nothing needs.

        Raises:
            StorageError: it does not fit, even after GC.
        """
        root = self.settings.registry_root
        if root is None:
            return
        while not root.exists() and root.parent != root:
            root = root.parent  # a registry that stored nothing yet has no storage folder
        try:
            check_watermark(root, incoming, self.settings.keep_free)
        except StorageError:
            if not self.collect(self.kept(), sources):
                raise
            check_watermark(root, incoming, self.settings.keep_free)
