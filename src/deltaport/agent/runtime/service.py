"""The device runtime as the agent's pass sees it: keep the desired manifest, act on it,
queue what runs.

The agent calls :meth:`DeviceRuntime.receive` with each desired manifest the hub
serves (kept on disk, so a device that lost its link for weeks still knows what it
should run), and :meth:`DeviceRuntime.step` once per pass: act on the kept manifest
(for ``engine``: the activation transaction; for ``file``: write the verified
manifest for an external runtime), then queue the runtime report if it changed or a
heartbeat if one is due. What to send is read with :meth:`pending`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaport.agent.registry import LocalRegistry
from deltaport.agent.runtime.activation import Memory, Result, Runtime, refuse_once
from deltaport.agent.runtime.model import Engine, RuntimeSettings
from deltaport.agent.runtime.policy import Attempt, Decision, Deployed, Outcome, decide
from deltaport.agent.runtime.reports import activation_message, report_digest, runtime_report
from deltaport.agent.state import AgentState
from deltaport.bundle import TrustedKeys
from deltaport.desired import DESIRED_MAX_BYTES, decode_envelope
from deltaport.desired.window import closed_reason
from deltaport.errors import DeltaportError, StorageError
from deltaport.fsutil import write_atomic

log = logging.getLogger("deltaport.agent.runtime")

ENVELOPE_NAME = "desired.envelope"  # the last desired manifest served, in the state dir
REPORT_KEY = "runtime.report"  # {"digest", "body", "delivered"}: the newest report
FILE_KEY = "runtime.file"  # kind=file: the version written (Attempt JSON)


@dataclass(frozen=True)
class Pending:
    """What the runtime wants sent to the hub now."""

    report: dict[str, Any] | None  # the whole report (changed, or the hub lost it)
    heartbeat: str | None  # the digest of an unchanged report, when a heartbeat is due


class DeviceRuntime:
    """One per agent. ``engine`` is None unless kind is ``engine``."""

    def __init__(self, settings: RuntimeSettings, *, device: str, state: AgentState,
                 state_dir: Path, registry: LocalRegistry,
                 keys: TrustedKeys, engine: Engine | None = None,
                 stop: threading.Event | None = None,
                 on_active: Callable[[Memory, Memory | None], None] | None = None) -> None:
        self.settings = settings
        self.device = device
        self.state = state
        self.envelope_path = state_dir / ENVELOPE_NAME
        self.keys = keys
        self.runtime = None if engine is None else Runtime(
            settings, device=device, state=state, engine=engine, registry=registry,
            keys=keys, stop=stop, on_active=on_active)
        self._recovered = False
        self._next_heartbeat = time.monotonic() + settings.heartbeat_interval

    def receive(self, envelope: bytes) -> None:
        """Keep the desired manifest the hub served (checked when acted on, not here)."""
        if len(envelope) > DESIRED_MAX_BYTES:
            raise StorageError(f"desired manifest larger than {DESIRED_MAX_BYTES} bytes")
        write_atomic(self.envelope_path, envelope)

    def kept(self) -> bytes | None:
        try:
            return self.envelope_path.read_bytes()[: DESIRED_MAX_BYTES + 1]
        except FileNotFoundError:
            return None

    def step(self) -> Result | None:
        """Act on the kept desired manifest; queue the runtime report. Engine errors raise."""
        if self.runtime is not None and not self._recovered:
            self.runtime.recover()
            self._recovered = True
        envelope = self.kept()
        result = None
        if envelope is not None:
            result = (self.runtime.apply(envelope) if self.runtime is not None
                      else self._write_file(envelope))
        self._queue_report()
        return result

    # -- kind = file ------------------------------------------------------------------
    def _write_file(self, envelope: bytes) -> Result | None:
        """Verify, refuse replays, then write the manifest for the external runtime."""
        path = self.settings.desired_file
        if path is None:
            return None
        try:
            desired = decode_envelope(envelope, self.keys, device=self.device)
        except DeltaportError as exc:
            return refuse_once(self.state, self.device, envelope, f"{type(exc).__name__}: {exc}")
        last = self._file_attempt()
        written = Deployed(last.deployment, last.version) if last else None
        decision, why = decide(desired.version, running=written, last=None)
        if decision is Decision.REFUSE:
            return refuse_once(self.state, self.device, envelope, why)
        if decision is not Decision.ACTIVATE and path.exists():
            return Result(decision, reason=why)
        try:
            closed = closed_reason(desired.manifest)
        except DeltaportError as exc:
            return refuse_once(self.state, self.device, envelope, f"{type(exc).__name__}: {exc}")
        if closed is not None:  # its maintenance window, in the signed document
            return Result(Decision.WAIT, reason=closed)
        document = {
            "deployment": desired.deployment, "version": desired.version,
            "kind": desired.kind.value,
            "images": [{"module": m.module, "reference": m.reference, "image_id": m.image_id}
                       for m in desired.modules],
            "manifest": desired.manifest,
        }
        write_atomic(path, json.dumps(document, indent=2, sort_keys=True).encode())
        attempt = Attempt(desired.deployment, desired.version, Outcome.ACTIVE,
                          f"written to {path}")
        self.state.commit({FILE_KEY: json.dumps(attempt.to_json())}, [activation_message(
            self.device, desired.deployment, desired.version, Outcome.ACTIVE,
            reason=f"desired manifest written to {path} for the external runtime")])
        log.info("desired manifest v%d written to %s", desired.version, path)
        return Result(Decision.ACTIVATE, Outcome.ACTIVE)

    def _file_attempt(self) -> Attempt | None:
        text = self.state.get(FILE_KEY)
        if not text:
            return None
        doc = json.loads(text)
        return Attempt(doc["id"], int(doc["version"]), Outcome(doc["outcome"]), doc["reason"])

    # -- the runtime report ---------------------------------------------------------
    def current_report(self) -> dict[str, Any]:
        if self.runtime is not None:
            return self.runtime.report()
        last = self._file_attempt()
        running = Deployed(last.deployment, last.version) if last else None
        return runtime_report(running, last, {}, {})

    def _queue_report(self) -> None:
        """Keep the newest report; mark it undelivered when it differs from the last."""
        report = self.current_report()
        digest = report_digest(report)
        held = self._held()
        if held is not None and held["digest"] == digest:
            return
        self.state.put(REPORT_KEY, json.dumps(
            {"digest": digest, "body": report, "delivered": False}, sort_keys=True))

    def _held(self) -> dict[str, Any] | None:
        text = self.state.get(REPORT_KEY)
        return json.loads(text) if text else None

    def pending(self) -> Pending:
        """The report to send (if undelivered) or the heartbeat digest (if due)."""
        held = self._held()
        if held is None:
            return Pending(None, None)
        if not held["delivered"]:
            return Pending(held["body"], None)
        if time.monotonic() >= self._next_heartbeat:
            return Pending(None, str(held["digest"]))
        return Pending(None, None)

    def delivered(self, *, report: dict[str, Any] | None, known: bool = True) -> None:
        """The hub took REPORT (or answered a heartbeat: KNOWN False means send it again)."""
        held = self._held()
        if held is None:
            return
        if report is not None and report_digest(report) != held["digest"]:
            return  # a newer report was queued meanwhile
        held["delivered"] = known
        self.state.put(REPORT_KEY, json.dumps(held, sort_keys=True))
        self._next_heartbeat = time.monotonic() + self.settings.heartbeat_interval


def describe(result: Result | None) -> str:
    """One line for the agent's log."""
    if result is None:
        return "no desired manifest"
    return f"{result.decision}{' ' + result.outcome if result.outcome else ''} {result.reason}"
