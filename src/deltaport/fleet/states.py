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
