"""The pure decision step of batch ingestion (the DB steps are covered in test_pipelines)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deltaport.fleet.documents import StatusMessage
from deltaport.fleet.ingest import Snapshot, decide
from deltaport.fleet.states import IMAGE_TRANSITIONS, ImageEvent, ImageStatus

IMG = ["sha256:" + c * 64 for c in "abc"]
message_st = st.builds(
    StatusMessage,
    message_id=st.sampled_from([f"m{i}" for i in range(12)]),
    device=st.sampled_from(["d1", "d2", "ghost"]),
    image_id=st.sampled_from(IMG),
    status=st.sampled_from(["present", "failed"]),
    deployment=st.sampled_from([None, "s1", "s-unknown"]),
)
start_st = st.dictionaries(
    st.tuples(st.sampled_from([1, 2]), st.sampled_from(IMG)),
    st.sampled_from([s.value for s in ImageStatus if s is not ImageStatus.ABSENT]),
)


def snapshot(start: dict[tuple[int, str], str]) -> Snapshot:
    return Snapshot(seen={(1, "m0")}, devices={"d1": 1, "d2": 2}, sets={"s1"}, status=dict(start))


@settings(max_examples=200, deadline=None)
@given(st.lists(message_st, max_size=40), start_st)
def test_decisions_follow_the_state_machine(
    msgs: list[StatusMessage], start: dict[tuple[int, str], str]
) -> None:
    snap = snapshot(start)
    verdicts, changes = decide(msgs, snap)
    status = dict(start)
    applied: set[tuple[int, str]] = {(1, "m0")}  # message ids are scoped per device
    for v in verdicts:
        m = v.message
        if m.device == "ghost":
            assert v.outcome == "rejected"
            continue
        device = {"d1": 1, "d2": 2}[m.device]
        if (device, m.message_id) in applied:
            assert v.outcome == "duplicate"
            continue
        if m.deployment == "s-unknown":
            assert v.outcome == "rejected"
            continue
        key = (device, m.image_id)
        before = ImageStatus(status.get(key, "absent"))
        event = ImageEvent.ARRIVED if m.status == "present" else ImageEvent.FAILED
        if (before, event) not in IMAGE_TRANSITIONS:
            assert v.outcome == "rejected" and "cannot go from" in (v.error or "")
            continue
        after = IMAGE_TRANSITIONS[(before, event)]
        assert v.outcome == ("applied" if after is not before else "unchanged")
        status[key] = after.value
        applied.add((device, m.message_id))
    assert len(changes) == sum(v.outcome in ("applied", "unchanged") for v in verdicts)
    # the whole batch delivered again changes nothing
    again, more = decide(msgs, snap)
    assert not more and all(v.outcome in ("duplicate", "rejected") for v in again)
