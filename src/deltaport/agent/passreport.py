"""What one agent pass did, and how a failed hub sync is told (logs, CLI exit code)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from deltaport.errors import AccessError, DeltaportError, TransferError

log = logging.getLogger("deltaport.agent")


@dataclass
class PassReport:
    """What one pass did (for logs, the CLI and tests)."""

    inbox_done: int = 0
    inbox_failed: int = 0
    inbox_waiting: int = 0
    downloaded: int = 0
    reconstructed: int = 0
    failed: int = 0
    deferred: int = 0
    delivered: int = 0
    rejected: int = 0  # status messages the hub refused for good (kept, not re-sent)
    bytes_fetched: int = 0
    hub_error: str | None = None
    hub_failure: DeltaportError | None = None  # the error that ended the hub sync (exit code)
    runtime: str | None = None  # what the device runtime did with the desired manifest
    runtime_error: str | None = None
    failures: list[str] = field(default_factory=list)


def hub_failed(report: PassReport, exc: DeltaportError) -> None:
    """Note why the hub sync stopped: unreachable (transient) apart from refused."""
    report.hub_error, report.hub_failure = str(exc), exc
    if exc.transient:
        log.warning("hub unreachable, will retry: %s", exc)
    elif isinstance(exc, AccessError):
        log.error("hub refused this device: %s", exc)
    elif isinstance(exc, TransferError):  # an untrusted certificate: fixed by its owner
        log.error("hub cannot be used, not retried until fixed: %s", exc)
    else:
        log.error("hub refused the request (%s), not retried this pass: %s",
                  type(exc).__name__, exc)
