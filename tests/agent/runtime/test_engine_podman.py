"""DockerEngine against a REAL podman service (Docker compat API) and a REAL registry.

One podman service, one registry and the busybox test images per module (they cost
seconds); every test removes the containers it made. What podman 4.3 does here, seen
by these tests: it never runs healthchecks by itself (``State.Health.Status`` stays
``starting``; ``probe_health`` runs them), it restarts a crashing container at once
with no back-off and shows it as ``stopped`` between runs, counting ``RestartCount``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from deltaport.agent.runtime.engine import DockerEngine, health_argv, observation, runtime_status
from deltaport.agent.runtime.model import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_MODULE,
    LABEL_VERSION,
    LOG_LINE_CHARS,
    Health,
    ModuleObservation,
    ModuleSpec,
    RestartPolicy,
    RuntimeStatus,
)
from deltaport.agent.runtime.specs import module_specs, split_create_options
from deltaport.desired import DesiredModule, DesiredState, ManifestKind
from deltaport.errors import IntegrityError, NotFoundError, RegistryError, TransferError
from deltaport.oci import TransportOptions, open_source, sha256_digest
from tests.fixtures.podman import PodmanService, podman_service
from tests.fixtures.runtime_images import (
    EXIT_CODE,
    SLEEP_LOOP,
    RuntimeImage,
    Variant,
    busybox_layer,
    image_config,
    push_image,
    push_runtime_images,
)
from tests.fixtures.services import Registry, run_registry

DEADLINE = 15.0  # seconds a test waits for the engine to get somewhere
NO_NETWORK = {"NetworkMode": "none"}  # CNI may not work here


@dataclass(frozen=True)
class Rig:
    """What every test here shares: registry, images, podman, the engine under test."""

    registry: Registry
    images: dict[Variant, RuntimeImage]
    podman: PodmanService
    engine: DockerEngine
    api: docker.APIClient  # a second client, for inspecting what the engine did


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("runtime-engine")
    # a short folder: under pytest's long tmp path podman 4.3 silently never applies
    # restart policies (seen here: /tmp/exp/run4 restarts, a 46+ character root does not)
    short = Path(tempfile.mkdtemp(prefix="dp-pm-"))
    with run_registry(root / "registry") as registry, \
            podman_service(short, [registry.host]) as podman:
        images = push_runtime_images(registry.host)
        with DockerEngine(podman.docker_host, registry.host, timeout=60) as engine:
            for image in images.values():
                engine.ensure_image(image.reference, image.image_id)
            api = docker.APIClient(base_url=podman.docker_host, version="1.41")
            try:
                yield Rig(registry, images, podman, engine, api)
            finally:  # containers outlive `podman system service`: remove them first
                for entry in api.containers(all=True):
                    engine.remove(entry["Id"])
                api.close()
    _kill_leftover_conmons(short)
    shutil.rmtree(short, ignore_errors=True)


def _kill_leftover_conmons(root: Path) -> None:
    """podman 4.3 leaves each exec session's conmon processes behind (2 per healthcheck
    probe); end those of this module's podman, found by their ROOT, by PID."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"conmon") and any(str(root).encode() in a for a in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGTERM)


