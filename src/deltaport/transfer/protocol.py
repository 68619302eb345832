"""HTTP rules of a ranged download, as pure functions over header values and codes.

No sockets here: the downloader asks these functions what a status means, what
``Range`` to send and what a ``Content-Range`` says, so each rule is tested alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from deltaport.errors import AuthError, FormatError, NotFoundError, RegistryError

MAX_HEADER_CHARS = 200  # a Content-Range / Retry-After longer than this is not one

_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(?:(\d{1,20})-(\d{1,20})|\*)/(\d{1,20}|\*)$")

# Statuses worth retrying: the server or something on the way is overloaded or down.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522,
                                523, 524})


class StatusKind(Enum):
    """What the downloader does with a response status."""

    PARTIAL = "partial"  # 206: the range we asked for
    WHOLE = "whole"  # 200: the server ignored Range and sends the whole file
    UNSATISFIABLE = "unsatisfiable"  # 416: we asked past the end of the file
    TRANSIENT = "transient"  # retry later with backoff
    FATAL = "fatal"  # retrying cannot help


@dataclass(frozen=True)
class ContentRange:
    """A parsed ``Content-Range``; ``start``/``end`` (inclusive) are None for ``*/size``."""

    start: int | None
    end: int | None
    total: int | None


def classify_status(status: int) -> StatusKind:
    """Sort an HTTP status into what to do next."""
    if status == 206:
        return StatusKind.PARTIAL
    if status == 200:
        return StatusKind.WHOLE
    if status == 416:
        return StatusKind.UNSATISFIABLE
    if status in TRANSIENT_STATUSES or (500 <= status < 600 and status not in (501, 505)):
        return StatusKind.TRANSIENT
    return StatusKind.FATAL


def status_error(status: int, reason: str, url: str) -> RegistryError:
    """The error for a status that retrying cannot fix, with a message a person can act on."""
    where = f"GET {url}: {status} {reason}".rstrip()
    if status in (401, 403):
        return AuthError(f"{where} - the server refused our credentials (check the token)",
                         status)
    if status in (404, 410):
        return NotFoundError(f"{where} - the server does not have this file", status)
    return RegistryError(f"{where} - unexpected answer, not retried", status)


def range_header(start: int, end: int | None) -> str:
    """``Range`` value for bytes ``[start, end)`` of the remote file (``end`` None: to EOF)."""
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"empty or negative range {start}..{end}")
    return f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"


def parse_content_range(value: str) -> ContentRange:
    """Parse ``bytes a-b/total``, ``bytes a-b/*`` or ``bytes */total``.

    Raises:
        FormatError: not a byte Content-Range, or ``b < a``, or past ``total``.
    """
    text = value.strip()
    match = _CONTENT_RANGE_RE.match(text) if len(text) <= MAX_HEADER_CHARS else None
    if match is None:
        raise FormatError(f"malformed Content-Range: {value[:MAX_HEADER_CHARS]!r}")
    first, last, total_text = match.groups()
    total = None if total_text == "*" else int(total_text)
    if first is None or last is None:
        if total is None:
            raise FormatError("malformed Content-Range: 'bytes */*'")
        return ContentRange(None, None, total)
    start, end = int(first), int(last)
    if end < start or (total is not None and end >= total):
        raise FormatError(f"impossible Content-Range: {text!r}")
    return ContentRange(start, end, total)


def retry_after_seconds(value: str | None, ceiling: float) -> float | None:
    """Seconds a ``Retry-After`` asks us to wait (delta-seconds form only), capped."""
    if value is None or len(value) > MAX_HEADER_CHARS:
        return None
    text = value.strip()
    if not text.isdigit():
        return None  # an HTTP-date: our own backoff will do
    return min(float(text), ceiling)
