"""The fleet's state machines, as data: which status changes are allowed.

No I/O here. Every status change of a device image or a deployment set goes through
:func:`next_image_status` / :func:`next_set_state`; an illegal change raises
:class:`~deltaport.errors.StateError` and is never applied. Idempotence of status
messages (the same message id twice changes nothing) is decided by
:func:`apply_message`, which the database layer calls with the ids it has seen.

Device image (device × image)::

    (absent) ──send──► in_transit ──arrived──► present ──reported_gone──► removed
                           │  ▲                   ▲                          │
                        failed│ send              └────── reported_present ──┘
                           ▼  │
                          failed ──arrived (late retry succeeded)──► present

Deployment set::

    pending ──all_present──► complete ──activate──► active
       │                        ▲
    image_failed──► failed ─────┘ (all_present after retries)

Activation of one deployment set on one device (activation messages, decided per
desired-manifest version by :func:`next_activation_state`)::

    delivered ──activating──► activating ──active──────► active
        │                         ├──rolled_back──► rolled_back ──failed──► failed
        │                         ├──failed───────► failed
        └── any outcome: straight to it (an earlier message was lost or is late)
    refused: the agent would not start it (verification); nothing ran.

Late messages never undo a final outcome: ``activating`` after ``active`` (or after
rolled_back / failed / refused) changes nothing; a ``refused`` replay of a version
that is active or already finished changes nothing. Anything else not in the table
(``active`` after ``rolled_back``…) is rejected.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from deltaport.errors import StateError


class ImageStatus(StrEnum):
    """Where an image stands on one device."""

    ABSENT = "absent"  # no row: the device never had it as far as we know
    IN_TRANSIT = "in_transit"
    PRESENT = "present"
    FAILED = "failed"
    REMOVED = "removed"


class ImageEvent(StrEnum):
    """Something that happened to an image on a device."""

    SEND = "send"  # a bundle carrying it was put in the store for the device
    ARRIVED = "arrived"  # the agent reports it rebuilt and verified the image
    FAILED = "failed"  # the agent reports it could not
    REPORTED_PRESENT = "reported_present"  # an inventory lists it
    REPORTED_GONE = "reported_gone"  # an inventory no longer lists it


class SetState(StrEnum):
    """Where a deployment set stands."""

    PENDING = "pending"
    COMPLETE = "complete"
    FAILED = "failed"
    ACTIVE = "active"


class SetEvent(StrEnum):
    """Something that happened to a deployment set."""

    ALL_PRESENT = "all_present"
    IMAGE_FAILED = "image_failed"
    ACTIVATE = "activate"


S, E = ImageStatus, ImageEvent

IMAGE_TRANSITIONS: dict[tuple[ImageStatus, ImageEvent], ImageStatus] = {
    (S.ABSENT, E.SEND): S.IN_TRANSIT,
    (S.FAILED, E.SEND): S.IN_TRANSIT,
    (S.REMOVED, E.SEND): S.IN_TRANSIT,
    (S.IN_TRANSIT, E.ARRIVED): S.PRESENT,
    (S.FAILED, E.ARRIVED): S.PRESENT,
    (S.PRESENT, E.ARRIVED): S.PRESENT,  # a second success report with a new id: no change
    (S.IN_TRANSIT, E.FAILED): S.FAILED,
    (S.FAILED, E.FAILED): S.FAILED,
    (S.ABSENT, E.REPORTED_PRESENT): S.PRESENT,
    (S.IN_TRANSIT, E.REPORTED_PRESENT): S.PRESENT,
    (S.PRESENT, E.REPORTED_PRESENT): S.PRESENT,
    (S.FAILED, E.REPORTED_PRESENT): S.PRESENT,
    (S.REMOVED, E.REPORTED_PRESENT): S.PRESENT,
    (S.PRESENT, E.REPORTED_GONE): S.REMOVED,
    (S.REMOVED, E.REPORTED_GONE): S.REMOVED,
}
"""(status, event) → new status. Anything not listed is illegal."""

SET_TRANSITIONS: dict[tuple[SetState, SetEvent], SetState] = {
    (SetState.PENDING, SetEvent.ALL_PRESENT): SetState.COMPLETE,
    (SetState.FAILED, SetEvent.ALL_PRESENT): SetState.COMPLETE,
    (SetState.PENDING, SetEvent.IMAGE_FAILED): SetState.FAILED,
    (SetState.FAILED, SetEvent.IMAGE_FAILED): SetState.FAILED,
    (SetState.COMPLETE, SetEvent.ACTIVATE): SetState.ACTIVE,
    (SetState.ACTIVE, SetEvent.ACTIVATE): SetState.ACTIVE,
}
"""(state, event) → new state of a deployment set. Anything not listed is illegal."""

FINISHED_SET_STATES = frozenset({SetState.COMPLETE, SetState.ACTIVE})


class ActivationState(StrEnum):
    """Where activating one deployment set stands on one device (docs/device-runtime.md §3)."""

    PENDING = "pending"  # no row, and not every image is present yet (display only)
    DELIVERED = "delivered"  # no row: every image present, no activation message yet
    ACTIVATING = "activating"
    ACTIVE = "active"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    REFUSED = "refused"


class ActivationOutcome(StrEnum):
    """The ``outcome`` of an activation message (what the agent says happened)."""

    ACTIVATING = "activating"
    ACTIVE = "active"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    REFUSED = "refused"


A, AO = ActivationState, ActivationOutcome

ACTIVATION_TRANSITIONS: dict[tuple[ActivationState, ActivationOutcome], ActivationState] = {
    # the first message of a version: whatever it says (earlier ones may be lost)
    (A.DELIVERED, AO.ACTIVATING): A.ACTIVATING,
    (A.DELIVERED, AO.ACTIVE): A.ACTIVE,
    (A.DELIVERED, AO.ROLLED_BACK): A.ROLLED_BACK,
    (A.DELIVERED, AO.FAILED): A.FAILED,
    (A.DELIVERED, AO.REFUSED): A.REFUSED,
    (A.ACTIVATING, AO.ACTIVATING): A.ACTIVATING,  # resumed after a restart
    (A.ACTIVATING, AO.ACTIVE): A.ACTIVE,
    (A.ACTIVATING, AO.ROLLED_BACK): A.ROLLED_BACK,
    (A.ACTIVATING, AO.FAILED): A.FAILED,
    (A.ACTIVE, AO.ACTIVATING): A.ACTIVE,  # late: never regresses
    (A.ACTIVE, AO.ACTIVE): A.ACTIVE,
    (A.ACTIVE, AO.REFUSED): A.ACTIVE,  # a replay of the running version refused
    (A.ROLLED_BACK, AO.ACTIVATING): A.ROLLED_BACK,  # late
    (A.ROLLED_BACK, AO.ROLLED_BACK): A.ROLLED_BACK,
    (A.ROLLED_BACK, AO.FAILED): A.FAILED,  # interrupted too often after a rollback
    (A.ROLLED_BACK, AO.REFUSED): A.ROLLED_BACK,  # a replay of a bad version refused
    (A.FAILED, AO.ACTIVATING): A.FAILED,  # late
    (A.FAILED, AO.ROLLED_BACK): A.FAILED,  # late
    (A.FAILED, AO.FAILED): A.FAILED,
    (A.FAILED, AO.REFUSED): A.FAILED,
    (A.REFUSED, AO.REFUSED): A.REFUSED,
}
"""(state, outcome) → new state, for messages about the same version. Anything else is illegal."""

BAD_ACTIVATION_STATES = frozenset({A.ROLLED_BACK, A.FAILED, A.REFUSED})
"""States that mail the deployment's contact when a device reaches them."""


