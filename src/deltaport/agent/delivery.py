"""Delivering what waits for the hub: the outbox, the inventory, the runtime report.

At least once: a message is marked delivered only when the hub's answer names it, and
the hub deduplicates by ``message_id``. A message the hub *rejects* (an unknown
deployment, a change its state machine refuses) would be refused again on every pass,
so it is kept in the outbox, marked, and never re-sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from deltaport.agent.hub import MAX_STATUS_BATCH, HubClient, Rejection
from deltaport.agent.runtime.service import DeviceRuntime
from deltaport.agent.state import AgentState

log = logging.getLogger("deltaport.agent")


def deliver(hub: HubClient, state: AgentState, runtime: DeviceRuntime | None,
            stop: threading.Event) -> tuple[int, int]:
    """Send pending status messages (batched), the pending inventory, then the runtime
    report; returns (delivered, rejected) message counts. Transfer errors raise."""
    delivered = rejected_total = 0
    while not stop.is_set():
        batch = state.pending_messages(MAX_STATUS_BATCH)
        if not batch:
            break
        ids = [str(m["message_id"]) for m in batch]
        state.note_attempt(ids)
        answer = hub.post_status(batch)
        accepted = set(answer.accepted) & set(ids)
        state.mark_delivered(sorted(accepted))
        delivered += len(accepted)
        rejected = note_rejected(state, answer.rejected, set(ids) - accepted)
        rejected_total += len(rejected)
        if len(accepted) + len(rejected) < len(batch):
            log.warning("hub accepted %d of %d status messages", len(accepted), len(batch))
            break
    pending = state.pending_inventory()
    if pending is not None:
        hub.checkin(pending[0])
        state.mark_inventory_delivered(pending[1])
    if runtime is not None:
        deliver_runtime(hub, runtime)
    return delivered, rejected_total


def deliver_runtime(hub: HubClient, runtime: DeviceRuntime) -> None:
    """The runtime report when it changed; else a heartbeat digest when one is due."""
    pending = runtime.pending()
    if pending.report is not None:
        hub.post_runtime(pending.report)
        runtime.delivered(report=pending.report)
    elif pending.heartbeat is not None:
        runtime.delivered(report=None, known=hub.runtime_heartbeat(pending.heartbeat))


def note_rejected(state: AgentState, rejections: Sequence[Rejection],
                  sent: set[str]) -> dict[str, str]:
    """Mark the messages the hub refused (of those SENT and not accepted) as rejected."""
    refused = {r.message_id: r.error for r in rejections if r.message_id in sent}
    for message_id, error in refused.items():
        log.warning("hub rejected status message %s: %s", message_id, error)
    if refused:
        state.mark_rejected(refused)
    return refused
