"""One exception handler: every DeltaportError becomes an HTTP status and a JSON body.

The body is ``{"error": "<class name>", "message": "…"}``; the class name is one of
``deltaport.errors``, so :mod:`deltaport.hub.client` raises the same class on the
other side and a remote CLI exits with the same code as a local one.

An unknown object (:class:`~deltaport.errors.UnknownObjectError`: device, image,
deployment set) is answered 404, any other StateError (an illegal change, a
conflict) 409 — by class, never by message text (see :func:`status_for`). A broken
installation of deltaport itself (:class:`~deltaport.errors.InstallationError`) is 500:
the hub's own fault, which no retry by the caller mends. :mod:`deltaport.httperrors`
maps back from status to class; the two agree on the classes both name.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from deltaport.errors import (
    AccessError,
    DeltaportError,
    FormatError,
    HubError,
    ImageNotFoundError,
    InstallationError,
    IntegrityError,
    MissingSourceError,
    NotFoundError,
    StateError,
    StorageError,
    TransferError,
    UnknownObjectError,
    UsageError,
)

log = logging.getLogger(__name__)

STATUS_BY_CLASS: dict[type[DeltaportError], int] = {
    UsageError: 400,
    FormatError: 422,
    IntegrityError: 422,
    NotFoundError: 404,  # a registry does not know an image being registered
    ImageNotFoundError: 404,
    TransferError: 502,  # the cloud registry or SMTP server failed us
    MissingSourceError: 409,
    StorageError: 503,  # database locked or gone, store unwritable: try again later
    UnknownObjectError: 404,  # no such device, image or deployment set
    StateError: 409,  # an illegal change or a conflict
    InstallationError: 500,  # deltaport's own install is broken (pinned zlib): reinstall
    DeltaportError: 500,
}
"""Most specific class first is not needed: the handler walks the exception's MRO."""


def status_for(exc: DeltaportError) -> int:
    """The HTTP status for EXC: by class (its MRO), see the module docstring."""
    if isinstance(exc, AccessError | HubError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_CLASS:
            return STATUS_BY_CLASS[cls]
    return 500


class ErrorCode(StrEnum):
    """Machine-readable ``code`` an error body may carry beyond its class name."""

    BUNDLE_MISSING = "bundle_missing"  # 410: the stored bundle file is gone for good


def error_body(kind: str, message: str) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": kind, "message": message}


async def deltaport_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Answer a DeltaportError with its status and ``{"error", "message"}``."""
    assert isinstance(exc, DeltaportError)
    status = status_for(exc)
    if status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(type(exc).__name__, str(exc)), status, headers=headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Malformed query or path parameters: 422 in the same shape as every other error."""
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    )
    return JSONResponse(error_body("FormatError", details or "invalid request"), 422)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) in the same shape."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        error_body("HTTPError", str(exc.detail)), exc.status_code, headers=exc.headers
    )


def install(app: FastAPI) -> None:
    """Register the handlers on APP."""
    app.add_exception_handler(DeltaportError, deltaport_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
