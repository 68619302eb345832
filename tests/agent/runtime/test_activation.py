"""The activation transaction against a fake engine: every outcome, every crash point.

Fast and exhaustive; the same code against real podman is in test_runtime_podman.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.agent.runtime.activation import JOURNAL_KEY, Runtime
from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.agent.runtime.policy import Decision, Outcome
from deltaport.agent.state import AgentState
from tests.agent.runtime.fakes import (
    Behaviour,
    Crash,
    FakeEngine,
    FakeRegistry,
    image_id,
    iotedge_state,
    registry_for,
    signed,
)

DEVICE = "dev-1"
KEY = Ed25519PrivateKey.generate()
SETTINGS = RuntimeSettings(kind=RuntimeKind.ENGINE, health_window=5.0, health_grace=5.0,
                           health_poll=1.0)
V1 = iotedge_state(DEVICE, 1, {"app": image_id(1), "sidecar": image_id(2)})
V2 = iotedge_state(DEVICE, 2, {"app": image_id(3), "sidecar": image_id(2)})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def runtime(tmp_path: Path, engine: FakeEngine, registry: FakeRegistry | None = None,
            state: AgentState | None = None) -> Runtime:
    clock = Clock()
    return Runtime(SETTINGS, device=DEVICE, state=state or AgentState(tmp_path / "agent.db"),
                   engine=engine, registry=registry or registry_for(V1, V2),  # type: ignore[arg-type]
                   keys=[KEY.public_key()], clock=clock, sleep=clock.sleep)


def messages(rt: Runtime) -> list[dict[str, Any]]:
    return [m for m in rt.state.pending_messages(100) if m.get("kind") == "activation"]


def test_first_activation_runs_every_module_and_reports_active(tmp_path: Path) -> None:
    engine = FakeEngine({})
    rt = runtime(tmp_path, engine)
    result = rt.apply(signed(V1, KEY))
    assert result.outcome is Outcome.ACTIVE
    assert engine.running_versions() == {"app": 1, "sidecar": 1}
    assert [m["outcome"] for m in messages(rt)] == ["activating", "active"]
    assert rt.running is not None and rt.running.version == 1
    assert rt.apply(signed(V1, KEY)).decision is Decision.NOTHING  # again: nothing to do
    report = rt.report()
    assert report["deployment"] == {"id": "d-1", "version": 1}
    assert {m["module"]: m["running_image_id"] for m in report["modules"]} == {
        "app": image_id(1), "sidecar": image_id(2)}


@pytest.mark.parametrize("behaviour,reason", [
    (Behaviour.EXITS, "exited with code 3"),
    (Behaviour.RESTARTS, "restarted"),
    (Behaviour.UNHEALTHY, "unhealthy"),
])
def test_a_failing_module_rolls_back_to_the_previous_containers(
        tmp_path: Path, behaviour: Behaviour, reason: str) -> None:
    engine = FakeEngine({image_id(3): behaviour})
    rt = runtime(tmp_path, engine)
    assert rt.apply(signed(V1, KEY)).outcome is Outcome.ACTIVE
    old_ids = {b.id for b in engine.boxes.values()}
    result = rt.apply(signed(V2, KEY))
    assert result.outcome is Outcome.ROLLED_BACK and reason in result.reason
    assert engine.running_versions() == {"app": 1, "sidecar": 1}
    assert {b.id for b in engine.boxes.values()} == old_ids  # the very same containers
    last = messages(rt)[-1]
    assert last["outcome"] == "rolled_back" and last["module"] == "app"
    assert len(last["logs"]) == 20 and last["version"] == 2
    if behaviour is Behaviour.EXITS:
        assert last["exit_code"] == 3
    assert rt.running is not None and rt.running.version == 1
    # the same version is never retried by the device itself
    creates = sum(1 for c in engine.log if c.startswith("create"))
    assert rt.apply(signed(V2, KEY)).decision is Decision.SKIP
    assert sum(1 for c in engine.log if c.startswith("create")) == creates


def test_a_create_the_engine_refuses_fails_without_touching_the_running_deployment(
        tmp_path: Path) -> None:
    engine = FakeEngine({image_id(3): Behaviour.BAD_CREATE})
    rt = runtime(tmp_path, engine)
    rt.apply(signed(V1, KEY))
    stops = [c for c in engine.log if c.startswith("stop")]
    result = rt.apply(signed(V2, KEY))
    assert result.outcome is Outcome.FAILED and "invalid HostConfig" in result.reason
    assert [c for c in engine.log if c.startswith("stop")] == stops  # nothing was stopped
    assert engine.running_versions() == {"app": 1, "sidecar": 1}
    assert all(b.labels["io.deltaport.version"] == "1" for b in engine.boxes.values())


def test_a_failing_first_deployment_leaves_nothing_half_running(tmp_path: Path) -> None:
    engine = FakeEngine({image_id(1): Behaviour.EXITS})
    rt = runtime(tmp_path, engine)
    result = rt.apply(signed(V1, KEY))
    assert result.outcome is Outcome.FAILED and "no previous deployment" in result.reason
    assert engine.boxes == {} and rt.running is None


def test_a_replayed_older_manifest_is_refused_once_and_changes_nothing(tmp_path: Path) -> None:
    engine = FakeEngine({})
    rt = runtime(tmp_path, engine)
    rt.apply(signed(V1, KEY))
    rt.apply(signed(V2, KEY))
    before = dict(engine.boxes)
    for _ in range(3):
        result = rt.apply(signed(V1, KEY))
        assert result.decision is Decision.REFUSE and "older than the running version 2" in \
            result.reason
    assert engine.boxes == before
    refused = [m for m in messages(rt) if m["outcome"] == "refused"]
    assert len(refused) == 1 and refused[0]["version"] == 1


def _tampered(envelope: bytes) -> bytes:
    doc = json.loads(envelope)
    payload = json.loads(base64.b64decode(doc["payload"]))
    options = payload["manifest"]["modulesContent"]["$edgeAgent"]["properties.desired"]
    options["modules"]["app"]["settings"]["createOptions"] = json.dumps(
        {"HostConfig": {"Privileged": True, "NetworkMode": "host", "Binds": ["/:/host"]}})
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(doc).encode()


@pytest.mark.parametrize("make,why", [
    (lambda: json.dumps({"deployment": "d-9", "manifest": {}}).encode(), "FormatError"),
    (lambda: signed(V1, Ed25519PrivateKey.generate()), "none of which is trusted"),
    (lambda: _tampered(signed(V1, KEY)), "does not verify"),
    (lambda: signed(iotedge_state("dev-2", 1, {"app": image_id(1)}), KEY), "not 'dev-1'"),
    (lambda: signed(iotedge_state(DEVICE, 1, {"app": image_id(9)}), KEY), "requires"),
], ids=["unsigned", "untrusted-key", "tampered-createOptions", "other-device",
        "image-id-mismatch"])
def test_an_untrustworthy_manifest_is_refused_and_nothing_starts(
        tmp_path: Path, make: Any, why: str) -> None:
    engine = FakeEngine({})
    registry = registry_for(V1, V2)
    registry.tags["demo/app:000009"] = image_id(8)  # the tag exists, with other content
    rt = runtime(tmp_path, engine, registry)
    result = rt.apply(make())
    assert result.decision is Decision.REFUSE and why in result.reason
    assert engine.boxes == {} and not any(c.startswith("create") for c in engine.log)
    [message] = messages(rt)
    assert message["outcome"] == "refused" and why in message["reason"]


def _crash_points() -> int:
    """How many engine calls a v1 → v2 activation makes."""
    engine = FakeEngine({})
    rt = runtime(Path("/nonexistent"), engine, state=AgentState(Path(":memory:")))
    rt.apply(signed(V1, KEY))
    engine.calls = 0
    engine.log.clear()
    rt.apply(signed(V2, KEY))
    return engine.calls


@pytest.mark.parametrize("crash_at", range(1, _crash_points() + 1))
def test_a_crash_anywhere_ends_old_running_or_new_proven(tmp_path: Path, crash_at: int) -> None:
    engine = FakeEngine({})
    rt = runtime(tmp_path, engine)
    rt.apply(signed(V1, KEY))
    engine.calls, engine.crash_at = 0, crash_at
    with pytest.raises(Crash):
        rt.apply(signed(V2, KEY))
    rt.state.close()
    engine.crash_at = None
    # the agent restarts: a new Runtime over the same state file and the same engine
    again = runtime(tmp_path, engine)
    again.recover()
    running = again.running
    assert running is not None and again.state.get(JOURNAL_KEY) is None
    assert engine.running_versions() == {"app": running.version, "sidecar": running.version}
    assert {int(b.labels["io.deltaport.version"]) for b in engine.boxes.values()} == {
        running.version}
    result = again.apply(signed(V2, KEY))
    assert result.decision in (Decision.ACTIVATE, Decision.NOTHING)
    assert engine.running_versions() == {"app": 2, "sidecar": 2}
    assert again.running is not None and again.running.version == 2


def test_repeated_interruptions_give_up(tmp_path: Path) -> None:
    engine = FakeEngine({})
    rt = runtime(tmp_path, engine)
    rt.apply(signed(V1, KEY))
    for _ in range(SETTINGS.max_interruptions):
        engine.calls, engine.crash_at = 0, 8  # somewhere after the containers exist
        with pytest.raises(Crash):
            rt.apply(signed(V2, KEY))
        engine.crash_at = None
        rt.recover()
        assert engine.running_versions() == {"app": 1, "sidecar": 1}
    assert rt.last_attempt is not None and rt.last_attempt.outcome is Outcome.FAILED
    assert rt.apply(signed(V2, KEY)).decision is Decision.SKIP


def test_an_image_held_under_another_name_is_named_and_run(tmp_path: Path) -> None:
    """The device had the image before, under its own name: the signed ID decides."""
    registry = FakeRegistry({"seeded/app:v1": image_id(1), "seeded/sidecar:v1": image_id(2)})
    engine = FakeEngine({})
    rt = runtime(tmp_path, engine, registry)
    assert rt.apply(signed(V1, KEY)).outcome is Outcome.ACTIVE
    for module in V1.modules:  # now also under the names the manifest gives
        assert registry.tags[module.reference.split("/", 1)[1]] == module.image_id


def test_a_name_is_not_made_for_an_image_the_device_lacks(tmp_path: Path) -> None:
    registry = FakeRegistry({"seeded/app:v1": image_id(1)})  # the sidecar is nowhere
    rt = runtime(tmp_path, FakeEngine({}), registry)
    result = rt.apply(signed(V1, KEY))
    assert result.decision is Decision.REFUSE and "requires " + image_id(2) in result.reason
    assert len(registry.tags) == 2  # the app was named; nothing names what is not there
