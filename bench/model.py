"""One measurement of one method on one scenario, as the report and the cache see it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "skipped", "fails"]
"""ok: measured; error: the command failed (note says why); skipped: not run on purpose
(note says why); fails: known not to work on this input (e.g. zstd past its window)."""

METHODS = ("deltaport", "zstd", "xdelta3", "bsdiff", "gzip-layers")
"""Every method the harness knows, in the order the tables list them."""

METHOD_LABELS = {
    "deltaport": "deltaport bundle",
    "zstd": "zstd -19 --long=31 --patch-from",
    "xdelta3": "xdelta3 -9 -S djw -B",
    "bsdiff": "bsdiff 4.3 (whole tar)",
    "gzip-layers": "gzip layers (registry pull)",
}


@dataclass(frozen=True)
class Measurement:
    """Bytes a method sends for a scenario, and what building/applying it cost.

    ``exact`` is True when the rebuilt output was checked byte-exact, False when the
    check ran and failed, None when there is nothing to check (gzip layers, errors).
    Times are wall seconds; RSS is peak bytes; None means not measured.
    """

    method: str
    status: Status
    bytes: int | None = None
    build_s: float | None = None
    build_rss: int | None = None
    apply_s: float | None = None
    apply_rss: int | None = None
    exact: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.bytes is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Measurement:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)
