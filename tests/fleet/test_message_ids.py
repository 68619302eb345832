"""Message ids are scoped per device: another device's id is its own message, judged on its own."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from deltaport.errors import StateError
from deltaport.fleet import activation, device_images, queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import ActivationMessage, StatusMessage
from deltaport.fleet.models import Event
from deltaport.fleet.states import ActivationOutcome, ImageEvent
from deltaport.pipelines.events import handle_status_messages

IMAGE = "sha256:" + "a" * 64


def _devices_sending(engine: Engine) -> dict[str, int]:
    """Devices a and b, each with IMAGE in transit (so "present" is a legal next status)."""
    ids = {}
    with session_scope(engine) as s:
        for name in ("a", "b"):
            device, _ = queries.add_device(s, name=name, link_rate_bps=1000)
            s.flush()
            device_images.transition_image(
                s, device_id=device.id, image_id=IMAGE, event=ImageEvent.SEND)
            ids[name] = device.id
    return ids


def _present(mid: str, device: str) -> StatusMessage:
    return StatusMessage(message_id=mid, device=device, image_id=IMAGE, status="present")


def test_same_id_from_two_devices_is_judged_for_each(engine: Engine) -> None:
    ids = _devices_sending(engine)
    first = handle_status_messages(engine, [_present("m-1", "a")])
    assert [r.outcome for r in first.results] == ["applied"]
    # b's m-1 is b's own message: applied, not "duplicate" of a's
    second = handle_status_messages(engine, [_present("m-1", "b")])
    assert [(r.outcome, r.status) for r in second.results] == [("applied", "present")]
    # the same device's m-1 again is a duplicate
    third = handle_status_messages(engine, [_present("m-1", "a"), _present("m-1", "b")])
    assert [r.outcome for r in third.results] == ["duplicate", "duplicate"]
    with session_scope(engine) as s:
        assert device_images.message_seen(s, "m-1", device_id=ids["a"])
        assert device_images.message_seen(s, "m-1", device_id=ids["b"])
        assert device_images.seen_messages(s, ["m-1", "m-2"], [ids["b"]]) == {(ids["b"], "m-1")}


def test_activation_messages_are_scoped_per_device(engine: Engine) -> None:
    ids = _devices_sending(engine)
    with session_scope(engine) as s:
        s.add(Event(kind="deployment_activation", device_id=ids["a"], message_id="m-1"))
    msgs = [
        ActivationMessage(
            message_id="m-1",
            device=d,
            deployment="d-x",
            version=1,
            outcome=ActivationOutcome.ACTIVE,
        )
        for d in ("a", "b")
    ]
    with session_scope(engine) as s:
        verdicts = activation.decide(msgs, activation.load_snapshot(s, msgs))
    assert verdicts[0].outcome == "duplicate"
    # b's is judged: its deployment does not exist
    assert verdicts[1].outcome == "rejected" and "unknown deployment" in (verdicts[1].error or "")


def test_database_keys_message_ids_by_device(engine: Engine) -> None:
    ids = _devices_sending(engine)
    with session_scope(engine) as s:
        for device in ids.values():
            s.add(Event(kind="device_image", device_id=device, message_id="m-9"))
    unique = r"uq_events_device_message|UNIQUE constraint failed"
    with pytest.raises(StateError, match=unique), session_scope(engine) as s:
        s.add(Event(kind="device_image", device_id=ids["a"], message_id="m-9"))