def next_image_status(status: ImageStatus, event: ImageEvent) -> ImageStatus:
    """The status after EVENT, or StateError if EVENT cannot happen in STATUS."""
    try:
        return IMAGE_TRANSITIONS[(status, event)]
    except KeyError:
        raise StateError(f"device image cannot go from {status} on {event}") from None


def next_set_state(state: SetState, event: SetEvent) -> SetState:
    """The deployment set state after EVENT, or StateError if illegal."""
    try:
        return SET_TRANSITIONS[(state, event)]
    except KeyError:
        raise StateError(f"deployment set cannot go from {state} on {event}") from None


@dataclass(frozen=True)
class Outcome:
    """What applying one status message does: the new status, or nothing."""

    status: ImageStatus
    changed: bool  # False: duplicate message, or a transition onto the same status
    duplicate: bool  # the message id was already applied


def apply_message(
    status: ImageStatus, event: ImageEvent, message_id: str, seen: Collection[str]
) -> Outcome:
    """Decide what one status message does, given the message ids already applied.

    The same message id twice changes nothing (it is not even checked against the
    current status, which the first copy already changed).

    Raises:
        StateError: the message is new and its event is illegal in STATUS.
    """
    if message_id in seen:
        return Outcome(status=status, changed=False, duplicate=True)
    new = next_image_status(status, event)
    return Outcome(status=new, changed=new != status, duplicate=False)


def next_activation_state(
    state: ActivationState, version: int, outcome: ActivationOutcome, message_version: int
) -> ActivationState:
    """The activation state after a message about MESSAGE_VERSION says OUTCOME.

    STATE is what the hub holds for VERSION (``delivered`` when nothing yet). A message
    about a newer version starts over from ``delivered`` (the operator activated again);
    one about an older version is stale and changes nothing.

    Raises:
        StateError: OUTCOME cannot follow STATE for the same version.
    """
    if message_version < version:
        return state
    if message_version > version:
        state = ActivationState.DELIVERED
    try:
        return ACTIVATION_TRANSITIONS[(state, outcome)]
    except KeyError:
        raise StateError(
            f"activation v{message_version} cannot go from {state} on {outcome}"
        ) from None


class RuntimeStatus(StrEnum):
    """A module's ``runtime_status`` in a runtime report: edgeAgent's words (§4)."""

    UNKNOWN = "unknown"
    BACKOFF = "backoff"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class ModuleHealth(StrEnum):
    """A module's healthcheck status in a runtime report (none: no healthcheck)."""

    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class MessageOutcome(StrEnum):
    """What the hub did with one status message (``accepted`` unless rejected)."""

    APPLIED = "applied"  # it changed a state
    UNCHANGED = "unchanged"  # legal, but the state was already that (or it was stale)
    DUPLICATE = "duplicate"  # its message_id was applied before
    REJECTED = "rejected"  # unknown device/deployment, or the state machine refused it