@pytest.fixture
def made(rig: Rig) -> Iterator[list[str]]:
    """Container ids a test made; removed after it."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        rig.engine.remove(cid)


LABELS = {LABEL_MANAGED: "true", LABEL_DEPLOYMENT: "d-1", LABEL_VERSION: "7"}


def spec_of(image: RuntimeImage, module: str, body: dict[str, Any]) -> ModuleSpec:
    return ModuleSpec(module=module, image=image.reference, image_id=image.image_id,
                      create_body={"HostConfig": dict(NO_NETWORK), **body})


def run(rig: Rig, made: list[str], spec: ModuleSpec, name: str | None = None) -> str:
    cid = rig.engine.create(spec, name=name or f"{spec.module}.v7",
                            labels={**LABELS, LABEL_MODULE: spec.module})
    made.append(cid)
    rig.engine.start(cid)
    return cid


def inspect_image(rig: Rig, name: str) -> dict[str, Any]:
    found: dict[str, Any] = rig.api.inspect_image(name)  # type: ignore[no-untyped-call]
    return found


def seen(rig: Rig, cid: str) -> ModuleObservation:
    return next(o for o in rig.engine.observe() if o.container_id == cid)


def wait_for(rig: Rig, cid: str, done: Any) -> ModuleObservation:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = seen(rig, cid)
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def desired(kind: ManifestKind, manifest: dict[str, Any],
            modules: dict[str, RuntimeImage]) -> DesiredState:
    return DesiredState(
        device="dev-1", version=7, deployment="d-1", issued_at="2026-12-02T10:00:00Z",
        kind=kind, manifest=manifest,
        modules=tuple(DesiredModule(m, i.reference, i.image_id) for m, i in modules.items()))


# -- images ----------------------------------------------------------------------------


def test_ensure_image_pulls_by_digest_and_is_idempotent(rig: Rig) -> None:
    image = rig.images[Variant.SLEEPER]
    with open_source("docker://" + image.reference, TransportOptions(insecure=True)) as src:
        digest = src.manifest_digest()
    found = inspect_image(rig, image.image_id)
    repo = image.reference.rsplit(":", 1)[0]
    assert found["Id"] == image.image_id
    assert f"{repo}@{digest}" in found["RepoDigests"]
    rig.engine.ensure_image(image.reference, image.image_id)  # held already: no pull


def test_ensure_image_refuses_a_registry_image_other_than_the_signed_one(rig: Rig) -> None:
    sleeper, signed = rig.images[Variant.SLEEPER], "sha256:" + "e" * 64  # not in the engine
    with pytest.raises(IntegrityError, match=(
            f"local registry has {sleeper.reference} as {sleeper.image_id}, "
            f"the signed manifest requires {signed}")):
        rig.engine.ensure_image(sleeper.reference, signed)
    with pytest.raises(IntegrityError, match="is not in the local registry"):
        rig.engine.ensure_image("127.0.0.2:1/x:v1", signed)


def test_ensure_image_of_an_unknown_tag_is_not_found(rig: Rig) -> None:
    with pytest.raises(NotFoundError):
        rig.engine.ensure_image(f"{rig.registry.host}/runtime/sleeper:nope", "sha256:" + "e" * 64)


def test_ensure_image_pulls_a_new_image_by_digest(rig: Rig) -> None:
    layer = busybox_layer()
    config = json.loads(image_config(Variant.SLEEPER, sha256_digest(layer)))
    config["config"]["Env"].append("FRESH=1")
    image_id = push_image(rig.registry.host, "runtime/fresh:v1", layer,
                          json.dumps(config).encode())
    reference = f"{rig.registry.host}/runtime/fresh:v1"
    rig.engine.ensure_image(reference, image_id)
    assert inspect_image(rig, image_id)["Id"] == image_id
    rig.engine.remove_image(image_id)
    rig.engine.remove_image(image_id)  # gone already: fine
    with pytest.raises(docker.errors.ImageNotFound):
        inspect_image(rig, image_id)


# -- IoT Edge and Compose modules ------------------------------------------------------


def test_iotedge_module_runs_with_exactly_its_split_create_options(
        rig: Rig, made: list[str], tmp_path: Path) -> None:
    padding = [f"PAD{i}={'p' * 60}" for i in range(12)]  # > 1024 chars: three chunks
    options = {
        "Cmd": ["/bin/sh", "-c", f"echo $GREETING > /data/out; {SLEEP_LOOP}"],
        "Env": ["GREETING=from-create-options", "KEPT=1", *padding],
        "Labels": {"org.example.owner": "edge-team"},
        "HostConfig": {"Binds": [f"{tmp_path}:/data"], "NetworkMode": "none"},
    }
    chunks = split_create_options(json.dumps(options))
    assert {"createOptions01", "createOptions02"} <= set(chunks)
    manifest = {"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {
        "sensor": {"type": "docker", "restartPolicy": "on-failure", "status": "running",
                   "settings": {"image": "ignored", **chunks},
                   "env": {"GREETING": {"value": "from-env"}}}}}}}}
    specs = module_specs(desired(ManifestKind.IOTEDGE, manifest,
                                 {"sensor": rig.images[Variant.SLEEPER]}))
    cid = run(rig, made, specs.modules[0])
    found = rig.api.inspect_container(cid)
    assert found["Name"].lstrip("/") == "sensor.v7"
    assert found["Image"] == rig.images[Variant.SLEEPER].image_id
    env = found["Config"]["Env"]
    assert {"GREETING=from-env", "KEPT=1", *padding} <= set(env)
    assert "GREETING=from-create-options" not in env
    assert found["Config"]["Labels"] == {"org.example.owner": "edge-team",
                                         "org.example.variant": "sleeper",
                                         **LABELS, LABEL_MODULE: "sensor"}
    assert found["HostConfig"]["Binds"] == [f"{tmp_path}:/data:rw,rprivate,rbind"] or \
        found["HostConfig"]["Binds"] == [f"{tmp_path}:/data"]
    assert found["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert found["HostConfig"]["NetworkMode"] == "none"
    deadline = time.monotonic() + DEADLINE
    while not (tmp_path / "out").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "out").read_text() == "from-env\n"  # Env and Binds took effect
    assert seen(rig, cid).status is RuntimeStatus.RUNNING


def test_compose_services_start_in_dependency_order_and_probe_healthy(
        rig: Rig, made: list[str]) -> None:
    manifest = {"services": {
        "web": {"image": "x", "depends_on": {"db": {"condition": "service_started"}},
                "network_mode": "none", "restart": "always",
                "environment": {"DB": "db.v7"}},
        "db": {"image": "x", "network_mode": "none",
               "command": ["/bin/sh", "-c", f"touch /tmp/ready; {SLEEP_LOOP}"],
               "healthcheck": {"test": ["CMD-SHELL", "test -e /tmp/ready"],
                               "interval": "1s", "timeout": "5s", "retries": 1}},
    }}
    specs = module_specs(desired(ManifestKind.COMPOSE, manifest, {
        "web": rig.images[Variant.SLEEPER], "db": rig.images[Variant.SLEEPER]}))
    assert [s.module for s in specs.modules] == ["db", "web"]
    ids = {s.module: run(rig, made, s) for s in specs.modules}
    db = rig.api.inspect_container(ids["db"])
    assert db["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "test -e /tmp/ready"]
    assert db["Config"]["Healthcheck"]["Timeout"] == 5_000_000_000
    assert rig.api.inspect_container(ids["web"])["HostConfig"]["RestartPolicy"]["Name"] == \
        "always"
    assert specs.modules[1].restart_policy is RestartPolicy.ALWAYS
    deadline = time.monotonic() + DEADLINE
    while rig.engine.probe_health(ids["db"]) is not Health.HEALTHY:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert rig.engine.probe_health(ids["web"]) is None  # no healthcheck defined
    first = {o.module: o for o in rig.engine.observe() if o.container_id in ids.values()}
    assert {m: o.status for m, o in first.items()} == {"db": RuntimeStatus.RUNNING,
                                                       "web": RuntimeStatus.RUNNING}
    db_started, web_started = first["db"].started_at, first["web"].started_at
    assert db_started is not None and web_started is not None and db_started <= web_started
    assert (first["db"].deployment, first["db"].version) == ("d-1", 7)


# -- what observe() shows --------------------------------------------------------------


def test_a_container_that_exits_at_once_is_failed_with_its_code(
        rig: Rig, made: list[str]) -> None:
    cid = run(rig, made, spec_of(rig.images[Variant.EXITS], "crasher", {}))
    found = wait_for(rig, cid, lambda o: not o.running and o.finished_at is not None)
    assert (found.status, found.exit_code, found.restart_count) == (
        RuntimeStatus.FAILED, EXIT_CODE, 0)
    assert found.started_at is not None and found.health is None
    assert found.image_id == rig.images[Variant.EXITS].image_id
    assert sorted(rig.engine.logs(cid, 20)) == ["to-stderr", "to-stdout"]
    assert len(rig.engine.logs(cid, 1)) == 1
    assert rig.engine.logs(cid, 0) == []


def test_a_crash_loop_is_backoff_and_its_restart_count_grows(
        rig: Rig, made: list[str]) -> None:
    spec = spec_of(rig.images[Variant.EXITS], "looper", {"HostConfig": {
        **NO_NETWORK, "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}})
    cid = run(rig, made, spec)
    statuses: set[RuntimeStatus] = set()
    deadline = time.monotonic() + DEADLINE
    found = seen(rig, cid)
    while time.monotonic() < deadline and not (
            found.restart_count >= 3 and RuntimeStatus.BACKOFF in statuses):
        found = seen(rig, cid)
        statuses.add(found.status)
        time.sleep(0.2)
    assert found.restart_count >= 3
    assert RuntimeStatus.BACKOFF in statuses  # podman: "stopped" between runs
    assert statuses <= {RuntimeStatus.BACKOFF, RuntimeStatus.RUNNING, RuntimeStatus.FAILED}


def test_healthcheck_probes_and_podman_not_running_them_itself(
        rig: Rig, made: list[str]) -> None:
    healthy = run(rig, made, spec_of(rig.images[Variant.HEALTHY], "good", {}))
    unhealthy = run(rig, made, spec_of(rig.images[Variant.UNHEALTHY], "bad", {}))
    plain = run(rig, made, spec_of(rig.images[Variant.SLEEPER], "plain", {}))
    assert rig.engine.probe_health(healthy) is Health.HEALTHY
    assert rig.engine.probe_health(unhealthy) is Health.UNHEALTHY
    assert rig.engine.probe_health(plain) is None
    time.sleep(1.5)  # both images say Interval 1s, Retries 1: Docker would have judged
    assert seen(rig, healthy).health is Health.STARTING  # podman without systemd: never
    assert seen(rig, unhealthy).health is Health.STARTING
    assert seen(rig, plain).health is None


def test_a_healthcheck_that_outlives_its_timeout_is_unhealthy(
        rig: Rig, made: list[str]) -> None:
    slow = {"Healthcheck": {"Test": ["CMD", "/bin/sleep", "5"], "Timeout": 300_000_000}}
    cid = run(rig, made, spec_of(rig.images[Variant.SLEEPER], "slow", slow))
    started = time.monotonic()
    assert rig.engine.probe_health(cid) is Health.UNHEALTHY
    assert time.monotonic() - started < 2


def test_a_stopped_container_is_stopped_and_probes_unhealthy(rig: Rig, made: list[str]) -> None:
    cid = run(rig, made, spec_of(rig.images[Variant.HEALTHY], "stopper", {}))
    rig.engine.stop(cid, timeout=5)
    rig.engine.stop(cid, timeout=5)  # stopped already: fine
    found = seen(rig, cid)
    assert (found.status, found.running, found.exit_code) == (RuntimeStatus.STOPPED, False, 0)
    assert rig.engine.probe_health(cid) is Health.UNHEALTHY


def test_a_created_container_is_stopped_with_no_times(rig: Rig, made: list[str]) -> None:
    cid = rig.engine.create(spec_of(rig.images[Variant.SLEEPER], "idle", {}), name="idle.v7",
                            labels={**LABELS, LABEL_MODULE: "idle"})
    made.append(cid)
    found = seen(rig, cid)
    assert (found.status, found.exit_code, found.started_at, found.finished_at) == (
        RuntimeStatus.STOPPED, None, None, None)
    with pytest.raises(RegistryError) as taken:
        rig.engine.create(spec_of(rig.images[Variant.SLEEPER], "idle", {}), name="idle.v7",
                          labels=LABELS)
    # Docker answers 409 Conflict, podman 4.3 500 "that name is already in use"
    assert taken.value.status in (409, 500) and "idle.v7" in str(taken.value)


def test_remove_is_idempotent_and_images_in_use_are_kept(rig: Rig, made: list[str]) -> None:
    cid = run(rig, made, spec_of(rig.images[Variant.SLEEPER], "gone", {}))
    rig.engine.remove_image(rig.images[Variant.SLEEPER].image_id)  # in use: kept
    assert inspect_image(rig, rig.images[Variant.SLEEPER].image_id)
    rig.engine.remove(cid)
    rig.engine.remove(cid)
    assert cid not in {o.container_id for o in rig.engine.observe()}
    with pytest.raises(NotFoundError, match=f"stop container {cid}"):
        rig.engine.stop(cid, timeout=1)
    with pytest.raises(NotFoundError):
        rig.engine.logs(cid, 5)


def test_an_unreachable_engine_is_a_transfer_error(rig: Rig, tmp_path: Path) -> None:
    with DockerEngine(f"unix://{tmp_path}/none.sock", rig.registry.host) as engine:
        with pytest.raises(TransferError, match=r"none\.sock: list containers"):
            engine.observe()
        with pytest.raises(TransferError):
            engine.ensure_image(rig.images[Variant.SLEEPER].reference,
                                rig.images[Variant.SLEEPER].image_id)


def test_long_log_lines_are_cut(rig: Rig, made: list[str]) -> None:
    spec = spec_of(rig.images[Variant.SLEEPER], "chatty", {"Cmd": [
        # one write: podman's log splits a line written in pieces into one line per piece
        "/bin/sh", "-c", f"echo {'x' * 700}; echo short; {SLEEP_LOOP}"]})
    cid = run(rig, made, spec)
    deadline = time.monotonic() + DEADLINE
    while len(lines := rig.engine.logs(cid, 3)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines == ["x" * LOG_LINE_CHARS, "short", "started"]


# -- pure reading of inspect answers (Docker's words as well as podman's) ---------------


def test_docker_restarting_is_backoff_and_oom_is_failed() -> None:
    assert runtime_status({"Status": "restarting", "Restarting": True}, {}, 2) is \
        RuntimeStatus.BACKOFF
    assert runtime_status({"Status": "exited", "ExitCode": 137, "OOMKilled": True}, {}, 0) is \
        RuntimeStatus.FAILED
    assert runtime_status({"Status": "exited", "ExitCode": 0, "OOMKilled": True}, {}, 0) is \
        RuntimeStatus.FAILED
    assert runtime_status({"Status": "dead"}, {}, 0) is RuntimeStatus.FAILED
    assert runtime_status({"Status": "paused"}, {}, 0) is RuntimeStatus.UNKNOWN
    on_failure = {"Name": "on-failure", "MaximumRetryCount": 2}
    assert runtime_status({"Status": "stopped", "ExitCode": 1}, on_failure, 1) is \
        RuntimeStatus.BACKOFF
    assert runtime_status({"Status": "stopped", "ExitCode": 1}, on_failure, 2) is \
        RuntimeStatus.FAILED
    assert runtime_status({"Status": "stopped", "ExitCode": 0}, {"Name": "no"}, 0) is \
        RuntimeStatus.STOPPED


def test_observation_reads_labels_times_and_health_fields() -> None:
    doc = {"Id": "abc", "Name": "/app.v3", "Image": "f" * 64, "RestartCount": 4,
           "Config": {"Labels": {LABEL_MODULE: "app", LABEL_DEPLOYMENT: "d-9",
                                 LABEL_VERSION: "3"}},
           "HostConfig": {"RestartPolicy": {"Name": "no"}},
           "State": {"Status": "exited", "Running": False, "ExitCode": 2, "Error": "boom",
                     "StartedAt": "2026-12-02T10:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z",
                     "Healthcheck": {"Status": "unhealthy"}}}
    found = observation(doc)
    assert (found.module, found.name, found.deployment, found.version) == ("app", "app.v3",
                                                                          "d-9", 3)
    assert (found.image_id, found.status, found.exit_code, found.restart_count) == (
        "sha256:" + "f" * 64, RuntimeStatus.FAILED, 2, 4)
    assert (found.finished_at, found.health, found.description) == (
        None, Health.UNHEALTHY, "boom")


@pytest.mark.parametrize(("test", "argv"), [
    (["CMD", "/bin/check", "-q"], ["/bin/check", "-q"]),
    (["CMD-SHELL", "curl -f x || exit 1"], ["/bin/sh", "-c", "curl -f x || exit 1"]),
    (["NONE"], None), ([], None), (None, None), (["CMD"], None), (["WAT", "x"], None),
])
def test_health_argv(test: Any, argv: list[str] | None) -> None:
    assert health_argv(test) == argv
