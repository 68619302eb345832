"""The state machines: transitions as data, illegal ones refused, messages idempotent."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltaport.errors import StateError
from deltaport.fleet.states import (
    ACTIVATION_TRANSITIONS,
    BAD_ACTIVATION_STATES,
    IMAGE_TRANSITIONS,
    SET_TRANSITIONS,
    ActivationOutcome,
    ActivationState,
    ImageEvent,
    ImageStatus,
    SetEvent,
    SetState,
    apply_message,
    next_activation_state,
    next_image_status,
    next_set_state,
)

events = st.sampled_from(list(ImageEvent))
statuses = st.sampled_from(list(ImageStatus))


def test_happy_path() -> None:
    s = next_image_status(ImageStatus.ABSENT, ImageEvent.SEND)
    assert s is ImageStatus.IN_TRANSIT
    assert next_image_status(s, ImageEvent.ARRIVED) is ImageStatus.PRESENT


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (ImageStatus.ABSENT, ImageEvent.ARRIVED),  # arrival before anything was sent
        (ImageStatus.PRESENT, ImageEvent.FAILED),  # stale failure after success
        (ImageStatus.PRESENT, ImageEvent.SEND),  # never resend what is there
        (ImageStatus.IN_TRANSIT, ImageEvent.SEND),  # never send twice
        (ImageStatus.ABSENT, ImageEvent.FAILED),
    ],
)
def test_illegal_transitions_raise(status: ImageStatus, event: ImageEvent) -> None:
    with pytest.raises(StateError, match=f"from {status}"):
        next_image_status(status, event)


def test_set_machine() -> None:
    s = next_set_state(SetState.PENDING, SetEvent.IMAGE_FAILED)
    s = next_set_state(s, SetEvent.ALL_PRESENT)
    assert next_set_state(s, SetEvent.ACTIVATE) is SetState.ACTIVE
    with pytest.raises(StateError):
        next_set_state(SetState.PENDING, SetEvent.ACTIVATE)
    with pytest.raises(StateError):
        next_set_state(SetState.ACTIVE, SetEvent.IMAGE_FAILED)


@given(statuses, events)
def test_transition_is_exactly_the_table(status: ImageStatus, event: ImageEvent) -> None:
    if (status, event) in IMAGE_TRANSITIONS:
        assert next_image_status(status, event) is IMAGE_TRANSITIONS[(status, event)]
    else:
        with pytest.raises(StateError):
            next_image_status(status, event)


@given(st.sampled_from(list(SetState)), st.sampled_from(list(SetEvent)))
def test_set_transition_is_exactly_the_table(state: SetState, event: SetEvent) -> None:
    if (state, event) in SET_TRANSITIONS:
        assert next_set_state(state, event) is SET_TRANSITIONS[(state, event)]
    else:
        with pytest.raises(StateError):
            next_set_state(state, event)


@given(st.lists(st.tuples(st.integers(0, 10), events), max_size=60))
def test_applied_messages_change_nothing_when_redelivered(
    stream: list[tuple[int, ImageEvent]],
) -> None:
    """Any stream, with ids repeated in any order: once a message id was applied, every
    later delivery of it leaves the status as it was. A rejected message is not
    recorded, so a later delivery is judged afresh (an out-of-order arrival can be
    accepted once the send is recorded)."""
    payload: dict[int, ImageEvent] = {}
    status, seen = ImageStatus.ABSENT, set[str]()
    for mid, event in stream:
        event = payload.setdefault(mid, event)  # a message id always carries the same event
        before = status
        try:
            out = apply_message(status, event, f"m{mid}", seen)
        except StateError:
            assert f"m{mid}" not in seen
            assert (status, event) not in IMAGE_TRANSITIONS
            continue
        if f"m{mid}" in seen:
            assert out.duplicate and out.status is before
        else:
            assert out.status is IMAGE_TRANSITIONS[(before, event)]
            seen.add(f"m{mid}")
        status = out.status


@given(statuses, events, st.text(min_size=1, max_size=5))
def test_seen_message_never_changes_state(status: ImageStatus, event: ImageEvent, mid: str) -> None:
    out = apply_message(status, event, mid, {mid})
    assert out.duplicate and not out.changed and out.status is status


# --- activation of a deployment on a device (docs/device-runtime.md §3) ---------------

outcomes = st.sampled_from(list(ActivationOutcome))
FINAL = {ActivationState.ACTIVE, *BAD_ACTIVATION_STATES}


def _run(outcome_list: list[ActivationOutcome]) -> list[ActivationState]:
    """Apply OUTCOMES (same version) in order, skipping the ones the table refuses."""
    state, seen = ActivationState.DELIVERED, []
    for outcome in outcome_list:
        try:
            state = next_activation_state(state, 1, outcome, 1)
        except StateError:
            continue
        seen.append(state)
    return seen


@given(st.lists(outcomes, max_size=12))
def test_activation_never_leaves_a_final_state_for_a_worse_or_earlier_one(
    sequence: list[ActivationOutcome],
) -> None:
    states = _run(sequence)
    for before, after in itertools.pairwise(states):
        if before is ActivationState.ACTIVE:
            assert after is ActivationState.ACTIVE  # a late message never regresses it
        if before in FINAL:
            assert after is not ActivationState.ACTIVATING
        if before in BAD_ACTIVATION_STATES:
            assert after in BAD_ACTIVATION_STATES  # a bad version is never active later


@given(st.sampled_from(list(ActivationState)), outcomes)
def test_activation_table_is_total_or_refuses(
    state: ActivationState, outcome: ActivationOutcome
) -> None:
    if (state, outcome) in ACTIVATION_TRANSITIONS:
        assert next_activation_state(state, 3, outcome, 3) is ACTIVATION_TRANSITIONS[state, outcome]
    else:
        with pytest.raises(StateError, match=f"v3 cannot go from {state} on {outcome}"):
            next_activation_state(state, 3, outcome, 3)


@given(st.sampled_from(list(ActivationState)), outcomes)
def test_activation_versions_newer_start_over_older_change_nothing(
    state: ActivationState, outcome: ActivationOutcome
) -> None:
    assert next_activation_state(state, 5, outcome, 4) is state  # stale: an older version
    fresh = ACTIVATION_TRANSITIONS[ActivationState.DELIVERED, outcome]
    assert next_activation_state(state, 5, outcome, 6) is fresh  # the operator activated again


def test_activation_examples() -> None:
    a, o = ActivationState, ActivationOutcome
    assert next_activation_state(a.ACTIVE, 1, o.ACTIVATING, 1) is a.ACTIVE  # late
    assert next_activation_state(a.ACTIVATING, 1, o.ROLLED_BACK, 1) is a.ROLLED_BACK
    assert next_activation_state(a.ACTIVE, 1, o.REFUSED, 1) is a.ACTIVE  # a replay refused
    with pytest.raises(StateError):
        next_activation_state(a.ROLLED_BACK, 1, o.ACTIVE, 1)
    with pytest.raises(StateError):
        next_activation_state(a.REFUSED, 1, o.ACTIVATING, 1)
    assert set(a) - {a.PENDING, a.DELIVERED} == {s for s in ACTIVATION_TRANSITIONS.values()}
