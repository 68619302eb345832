"""Setting and removing a device's labels (``deltaport device label``, local or ``--hub``).

A ``maintenance-window`` label is checked and stored in its normal form
(``deltaport.desired.window``); the hub signs it into the device's next desired
manifest, so the agent honours it while offline (docs/rollouts.md §4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from deltaport.desired.window import WINDOW_LABEL, parse_window
from deltaport.errors import UsageError
from deltaport.fleet import queries


def checked(wanted: Mapping[str, str], remove: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """WANTED with keys checked and a window in its normal form; REMOVE as a list.

    Raises:
        UsageError: a bad key, a window that does not parse, or a key both set and removed.
    """
    labels = queries.parse_labels(f"{k}={v}" for k, v in wanted.items())
    if labels.get(WINDOW_LABEL):
        labels[WINDOW_LABEL] = str(parse_window(labels[WINDOW_LABEL]))
    gone = list(remove)
    both = sorted(set(labels) & set(gone))
    if both:
        raise UsageError(f"label {both[0]!r} is both set and removed")
    return labels, gone


def relabel(session: Session, name: str, wanted: Mapping[str, str],
            remove: Iterable[str] = ()) -> dict[str, Any]:
    """Set WANTED and drop REMOVE on device NAME (in SESSION); {device, labels}.

    Raises:
        UsageError: see :func:`checked`.
        UnknownObjectError: no device NAME.
    """
    labels, gone = checked(wanted, remove)
    device = queries.get_device(session, name)
    merged = {k: v for k, v in {**device.labels, **labels}.items() if k not in gone}
    device.labels = merged
    return {"device": device.name, "labels": merged}
