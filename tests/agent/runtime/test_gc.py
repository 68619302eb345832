"""The image GC and the disk watermark (docs/device-runtime.md §5).

Pure parts by Hypothesis properties; the GC run against a real Docker Distribution
registry that ``deltaport.agent.runtime.registrygc`` (the ready-made GC command)
really stops, garbage-collects and starts again by its PID file. Only the file
system's size is faked, so the watermark can sit just above what the images take.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltaport.agent.messages import LocalImage
from deltaport.agent.registry import LocalRegistry, split_name
from deltaport.agent.runtime.gc import (
    GcCommandError,
    check_watermark,
    choose_removals,
    collect_garbage,
    free_needed,
    removed_message,
    used_bytes,
)
from deltaport.agent.runtime.model import Engine, RuntimeSettings
from deltaport.agent.runtime.registrygc import registrygc_command, running
from deltaport.demo.services import Registry
from deltaport.errors import FormatError, RegistryError, StorageError, UsageError
from deltaport.oci import TransportOptions, copy_image
from tests.agent.runtime.conftest import DeviceRegistry
from tests.fixtures.images import Entry, TestImage, build_image, write_oci_layout

OPTS = TransportOptions(insecure=True)
UNIQUE = 200_000  # bytes of random data in each image's own layer
KEEP_FREE = 0.2
DEVICE = "dev-1"

# ---------------------------------------------------------------- pure: choose_removals

IDS = st.sampled_from([f"sha256:{n:064x}" for n in range(6)])
IMAGES = st.lists(st.builds(LocalImage, st.sampled_from(
    ["a:1", "a:2", "b:1", "b:latest", "c/d:x"]), IDS), max_size=12)


@given(IMAGES, st.sets(IDS), st.sets(IDS))
def test_never_removes_a_kept_or_announced_image(
        images: list[LocalImage], keep: set[str], sources: set[str]) -> None:
    removed = choose_removals(images, keep=keep, sources=sources)
    assert not {i.image_id for i in removed} & (keep | sources)


@given(IMAGES, st.sets(IDS), st.sets(IDS))
def test_removes_everything_else(
        images: list[LocalImage], keep: set[str], sources: set[str]) -> None:
    removed = choose_removals(images, keep=keep, sources=sources)
    kept = [i for i in images if i not in removed]
    assert {i.image_id for i in kept} <= keep | sources  # only protected images stay
    assert removed == [i for i in images if i.image_id not in keep | sources]  # in order


def test_a_tag_sharing_a_kept_image_id_is_kept() -> None:
    kept, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    images = [LocalImage("app:v2", kept), LocalImage("app:latest", kept),
              LocalImage("app:v1", other)]
    assert choose_removals(images, keep={kept}, sources=()) == [LocalImage("app:v1", other)]


# ---------------------------------------------------------------- pure: the watermark

SIZES = st.integers(0, 10**13)


@given(SIZES, SIZES, st.floats(0, 1), SIZES)
def test_freeing_what_is_needed_is_enough_and_not_more(
        total: int, free: int, keep_free: float, incoming: int) -> None:
    needed = free_needed(total, free, keep_free=keep_free, incoming=incoming)
    assert needed >= 0
    assert free + needed - incoming >= keep_free * total  # enough
    if needed:  # and one byte less would not do
        assert free + needed - 1 - incoming < keep_free * total


def test_free_needed_examples() -> None:
    assert free_needed(1000, 500, keep_free=0.2, incoming=300) == 0  # 200 left = 20 %
    assert free_needed(1000, 500, keep_free=0.2, incoming=301) == 1
    assert free_needed(1000, 100, keep_free=0.2, incoming=0) == 100
    assert free_needed(1000, 1000, keep_free=0.0, incoming=1000) == 0


@pytest.mark.parametrize("keep_free, free, incoming", [(-0.1, 1, 1), (1.5, 1, 1), (0.2, -1, 1),
                                                       (0.2, 1, -1)])
def test_free_needed_refuses_nonsense(keep_free: float, free: int, incoming: int) -> None:
    with pytest.raises(UsageError):
        free_needed(1000, free, keep_free=keep_free, incoming=incoming)


@dataclass(frozen=True)
class Usage:
    """What a file system of ``total`` bytes answers with ``used`` of them taken."""

    total: int
    used: int

    @property
    def free(self) -> int:
        return self.total - self.used


def test_the_watermark_names_needed_free_and_kept_bytes(tmp_path: Path) -> None:
    def usage(_: Path) -> Usage:
        return Usage(total=10_000, used=7_500)

    check_watermark(tmp_path, 500, 0.2, disk_usage=usage)  # 2000 left: exactly 20 %
    with pytest.raises(StorageError) as refused:
        check_watermark(tmp_path, 501, 0.2, disk_usage=usage)
    text = str(refused.value)
    assert "501 incoming bytes" in text and "1 bytes must be freed" in text
    assert "2500 of 10000 bytes free" in text and "keep_free = 0.2 keeps 2000" in text


def test_the_watermark_reads_the_real_file_system_by_default(tmp_path: Path) -> None:
    check_watermark(tmp_path, 0, 0.0)
    with pytest.raises(StorageError, match="must be freed"):
        check_watermark(tmp_path, 2**62, 0.2)


def test_used_bytes_sums_files_and_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 10)
    (tmp_path / "a" / "b" / "two").write_bytes(b"y" * 5)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "one")
    assert used_bytes(tmp_path) == 15
    assert used_bytes(tmp_path / "absent") == 0
    with pytest.raises(StorageError, match="more than 3 entries"):
        used_bytes(tmp_path, max_entries=3)


def test_removed_message() -> None:
    image = LocalImage("demo/app:v1", "sha256:" + "c" * 64)
    message = removed_message(DEVICE, image, 1234)
    assert message.pop("at").endswith("Z")
    assert message == {"device": DEVICE, "image_id": image.image_id, "status": "removed",
                       "reason": "gc: freed 1234 bytes", "target": "demo/app:v1"}


def test_split_name() -> None:
    assert split_name("demo/app:v1") == ("demo/app", "v1")
    for bad in ("demo/app", ":v1", "demo/app:", "host:5000/app"):
        with pytest.raises(FormatError):
            split_name(bad)


# ---------------------------------------------------------------- a real registry


def image(seed: int, manifest: str = "oci", shared: bytes = b"") -> TestImage:
    """An image with a layer of its own (random: every byte of it is freed with it)."""
    layers = [[Entry("own.bin", data=random.Random(seed).randbytes(UNIQUE))]]
    if shared:
        layers.insert(0, [Entry("shared.bin", data=shared)])
    return build_image(seed, layers=layers, manifest=manifest)  # type: ignore[arg-type]


def push(tmp_path: Path, registry: Registry, img: TestImage, *names: str) -> None:
    layout = write_oci_layout(tmp_path / f"layout-{img.image_id[7:19]}", img, tag="t")
    for name in names:
        copy_image(f"oci:{layout}:t", registry.ref(name), options=OPTS)


def blob_path(root: Path, digest: str) -> Path:
    hex_ = digest.split(":")[1]
    return root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


def du(root: Path) -> int:
    """The test's own measure: sizes of every regular file under ROOT."""
    return sum(os.path.getsize(Path(d) / f) for d, _, files in os.walk(root) for f in files
               if not os.path.islink(Path(d) / f))


