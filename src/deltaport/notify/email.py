"""Email over SMTP (plain, STARTTLS or implicit TLS), the one notification channel so far.

:class:`SmtpNotifier` is the adapter: ``smtplib``/``ssl``/socket errors become
:class:`~deltaport.errors.TransferError` (the server refused or could not be reached).
Pipelines depend on the :class:`Notifier` Protocol, so tests and the hub can pass
anything that sends an :class:`Email`.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from deltaport.config import SmtpSettings
from deltaport.errors import TransferError


@dataclass(frozen=True)
class Email:
    """One plain-text message to one recipient."""

    to: str
    subject: str
    body: str


class Notifier(Protocol):
    """Sends emails."""

    def send(self, email: Email) -> None:
        """Deliver EMAIL or raise TransferError."""
        ...


class SmtpNotifier:
    """Sends through the SMTP server SETTINGS describe."""

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.tls_context = tls_context or ssl.create_default_context()

    def send(self, email: Email) -> None:
        """Connect, optionally secure and log in, send, quit.

        Raises:
            TransferError: connection, TLS, authentication or recipient refused.
        """
        msg = self._message(email)
        try:
            with self._connect() as smtp:
                self._secure_and_login(smtp)
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            s = self.settings
            raise TransferError(f"cannot send email via {s.host}:{s.port}: {exc}") from exc

    def _message(self, email: Email) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.sender
        msg["To"] = email.to
        msg["Subject"] = email.subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="deltaport")
        msg.set_content(email.body)
        return msg

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "tls":
            return smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self.tls_context)
        return smtplib.SMTP(s.host, s.port, timeout=s.timeout)

    def _secure_and_login(self, smtp: smtplib.SMTP) -> None:
        s = self.settings
        if s.security == "starttls":
            smtp.starttls(context=self.tls_context)
        if s.username:
            smtp.login(s.username, s.password or "")
