"""Activation as a transaction: switch to a verified desired manifest, prove it, or roll back.

The orchestrator of the device runtime. Pure decisions live in ``policy`` (what to do
with a version), ``specs`` (what to create), ``gate`` (is it proven); the engine is
reached only through the :class:`~deltaport.agent.runtime.model.Engine` protocol.

Crash safety comes from the engine's labels plus a journal in the agent state, not
from remembering container ids: the containers of a version are found by their
``io.deltaport.version`` label. The journal (``runtime.journal``) is written before
anything changes in the engine and cleared in the same transaction that records the
outcome and enqueues its message. After a SIGKILL, :meth:`Runtime.recover` finds the
journal, removes the new version's containers and starts the running version's
again — so the device ends with the old deployment running or the new one proven,
never neither — and the next pass tries the activation again, at most
``max_interruptions`` times.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from deltaport.agent.registry import LocalRegistry
from deltaport.agent.runtime.gate import GateState, Judgement, Verdict, judge, with_probed_health
from deltaport.agent.runtime.model import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_MODULE,
    LABEL_VERSION,
    LOG_LINES,
    DesiredStatus,
    Engine,
    Health,
    ModuleObservation,
    ModuleSpec,
    RuntimeSettings,
)
from deltaport.agent.runtime.policy import Attempt, Decision, Deployed, Outcome, decide
from deltaport.agent.runtime.reports import activation_message, runtime_report
from deltaport.agent.runtime.specs import module_specs
from deltaport.agent.state import AgentState
from deltaport.bundle import TrustedKeys
from deltaport.desired import DesiredState, decode_envelope
from deltaport.desired.window import closed_reason
from deltaport.errors import DeltaportError, IntegrityError

log = logging.getLogger("deltaport.agent.runtime")

RUNNING_KEY = "runtime.running"
JOURNAL_KEY = "runtime.journal"
LAST_KEY = "runtime.last_attempt"
REFUSED_KEY = "runtime.refused"  # digest of the last refused envelope: reported once
REPORT_PROBE_SECONDS = 300.0  # for reports, a module's healthcheck runs at most this often


class Interrupted(DeltaportError):
    """The agent was asked to stop in the middle of an activation (resumed on restart)."""


@dataclass(frozen=True)
class Memory:
    """A deployment version the device runs or tries, with what recovery needs."""

    deployment: str
    version: int
    start: tuple[str, ...]  # modules to start, in startup order
    images: Mapping[str, str]  # module → image ID
    interruptions: int = 0

    @property
    def deployed(self) -> Deployed:
        return Deployed(self.deployment, self.version)

    def dumps(self) -> str:
        return json.dumps({"deployment": self.deployment, "version": self.version,
                           "start": list(self.start), "images": dict(self.images),
                           "interruptions": self.interruptions}, sort_keys=True)

    @staticmethod
    def loads(text: str | None) -> Memory | None:
        if not text:
            return None
        doc = json.loads(text)
        return Memory(str(doc["deployment"]), int(doc["version"]), tuple(doc["start"]),
                      dict(doc["images"]), int(doc.get("interruptions", 0)))


def memory_of(state: DesiredState, specs: Sequence[ModuleSpec], interruptions: int = 0) -> Memory:
    """What to remember of a desired state: its modules to start and their images."""
    start = tuple(s.module for s in specs if s.desired_status is DesiredStatus.RUNNING)
    return Memory(state.deployment, state.version, start,
                  {s.module: s.image_id for s in specs}, interruptions)


def container_name(module: str, version: int) -> str:
    """``<module>.v<version>``: old and new containers coexist until the new is proven."""
    return f"{module}.v{version}"


def local_name(reference: str, registry_host: str) -> str | None:
    """``repo:tag`` of a device-local reference, or None if it names another registry."""
    host, _, rest = reference.partition("/")
    return rest if host == registry_host and rest else None


@dataclass(frozen=True)
class Result:
    """What one call of :meth:`Runtime.apply` did."""

    decision: Decision
    outcome: Outcome | None = None
    reason: str = ""


class Runtime:
    """Runs the desired manifest in an engine. One per agent; single-threaded."""

    def __init__(self, settings: RuntimeSettings, *, device: str, state: AgentState,
                 engine: Engine, registry: LocalRegistry, keys: TrustedKeys,
                 stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None,
                 on_active: Callable[[Memory, Memory | None], None] | None = None) -> None:
        self.settings = settings
        self.device = device
        self.state = state
        self.engine = engine
        self.registry = registry
        self.keys = keys
        self.stop = stop or threading.Event()
        self.clock = clock
        self.sleep = sleep or self.stop.wait
        self.on_active = on_active  # called after a proven activation (GC hooks in here)
        self._probes: dict[str, tuple[float, Health | None]] = {}  # container → (when, health)

    # -- memory ---------------------------------------------------------------------------
    @property
    def running(self) -> Memory | None:
        return Memory.loads(self.state.get(RUNNING_KEY))

    @property
    def last_attempt(self) -> Attempt | None:
        text = self.state.get(LAST_KEY)
        if not text:
            return None
        doc = json.loads(text)
        return Attempt(doc["id"], int(doc["version"]), Outcome(doc["outcome"]),
                       doc.get("reason", ""))

    def _finish(self, attempt: Attempt, *, running: Memory | None, keep_running: bool,
                message: dict[str, Any]) -> None:
        """Record the outcome, clear the journal and enqueue the message, atomically."""
        values: dict[str, str | None] = {
            LAST_KEY: json.dumps(attempt.to_json(), sort_keys=True), JOURNAL_KEY: None}
        if not keep_running:
            values[RUNNING_KEY] = running.dumps() if running is not None else None
        self.state.commit(values, [message])

    # -- entry points -------------------------------------------------------------------
    def apply(self, envelope: bytes) -> Result:
        """Verify ENVELOPE and act on it: activate, do nothing, or refuse (reported once)."""
        try:
            desired = decode_envelope(envelope, self.keys, device=self.device)
        except DeltaportError as exc:
            return refuse_once(self.state, self.device, envelope, f"{type(exc).__name__}: {exc}")
        if self.state.get(JOURNAL_KEY):  # an activation of this process broke off (engine down)
            self.recover()
        running = self.running
        decision, why = decide(desired.version,
                               running=running.deployed if running else None,
                               last=self.last_attempt)
        if decision is Decision.REFUSE:
            return refuse_once(self.state, self.device, envelope, why)
        if decision is not Decision.ACTIVATE:
            return Result(decision, reason=why)
        try:  # checked only when it is to run: a kept manifest is looked at every pass
            closed = closed_reason(desired.manifest)
            if closed is not None:  # the window is in the signed document: honoured offline
                return Result(Decision.WAIT, reason=closed)
            specs = module_specs(desired).modules
            self._check_images(desired)
        except DeltaportError as exc:
            return refuse_once(self.state, self.device, envelope, f"{type(exc).__name__}: {exc}")
        return self._activate(desired, specs, running)

    def recover(self) -> None:
        """After a restart: undo an interrupted activation; clear containers nobody owns."""
        journal = Memory.loads(self.state.get(JOURNAL_KEY))
        if journal is not None:
            log.warning("activation of %s v%d was interrupted: restoring the previous deployment",
                        journal.deployment, journal.version)
            self._restore(journal.version)
            tries = journal.interruptions + 1
            if tries >= self.settings.max_interruptions:
                reason = f"activation interrupted {tries} times (agent restarts): given up"
                self._finish(Attempt(journal.deployment, journal.version, Outcome.FAILED, reason),
                             running=None, keep_running=True,
                             message=activation_message(self.device, journal.deployment,
                                                        journal.version, Outcome.FAILED,
                                                        reason=reason))
            else:  # the next apply() tries again; the count survives in the attempt
                self.state.commit({JOURNAL_KEY: None, f"runtime.interruptions.{journal.version}":
                                   str(tries)})
        self._remove_orphans()

    # -- refusal ------------------------------------------------------------------------
    def _check_images(self, desired: DesiredState) -> None:
        """Every module's image is in the local registry with exactly the signed image ID.

        An image the registry holds under another name is named as the manifest says
        (:meth:`LocalRegistry.name_image`): the signed image ID is what decides.

        Raises:
            IntegrityError: a module names another registry, or its image is absent or
                differs from the signed one.
        """
        for module in desired.modules:
            name = local_name(module.reference, self.registry.host)
            if name is None:
                raise IntegrityError(f"module {module.module}: {module.reference} is not in the "
                                     f"local registry {self.registry.host}")
            have = self.registry.image_id(name)
            if have != module.image_id and self.registry.name_image(module.image_id, name):
                have = module.image_id  # held under another name: now under this one too
            if have != module.image_id:
                raise IntegrityError(
                    f"module {module.module}: the local registry has {name} as {have or 'nothing'}"
                    f", the signed manifest requires {module.image_id}")

    # -- the transaction ------------------------------------------------------------------
    def _activate(self, desired: DesiredState, specs: Sequence[ModuleSpec],
                  previous: Memory | None) -> Result:
        tries = int(self.state.get(f"runtime.interruptions.{desired.version}") or 0)
        new = memory_of(desired, specs, tries)
        attempt = Attempt(desired.deployment, desired.version, Outcome.ACTIVATING)
        log.info("activating %s v%d (%d module(s))", desired.deployment, desired.version,
                 len(specs))
        self.state.commit(
            {JOURNAL_KEY: new.dumps(), LAST_KEY: json.dumps(attempt.to_json(), sort_keys=True)},
            [activation_message(self.device, desired.deployment, desired.version,
                                Outcome.ACTIVATING)])
        try:
            created = self._prepare(desired, specs)
        except DeltaportError as exc:
            if _transient(exc):
                raise  # the engine is unreachable: the journal stays, recover() undoes it
            # the engine refused an image or a create body: this version cannot run
            self._restore(desired.version)
            return self._failed(new, previous, Outcome.FAILED, f"{type(exc).__name__}: {exc}")
        self._switch(specs, created, previous)
        verdict = self._gate(specs, desired.version)
        if verdict.verdict is Verdict.PASS:
            return self._proven(new, previous)
        failing = self._observed(desired.version).get(verdict.module or "")
        logs = self.engine.logs(failing.container_id, LOG_LINES) if failing else []
        self._restore(desired.version)
        outcome = Outcome.ROLLED_BACK if previous is not None else Outcome.FAILED
        reason = verdict.reason if previous is not None else (
            f"{verdict.reason}; no previous deployment to roll back to")
        return self._failed(new, previous, outcome, reason, failing, logs)

    def _prepare(self, desired: DesiredState, specs: Sequence[ModuleSpec]) -> dict[str, str]:
        """Images by ID into the engine, then the new containers, created but not started."""
        for spec in specs:
            self.engine.ensure_image(spec.image, spec.image_id)
        for leftover in self._observed(desired.version).values():
            self.engine.remove(leftover.container_id)  # from an interrupted earlier try
        created = {}
        for spec in specs:
            labels = {LABEL_MANAGED: "true", LABEL_DEPLOYMENT: desired.deployment,
                      LABEL_VERSION: str(desired.version), LABEL_MODULE: spec.module}
            created[spec.module] = self.engine.create(
                spec, name=container_name(spec.module, desired.version), labels=labels)
        return created

    def _switch(self, specs: Sequence[ModuleSpec], created: Mapping[str, str],
                previous: Memory | None) -> None:
        """Stop the previous containers (kept) in reverse startup order; start the new."""
        if previous is not None:
            old = self._observed(previous.version)
            for module in reversed(previous.start):
                if module in old and old[module].running:
                    self.engine.stop(old[module].container_id, self.settings.stop_timeout)
        for spec in specs:
            if spec.desired_status is DesiredStatus.RUNNING:
                self.engine.start(created[spec.module])

    def _gate(self, specs: Sequence[ModuleSpec], version: int) -> Judgement:
        """Observe until the gate passes or fails (Interrupted if the agent must stop)."""
        started_at = self.clock()
        first = self._observed(version)
        state = GateState(started=first)
        failures: dict[str, int] = {}
        while True:
            observed = self._probed(self._observed(version), failures)
            verdict = judge(specs, observed, state, elapsed=self.clock() - started_at,
                            window=self.settings.health_window, grace=self.settings.health_grace)
            if verdict.verdict is not Verdict.WAIT:
                log.info("health gate: %s %s", verdict.verdict, verdict.reason)
                return verdict
            state = verdict.state
            if self.stop.is_set():
                raise Interrupted("stopping during the health gate")
            self.sleep(self.settings.health_poll)

    def _probed(self, observed: dict[str, ModuleObservation],
                failures: dict[str, int]) -> dict[str, ModuleObservation]:
        """Fold in the agent's own healthcheck runs where the engine leaves health at
        ``starting`` (engines that do not schedule healthchecks)."""
        out = {}
        for module, obs in observed.items():
            starting = obs.running and obs.health is Health.STARTING
            probe = self.engine.probe_health(obs.container_id) if starting else None
            out[module], failures[module] = with_probed_health(obs, probe,
                                                               failures.get(module, 0))
        return out

    def _proven(self, new: Memory, previous: Memory | None) -> Result:
        attempt = Attempt(new.deployment, new.version, Outcome.ACTIVE)
        self._finish(attempt, running=new, keep_running=False, message=activation_message(
            self.device, new.deployment, new.version, Outcome.ACTIVE))
        log.info("%s v%d is active", new.deployment, new.version)
        if previous is not None:
            for old in self._observed(previous.version).values():
                self.engine.remove(old.container_id)
        if self.on_active is not None:
            self.on_active(new, previous)
        return Result(Decision.ACTIVATE, Outcome.ACTIVE)

    def _failed(self, new: Memory, previous: Memory | None, outcome: Outcome, reason: str,
                failing: ModuleObservation | None = None, logs: Sequence[str] = ()) -> Result:
        log.error("%s v%d: %s: %s", new.deployment, new.version, outcome, reason)
        attempt = Attempt(new.deployment, new.version, outcome, reason)
        self._finish(attempt, running=previous, keep_running=True, message=activation_message(
            self.device, new.deployment, new.version, outcome, reason=reason, failing=failing,
            logs=logs))
        return Result(Decision.ACTIVATE, outcome, reason)

    def _restore(self, version: int) -> None:
        """Remove VERSION's containers and start the running deployment's again."""
        for obs in self._observed(version).values():
            self.engine.remove(obs.container_id)
        running = self.running
        if running is None:
            return
        old = self._observed(running.version)
        for module in running.start:
            if module in old and not old[module].running:
                self.engine.start(old[module].container_id)

    def _remove_orphans(self) -> None:
        """Remove managed containers of versions neither running nor being activated."""
        running = self.running
        keep = {running.version} if running is not None else set()
        for obs in self._observed_all():
            if obs.version not in keep:
                log.info("removing orphan container %s (v%d)", obs.name, obs.version)
                self.engine.remove(obs.container_id)

    # -- observation ------------------------------------------------------------------
    def _observed_all(self) -> list[ModuleObservation]:
        return list(self.engine.observe())

    def _observed(self, version: int) -> dict[str, ModuleObservation]:
        return {o.module: o for o in self._observed_all() if o.version == version}

    def report(self) -> dict[str, Any]:
        """The runtime report: the running deployment's modules as the engine shows them."""
        running = self.running
        observed = self._observed(running.version) if running is not None else {}
        return runtime_report(running.deployed if running else None, self.last_attempt,
                              running.images if running else {}, self._report_health(observed))

    def _report_health(self, observed: dict[str, ModuleObservation]
                       ) -> dict[str, ModuleObservation]:
        """Observations with the agent's own healthcheck result where the engine leaves
        health at ``starting``; each container probed at most every REPORT_PROBE_SECONDS
        (a report is looked at every pass, and a probe costs an exec in the container)."""
        now, out = self.clock(), {}
        for module, obs in observed.items():
            cached = self._probes.get(obs.container_id)
            if obs.running and obs.health is Health.STARTING and (
                    cached is None or now - cached[0] >= REPORT_PROBE_SECONDS):
                cached = (now, self.engine.probe_health(obs.container_id))
                self._probes[obs.container_id] = cached
            probe = cached[1] if cached is not None else None
            out[module] = replace(obs, health=probe) if (
                obs.health is Health.STARTING and probe is not None) else obs
        return out


