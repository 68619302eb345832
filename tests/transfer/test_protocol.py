"""HTTP rules of ranged downloads: status classes, Range/Content-Range, Retry-After."""

from __future__ import annotations

import pytest

from deltaport.errors import AuthError, FormatError, NotFoundError, RegistryError
from deltaport.transfer.protocol import (
    ContentRange,
    StatusKind,
    classify_status,
    parse_content_range,
    range_header,
    retry_after_seconds,
    status_error,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (206, StatusKind.PARTIAL),
        (200, StatusKind.WHOLE),
        (416, StatusKind.UNSATISFIABLE),
        (429, StatusKind.TRANSIENT),
        (408, StatusKind.TRANSIENT),
        (500, StatusKind.TRANSIENT),
        (503, StatusKind.TRANSIENT),
        (599, StatusKind.TRANSIENT),
        (501, StatusKind.FATAL),
        (401, StatusKind.FATAL),
        (403, StatusKind.FATAL),
        (404, StatusKind.FATAL),
        (302, StatusKind.FATAL),
    ],
)
def test_classify_status(status: int, kind: StatusKind) -> None:
    assert classify_status(status) is kind


def test_status_errors_say_what_to_do() -> None:
    auth = status_error(401, "Unauthorized", "http://hub/b")
    assert isinstance(auth, AuthError) and auth.status == 401 and "credentials" in str(auth)
    assert isinstance(status_error(403, "Forbidden", "u"), AuthError)
    missing = status_error(404, "Not Found", "http://hub/b")
    assert isinstance(missing, NotFoundError)
    assert "http://hub/b" in str(missing) and "does not have this file" in str(missing)
    other = status_error(400, "Bad Request", "u")
    assert type(other) is RegistryError and other.status == 400


def test_range_header() -> None:
    assert range_header(0, 10) == "bytes=0-9"
    assert range_header(5, None) == "bytes=5-"
    with pytest.raises(ValueError):
        range_header(5, 5)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 0-9/10", ContentRange(0, 9, 10)),
        ("bytes 5-9/*", ContentRange(5, 9, None)),
        ("bytes */1000", ContentRange(None, None, 1000)),
        (" bytes 0-0/1 ", ContentRange(0, 0, 1)),
    ],
)
def test_parse_content_range(value: str, parsed: ContentRange) -> None:
    assert parse_content_range(value) == parsed


@pytest.mark.parametrize(
    "value",
    ["bytes 9-0/10", "bytes 0-10/10", "items 0-1/2", "bytes */*", "bytes 0-1", "bytes -1-2/5",
     "bytes 0-1/" + "9" * 300],
)
def test_parse_content_range_rejects(value: str) -> None:
    with pytest.raises(FormatError):
        parse_content_range(value)


def test_retry_after() -> None:
    assert retry_after_seconds("3", 60) == 3.0
    assert retry_after_seconds("3600", 60) == 60.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 60) is None
    assert retry_after_seconds(None, 60) is None
