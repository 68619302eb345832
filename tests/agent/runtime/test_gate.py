"""The health gate and the version policy, pure: every branch, and properties."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from deltaport.agent.runtime.gate import (
    PROBE_FAILURES_UNHEALTHY,
    GateState,
    Verdict,
    judge,
    with_probed_health,
)
from deltaport.agent.runtime.model import (
    DesiredStatus,
    Health,
    ModuleObservation,
    ModuleSpec,
    RuntimeStatus,
)
from deltaport.agent.runtime.policy import Attempt, Decision, Deployed, Outcome, decide

ID = "sha256:" + "a" * 64
SPECS = [ModuleSpec("app", "r/app:1", ID, {}),
         ModuleSpec("job", "r/job:1", ID, {}, desired_status=DesiredStatus.STOPPED)]
UP = ModuleObservation(module="app", container_id="c1", name="app.v1", deployment="d",
                       version=1, image_id=ID, status=RuntimeStatus.RUNNING, running=True,
                       exit_code=None, restart_count=0, started_at="t1", finished_at=None,
                       health=None)
START = GateState(started={"app": UP})


def run(observations: list[ModuleObservation], *, window: float = 3, grace: float = 2,
        step: float = 1) -> tuple[Verdict, str, float]:
    state, t = START, 0.0
    for obs in observations:
        verdict = judge(SPECS, {"app": obs}, state, elapsed=t, window=window, grace=grace)
        if verdict.verdict is not Verdict.WAIT:
            return verdict.verdict, verdict.reason, t
        state, t = verdict.state, t + step
    return Verdict.WAIT, "", t


def test_up_for_the_whole_window_passes_and_not_before() -> None:
    assert run([UP] * 3)[0] is Verdict.WAIT
    assert run([UP] * 4)[:1] == (Verdict.PASS,)


def test_exit_restart_unhealthy_or_gone_fail_at_once() -> None:
    exited = replace(UP, running=False, status=RuntimeStatus.FAILED, exit_code=3)
    assert run([UP, exited])[:2] == (Verdict.FAIL, "module app exited with code 3")
    restarted = replace(UP, restart_count=1, started_at="t2")
    assert "restarted" in run([UP, restarted])[1]
    assert "restarted" in run([UP, replace(UP, container_id="c9")])[1]
    assert "unhealthy" in run([replace(UP, health=Health.UNHEALTHY)])[1]
    backoff = replace(UP, running=False, status=RuntimeStatus.BACKOFF)
    assert "is restarting" in run([backoff])[1]
    state = GateState(started={})
    verdict = judge(SPECS, {"app": UP}, state, elapsed=0, window=3, grace=2)
    assert verdict.verdict is Verdict.FAIL and "gone" in verdict.reason


def test_starting_health_waits_until_the_grace_runs_out() -> None:
    starting = replace(UP, health=Health.STARTING)
    verdict, reason, t = run([starting] * 10)
    assert verdict is Verdict.FAIL and "not healthy yet" in reason and t == 5
    healthy = replace(UP, health=Health.HEALTHY)
    assert run([starting, starting] + [healthy] * 4)[0] is Verdict.PASS


def test_the_window_restarts_when_health_drops_back_to_starting() -> None:
    starting = replace(UP, health=Health.STARTING)
    # fine for 2 s, starting again, then fine: not up long enough within window + grace
    verdict, _, t = run([UP, UP, starting, UP, UP, UP, UP])
    assert verdict is Verdict.FAIL and t == 5


def test_a_module_meant_to_be_stopped_is_not_gated() -> None:
    assert run([UP] * 4)[0] is Verdict.PASS  # "job" is never observed


@given(st.lists(st.sampled_from(["up", "starting", "exit"]), min_size=1, max_size=12))
def test_the_gate_passes_only_after_window_seconds_all_fine(kinds: list[str]) -> None:
    obs = {"up": UP, "starting": replace(UP, health=Health.STARTING),
           "exit": replace(UP, running=False, status=RuntimeStatus.FAILED, exit_code=1)}
    verdict, _, t = run([obs[k] for k in kinds])
    seen = kinds[: int(t) + 1]
    if verdict is Verdict.PASS:
        assert seen[-4:] == ["up"] * 4 and "exit" not in seen
    if verdict is Verdict.FAIL and "exit" not in seen:
        assert t >= 5  # only the deadline fails a gate without an exit


def test_probes_fold_into_starting_health_only() -> None:
    starting = replace(UP, health=Health.STARTING)
    assert with_probed_health(starting, Health.HEALTHY, 2) == (
        replace(UP, health=Health.HEALTHY), 0)
    obs, failures = starting, 0
    for _ in range(PROBE_FAILURES_UNHEALTHY):
        assert obs.health is Health.STARTING
        obs, failures = with_probed_health(obs, Health.UNHEALTHY, failures)
    assert obs.health is Health.UNHEALTHY
    assert with_probed_health(UP, Health.UNHEALTHY, 0) == (UP, 0)  # no healthcheck: no probe


def test_the_version_policy() -> None:
    running = Deployed("d-2", 2)
    assert decide(2, running=running, last=None)[0] is Decision.NOTHING
    assert decide(1, running=running, last=None)[0] is Decision.REFUSE
    assert decide(3, running=running, last=None)[0] is Decision.ACTIVATE
    bad = Attempt("d-3", 3, Outcome.ROLLED_BACK, "x")
    assert decide(3, running=running, last=bad)[0] is Decision.SKIP
    assert decide(4, running=running, last=bad)[0] is Decision.ACTIVATE
    assert decide(3, running=None, last=Attempt("d-4", 4, Outcome.FAILED))[0] is Decision.REFUSE
    interrupted = Attempt("d-3", 3, Outcome.ACTIVATING)
    assert decide(3, running=running, last=interrupted)[0] is Decision.ACTIVATE


@given(st.integers(1, 50), st.integers(1, 50) | st.none(), st.integers(1, 50) | st.none(),
       st.sampled_from(list(Outcome)))
def test_never_activates_at_or_below_what_runs(version: int, run_v: int | None,
                                                last_v: int | None, outcome: Outcome) -> None:
    running = Deployed("d", run_v) if run_v is not None else None
    last = Attempt("d", last_v, outcome) if last_v is not None else None
    decision, _ = decide(version, running=running, last=last)
    if decision is Decision.ACTIVATE:
        assert run_v is None or version > run_v
        assert last_v is None or version >= last_v
