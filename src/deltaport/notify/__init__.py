"""Telling people what happened: email over SMTP."""

from deltaport.notify.email import Email, Notifier, SmtpNotifier

__all__ = ["Email", "Notifier", "SmtpNotifier"]
