"""Every error deltaport raises on purpose, grouped by where it comes from.

Callers catch by source: an integrity failure is never retried, a transfer failure
may be resumed, a format error means the input itself is bad. The CLI maps each
class to its exit code, so scripts can tell failures apart::

    DeltaportError                      exit 1   base of everything below
    ├── UsageError                      exit 2   bad arguments, unparsable image reference
    ├── FormatError                     exit 3   malformed input: archive, manifest, bundle
    │   ├── TruncatedError              exit 3   input ends before its declared size
    │   └── UnsupportedVersionError     exit 3   a format version newer than this reader
    ├── IntegrityError                  exit 4   content does not hash to its digest
    │   └── SignatureError              exit 4   bundle unsigned, wrongly signed, untrusted key
    ├── TransferError                   exit 5   network: connection refused/reset, timeout
    │   ├── UntrustedCertificateError   exit 5   a registry's TLS certificate is not trusted
    │   └── RegistryError               exit 6   a registry answered with an error status
    │       ├── AuthError               exit 6   credentials refused
    │       └── NotFoundError           exit 6   manifest, blob or tag unknown to the registry
    ├── ImageNotFoundError              exit 7   image/tag/platform absent from an archive or layout
    ├── MissingSourceError              exit 8   a patch needs source layers the device lacks
    ├── StorageError                    exit 9   local disk: full, unwritable, missing file
    ├── StateError                      exit 10  fleet state: illegal transition, conflict
    │   ├── UnknownObjectError          exit 10  no such device, image or deployment set
    │   └── InstallationError           exit 10  deltaport's own install is broken (pinned zlib)
    └── AccessError                     exit 11  hub: token missing/unknown (401), refused (403)

Other libraries' exceptions are translated at the adapter that calls them
(``raise ... from exc``), never leaked to callers.
"""

from __future__ import annotations


class DeltaportError(Exception):
    """Base class: something deltaport understood and can explain."""

    exit_code = 1


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


class RegistryError(TransferError):
    """A registry answered with an error status."""

    exit_code = 6

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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


class UntrustedCertificateError(TransferError):
    """A registry's TLS certificate does not verify against the trusted CAs.

    Not transient: retrying cannot help; the user must add the CA (--ca-file) or
    choose --insecure.
    """


class InstallationError(StateError):
    """deltaport's own installation is broken: a pinned component is missing or wrong.

    E.g. the zlib 1.3.2 that re-gzips ``.gz`` files exactly (cmeel-zlib) is absent or
    another release. Never retried, never worked around with another library: the
    fix is to reinstall deltaport.
    """
