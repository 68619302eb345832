"""The hub's outbox: durable email retry, webhooks and delivery retries, in a background
thread.

:class:`HubOutbox` is built by ``hub.app.create_app``: with SMTP configured, the hub's
notifier becomes an :class:`OutboxNotifier` (sends at once; a failed email is queued
for retry instead of being only logged); with ``[[webhooks]]`` in the hub config file,
fleet events are bridged to webhook deliveries (``notify.bridge``); with a
:class:`~deltaport.pipelines.retry.Retrier`, failed deliveries due for an automatic
retry are retried. The thread starts and stops with the app's lifespan.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.errors import DeltaportError
from deltaport.notify import bridge
from deltaport.notify.config import WebhookEndpoint, load_webhooks
from deltaport.notify.email import Email, Notifier
from deltaport.notify.events import EventKind, record
from deltaport.notify.outbox import Dispatcher, OutboxSettings
from deltaport.pipelines.retry import Retrier

log = logging.getLogger(__name__)


class OutboxNotifier:
    """A Notifier that tries NOTIFIER now and queues the email in the outbox if it fails."""

    def __init__(self, engine: Engine, notifier: Notifier, wake: threading.Event) -> None:
        self.engine = engine
        self.notifier = notifier
        self.wake = wake

    def send(self, email: Email) -> None:
        """Send EMAIL; on failure keep it for the dispatcher (never raises TransferError)."""
        try:
            self.notifier.send(email)
        except DeltaportError as exc:
            log.warning("email to %s queued for retry: %s", email.to, exc)
            with Session(self.engine) as session, session.begin():
                record(
                    session,
                    EventKind.EMAIL_QUEUED,
                    email.to,
                    {"error": str(exc)[:500]},
                    emails=[email],
                )
            self.wake.set()


class HubOutbox:
    """The dispatcher thread of one hub process, and the notifier the hub should use."""

    def __init__(
        self,
        engine: Engine,
        config_path: Path | None,
        notifier: Notifier | None,
        *,
        smtp: bool,
        settings: OutboxSettings | None = None,
        retrier: Retrier | None = None,
    ) -> None:
        self.endpoints: tuple[WebhookEndpoint, ...] = load_webhooks(config_path)
        self.dispatcher = Dispatcher(engine, self.endpoints, notifier, settings)
        self.wake = threading.Event()
        self.retrier = retrier  # automatic retries of failed deliveries (pipelines.retry)
        self.enabled = bool(self.endpoints) or (smtp and notifier is not None) or (
            retrier is not None)
        self.notifier: Notifier | None = notifier
        if smtp and notifier is not None:
            self.notifier = OutboxNotifier(engine, notifier, self.wake)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor: int | None = None

    def start(self) -> None:
        """Start the background thread (nothing to do without SMTP or webhooks)."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="deltaport-outbox", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> int:
        """Make due delivery retries, bridge new fleet events (if webhooks are
        configured), then deliver what is due; how much was done."""
        busy = 0
        if self.retrier is not None:
            busy += len(self.retrier.run_once(self.dispatcher.engine))
        if self.endpoints:
            self._cursor = bridge.pump(self.dispatcher.engine, self.endpoints, self._cursor)
        return busy + self.dispatcher.run_once()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # the loop must survive a database hiccup
                log.exception("outbox pass failed")
                busy = 0
            if not busy:
                self.wake.wait(self.dispatcher.settings.poll)
                self.wake.clear()