@dataclass(frozen=True)
class Scene:
    running: TestImage  # demo/app:v2 and demo/app:stable
    rollback: TestImage  # demo/app:v1
    announced: TestImage  # demo/base:v0, a source of a bundle in flight
    old: tuple[TestImage, ...]  # old/one:1 (shares a layer with running), old/one:2
    #                             (Docker v2 manifest), old/two:1 and old/two:alias

    @property
    def kept_names(self) -> list[str]:
        return ["demo/app:stable", "demo/app:v1", "demo/app:v2", "demo/base:v0"]

    @property
    def keep(self) -> set[str]:
        return {self.running.image_id, self.rollback.image_id}


@pytest.fixture
def scene(tmp_path: Path, device: DeviceRegistry) -> Scene:
    shared = random.Random(99).randbytes(50_000)
    s = Scene(running=image(1, shared=shared), rollback=image(2), announced=image(3),
              old=(image(4, shared=shared), image(5, manifest="docker"), image(6)))
    reg = device.registry
    push(tmp_path, reg, s.running, "demo/app:v2", "demo/app:stable")
    push(tmp_path, reg, s.rollback, "demo/app:v1")
    push(tmp_path, reg, s.announced, "demo/base:v0")
    push(tmp_path, reg, s.old[0], "old/one:1")
    push(tmp_path, reg, s.old[1], "old/one:2")
    push(tmp_path, reg, s.old[2], "old/two:1", "old/two:alias")
    return s


