"""Keeping the device disk bounded: which images go, the free-space watermark, the GC run.

docs/device-runtime.md §5. Pure: ``choose_removals`` (every tag whose image neither a
kept deployment nor a bundle in flight needs), ``free_needed`` (the watermark
arithmetic), ``removed_message``. I/O: ``check_watermark`` (the file system's free
space), ``used_bytes`` (a bounded walk of the registry's storage) and
``collect_garbage``, which deletes the chosen manifests from the local registry by
digest, removes the images from the engine, then runs the configured
``registry_gc_command`` — the only thing that frees blobs: the registry must be
stopped while ``docker-registry garbage-collect`` runs — and waits until the registry
answers ``/v2/`` again.

Call ``collect_garbage`` only between bundles: a garbage-collect while the agent
pushes an image would delete the blobs it has uploaded but not yet named in a
manifest (the manifest is pushed last).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from deltaport.agent.hub import BundleOffer
from deltaport.agent.messages import LocalImage, now_iso
from deltaport.agent.registry import LocalRegistry
from deltaport.agent.runtime.model import Engine, RuntimeSettings
from deltaport.errors import DeltaportError, StorageError, TransferError, UsageError
from deltaport.limits import TEXT_MAX_CHARS
from deltaport.oci.registry import RegistryClient

GC_COMMAND_TIMEOUT = 600.0  # seconds registry_gc_command may take (stop, collect, start)
READY_TIMEOUT = 60.0  # seconds for the registry to answer /v2/ again after it
READY_POLL = 0.1  # seconds between those tries
MAX_WALK_ENTRIES = 1_000_000  # directory entries used_bytes visits at most
OUTPUT_TAIL_CHARS = 2000  # of the command's output, quoted in an error


class DiskUsage(Protocol):
    """What ``shutil.disk_usage`` answers (only these two are read)."""

    @property
    def total(self) -> int: ...

    @property
    def free(self) -> int: ...


DiskUsageFn = Callable[[Path], DiskUsage]


@dataclass(frozen=True)
class GcResult:
    """What one GC run did."""

    removed: tuple[LocalImage, ...]  # tags deleted from the local registry
    bytes_freed: int  # drop of used bytes in registry_root (0 without one)
    errors: tuple[str, ...] = ()  # images that could not be removed, and why


class GcCommandError(StorageError):
    """The garbage-collect command failed, or the registry did not answer after it.

    ``result`` holds what was removed before (the manifests are gone: report them).
    """

    def __init__(self, message: str, result: GcResult) -> None:
        super().__init__(message)
        self.result = result


def choose_removals(images: Sequence[LocalImage], *, keep: Collection[str],
                    sources: Collection[str]) -> list[LocalImage]:
    """Every tag whose image ID is neither in KEEP nor in SOURCES, in the given order (pure).

    A tag naming a kept image ID stays even if other tags name it too: deleting its
    manifest would delete the kept image's.
    """
    protected = set(keep) | set(sources)
    return [image for image in images if image.image_id not in protected]


def sources_in_flight(offers: Iterable[BundleOffer]) -> frozenset[str]:
    """The image IDs the hub announced as sources of the bundles it offers (pure)."""
    return frozenset(image_id for offer in offers for image_id in offer.sources)


def free_needed(total: int, free: int, *, keep_free: float, incoming: int) -> int:
    """Bytes to free so that after writing INCOMING bytes at least KEEP_FREE × TOTAL
    stays free; 0 when it fits already (pure).

    Raises:
        UsageError: KEEP_FREE outside [0, 1], or a negative size.
    """
    if not 0.0 <= keep_free <= 1.0:
        raise UsageError(f"runtime.keep_free must be between 0 and 1, not {keep_free}")
    if min(total, free, incoming) < 0:
        raise UsageError(f"sizes must not be negative: total {total}, free {free}, "
                         f"incoming {incoming}")
    return max(0, math.ceil(keep_free * total) + incoming - free)


def check_watermark(path: Path, incoming: int, keep_free: float, *,
                    disk_usage: DiskUsageFn = shutil.disk_usage) -> None:
    """Refuse INCOMING bytes that would leave less than KEEP_FREE of PATH's file system free.

    Raises:
        StorageError: it does not fit; the message names the bytes needed, free and kept.
        UsageError: see free_needed.
    """
    usage = disk_usage(path)
    needed = free_needed(usage.total, usage.free, keep_free=keep_free, incoming=incoming)
    if needed:
        raise StorageError(
            f"not enough free disk in {path} for {incoming} incoming bytes: {needed} bytes "
            f"must be freed first ({usage.free} of {usage.total} bytes free; the watermark "
            f"runtime.keep_free = {keep_free:g} keeps {math.ceil(keep_free * usage.total)} "
            "bytes free)")


def used_bytes(root: Path, *, max_entries: int = MAX_WALK_ENTRIES) -> int:
    """The sum of the sizes of the regular files under ROOT (symlinks not followed;
    0 if ROOT does not exist; files vanishing meanwhile are skipped).

    Raises:
        StorageError: more than MAX_ENTRIES entries, or a directory cannot be read.
    """
    total, seen, pending = 0, 0, [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries:
                        raise StorageError(f"{root} holds more than {max_entries} entries")
                    total += _entry_size(entry, pending)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"cannot measure {root}: {exc}") from exc
    return total


def _entry_size(entry: os.DirEntry[str], pending: list[Path]) -> int:
    try:
        if entry.is_dir(follow_symlinks=False):
            pending.append(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        pass
    return 0


def removed_message(device: str, image: LocalImage, bytes_freed: int) -> dict[str, Any]:
    """A ``removed`` status message (the outbox mints its message_id).

    BYTES_FREED is the whole run's (blobs are shared between images, so one image's
    share cannot be told): every image of a run carries the same number.
    """
    return {
        "device": device, "image_id": image.image_id, "status": "removed", "at": now_iso(),
        "reason": f"gc: freed {bytes_freed} bytes"[:TEXT_MAX_CHARS], "target": image.name,
    }


def collect_garbage(registry: LocalRegistry, *, keep: Collection[str],
                    sources: Collection[str], settings: RuntimeSettings,
                    engine: Engine | None = None,
                    command_timeout: float = GC_COMMAND_TIMEOUT,
                    ready_timeout: float = READY_TIMEOUT) -> GcResult:
    """Remove every image neither KEEP nor SOURCES names, and reclaim its blobs.

    Deletes each chosen tag's manifest by digest (after checking the tag still names
    the image chosen), removes the image from ENGINE if given, then — if anything was
    deleted — runs ``settings.registry_gc_command`` and waits until the registry
    answers again. One image that cannot be removed is recorded in ``errors``.

    Raises:
        UsageError: no registry_gc_command configured, or KEEP is empty (a bug in the
            caller would otherwise wipe every delta source on the device).
        TransferError/RegistryError: the registry could not be listed (nothing done).
        GcCommandError: the command failed or the registry did not come back; its
            ``result`` says what was removed.
        StorageError: registry_root cannot be measured.
    """
    if not settings.registry_gc_command:
        raise UsageError("runtime.registry_gc_command is not configured: the registry "
                         "cannot free blobs, so no image is removed")
    if not keep:
        raise UsageError("refusing to collect garbage with no image to keep")
    chosen = choose_removals(registry.images(), keep=keep, sources=sources)
    if not chosen:
        return GcResult((), 0)
    before = _measure(settings.registry_root)
    removed, errors = _delete_all(registry, chosen)
    if engine is not None:
        errors += _remove_from_engine(engine, removed)
    if removed:
        partial = GcResult(tuple(removed), 0, tuple(errors))
        run_gc_command(settings.registry_gc_command, timeout=command_timeout, result=partial)
        wait_until_ready(registry, timeout=ready_timeout, result=partial)
    try:
        after = _measure(settings.registry_root) if removed else before
    except StorageError as exc:  # the images are gone all the same: report them
        errors.append(str(exc))
        after = before
    return GcResult(tuple(removed), max(0, before - after), tuple(errors))


def _measure(root: Path | None) -> int:
    return 0 if root is None else used_bytes(root)


def _delete_all(registry: LocalRegistry,
                chosen: Sequence[LocalImage]) -> tuple[list[LocalImage], list[str]]:
    removed: list[LocalImage] = []
    errors: list[str] = []
    for image in chosen:
        try:
            problem = _delete_one(registry, image)
        except DeltaportError as exc:
            problem = str(exc)
        if problem is None:
            removed.append(image)
        else:
            errors.append(f"{image.name} ({image.image_id}): {problem}")
    return removed, errors


def _delete_one(registry: LocalRegistry, image: LocalImage) -> str | None:
    """Delete IMAGE's tag; None once it is gone (deleted now, or already with an
    earlier tag of the same manifest), else why it was left alone."""
    now = registry.image_id(image.name)
    if now is None:
        return None
    if now != image.image_id:
        return f"the tag names {now} now; left alone"
    registry.delete(image.name)
    return None


def _remove_from_engine(engine: Engine, removed: Sequence[LocalImage]) -> list[str]:
    errors = []
    for image_id in dict.fromkeys(image.image_id for image in removed):
        try:
            engine.remove_image(image_id)
        except DeltaportError as exc:
            errors.append(f"engine: {image_id}: {exc}")
    return errors


def run_gc_command(argv: Sequence[str], *, timeout: float, result: GcResult) -> None:
    """Run the configured garbage-collect command ARGV to completion.

    Raises:
        GcCommandError: it could not be started, failed, or took longer than TIMEOUT.
    """
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise GcCommandError(f"registry GC command {argv[0]} took longer than {timeout}s "
                             "and was killed; the registry may be stopped", result) from exc
    except OSError as exc:
        raise GcCommandError(f"cannot run registry GC command {argv[0]}: {exc}",
                             result) from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-OUTPUT_TAIL_CHARS:]
        raise GcCommandError(f"registry GC command {argv[0]} exited with {done.returncode}: "
                             f"{output.strip()}", result)


def wait_until_ready(registry: LocalRegistry, *, timeout: float, result: GcResult,
                     poll: float = READY_POLL) -> None:
    """Return once the registry answers ``GET /v2/`` (any status), within TIMEOUT.

    Raises:
        GcCommandError: it did not.
    """
    options = replace(registry.options, retries=0, connect_timeout=min(1.0, timeout),
                      read_timeout=min(5.0, timeout))
    deadline = time.monotonic() + timeout
    while True:
        client = RegistryClient(registry.host, options)
        try:
            client.base_url  # noqa: B018 - pings /v2/
            return
        except TransferError as exc:
            if time.monotonic() >= deadline:
                raise GcCommandError(f"registry {registry.host} did not answer within "
                                     f"{timeout}s after garbage-collect: {exc}", result) from exc
        finally:
            client.close()
        time.sleep(poll)
