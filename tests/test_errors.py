"""The error tree: sources apart, permanence explicit, one HTTP status -> error mapping."""

from __future__ import annotations

import pytest

from deltaport import errors
from deltaport.errors import (
    AccessError,
    DeltaportError,
    FormatError,
    HubError,
    InstallationError,
    NotFoundError,
    RegistryError,
    StateError,
    TransferError,
    UnknownObjectError,
    UntrustedCertificateError,
)
from deltaport.httperrors import error_for_status, is_transient_status


def test_a_broken_installation_is_not_a_fleet_state_error() -> None:
    broken = InstallationError("pinned zlib missing")
    assert not isinstance(broken, StateError)
    assert broken.exit_code not in {cls.exit_code for cls in (StateError, DeltaportError)}
    assert not broken.transient


def test_exit_codes_tell_the_sources_apart() -> None:
    codes = {cls.__name__: cls.exit_code for cls in (
        errors.UsageError, FormatError, errors.IntegrityError, TransferError, RegistryError,
        errors.ImageNotFoundError, errors.MissingSourceError, errors.StorageError, StateError,
        AccessError, InstallationError, HubError)}
    assert len(set(codes.values())) == len(codes), codes


def test_permanence_is_an_attribute_not_a_parent_class() -> None:
    assert TransferError("reset").transient
    assert not UntrustedCertificateError("self-signed").transient
    assert RegistryError("boom", 503).transient and RegistryError("down").transient
    assert not RegistryError("refused", 400).transient
    assert not errors.AuthError("no", 401).transient
    assert not NotFoundError("no such blob", 404).transient
    assert RegistryError("slow down", 429).transient
    assert not FormatError("bad").transient and not AccessError("no").transient
    assert not HubError("gone", 410).transient


@pytest.mark.parametrize(("status", "cls", "transient"), [
    (400, FormatError, False), (401, AccessError, False), (403, AccessError, False),
    (404, UnknownObjectError, False), (409, StateError, False), (410, HubError, False),
    (413, FormatError, False), (422, FormatError, False), (418, HubError, False),
    (429, TransferError, True), (500, TransferError, True), (502, TransferError, True),
    (503, TransferError, True), (504, TransferError, True), (599, TransferError, True),
])
def test_one_mapping_from_http_status_to_error(status: int, cls: type, transient: bool) -> None:
    exc = error_for_status(status, f"GET /x: {status}")
    assert type(exc) is cls
    assert exc.transient is transient
    assert is_transient_status(status) is transient
    assert str(status) in str(exc)
    if isinstance(exc, AccessError | HubError):
        assert exc.status == status


def test_a_permanent_hub_refusal_is_not_a_transfer_error() -> None:
    """A 4xx from the hub must not be caught as 'network failed, will retry'."""
    for status in (400, 401, 403, 404, 409, 410, 422):
        assert not isinstance(error_for_status(status, "x"), TransferError)


def test_the_hub_answers_a_broken_install_500_not_409() -> None:
    from deltaport.hub.errors import status_for

    assert status_for(InstallationError("pinned zlib missing")) == 500
    assert status_for(StateError("illegal")) == 409
    assert status_for(HubError("gone", 410)) == 410


def test_status_and_mapping_round_trip_for_the_named_refusals() -> None:
    """hub.errors (error -> status) and httperrors (status -> error) agree."""
    from deltaport.hub.errors import status_for

    for exc in (FormatError("x"), AccessError("x", 403), UnknownObjectError("x"),
                StateError("x"), HubError("x", 410)):
        assert type(error_for_status(status_for(exc), "w")) is type(exc)


def test_the_operator_client_maps_an_unnamed_answer_by_the_one_mapping() -> None:
    from deltaport.hub.client import error_from_answer

    gone = error_from_answer(410, None, "GET /x")
    assert type(gone) is HubError and gone.status == 410 and not gone.transient
    assert type(error_from_answer(429, None, "GET /x")) is TransferError  # busy: retry
    assert type(error_from_answer(409, "not json", "GET /x")) is StateError
    named = error_from_answer(410, {"error": "HubError", "message": "gone"}, "GET /x")
    assert type(named) is HubError and named.status == 410
    refused = error_from_answer(400, {"error": "RegistryError", "message": "no"}, "POST /i")
    assert isinstance(refused, RegistryError) and not refused.transient


def test_the_activation_retries_an_engine_error_by_its_own_transience() -> None:
    """A 429 from the engine may pass (retried); an untrusted certificate never does."""
    from deltaport.agent.runtime.activation import _transient

    assert _transient(RegistryError("engine: too many requests", 429))
    assert _transient(RegistryError("engine: 500", 500)) and _transient(TransferError("reset"))
    assert not _transient(UntrustedCertificateError("engine certificate not trusted"))
    assert not _transient(RegistryError("engine refused the create body", 400))