def settings(device: DeviceRegistry, command: tuple[str, ...] | None = None) -> RuntimeSettings:
    return RuntimeSettings(keep_free=KEEP_FREE, registry_root=device.registry.root,
                           registry_gc_command=device.gc_command if command is None
                           else command)


class RecordingEngine:
    """The one Engine method the GC uses."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    def remove_image(self, image_id: str) -> None:
        self.removed.append(image_id)


def test_gc_frees_old_images_below_the_watermark_and_keeps_the_rest(
        device: DeviceRegistry, scene: Scene) -> None:
    reg, root = device.registry, device.registry.root
    local = LocalRegistry(reg.host, OPTS)
    own_blobs = {img.layers[-1].digest: img for img in (
        scene.running, scene.rollback, scene.announced, *scene.old)}
    assert all(blob_path(root, d).is_file() for d in own_blobs)
    # a file system just too small for one more image of UNIQUE bytes:
    incoming, removable = UNIQUE, len(scene.old) * UNIQUE
    total = int((du(root) + incoming - removable / 2) / (1 - KEEP_FREE))

    def usage(_: Path) -> Usage:
        return Usage(total, du(root))

    with pytest.raises(StorageError, match="must be freed first"):
        check_watermark(root, incoming, KEEP_FREE, disk_usage=usage)
    before, first_pid, engine = du(root), device.pid(), RecordingEngine()

    started = time.monotonic()
    result = collect_garbage(local, keep=scene.keep, sources={scene.announced.image_id},
                             settings=settings(device), engine=cast(Engine, engine))
    took = time.monotonic() - started

    assert result.errors == ()
    assert sorted(i.name for i in result.removed) == [
        "old/one:1", "old/one:2", "old/two:1", "old/two:alias"]
    assert sorted(engine.removed) == sorted(img.image_id for img in scene.old)
    assert device.pid() != first_pid and not running(first_pid)  # really restarted
    assert local.tags() == scene.kept_names  # it answers again, with exactly the kept tags
    for digest, img in own_blobs.items():
        assert blob_path(root, digest).is_file() == (img not in scene.old), digest
        assert blob_path(root, img.image_id).is_file() == (img not in scene.old)
    assert blob_path(root, scene.running.layers[0].digest).is_file()  # shared with old/one:1
    assert result.bytes_freed == before - du(root) > removable
    check_watermark(root, incoming, KEEP_FREE, disk_usage=usage)  # fits now
    assert took < 20, took


def test_nothing_to_remove_runs_no_command(device: DeviceRegistry, scene: Scene) -> None:
    local = LocalRegistry(device.registry.host, OPTS)
    everything = {i.image_id for i in local.images()}
    result = collect_garbage(local, keep=everything, sources=(),
                             settings=settings(device, ("false",)))
    assert result.removed == () and result.bytes_freed == 0 and result.errors == ()


class FailingDeletes(LocalRegistry):
    """The real local registry, except that deleting FAIL answers 500."""

    def __init__(self, host: str, fail: str) -> None:
        super().__init__(host, OPTS)
        self.fail = fail

    def delete(self, name: str) -> str | None:
        if name == self.fail:
            raise RegistryError(f"registry {self.host} (delete {name}) answered 500", 500)
        return super().delete(name)


def test_one_failed_delete_is_recorded_and_the_rest_go_on(
        device: DeviceRegistry, scene: Scene) -> None:
    local = FailingDeletes(device.registry.host, "old/one:2")
    result = collect_garbage(local, keep=scene.keep, sources={scene.announced.image_id},
                             settings=settings(device),
                             engine=cast(Engine, RecordingEngine()))
    assert sorted(i.name for i in result.removed) == ["old/one:1", "old/two:1", "old/two:alias"]
    assert len(result.errors) == 1 and result.errors[0].startswith("old/one:2 (sha256:")
    assert "answered 500" in result.errors[0]
    assert local.tags() == sorted([*scene.kept_names, "old/one:2"])
    assert result.bytes_freed > 2 * UNIQUE


def test_a_failing_command_raises_with_what_was_removed(
        device: DeviceRegistry, scene: Scene) -> None:
    local = LocalRegistry(device.registry.host, OPTS)
    with pytest.raises(GcCommandError, match="exited with 3: no luck") as failed:
        collect_garbage(local, keep=scene.keep, sources={scene.announced.image_id},
                        settings=settings(device, ("sh", "-c", "echo no luck; exit 3")))
    assert isinstance(failed.value, StorageError)
    assert len(failed.value.result.removed) == 4
    assert local.tags() == scene.kept_names  # the manifests are gone; the blobs are not


def test_a_registry_that_does_not_come_back_is_an_error(
        device: DeviceRegistry, scene: Scene) -> None:
    local = LocalRegistry(device.registry.host, OPTS)
    stop_only = ("kill", str(device.pid()))
    with pytest.raises(GcCommandError, match=r"did not answer within 1\.0s"):
        collect_garbage(local, keep=scene.keep, sources={scene.announced.image_id},
                        settings=settings(device, stop_only), ready_timeout=1.0)


def test_it_refuses_to_run_without_a_command_or_anything_to_keep(
        device: DeviceRegistry, scene: Scene) -> None:
    local = LocalRegistry(device.registry.host, OPTS)
    with pytest.raises(UsageError, match="registry_gc_command is not configured"):
        collect_garbage(local, keep=scene.keep, sources=(), settings=settings(device, ()))
    with pytest.raises(UsageError, match="no image to keep"):
        collect_garbage(local, keep=(), sources=(), settings=settings(device))
    assert len(local.tags()) == 8  # nothing touched


def test_manifest_digest_and_delete_for_oci_and_docker_manifests(
        device: DeviceRegistry, scene: Scene) -> None:
    local = LocalRegistry(device.registry.host, OPTS)
    oci, docker = scene.old[0], scene.old[1]
    assert local.manifest_digest("old/one:1") == oci.manifest_digest
    assert local.manifest_digest("old/one:2") == docker.manifest_digest
    assert local.manifest_digest("old/one:absent") is None
    assert local.delete("old/one:2") == docker.manifest_digest
    assert local.delete("old/one:2") is None  # already gone
    assert local.delete_manifest("old/one", docker.manifest_digest) is False
    assert "old/one:1" in local.tags() and "old/one:2" not in local.tags()


def test_registrygc_refuses_a_pid_file_naming_another_process(
        device: DeviceRegistry, tmp_path: Path) -> None:
    other = tmp_path / "other.pid"
    other.write_text(f"{os.getpid()}\n")  # this test process: not `serve CONFIG`
    command = registrygc_command("--config", str(device.registry.config), "--pid-file",
                                 str(other))
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "is not `serve" in done.stderr and running(device.pid())


@pytest.mark.parametrize("collect_status", [0, 4])
def test_registrygc_with_a_systemd_unit_stops_collects_and_always_starts(
        tmp_path: Path, collect_status: int) -> None:
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, status in (("systemctl", 0), ("docker-registry", collect_status)):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit {status}\n')
        tool.chmod(0o755)
    command = registrygc_command("--config", "/etc/docker/registry/config.yml",
                                 "--systemd-unit", "docker-registry",
                                 "--registry-bin", str(bin_dir / "docker-registry"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == (1 if collect_status else 0), done.stderr
    assert calls.read_text().splitlines() == [
        "systemctl stop docker-registry",
        "docker-registry garbage-collect --delete-untagged /etc/docker/registry/config.yml",
        "systemctl start docker-registry"]


def test_name_image_names_a_held_image_without_storing_its_blobs_twice(
        device: DeviceRegistry, scene: Scene) -> None:
    """A manifest's name for an image the device holds under another name (real registry)."""
    local = LocalRegistry(device.registry.host, OPTS)
    blobs_before = du(device.registry.root / "docker" / "registry" / "v2" / "blobs")
    assert local.name_image(scene.rollback.image_id, "reg.io_5000/demo/app:v1") is True
    assert local.image_id("reg.io_5000/demo/app:v1") == scene.rollback.image_id
    assert local.image_id("demo/app:v1") == scene.rollback.image_id  # the old name stays
    blobs_after = du(device.registry.root / "docker" / "registry" / "v2" / "blobs")
    assert blobs_after - blobs_before < UNIQUE // 10  # a manifest more, no layer twice
    assert local.name_image("sha256:" + "0" * 64, "x/y:1") is False
    assert "x/y:1" not in local.tags()
