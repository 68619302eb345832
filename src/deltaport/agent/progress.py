"""Telling the hub how much of a bundle has arrived, while it downloads (docs/hub-api.md).

``POST /api/v1/device/progress`` with ``{"bundle", "received", "size"}`` (bytes of
the bundle file on the device, head included). Reports are rate limited so they
cost next to nothing on a slow link (:func:`report_due`, pure):

- one when a new agent process resumes a download (``resumed``: the offset found on
  disk), since the hub cannot know it;
- then only once ``min_bytes`` more arrived since the last report, and only when
  ``every_seconds`` passed since it, a 10 % step was crossed, or the bundle is
  complete.

So reports number at most 1 + received / ``min_bytes`` per process: with a report
costing under ``REPORT_COST_BYTES`` on the wire, ``min_bytes`` = 256 KiB keeps them
under 0.4 % of the bytes downloaded, on any link. A report is sent in the download's
thread with a short timeout; any failure is logged and the download goes on (progress
is a courtesy, never a reason to stop). A hub without the endpoint (404/405) is not
asked again by this process (nor is one that does not know the bundle: it was
just listed, so that hub is odd).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deltaport.agent.hub import BundleOffer, HubClient
from deltaport.errors import DeltaportError, UnknownObjectError

log = logging.getLogger("deltaport.agent")

REPORT_COST_BYTES = 1024  # one report and its answer on the wire, TLS and TCP/IP included
PROGRESS_TIMEOUT = 5.0  # seconds: a report never holds a download up for long


@dataclass(frozen=True)
class ProgressPolicy:
    """When to report (see the module doc)."""

    every_seconds: float = 30.0
    step: float = 0.10
    min_bytes: int = 256 * 1024


@dataclass(frozen=True)
class Sent:
    """The last report of one bundle: bytes and when (monotonic seconds)."""

    received: int
    at: float


def report_due(policy: ProgressPolicy, last: Sent | None, received: int, total: int,
               now: float, *, resumed: bool) -> bool:
    """Whether to report RECEIVED of TOTAL now (pure).

    LAST is this process's previous report of the bundle (None: none yet); RESUMED
    says the download found RECEIVED bytes on disk left by an earlier process.
    """
    if total <= 0 or received <= 0:
        return False
    if last is None:
        return (resumed and received < total) or received >= policy.min_bytes
    if received - last.received < policy.min_bytes:
        return False
    step = max(1, int(total * policy.step))
    return (now - last.at >= policy.every_seconds or received >= total
            or received // step > last.received // step)


@dataclass
class ProgressReporter:
    """Reports one bundle's download to the hub, by the policy; one per download."""

    hub: HubClient
    offer: BundleOffer
    offset: int  # bytes before the payload region (the head): received = offset + done
    resumed: bool
    sent: dict[str, Sent]  # last report per bundle digest, kept by the agent across passes
    policy: ProgressPolicy = field(default_factory=ProgressPolicy)
    clock: Callable[[], float] = time.monotonic
    disabled: set[str] = field(default_factory=set)  # {"hub"} once the hub lacks the endpoint
    reports: int = 0

    def __call__(self, done: int, total: int) -> None:
        """The ``deltaport.transfer`` progress callback: DONE of TOTAL payload bytes."""
        if "hub" in self.disabled or total < 0:
            return
        received = min(self.offset + done, self.offer.size)
        now = self.clock()
        last = self.sent.get(self.offer.digest)
        if last is not None and received < last.received:
            last = None  # fewer verified bytes than told (re-fetching): say so once due
        if not report_due(self.policy, last, received, self.offer.size, now,
                          resumed=self.resumed and last is None):
            return
        self.sent[self.offer.digest] = Sent(received, now)  # also on failure: no retry storm
        resumed, self.resumed = self.resumed and last is None, False
        self._send(received, resumed)

    def _send(self, received: int, resumed: bool) -> None:
        try:
            self.hub.post_progress(self.offer.digest, received, self.offer.size,
                                   resumed=resumed, timeout=PROGRESS_TIMEOUT)
        except DeltaportError as exc:
            if isinstance(exc, UnknownObjectError) or getattr(exc, "status", None) == 405:
                self.disabled.add("hub")  # an older hub: no such endpoint
            log.info("progress report for %s not taken: %s", self.offer.digest[:19], exc)
            return
        self.reports += 1
        log.debug("told the hub %d of %d bytes of %s", received, self.offer.size,
                  self.offer.digest[:19])
