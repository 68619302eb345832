"""The hub side of the device runtime on SQLite and PostgreSQL: signed versioned desired
manifests, activation messages, removed images, runtime reports (docs/device-runtime.md)."""
# ruff: noqa: F811  (the ``fleet`` fixture of test_pipelines is imported and used as a parameter)

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import select

from deltaport.errors import FormatError, StateError
from deltaport.fleet import device_images, queries, runtime, status
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import (
    LOG_LINES_MAX,
    ActivationMessage,
    RuntimeHeartbeat,
    RuntimeReport,
    device_message_from_dict,
    parse_runtime_body,
    report_digest,
)
from deltaport.fleet.models import DesiredManifest, DeviceDeployment, DeviceModule, Event
from deltaport.fleet.states import ActivationOutcome
from deltaport.notify.email import Email
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.manifest_to_device import activate
from tests.fleet.test_pipelines import Fleet, fleet  # noqa: F401


class Outbox:
    """A Notifier that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[Email] = []

    def send(self, email: Email) -> None:
        self.sent.append(email)


def activation(dep: str, device: str, outcome: str, version: int = 1, **kw: Any) -> Any:
    doc = {"message_id": kw.pop("mid", str(uuid.uuid4())), "kind": "activation",
           "device": device, "deployment": dep, "version": version, "outcome": outcome, **kw}
    return device_message_from_dict(doc)


def activated(fleet: Fleet, devices: tuple[str, ...] = ("d",)) -> str:
    """A deployment with nothing to send, activated at once (version 1 on each device)."""
    result = fleet.deploy(devices)
    assert result.activated
    return result.deployment_id


def row(fleet: Fleet, device: str, dep: str) -> DeviceDeployment | None:
    with session_scope(fleet.engine) as s:
        d = queries.get_device(s, device)
        return s.get(DeviceDeployment, (d.id, dep))


# --- signed, versioned desired manifests ------------------------------------------------


def test_each_activation_publishes_a_higher_version_per_device(fleet: Fleet) -> None:
    dep = activated(fleet)
    assert fleet.desired("d").version == 1
    with session_scope(fleet.engine) as s:
        again = activate(s, set_id=dep, store=fleet.store, manifest_key=fleet.manifest_key)
    assert again.versions == {"d": 2} and fleet.desired("d").version == 2
    # another device has its own counter
    fleet.report("a", "reg.io/app:2", "reg.io/web:2")
    other = activated(fleet, ("a",))
    assert fleet.desired("a").version == 1 and fleet.desired("a").deployment == other
    with session_scope(fleet.engine) as s:
        rows = s.execute(
            select(DesiredManifest.version).order_by(DesiredManifest.id)
        ).scalars().all()
    assert rows == [1, 2, 1]


def test_missing_manifest_key_is_a_clear_state_error(fleet: Fleet, tmp_path: Path) -> None:
    result = fleet.deploy(("d",), activate_when_complete=False)
    missing = tmp_path / "nokeys" / "manifest.key"
    with pytest.raises(StateError) as err, session_scope(fleet.engine) as s:
        activate(s, set_id=result.deployment_id, store=fleet.store, manifest_key=missing)
    assert str(missing) in str(err.value)
    assert f"deltaport keys generate {missing.parent} --name manifest" in str(err.value)


def test_two_publishers_at_once_get_different_versions(fleet: Fleet) -> None:
    """The second waits on the unique (device, version), inserts nothing, takes the next."""
    dep = fleet.deploy(("d",), activate_when_complete=False).deployment_id
    got: dict[str, Any] = {}
    first = session_scope(fleet.engine)
    s1 = first.__enter__()
    got["first"] = activate(s1, set_id=dep, store=fleet.store, manifest_key=fleet.manifest_key)

    def second() -> None:
        try:
            with session_scope(fleet.engine) as s2:
                got["second"] = activate(
                    s2, set_id=dep, store=fleet.store, manifest_key=fleet.manifest_key
                )
        except Exception as exc:
            got["error"] = exc

    if fleet.engine.dialect.name == "sqlite":  # one writer at a time: just one after the other
        first.__exit__(None, None, None)
        second()
    else:
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # blocked on the first one's uncommitted version 1
        first.__exit__(None, None, None)
        thread.join(30)
    assert "error" not in got, got.get("error")
    assert got["first"].versions == {"d": 1} and got["second"].versions == {"d": 2}
    assert fleet.desired("d").version == 2


# --- activation messages ----------------------------------------------------------------


def test_activation_outcomes_are_recorded_and_bad_ones_mailed(fleet: Fleet) -> None:
    fleet.report("a", "reg.io/app:2", "reg.io/web:2")
    fleet.report("b", "reg.io/app:2", "reg.io/web:2")
    dep = activated(fleet, ("a", "b", "d"))
    outbox = Outbox()
    logs = [f"line {i}" for i in range(LOG_LINES_MAX)]
    msgs = [
        activation(dep, "d", "activating", mid="m1"),
        activation(dep, "d", "active", mid="m2"),
        activation(dep, "d", "activating", mid="m3"),  # late: must not regress
        activation(dep, "a", "rolled_back", reason="module app exited with code 3",
                   module="app", exit_code=3, restart_count=0, logs=logs),
        activation(dep, "b", "refused", reason="SignatureError: not trusted"),
    ]
    result = handle_status_messages(fleet.engine, msgs, notifier=outbox)
    assert [(r.outcome, r.status) for r in result.results] == [
        ("applied", "activating"), ("applied", "active"), ("unchanged", "active"),
        ("applied", "rolled_back"), ("applied", "refused"),
    ]
    d, a = row(fleet, "d", dep), row(fleet, "a", dep)
    assert d is not None and d.state == "active" and d.version == 1
    assert a is not None and a.state == "rolled_back" and a.reason and "code 3" in a.reason
    assert a.detail == {"module": "app", "exit_code": 3, "restart_count": 0, "logs": logs}
    assert sorted(m.subject for m in outbox.sent) == [
        f"deltaport: deployment {dep} refused on b",
        f"deltaport: deployment {dep} rolled_back on a",
    ]
    assert all(m.to == "alice@example.com" for m in outbox.sent)
    assert "line 19" in next(m.body for m in outbox.sent if "rolled_back" in m.subject)
    # the same messages again: duplicates, nothing changes, nothing mailed
    again = handle_status_messages(fleet.engine, msgs, notifier=outbox)
    assert {r.outcome for r in again.results} == {"duplicate"} and len(outbox.sent) == 2
    with session_scope(fleet.engine) as s:
        doc = status.deployment_status(s, dep)
        events = s.scalars(select(Event.to_status).where(Event.kind == "device_deployment"))
        assert sorted(cast("Iterable[str]", events)) == [
            "activating", "active", "active", "refused", "rolled_back"]
    states = {r["device"]: r["activation"]["state"] for r in doc["devices"]}
    assert states == {"a": "rolled_back", "b": "refused", "d": "active"}
    assert doc["activation_counts"] == {"rolled_back": 1, "refused": 1, "active": 1}


def test_bad_activation_messages_are_rejected_not_errors(fleet: Fleet) -> None:
    dep = activated(fleet)
    batch = [
        activation("d-unknown", "d", "active"),
        activation(dep, "nobody", "active"),
        activation(dep, "a", "active"),  # a is not in the deployment
        activation(dep, "d", "rolled_back"),
        activation(dep, "d", "active"),  # active after rolled_back, same version: refused
        activation(dep, "d", "active", version=2),  # a newer version starts over
    ]
    result = handle_status_messages(fleet.engine, batch)
    assert [r.outcome for r in result.results] == [
        "rejected", "rejected", "rejected", "applied", "rejected", "applied",
    ]
    errors = [r.error or "" for r in result.results]
    assert "unknown deployment 'd-unknown'" in errors[0]
    assert "unknown device 'nobody'" in errors[1]
    assert "does not target a" in errors[2]
    assert "cannot go from rolled_back on active" in errors[4]
    with pytest.raises(StateError, match="unknown deployment"):
        handle_status_messages(fleet.engine, [batch[0]], strict=True)
    d = row(fleet, "d", dep)
    assert d is not None and (d.state, d.version) == ("active", 2)


def test_activation_message_limits() -> None:
    base = {"message_id": "m", "kind": "activation", "device": "d", "deployment": "x",
            "version": 1, "outcome": "failed"}
    msg = device_message_from_dict({**base, "reason": "r" * 10_000, "logs": ["x" * 900]})
    assert isinstance(msg, ActivationMessage) and msg.outcome is ActivationOutcome.FAILED
    assert len(msg.reason or "") == 4000 and msg.logs == ("x" * 500,)
    for bad in (
        {"logs": ["l"] * (LOG_LINES_MAX + 1)},
        {"logs": [1]},
        {"outcome": "exploded"},
        {"version": 0},
        {"version": True},
        {"deployment": ""},
        {"exit_code": "3"},
        {"restart_count": -1},
        {"kind": "weird"},
    ):
        with pytest.raises(FormatError):
            device_message_from_dict({**base, **bad})


# --- removed images ---------------------------------------------------------------------


def test_removed_status_makes_the_image_no_longer_a_source(fleet: Fleet) -> None:
    removed = {"message_id": "gc-1", "device": "a", "image_id": fleet.image_id("reg.io/app:1"),
               "status": "removed", "reason": "gc: freed 1000 bytes"}
    result = handle_status_messages(fleet.engine, [device_message_from_dict(removed)])
    assert result.results[0].outcome == "applied" and result.results[0].status == "removed"
    with session_scope(fleet.engine) as s:
        device = queries.get_device(s, "a")
        have = device_images.device_statuses(s, [device.id])[device.id]
    assert have[fleet.image_id("reg.io/app:1")] == "removed"
    # the planner no longer reads from it: app:2 for a is now a full image, like for c
    fleet.deploy(("a",))
    app = next(b for b in fleet.builder.built if b.target.name == "reg.io/app:2")
    _, rt, app1 = fleet.registry.images["reg.io/app:1"].diff_ids  # only app:1 has these
    assert rt not in app.sources and app1 not in app.sources


# --- runtime reports --------------------------------------------------------------------

REPORT: dict[str, Any] = {
    "deployment": {"id": "d-1", "version": 7},
    "last_attempt": {"id": "d-1", "version": 8, "outcome": "rolled_back", "reason": "exit 3"},
    "modules": [
        {"module": "app", "desired_image_id": "sha256:" + "a" * 64,
         "running_image_id": "sha256:" + "a" * 64, "runtime_status": "running",
         "health": "healthy", "exit_code": 0, "restart_count": 1,
         "started_at": "2026-12-02T10:00:00.123456789Z", "exited_at": "0001-01-01T00:00:00Z",
         "status_description": "up 3 minutes"},
        {"module": "web", "desired_image_id": None, "running_image_id": None,
         "runtime_status": "unknown", "health": None, "exit_code": None, "restart_count": 0,
         "started_at": None, "exited_at": None, "status_description": "no container"},
    ],
}


def test_runtime_report_then_heartbeats(fleet: Fleet) -> None:
    import json

    parsed = parse_runtime_body(json.dumps({"report": REPORT}).encode())
    assert isinstance(parsed, RuntimeReport) and parsed.digest == report_digest(REPORT)
    with session_scope(fleet.engine) as s:
        device = queries.get_device(s, "d")
        runtime.record_report(s, device=device, report=parsed)
    with session_scope(fleet.engine) as s:
        device = queries.get_device(s, "d")
        assert runtime.heartbeat(s, device=device, digest=parsed.digest)
        assert not runtime.heartbeat(s, device=device, digest="sha256:" + "0" * 64)
        mods = s.scalars(select(DeviceModule).order_by(DeviceModule.module)).all()
        assert [(m.module, m.runtime_status, m.health) for m in mods] == [
            ("app", "running", "healthy"), ("web", "unknown", None),
        ]
        assert mods[0].exited_at is None and mods[0].started_at is not None
        assert mods[0].deployment_set_id == "d-1"
        doc = status.device_status(s, "d")["runtime"]
    assert doc["running"] == {"id": "d-1", "version": 7}
    assert doc["last_attempt"]["outcome"] == "rolled_back"
    assert doc["report_digest"] == parsed.digest
    # a new report replaces the rows
    smaller = {**REPORT, "modules": REPORT["modules"][:1]}
    with session_scope(fleet.engine) as s:
        runtime.record_report(
            s, device=queries.get_device(s, "d"), report=parse_runtime_body(
                json.dumps({"report": smaller}).encode()
            )  # type: ignore[arg-type]
        )
        assert len(s.scalars(select(DeviceModule)).all()) == 1


def test_runtime_body_limits() -> None:
    import json

    beat = parse_runtime_body(b'{"report_digest": "sha256:' + b"b" * 64 + b'"}')
    assert isinstance(beat, RuntimeHeartbeat)
    module = REPORT["modules"][1]
    too_many = {**REPORT, "modules": [{**module, "module": f"m{i}"} for i in range(201)]}
    for bad in (
        b"[]",
        b'{"report_digest": "md5:x"}',
        json.dumps({"report": too_many}).encode(),
        json.dumps({"report": {**REPORT, "modules": [module, module]}}).encode(),
        json.dumps({"report": {**REPORT, "modules": [{**module, "runtime_status": "x"}]}}).encode(),
        json.dumps({"report": {**REPORT, "modules": [{**module, "health": "meh"}]}}).encode(),
        json.dumps({"report": {**REPORT, "deployment": {"id": "d", "version": 0}}}).encode(),
    ):
        with pytest.raises(FormatError):
            parse_runtime_body(bad)
