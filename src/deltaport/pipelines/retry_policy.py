"""Which failed deliveries the hub retries by itself, and when (pure, no I/O).

An agent reports a failed image with a reason (``agent.agent`` ``_failed`` /
``_deferred``: the exception's class name, then its message). Some failures cannot
get better by sending again, so they are never retried:

- ``deferred: …`` — the device lacks disk (or its registry does): the agent keeps
  the bundle and retries by itself once space is freed; a new bundle would not help;
- a refused signature or an untrusted signer (``SignatureError``, ``untrusted``);
- an invalid bundle or image (``bundle content:``, ``FormatError``,
  ``UnsupportedVersionError``, ``ImageNotFoundError``, the hub offered one image and
  the bundle rebuilds another);
- a bundle the device must refuse whatever it holds: meant for another device, a
  replay, a download URL off the hub's origin.

Everything else (missing source layers, a digest mismatch, an expired release, a
transfer that gave up, a lost bundle, an unknown reason) is retried after
``base * 2**(n-1)`` seconds (n: the retry about to be made), capped at ``cap``, at
most ``retries`` times. A retry plans the device again: the bundle is rebuilt only
if the device's sources changed (or the stored one is gone or its release is stale).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from deltaport.errors import UsageError

DEFAULT_RETRIES = 3
RETRIES_MAX = 20


class RetryState(StrEnum):
    """Where the automatic retry of one (deployment, device, image) stands."""

    SCHEDULED = "scheduled"  # due at next_at
    RETRYING = "retrying"  # claimed by a hub, the retry deployment being made
    SENT = "sent"  # a retry deployment carries it; its outcome decides what is next
    PERMANENT = "permanent"  # the failure cannot improve: not retried
    EXHAUSTED = "exhausted"  # every allowed retry was made


class FailureKind(StrEnum):
    """Whether sending again can help."""

    RETRYABLE = "retryable"
    PERMANENT = "permanent"


_PERMANENT_MARKS: tuple[tuple[str, str], ...] = (
    ("deferred:", "the device lacks disk; it retries by itself once space is freed"),
    ("signatureerror", "the signature was refused"),
    ("untrusted", "the signer is not trusted"),
    ("bundle content:", "the bundle is invalid"),
    ("unsupportedversionerror", "the bundle format is not supported by the device"),
    ("imagenotfounderror", "the image is invalid"),
    ("the hub offered", "the bundle rebuilds another image than offered"),
    ("bundle is for", "the bundle is for another device"),
    ("replay refused", "the device refuses it as a replay"),
    ("not on the hub's origin", "the download URL is refused by the device"),
    ("cancelled by ", "the deployment was cancelled"),
)
_RETRYABLE_FIRST = "truncatederror"  # a FormatError, but of a cut download or file


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast (``--retries N`` sets ``retries`` per deployment)."""

    retries: int = DEFAULT_RETRIES
    base: float = 60.0  # seconds before the first retry
    cap: float = 3600.0  # longest wait between two retries


@dataclass(frozen=True)
class RetryDecision:
    """What to do about one failure."""

    state: RetryState
    next_at: datetime | None
    why: str


def classify(reason: str | None) -> tuple[FailureKind, str]:
    """Whether a failure with REASON may improve by retrying, and why not if not."""
    text = (reason or "").strip().lower()
    if text.startswith(_RETRYABLE_FIRST):
        return FailureKind.RETRYABLE, ""
    if text.startswith("formaterror"):
        return FailureKind.PERMANENT, "the bundle is invalid"
    for mark, why in _PERMANENT_MARKS:
        if mark in text:
            return FailureKind.PERMANENT, why
    return FailureKind.RETRYABLE, ""


def backoff(policy: RetryPolicy, retry: int) -> timedelta:
    """The wait before retry number RETRY (1-based): exponential, capped."""
    exponent = min(max(retry - 1, 0), 30)
    return timedelta(seconds=min(policy.base * 2**exponent, policy.cap))


def decide(policy: RetryPolicy, retries_made: int, reason: str | None,
           now: datetime) -> RetryDecision:
    """After a failure with REASON, RETRIES_MADE retries already made: retry when?"""
    kind, why = classify(reason)
    if kind is FailureKind.PERMANENT:
        return RetryDecision(RetryState.PERMANENT, None, f"not retried: {why}")
    if retries_made >= policy.retries:
        return RetryDecision(RetryState.EXHAUSTED, None,
                             f"not retried: {retries_made} of {policy.retries} retries made")
    wait = backoff(policy, retries_made + 1)
    return RetryDecision(RetryState.SCHEDULED, now + wait,
                         f"retry {retries_made + 1} of {policy.retries} in "
                         f"{int(wait.total_seconds())} s")


def check_retries(value: object) -> int:
    """A ``--retries`` value: an int 0..RETRIES_MAX. Raises UsageError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= RETRIES_MAX:
        raise UsageError(f"retries must be a whole number from 0 to {RETRIES_MAX}")
    return value
