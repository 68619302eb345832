"""Every error deltaport raises on purpose, grouped by where it comes from.

Callers catch by source: an integrity failure is never retried, a transfer failure
may be resumed, a format error means the input itself is bad. Whether a failure may
pass by itself is the ``transient`` attribute (class default, set per instance from the
HTTP status where there is one), never a test of the parent class: a registry that
answers 400 is a ``RegistryError`` (and so a ``TransferError``) but not transient. The
CLI maps each class to its exit code, so scripts can tell failures apart::

    DeltaportError                      exit 1   base of everything below
    ├── UsageError                      exit 2   bad arguments, unparsable image reference
    ├── FormatError                     exit 3   malformed input: archive, manifest, bundle
    │   ├── TruncatedError              exit 3   input ends before its declared size
    │   └── UnsupportedVersionError     exit 3   a format version newer than this reader
    ├── IntegrityError                  exit 4   content does not hash to its digest
    │   └── SignatureError              exit 4   bundle unsigned, wrongly signed, untrusted key
    ├── TransferError             [T]   exit 5   network: connection refused/reset, timeout, 5xx
    │   ├── UntrustedCertificateError   exit 5   a TLS certificate is not trusted (permanent)
    │   └── RegistryError        [T/P]  exit 6   a registry answered with an error status
    │       ├── AuthError               exit 6   credentials refused
    │       └── NotFoundError           exit 6   manifest, blob or tag unknown to the registry
    ├── ImageNotFoundError              exit 7   image/tag/platform absent from an archive or layout
    ├── MissingSourceError              exit 8   a patch needs source layers the device lacks
    ├── StorageError                    exit 9   local disk: full, unwritable, missing file
    ├── StateError                      exit 10  fleet state: illegal transition, conflict
    │   └── UnknownObjectError          exit 10  no such device, image or deployment set
    ├── AccessError                     exit 11  hub: token missing/unknown (401), refused (403)
    ├── InstallationError               exit 12  deltaport's own install is broken (pinned zlib)
    └── HubError                        exit 13  the hub refused a request for good (410, 4xx)

    [T] transient: may pass by itself, retried;  [T/P] transient only for no status,
    429 or 5xx (see :func:`transient_status`). Every other class is permanent.

The HTTP side: :mod:`deltaport.httperrors` turns a status into one of these (both hub
clients use it), :mod:`deltaport.hub.errors` turns one of these into a status.

Other libraries' exceptions are translated at the adapter that calls them
(``raise ... from exc``), never leaked to callers.
"""

from __future__ import annotations

from typing import ClassVar


def transient_status(status: int) -> bool:
    """Whether an HTTP error STATUS may pass by itself: 429 (slow down) and every 5xx."""
    return status == 429 or status >= 500


class DeltaportError(Exception):
    """Base class: something deltaport understood and can explain."""

    exit_code: ClassVar[int] = 1
    transient: bool = False  # may pass by itself (retry later); a class default, see tree


class UsageError(DeltaportError):
    """Bad arguments or an image reference that cannot be parsed."""

    exit_code = 2


class FormatError(DeltaportError):
    """Input is malformed (archive, manifest, config, bundle, patch)."""

    exit_code = 3


class TruncatedError(FormatError):
    """Input ends before its declared size."""


class UnsupportedVersionError(FormatError):
    """Input uses a format version newer than this reader understands."""


class IntegrityError(DeltaportError):
    """Content does not hash to the digest it is named by. Never retried."""

    exit_code = 4


class SignatureError(IntegrityError):
    """A bundle is unsigned, wrongly signed, or signed by an untrusted key."""


class TransferError(DeltaportError):
    """The network failed: refused, reset, timed out. Transient; may be resumed."""

    exit_code = 5
    transient = True


class RegistryError(TransferError):
    """A registry answered with an error status: transient only for none, 429 or 5xx."""

    exit_code = 6

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.transient = status is None or transient_status(status)


class AuthError(RegistryError):
    """The registry refused our credentials (or we have none)."""


class NotFoundError(RegistryError):
    """The registry does not know the manifest, blob or tag."""


class ImageNotFoundError(DeltaportError):
    """The image, tag or platform is not in the archive or layout."""

    exit_code = 7


class MissingSourceError(DeltaportError):
    """A patch needs source layers (named by diff_id) that are not available."""

    exit_code = 8

    def __init__(self, message: str, missing: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = list(missing or [])


class StorageError(DeltaportError):
    """Local storage failed: disk full, unwritable, missing file."""

    exit_code = 9


class StateError(DeltaportError):
    """Fleet state: an illegal transition or a conflict (unknown objects: the subclass)."""

    exit_code = 10


class AccessError(DeltaportError):
    """A hub caller's token is missing or unknown (401), or does not cover the object (403)."""

    exit_code = 11

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class UnknownObjectError(StateError):
    """The fleet has no such object: device, registered image or deployment set.

    A StateError, so callers catching StateError still catch it; the hub answers it
    404, where any other StateError (an illegal change) is 409.
    """


class PlainHttpError(TransferError):
    """An https request was answered in plain HTTP: the server does not speak TLS.

    Not transient: the user must say the registry is plain HTTP (--insecure).
    """

    transient = False


class UntrustedCertificateError(TransferError):
    """A registry's TLS certificate does not verify against the trusted CAs.

    Not transient: retrying cannot help; the user must add the CA (--ca-file) or
    choose --insecure.
    """

    transient = False


class InstallationError(DeltaportError):
    """deltaport's own installation is broken: a pinned component is missing or wrong.

    E.g. the zlib 1.3.2 that re-gzips ``.gz`` files exactly (cmeel-zlib) is absent or
    another release. Never retried, never worked around with another library: the
    fix is to reinstall deltaport. Its own branch (not a StateError: the fleet is fine);
    the hub answers it 500, as its own fault that no retry mends.
    """

    exit_code = 12


class HubError(DeltaportError):
    """The hub refused a request for good with STATUS (410 gone, an unexpected 4xx).

    Distinct from :class:`RegistryError` (a registry's answer) and from
    :class:`TransferError` (the link or a 5xx: retried). Refusals the tree names
    better are raised as those: 401/403 AccessError, 404 UnknownObjectError, 409
    StateError, 400/413/422 FormatError (see :func:`deltaport.httperrors.error_for_status`).
    """

    exit_code = 13

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient_status(status)
