"""What to do with a verified desired manifest, given what the device runs and last tried.

Pure. Versions only go up: a manifest at or below the running version is a replay
(or a stale copy) and is refused; a version that was tried and rolled back, failed
or refused is never retried by the device itself (aktualizr-lite marks such a target
bad) — the operator deploys again, which publishes a higher version.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """What became of one activation attempt (the ``outcome`` of an activation message)."""

    ACTIVATING = "activating"
    ACTIVE = "active"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    REFUSED = "refused"


FINAL_BAD = frozenset({Outcome.ROLLED_BACK, Outcome.FAILED, Outcome.REFUSED})


class Decision(StrEnum):
    """What the agent does with a verified desired manifest."""

    ACTIVATE = "activate"
    NOTHING = "nothing"  # it runs already
    REFUSE = "refuse"  # a replay: older than what runs or was tried
    SKIP = "skip"  # tried before and bad: not retried by the device
    WAIT = "wait"  # outside its maintenance window: activated once it opens


@dataclass(frozen=True)
class Deployed:
    """A deployment version as the agent remembers it."""

    deployment: str
    version: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.deployment, "version": self.version}


@dataclass(frozen=True)
class Attempt:
    """The last activation the device tried, and how it ended."""

    deployment: str
    version: int
    outcome: Outcome
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.deployment, "version": self.version, "outcome": self.outcome.value,
                "reason": self.reason}


def decide(version: int, *, running: Deployed | None,
           last: Attempt | None) -> tuple[Decision, str]:
    """The decision for a manifest at VERSION, and why (empty when activating)."""
    if running is not None and version == running.version:
        return Decision.NOTHING, f"version {version} runs already"
    if running is not None and version < running.version:
        return Decision.REFUSE, (f"desired manifest version {version} is older than the running "
                                 f"version {running.version} (a replay?)")
    if last is not None and version < last.version:
        return Decision.REFUSE, (f"desired manifest version {version} is older than version "
                                 f"{last.version}, tried already (a replay?)")
    if last is not None and version == last.version and last.outcome in FINAL_BAD:
        return Decision.SKIP, f"version {version} ended {last.outcome}: not retried"
    return Decision.ACTIVATE, ""
