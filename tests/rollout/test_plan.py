"""The pure wave logic of rollouts (deltaport.rollout.plan): no database, no I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deltaport.errors import StateError, UsageError
from deltaport.rollout.plan import (
    RolloutAction,
    RolloutState,
    RolloutView,
    Threshold,
    ThresholdKind,
    WaveProgress,
    apply_action,
    assign_waves,
    next_step,
    order_devices,
    parse_threshold,
    parse_waves,
    wave_ends,
)

DEVICES = [f"dev{i:03d}" for i in range(200)]


def test_waves_parse_and_are_cumulative() -> None:
    assert parse_waves("1%,10%,50%,100%") == (1, 10, 50, 100)
    assert wave_ends(200, (1, 10, 50, 100)) == (2, 20, 100, 200)
    # tiny fleets: no empty wave, each wave at least one more device
    assert wave_ends(3, (1, 10, 50, 100)) == (1, 2, 3)
    assert wave_ends(1, (1, 10, 50, 100)) == (1,)
    for bad in ("", "10%,5%,100%", "1%,50%", "0%,100%", "abc", "1,100%"):
        with pytest.raises(UsageError):
            parse_waves(bad)


def test_thresholds_percent_or_count() -> None:
    assert parse_threshold("95%", what="x") == Threshold(ThresholdKind.PERCENT, 95)
    assert parse_threshold("3", what="x") == Threshold(ThresholdKind.COUNT, 3)
    for bad in ("0", "-1", "101%", "x%", ""):
        with pytest.raises(UsageError):
            parse_threshold(bad, what="--error-threshold")
    pct = Threshold(ThresholdKind.PERCENT, 95)
    assert pct.needed(20) == 19 and not pct.reached(18, 20) and pct.reached(19, 20)
    assert pct.needed(1) == 1 and not pct.reached(0, 1)
    two = Threshold(ThresholdKind.PERCENT, 2)
    assert two.reached(1, 2) and not two.reached(0, 100)  # a share needs one device
    count = Threshold(ThresholdKind.COUNT, 3)
    assert count.reached(3, 100) and not count.reached(2, 100) and count.needed(2) == 2


def test_device_order_is_deterministic_with_canaries_first() -> None:
    order = order_devices("r-1", DEVICES, canaries=["dev150", "dev007"])
    assert order[:2] == ("dev150", "dev007")
    assert sorted(order) == sorted(DEVICES)
    assert order == order_devices("r-1", list(reversed(DEVICES)), ["dev150", "dev007"])
    assert order_devices("r-2", DEVICES) != order_devices("r-1", DEVICES)  # spread per rollout
    with pytest.raises(UsageError, match="nope"):
        order_devices("r-1", DEVICES, ["nope"])
    waves = assign_waves("r-1", DEVICES, (1, 10, 50, 100), ["dev150"])
    assert waves["dev150"] == 1
    assert [sum(1 for w in waves.values() if w == n) for n in (1, 2, 3, 4)] == [2, 18, 80, 100]


def view(*waves: tuple[int, int, int, int], **kw: object) -> RolloutView:
    """Waves as (devices, delivered, active, failed)."""
    base = RolloutView(
        state=RolloutState.STAGING, current_wave=0,
        waves=tuple(WaveProgress(i, d, dl, a, f, False)
                    for i, (d, dl, a, f) in enumerate(waves, start=1)),
        success=Threshold(ThresholdKind.PERCENT, 95), error=Threshold(ThresholdKind.PERCENT, 2),
        approve_each=False, approved_wave=0, failures_accepted=0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_first_wave_waits_for_delivery_then_starts() -> None:
    step = next_step(view((1, 0, 0, 0), (9, 9, 0, 0)))
    assert step.state is RolloutState.STAGING and step.start_wave is None
    assert "waits for delivery: 0 of 1" in step.reason
    assert next_step(view((1, 1, 0, 0), (9, 0, 0, 0))).start_wave == 1


def test_next_wave_starts_only_at_the_success_threshold() -> None:
    running = dict(state=RolloutState.RUNNING, current_wave=1)
    step = next_step(view((20, 20, 18, 0), (80, 80, 0, 0), **running))
    assert step.start_wave is None and "18 of 20 active, 19 needed" in step.reason
    assert next_step(view((20, 20, 19, 0), (80, 80, 0, 0), **running)).start_wave == 2
    # the next wave is not yet delivered: wait, delivery goes on
    step = next_step(view((20, 20, 20, 0), (80, 3, 0, 0), **running))
    assert step.start_wave is None and "wave 2 waits for delivery" in step.reason
    done = next_step(view((20, 20, 20, 0), (80, 80, 80, 0), state=RolloutState.RUNNING,
                          current_wave=2))
    assert done.state is RolloutState.COMPLETE


def test_error_threshold_pauses_and_resume_accepts_the_failures() -> None:
    failing = view((1, 1, 0, 1), (9, 9, 0, 0), state=RolloutState.RUNNING, current_wave=1)
    step = next_step(failing)
    assert step.state is RolloutState.PAUSED and step.start_wave is None
    assert "1 of 1 device(s) failed" in step.reason
    paused = replace(failing, state=RolloutState.PAUSED)
    assert next_step(paused).start_wave is None  # stays paused
    resumed = apply_action(paused, RolloutAction.RESUME)
    assert resumed.state is RolloutState.RUNNING and resumed.failures_accepted == 1
    assert next_step(resumed).state is RolloutState.RUNNING  # no new failure: waits, no pause
    count = replace(failing, error=Threshold(ThresholdKind.COUNT, 3),
                    waves=(WaveProgress(1, 100, 100, 90, 2, True),
                           WaveProgress(2, 100, 100, 0, 0, False)))
    assert next_step(count).state is RolloutState.RUNNING  # 2 < 3 failures
    count = replace(count, waves=(replace(count.waves[0], failed=3), count.waves[1]))
    assert next_step(count).state is RolloutState.PAUSED


def test_approve_each_waits_for_approval() -> None:
    ok = view((1, 1, 1, 0), (9, 9, 0, 0), state=RolloutState.RUNNING, current_wave=1,
              approve_each=True, approved_wave=1)
    step = next_step(ok)
    assert step.state is RolloutState.AWAITING_APPROVAL
    assert "wave 2 waits for approval" in step.reason
    waiting = replace(ok, state=RolloutState.AWAITING_APPROVAL)
    assert next_step(waiting).start_wave is None
    approved = apply_action(waiting, RolloutAction.APPROVE)
    assert approved.approved_wave == 2 and next_step(approved).start_wave == 2


def test_actions_refused_where_they_do_not_apply() -> None:
    running = view((1, 1, 0, 0), state=RolloutState.RUNNING, current_wave=1)
    with pytest.raises(StateError, match="no wave waits for approval"):
        apply_action(running, RolloutAction.APPROVE)
    with pytest.raises(StateError, match="not paused"):
        apply_action(running, RolloutAction.RESUME)
    paused = apply_action(running, RolloutAction.PAUSE)
    with pytest.raises(StateError, match="already paused"):
        apply_action(paused, RolloutAction.PAUSE)
    cancelled = apply_action(paused, RolloutAction.CANCEL)
    assert next_step(cancelled).state is RolloutState.CANCELLED
    with pytest.raises(StateError, match="cancelled"):
        apply_action(cancelled, RolloutAction.RESUME)