def refuse_once(state: AgentState, device: str, envelope: bytes, reason: str) -> Result:
    """Start nothing; report the refusal once per distinct envelope.

    The version and deployment in the message are what the envelope claims (for an
    untrusted one, only labels: nothing is decided by them).
    """
    digest = "sha256:" + hashlib.sha256(envelope).hexdigest()
    if state.get(REFUSED_KEY) != digest:
        version, deployment = _claimed(envelope)
        log.error("desired manifest v%d refused: %s", version, reason)
        state.commit({REFUSED_KEY: digest}, [activation_message(
            device, deployment, version, Outcome.REFUSED, reason=reason)])
    return Result(Decision.REFUSE, Outcome.REFUSED, reason)


def _transient(exc: DeltaportError) -> bool:
    """Whether an engine error may pass by itself (unreachable, 429, 5xx), not a refusal
    (4xx, an untrusted certificate): the error's own ``transient``."""
    return exc.transient


def _claimed(envelope: bytes) -> tuple[int, str]:
    """The version and deployment an untrusted envelope claims, for the refusal message
    only (never acted on); (0, "unknown") when it claims nothing readable."""
    try:
        payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
        return int(payload["version"]), str(payload["deployment"])[:200]
    except (ValueError, KeyError, TypeError):
        return 0, "unknown"
