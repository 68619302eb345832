"""The pure wave logic of a rollout: no I/O, frozen inputs, every decision a function.

A rollout stages a deployment set on all its devices (delivery only), then activates
it wave by wave. Waves are cumulative percentages of the devices (``1%,10%,50%,100%``):
wave N holds the devices up to ``ceil(pct_N × n / 100)`` in the rollout's device order,
at least one device more than wave N-1 (so no wave is empty; waves that would be empty
are dropped). The order is deterministic: the named canaries first, as given, then the
others by ``sha256("<rollout id>:<device>")``.

State machine (``RolloutState``)::

    draft ──created──► staging ──wave 1 delivered──► running (wave N)
    running ──wave N reached its success threshold──► running (wave N+1) | complete
            └─ with approve-each ─► awaiting_approval ──approve──► running (wave N+1)
    running ──wave N reached its error threshold──► paused ──resume──► running
    any unfinished ──pause──► paused; ──cancel──► cancelled

A wave starts only once every one of its devices has every image (delivery goes on
everywhere meanwhile). The success threshold counts devices whose activation is
``active`` (healthy behind the device's health gate); the error threshold counts
devices that rolled back, failed or refused, beyond those an operator accepted by
resuming.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from deltaport.errors import StateError, UsageError

WAVES_MAX = 20  # waves one rollout may have
DEFAULT_WAVES = "1%,10%,50%,100%"
DEFAULT_SUCCESS = "95%"
DEFAULT_ERROR = "2%"


class RolloutState(StrEnum):
    """Where a rollout stands."""

    DRAFT = "draft"
    STAGING = "staging"  # delivering; no wave started yet
    RUNNING = "running"  # wave ``current_wave`` is activating
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETE = "complete"
    CANCELLED = "cancelled"


FINISHED = frozenset({RolloutState.COMPLETE, RolloutState.CANCELLED})


class RolloutAction(StrEnum):
    """What an operator asks of a rollout."""

    PAUSE = "pause"
    RESUME = "resume"
    APPROVE = "approve"
    CANCEL = "cancel"


class ThresholdKind(StrEnum):
    """A threshold as a share of the wave or as a number of devices."""

    PERCENT = "percent"
    COUNT = "count"


@dataclass(frozen=True)
class Threshold:
    """``95%`` (share of the wave's devices) or ``3`` (devices)."""

    kind: ThresholdKind
    value: int

    def __str__(self) -> str:
        return f"{self.value}%" if self.kind is ThresholdKind.PERCENT else str(self.value)

    def reached(self, count: int, size: int) -> bool:
        """COUNT devices of a wave of SIZE reach it (a share needs at least one device)."""
        if self.kind is ThresholdKind.COUNT:
            return count >= self.value
        return count > 0 and count * 100 >= self.value * size

    def needed(self, size: int) -> int:
        """How many devices of a wave of SIZE reach it."""
        if self.kind is ThresholdKind.COUNT:
            return min(self.value, size)
        return max(1, math.ceil(self.value * size / 100))


def parse_threshold(text: str, *, what: str, percent_only: bool = False) -> Threshold:
    """``95%`` or ``3`` → a Threshold. Raises UsageError naming WHAT on anything else."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value = int(raw[:-1])
            if not 0 < value <= 100:
                raise ValueError
            return Threshold(ThresholdKind.PERCENT, value)
        if percent_only:
            raise ValueError
        value = int(raw)
        if value < 1:
            raise ValueError
        return Threshold(ThresholdKind.COUNT, value)
    except ValueError:
        form = "a percentage 1%-100%" if percent_only else "a percentage 1%-100% or a count >= 1"
        raise UsageError(f"{what} {text!r}: expected {form}") from None


def parse_waves(text: str) -> tuple[int, ...]:
    """``1%,10%,50%,100%`` → (1, 10, 50, 100): rising percentages ending at 100.

    Raises:
        UsageError: not percentages, not rising, not ending at 100%, too many.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or len(parts) > WAVES_MAX:
        raise UsageError(f"--waves {text!r}: give 1 to {WAVES_MAX} percentages, e.g. "
                         f"{DEFAULT_WAVES}")
    waves = tuple(parse_threshold(p, what="--waves", percent_only=True).value for p in parts)
    if any(b <= a for a, b in itertools.pairwise(waves)):
        raise UsageError(f"--waves {text!r}: the percentages must rise")
    if waves[-1] != 100:
        raise UsageError(f"--waves {text!r}: the last wave must be 100%")
    return waves


def wave_ends(device_count: int, waves: Sequence[int]) -> tuple[int, ...]:
    """Cumulative device counts per wave for DEVICE_COUNT devices; empty waves dropped."""
    ends: list[int] = []
    for pct in waves:
        end = min(device_count, max(math.ceil(pct * device_count / 100), (ends[-1] + 1)
                                    if ends else 1))
        if not ends or end > ends[-1]:
            ends.append(end)
    return tuple(e for e in ends if e > 0)


def order_devices(rollout_id: str, devices: Sequence[str],
                  canaries: Sequence[str] = ()) -> tuple[str, ...]:
    """The rollout's device order: CANARIES as given, then the rest by a stable hash.

    Raises:
        UsageError: a canary is not one of DEVICES.
    """
    targets = set(devices)
    unknown = [c for c in canaries if c not in targets]
    if unknown:
        raise UsageError(f"--canary {', '.join(unknown)}: not among the rollout's devices")
    first = list(dict.fromkeys(canaries))
    rest = sorted(targets - set(first),
                  key=lambda d: hashlib.sha256(f"{rollout_id}:{d}".encode()).hexdigest())
    return (*first, *rest)


def assign_waves(rollout_id: str, devices: Sequence[str], waves: Sequence[int],
                 canaries: Sequence[str] = ()) -> dict[str, int]:
    """Device → its wave (1-based)."""
    order = order_devices(rollout_id, devices, canaries)
    ends = wave_ends(len(order), waves)
    out: dict[str, int] = {}
    start = 0
    for number, end in enumerate(ends, start=1):
        for name in order[start:end]:
            out[name] = number
        start = end
    return out


@dataclass(frozen=True)
class WaveProgress:
    """One wave as the database has it now."""

    number: int
    devices: int
    delivered: int  # devices that have every image
    active: int  # activation reported active (healthy)
    failed: int  # rolled back, failed or refused
    started: bool


@dataclass(frozen=True)
class RolloutView:
    """What :func:`next_step` decides on."""

    state: RolloutState
    current_wave: int  # 0: none started
    waves: tuple[WaveProgress, ...]
    success: Threshold
    error: Threshold
    approve_each: bool
    approved_wave: int  # the highest wave an operator approved
    failures_accepted: int  # failures of the current wave accepted by a resume


@dataclass(frozen=True)
class Step:
    """What to do now: the new state, the wave to activate (or None) and why it waits."""

    state: RolloutState
    start_wave: int | None
    reason: str


def next_step(view: RolloutView) -> Step:
    """Decide what the rollout does next. Pure."""
    if view.state in FINISHED or view.state in (RolloutState.PAUSED, RolloutState.DRAFT):
        return Step(view.state, None, _resting_reason(view))
    if view.state is RolloutState.AWAITING_APPROVAL and view.approved_wave <= view.current_wave:
        return Step(view.state, None, _resting_reason(view))
    if view.current_wave == 0:
        return _try_start(view, 1, RolloutState.STAGING)
    wave = view.waves[view.current_wave - 1]
    failed = wave.failed - view.failures_accepted
    if view.error.reached(failed, wave.devices):
        return Step(RolloutState.PAUSED, None,
                    f"paused: wave {wave.number} has {wave.failed} of {wave.devices} device(s) "
                    f"failed (error threshold {view.error})")
    if not view.success.reached(wave.active, wave.devices):
        need = view.success.needed(wave.devices)
        return Step(RolloutState.RUNNING, None,
                    f"wave {wave.number}: {wave.active} of {wave.devices} active, "
                    f"{need} needed (success threshold {view.success})")
    if wave.number == len(view.waves):
        return Step(RolloutState.COMPLETE, None,
                    f"complete: {len(view.waves)} wave(s) reached their success threshold")
    following = wave.number + 1
    if view.approve_each and view.approved_wave < following:
        return Step(RolloutState.AWAITING_APPROVAL, None,
                    f"wave {wave.number} succeeded; wave {following} waits for approval")
    return _try_start(view, following, RolloutState.RUNNING)


def _try_start(view: RolloutView, number: int, waiting: RolloutState) -> Step:
    wave = view.waves[number - 1]
    if wave.delivered < wave.devices:
        return Step(waiting, None,
                    f"wave {number} waits for delivery: {wave.delivered} of {wave.devices} "
                    "device(s) have every image")
    return Step(RolloutState.RUNNING, number, f"wave {number} activating")


def _resting_reason(view: RolloutView) -> str:
    if view.state is RolloutState.AWAITING_APPROVAL:
        return (f"wave {view.current_wave} succeeded; wave {view.current_wave + 1} waits "
                "for approval")
    return view.state.value


def apply_action(view: RolloutView, action: RolloutAction) -> RolloutView:
    """The rollout after an operator's ACTION (then :func:`next_step` runs). Pure.

    Raises:
        StateError: the action does not apply in the rollout's state.
    """
    state = view.state
    if state in FINISHED:
        raise StateError(f"the rollout is {state.value}: nothing to {action.value}")
    if action is RolloutAction.CANCEL:
        return replace(view, state=RolloutState.CANCELLED)
    if action is RolloutAction.PAUSE:
        if state is RolloutState.PAUSED:
            raise StateError("the rollout is already paused")
        return replace(view, state=RolloutState.PAUSED)
    if action is RolloutAction.RESUME:
        if state is not RolloutState.PAUSED:
            raise StateError(f"the rollout is {state.value}, not paused: nothing to resume")
        failed = view.waves[view.current_wave - 1].failed if view.current_wave else 0
        back = RolloutState.RUNNING if view.current_wave else RolloutState.STAGING
        return replace(view, state=back, failures_accepted=failed)
    if state is not RolloutState.AWAITING_APPROVAL:
        raise StateError(f"the rollout is {state.value}: no wave waits for approval")
    return replace(view, state=RolloutState.RUNNING, approved_wave=view.current_wave + 1)
