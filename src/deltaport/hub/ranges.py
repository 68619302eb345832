"""HTTP Range rules for serving an immutable file. Pure: header text and size in, a decision out.

Only a single range is honoured (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), which
is all a resuming downloader sends. A header that does not parse, or asks for
several ranges, is ignored and the whole file is served (RFC 9110 allows that); a
range that starts at or past the end is unsatisfiable (416).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RANGE_HEADER_MAX_CHARS = 200  # a longer Range header is ignored
_SINGLE = re.compile(r"^bytes=(\d{0,20})-(\d{0,20})$")


@dataclass(frozen=True)
class Slice:
    """Bytes [start, end) of a file of ``size`` bytes, and whether it is a partial answer."""

    start: int
    end: int
    size: int
    partial: bool

    @property
    def length(self) -> int:
        """Bytes to send."""
        return self.end - self.start

    @property
    def content_range(self) -> str:
        """The Content-Range header value of a 206 answer."""
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


class Unsatisfiable(Exception):
    """The range starts at or past the end of the file (answer 416, ``bytes */size``)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for {size} bytes")
        self.size = size


def choose_slice(header: str | None, size: int) -> Slice:
    """What to send for a GET with Range header HEADER of a file of SIZE bytes.

    Raises:
        Unsatisfiable: a single, well-formed range lying wholly past the end.
    """
    whole = Slice(0, size, size, partial=False)
    if header is None or len(header) > RANGE_HEADER_MAX_CHARS:
        return whole
    match = _SINGLE.match(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return whole
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last N bytes
        count = int(last)
        if count == 0:
            raise Unsatisfiable(size)
        return Slice(max(0, size - count), size, size, partial=True)
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if last != "" and int(last) < start:
        return whole  # syntactically invalid: ignore
    if start >= size:
        raise Unsatisfiable(size)
    return Slice(start, end, size, partial=True)
