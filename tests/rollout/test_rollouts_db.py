"""Rollouts on SQLite and PostgreSQL through the status-message path an agent uses.

Devices a, b, c need the update delivered, d has it already; d is the canary (wave 1).
Wave outcomes arrive as the activation messages the device runtime sends after its
health gate (``active``) or its rollback (``rolled_back``).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from deltaport.errors import StateError
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import device_message_from_dict
from deltaport.fleet.models import Event
from deltaport.pipelines import rollouts
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.manifest_to_device import desired_key
from deltaport.rollout.plan import RolloutAction, RolloutState, parse_threshold
from tests.fleet.test_pipelines import Fleet


def spec(**kw: object) -> rollouts.RolloutSpec:
    base: dict[str, object] = dict(waves=(25, 100), success=parse_threshold("95%", what="s"),
                                   error=parse_threshold("1", what="e"), canaries=("d",))
    return rollouts.RolloutSpec(**{**base, **kw})  # type: ignore[arg-type]


def start(fleet: Fleet, **kw: object) -> tuple[str, str]:
    dep = fleet.deploy(("a", "b", "c", "d"), activate_when_complete=False).deployment_id
    with session_scope(fleet.engine) as s:
        rollout, _ = rollouts.create(s, set_id=dep, spec=spec(**kw), requested_by="alice",
                                     contact_email="alice@example.com",
                                     activator=rollouts.Activator(fleet.store, fleet.manifest_key))
        return dep, rollout.id


def send(fleet: Fleet, *messages: object) -> None:
    handle_status_messages(fleet.engine, messages, store=fleet.store,  # type: ignore[arg-type]
                           manifest_key=fleet.manifest_key)


def activation(dep: str, device: str, outcome: str) -> object:
    return device_message_from_dict({
        "message_id": str(uuid.uuid4()), "kind": "activation", "device": device,
        "deployment": dep, "version": 1, "outcome": outcome,
        **({"reason": "health check failed"} if outcome == "rolled_back" else {})})


def deliver(fleet: Fleet, *devices: str) -> None:
    send(fleet, *[fleet.msg(str(uuid.uuid4()), d, img) for d in devices
                  for img in ("reg.io/app:2", "reg.io/web:2")])


def doc(fleet: Fleet, rid: str) -> dict[str, object]:
    with session_scope(fleet.engine) as s:
        return rollouts.rollout_doc(s, rollouts.get(s, rid))


def published(fleet: Fleet, device: str) -> bool:
    return (fleet.store.root / desired_key(device)).exists()


def test_canary_fails_its_health_gate_and_the_rollout_pauses(fleet: Fleet) -> None:
    dep, rid = start(fleet)
    assert published(fleet, "d") and fleet.desired("d").deployment == dep
    deliver(fleet, "a", "b", "c")  # delivery goes on everywhere meanwhile
    assert not any(published(fleet, x) for x in "abc")
    send(fleet, activation(dep, "d", "rolled_back"))
    status = doc(fleet, rid)
    assert status["state"] == RolloutState.PAUSED.value
    assert "wave 1 has 1 of 1 device(s) failed" in str(status["reason"])
    assert not any(published(fleet, x) for x in "abc")  # no other device activates
    # a resume accepts the failure, but wave 1 still lacks its success threshold
    with session_scope(fleet.engine) as s:
        rollouts.act(s, rid, RolloutAction.RESUME, rollouts.Activator(fleet.store,
                                                                     fleet.manifest_key))
    assert doc(fleet, rid)["state"] == RolloutState.RUNNING.value
    assert not any(published(fleet, x) for x in "abc")
    with session_scope(fleet.engine) as s:
        kinds = s.scalars(select(Event.to_status).where(
            Event.kind.startswith(rollouts.EVENT_PREFIX)).order_by(Event.id)).all()
    assert kinds == ["staging", "running", "paused", "running"]


def test_rollout_completes_wave_by_wave(fleet: Fleet) -> None:
    dep, rid = start(fleet)
    status = doc(fleet, rid)
    waves = status["waves"]
    assert waves[0]["devices"] == ["d"] and len(waves[1]["devices"]) == 3  # type: ignore[index]
    send(fleet, activation(dep, "d", "active"))
    status = doc(fleet, rid)  # wave 1 succeeded, wave 2 waits for its delivery
    assert status["current_wave"] == 1 and "wave 2 waits for delivery: 0 of 3" in str(
        status["reason"])
    deliver(fleet, "a", "b", "c")
    assert all(published(fleet, x) for x in "abc")
    assert doc(fleet, rid)["current_wave"] == 2
    send(fleet, *[activation(dep, x, "active") for x in "abc"])
    status = doc(fleet, rid)
    assert status["state"] == RolloutState.COMPLETE.value
    assert [w["active"] for w in status["waves"]] == [1, 3]  # type: ignore[attr-defined]


def test_approve_each_waits_for_the_operator(fleet: Fleet) -> None:
    dep, rid = start(fleet, approve_each=True)
    deliver(fleet, "a", "b", "c")
    send(fleet, activation(dep, "d", "active"))
    status = doc(fleet, rid)
    assert status["state"] == RolloutState.AWAITING_APPROVAL.value
    assert not any(published(fleet, x) for x in "abc")
    act = rollouts.Activator(fleet.store, fleet.manifest_key)
    with session_scope(fleet.engine) as s:
        rollouts.act(s, rid, RolloutAction.APPROVE, act)
    assert all(published(fleet, x) for x in "abc")
    with pytest.raises(StateError), session_scope(fleet.engine) as s:
        rollouts.act(s, rid, RolloutAction.APPROVE, act)
    with session_scope(fleet.engine) as s:
        rollouts.act(s, rid, RolloutAction.CANCEL, act)
    assert doc(fleet, rid)["state"] == RolloutState.CANCELLED.value


def test_a_paused_rollout_keeps_its_reason_over_later_messages(fleet: Fleet) -> None:
    dep, rid = start(fleet)
    send(fleet, activation(dep, "d", "rolled_back"))
    deliver(fleet, "a", "b", "c")  # later batches advance the rollout again
    status = doc(fleet, rid)
    assert status["state"] == RolloutState.PAUSED.value
    assert "wave 1 has 1 of 1 device(s) failed" in str(status["reason"])
