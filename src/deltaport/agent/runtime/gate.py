"""The health gate, pure: from what the engine shows, is the new deployment proven?

Every module whose desired status is ``running`` must be running — and ``healthy``
where a healthcheck is defined — continuously for ``window`` seconds, without
exiting or restarting (Mender's compose module waits for the same; edgeAgent never
checks). The gate gives up at ``window + grace`` seconds. A module that exits,
restarts, or turns unhealthy fails the gate at once: waiting longer cannot make it
good. :func:`judge` is called once per observation and carries its memory in
:class:`GateState`, so it can be driven by a real clock or a test's list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from deltaport.agent.runtime.model import (
    DesiredStatus,
    Health,
    ModuleObservation,
    ModuleSpec,
    RuntimeStatus,
)

PROBE_FAILURES_UNHEALTHY = 3  # consecutive failed agent probes that make a module unhealthy


class Verdict(StrEnum):
    """Where the gate stands after one observation."""

    WAIT = "wait"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class GateState:
    """What the gate remembers between observations."""

    started: Mapping[str, ModuleObservation]  # module → as observed right after start
    ok_since: float | None = None  # elapsed seconds when every module was last seen fine


@dataclass(frozen=True)
class Judgement:
    """The gate's answer for one observation."""

    verdict: Verdict
    state: GateState
    module: str | None = None  # the module that failed (or keeps it waiting)
    reason: str = ""


def gated(specs: Sequence[ModuleSpec]) -> list[ModuleSpec]:
    """The modules the gate watches: those that must be running."""
    return [s for s in specs if s.desired_status is DesiredStatus.RUNNING]


def _restarted(before: ModuleObservation, now: ModuleObservation) -> bool:
    return now.restart_count > before.restart_count or (
        before.started_at is not None and now.started_at not in (None, before.started_at)
    ) or now.container_id != before.container_id


def check_module(before: ModuleObservation | None, now: ModuleObservation | None,
                 module: str) -> tuple[bool | None, str]:
    """(True: fine, None: not yet, False: failed for good) and why, for one module."""
    if now is None or before is None:
        return False, f"module {module}: its container is gone"
    if _restarted(before, now):
        return False, (f"module {module} restarted (restart count {now.restart_count}, "
                       f"last exit code {now.exit_code})")
    if not now.running:
        code = f" with code {now.exit_code}" if now.exit_code is not None else ""
        state = (f"is restarting (it exited{code})" if now.status is RuntimeStatus.BACKOFF
                 else f"exited{code}")
        return False, f"module {module} {state}{': ' + now.description if now.description else ''}"
    if now.health is Health.UNHEALTHY:
        return False, f"module {module} is unhealthy"
    if now.health is Health.STARTING:
        return None, f"module {module} is not healthy yet"
    return True, ""


def judge(specs: Sequence[ModuleSpec], observed: Mapping[str, ModuleObservation],
          state: GateState, *, elapsed: float, window: float, grace: float) -> Judgement:
    """Judge one observation taken ELAPSED seconds after the modules were started."""
    waiting: tuple[str, str] | None = None
    for spec in gated(specs):
        fine, why = check_module(state.started.get(spec.module), observed.get(spec.module),
                                 spec.module)
        if fine is False:
            return Judgement(Verdict.FAIL, state, spec.module, why)
        if fine is None and waiting is None:
            waiting = (spec.module, why)
    if waiting is not None:
        if elapsed >= window + grace:
            return Judgement(Verdict.FAIL, state, waiting[0],
                             f"{waiting[1]} after {elapsed:.0f} s")
        return Judgement(Verdict.WAIT, replace(state, ok_since=None), *waiting)
    ok_since = elapsed if state.ok_since is None else state.ok_since
    if elapsed - ok_since >= window:
        return Judgement(Verdict.PASS, replace(state, ok_since=ok_since))
    if elapsed >= window + grace:  # fine, but not for long enough in the time allowed
        return Judgement(Verdict.FAIL, state, None,
                         f"modules were not up for {window:.0f} s within {window + grace:.0f} s")
    return Judgement(Verdict.WAIT, replace(state, ok_since=ok_since), None,
                     f"up for {elapsed - ok_since:.0f} of {window:.0f} s")


def with_probed_health(observation: ModuleObservation, probe: Health | None,
                       failures: int) -> tuple[ModuleObservation, int]:
    """Fold the agent's own healthcheck probe into an observation the engine left at
    ``starting`` (an engine that does not schedule healthchecks, e.g. podman without
    systemd). Returns the observation to judge and the new consecutive-failure count.
    """
    if observation.health is not Health.STARTING or probe is None:
        return observation, failures
    if probe is Health.HEALTHY:
        return replace(observation, health=Health.HEALTHY), 0
    failures += 1
    if failures >= PROBE_FAILURES_UNHEALTHY:
        return replace(observation, health=Health.UNHEALTHY), failures
    return observation, failures
