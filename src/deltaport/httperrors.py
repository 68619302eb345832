"""One mapping from an HTTP error status to a deltaport error (both hub clients use it).

The reverse of :mod:`deltaport.hub.errors` (error -> status). A permanent refusal is
never a :class:`~deltaport.errors.TransferError`, so no caller mistakes "the hub said
no" for "the hub is unreachable" and retries it for ever::

    400, 413, 422      FormatError          the request was malformed or too large
    401, 403           AccessError          the token is missing, unknown or refused
    404                UnknownObjectError   no such device, image, deployment, manifest
    409                StateError           an illegal change, a conflict
    429, 5xx           TransferError        transient: the hub is busy or failing
    410, other         HubError             refused for good (carries the status)

Imports nothing but :mod:`deltaport.errors`, so the agent may use it.
"""

from __future__ import annotations

from deltaport.errors import (
    AccessError,
    DeltaportError,
    FormatError,
    HubError,
    StateError,
    TransferError,
    UnknownObjectError,
    transient_status,
)

_PERMANENT: dict[int, type[DeltaportError]] = {
    400: FormatError,
    413: FormatError,
    422: FormatError,
    404: UnknownObjectError,
    409: StateError,
}


def is_transient_status(status: int) -> bool:
    """Whether an error STATUS may pass by itself (429, 5xx): retry later."""
    return transient_status(status)


def error_for_status(status: int, message: str) -> DeltaportError:
    """The deltaport error for an HTTP error STATUS; MESSAGE says where and what.

    The status is appended to MESSAGE when MESSAGE does not already name it.
    """
    text = message if str(status) in message else f"{message} (HTTP {status})"
    if status in (401, 403):
        return AccessError(text, status)
    if transient_status(status):
        return TransferError(text)
    cls = _PERMANENT.get(status)
    return cls(text) if cls is not None else HubError(text, status)
