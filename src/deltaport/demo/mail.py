"""A real SMTP server (aiosmtpd) that keeps what it receives: the requester's mailbox.

The hub emails the requester of a deployment when it completes or fails; the demo
and the end-to-end tests point the hub at this server and show (or assert) what
arrived. It listens on loopback only and runs in a thread of the caller.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from types import TracebackType
from typing import Any

from deltaport.demo.services import free_port
from deltaport.errors import UsageError

MAIL_MAX_BYTES = 1 << 20  # a deployment email is a few hundred bytes


@dataclass(frozen=True)
class Received:
    """One email as delivered: envelope recipients, subject and body text."""

    to: tuple[str, ...]
    subject: str
    body: str


def _parse(data: bytes, recipients: list[str]) -> Received:
    msg: Message = message_from_bytes(data[:MAIL_MAX_BYTES])
    payload = msg.get_payload(decode=True)
    body = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return Received(tuple(recipients), str(msg.get("Subject", "")), body)


@dataclass
class MailCatcher:
    """An SMTP server on 127.0.0.1:<free port>; ``messages()`` lists what it received."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    _received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd hook: keep the message."""
        received = _parse(bytes(envelope.original_content or b""), list(envelope.rcpt_tos))
        with self._lock:
            self._received.append(received)
        return "250 OK"

    def messages(self) -> list[Received]:
        """Every email received so far, oldest first."""
        with self._lock:
            return list(self._received)

    def start(self) -> MailCatcher:
        """Start serving.

        Raises:
            UsageError: aiosmtpd is not installed.
        """
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:
            raise UsageError("the demo's SMTP server needs aiosmtpd (or use --no-email)") from exc
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
