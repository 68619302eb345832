"""The bundle index: its data model, canonical JSON encoding and strict parsing.

Pure: bytes in, values out. The index is the only authority on what a bundle holds:
the payload is the members' bytes back to back, with no framing of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deltaport.bundle.format import (
    DIGEST_RE,
    FORMAT_VERSION,
    INDEX_FIELDS,
    MAX_EXPIRES_AT,
    MAX_RELEASE_VERSION,
    MEMBER_FIELDS,
    MIN_CHUNK_SIZE,
    MIN_FORMAT_VERSION,
    OPTIONAL_INDEX_FIELDS,
    RELEASE_FIELDS,
    BundleLimits,
    chunk_count,
    media_type_problem,
    member_name_problem,
)
from deltaport.errors import FormatError, UnsupportedVersionError


@dataclass(frozen=True)
class MemberInfo:
    """One member of a bundle: where its data sits in the payload and what it hashes to.

    ``offset`` is the position of the member's first data byte relative to the start of
    the payload region (see :class:`BundleIndex`), not to the start of the file.
    """

    name: str
    offset: int
    size: int
    digest: str  # "sha256:<hex>" of the member's data
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Release:
    """The signed release of a bundle: what an agent needs to refuse a replay.

    ``version`` increases with every bundle the signer issues for the same target
    name (the hub keeps the counter); ``expires_at`` is in Unix seconds (UTC).
    """

    version: int
    expires_at: int

    def __post_init__(self) -> None:
        if not 1 <= self.version <= MAX_RELEASE_VERSION:
            raise FormatError(f"bundle release version must be in [1, {MAX_RELEASE_VERSION}]")
        if not 0 <= self.expires_at <= MAX_EXPIRES_AT:
            raise FormatError(f"bundle release expires_at must be in [0, {MAX_EXPIRES_AT}]")


@dataclass(frozen=True)
class BundleIndex:
    """A parsed, checked bundle index, plus what the head around it established.

    ``payload_offset`` (where the payload region starts in the file), ``bundle_size``,
    ``index_digest`` and ``signer_key_id`` are not fields of the index: they come from
    the head that carried it. ``signer_key_id`` is the id of the trusted key whose
    signature verified, or None when no trusted key was given (or none was required).
    ``content`` is the free-form object the delta engine stored; treat it as read-only.
    """

    format_version: int
    content: Mapping[str, Any]
    members: tuple[MemberInfo, ...]
    chunk_size: int
    chunk_digests: tuple[str, ...]
    payload_offset: int
    payload_size: int
    index_digest: str
    signer_key_id: str | None = None
    release: Release | None = None  # None: a version-2 bundle, or one built without it
    trust_domain: str | None = None  # set when a keyring's certified key signed (docs/trust.md)

    @property
    def bundle_size(self) -> int:
        """Size in bytes of the whole bundle file."""
        return self.payload_offset + self.payload_size

    @property
    def chunk_count(self) -> int:
        """Number of payload chunks (and of entries in ``chunk_digests``)."""
        return len(self.chunk_digests)

    def member(self, name: str) -> MemberInfo:
        """The member called ``name``.

        Raises:
            FormatError: the bundle has no such member.
        """
        for info in self.members:
            if info.name == name:
                return info
        raise FormatError(f"bundle has no member {name!r}")

    def chunk_range(self, chunk_no: int) -> tuple[int, int]:
        """File offsets ``[start, end)`` of payload chunk ``chunk_no`` (for Range requests).

        Raises:
            FormatError: ``chunk_no`` is not a chunk of this bundle.
        """
        if not 0 <= chunk_no < self.chunk_count:
            raise FormatError(f"bundle has no chunk {chunk_no} (it has {self.chunk_count})")
        start = chunk_no * self.chunk_size
        end = min(start + self.chunk_size, self.payload_size)
        return self.payload_offset + start, self.payload_offset + end

    def members_in_range(self, start: int, end: int) -> tuple[str, ...]:
        """Names of members with data in payload bytes ``[start, end)`` (for messages)."""
        return tuple(m.name for m in self.members if m.offset < end and m.offset + m.size > start)


def member_data_offsets(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Where each member's data starts in the payload, and the payload's total size.

    The payload is the members' data back to back, in index order.
    """
    offsets: list[int] = []
    pos = 0
    for size in sizes:
        offsets.append(pos)
        pos += size
    return offsets, pos


def encode_index(
    *,
    chunk_size: int,
    payload_size: int,
    chunk_digests: Sequence[str],
    members: Sequence[MemberInfo],
    content: Mapping[str, Any],
    release: Release | None = None,
) -> bytes:
    """Canonical index JSON bytes: sorted keys, no whitespace, ASCII only.

    The bundle stores them zstd-compressed (``head.encode_index_bytes``).

    Raises:
        FormatError: ``content`` is not JSON data (sets, bytes, NaN, objects...).
    """
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "chunk_size": chunk_size,
        "payload_size": payload_size,
        "chunk_digests": list(chunk_digests),
        "members": [
            {
                "name": m.name,
                "offset": m.offset,
                "size": m.size,
                "digest": m.digest,
                "media_type": m.media_type,
            }
            for m in members
        ],
        "content": content,
    }
    if release is not None:
        document["release"] = {"version": release.version, "expires_at": release.expires_at}
    try:
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise FormatError(f"bundle content is not JSON data: {exc}") from exc
    return text.encode("ascii")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise FormatError("bundle index has a duplicate key in an object")
    return result


def _reject_constant(name: str) -> Any:
    raise FormatError(f"bundle index contains {name}, which is not JSON")


def loads_strict(data: bytes, what: str) -> Any:
    """Parse JSON that must be UTF-8, free of duplicate keys and of NaN/Infinity.

    Raises:
        FormatError: anything else (including nesting too deep for the parser).
    """
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise FormatError(f"bundle {what} is not valid JSON: {exc}") from exc


def _int_field(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FormatError(f"bundle index field {field} must be an integer in [{low}, {high}]")
    return int(value)


def _check_fields(obj: Any, expected: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise FormatError(f"bundle {what} must be a JSON object")
    if obj.keys() != expected:
        missing = sorted(expected - obj.keys())
        unknown = sorted(obj.keys() - expected)
        raise FormatError(f"bundle {what} fields wrong: missing {missing}, unknown {unknown}")
    return obj


def check_format_version(document: Any) -> int:
    """The index's format version, refusing versions this reader does not know.

    Raises:
        UnsupportedVersionError: a newer version than :data:`FORMAT_VERSION`.
        FormatError: no usable version field.
    """
    version = document.get("format_version") if isinstance(document, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError("bundle index has no integer format_version")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"bundle format version {version} is newer than this deltaport reads "
            f"(up to {FORMAT_VERSION}); upgrade deltaport to read it"
        )
    if version < MIN_FORMAT_VERSION:
        raise FormatError(
            f"bundle format version {version} in the index is not one this deltaport reads"
        )
    return int(version)


def _parse_release(value: Any) -> Release:
    entry = _check_fields(value, RELEASE_FIELDS, "release")
    version = _int_field(entry["version"], "release.version", 1, MAX_RELEASE_VERSION)
    expires = _int_field(entry["expires_at"], "release.expires_at", 0, MAX_EXPIRES_AT)
    return Release(version, expires)


def _parse_member(obj: Any, limits: BundleLimits) -> MemberInfo:
    entry = _check_fields(obj, MEMBER_FIELDS, "member entry")
    name, digest, media_type = entry["name"], entry["digest"], entry["media_type"]
    if not isinstance(name, str):
        raise FormatError("bundle member name must be a string")
    problem = member_name_problem(name, limits.max_member_name_length)
    if problem:
        raise FormatError(f"bundle member name {name[:120]!r} is invalid: {problem}")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise FormatError(f"bundle member {name!r} has an invalid digest")
    if not isinstance(media_type, str) or media_type_problem(media_type):
        raise FormatError(f"bundle member {name!r} has an invalid media type")
    size = _int_field(entry["size"], f"members[{name}].size", 0, limits.max_bundle_size)
    offset = _int_field(entry["offset"], f"members[{name}].offset", 0, limits.max_bundle_size)
    return MemberInfo(name, offset, size, digest, media_type)


def _parse_members(value: Any, limits: BundleLimits) -> tuple[MemberInfo, ...]:
    if not isinstance(value, list):
        raise FormatError("bundle index field members must be a list")
    if len(value) > limits.max_members:
        raise FormatError(
            f"bundle has {len(value)} members, over the limit of {limits.max_members}"
        )
    members = tuple(_parse_member(obj, limits) for obj in value)
    if len({m.name for m in members}) != len(members):
        raise FormatError("bundle has two members with the same name")
    return members


def _check_layout(members: Sequence[MemberInfo], payload_size: int) -> None:
    """The offsets and payload size must be exactly those of members back to back."""
    offsets, expected_size = member_data_offsets([m.size for m in members])
    for member, offset in zip(members, offsets, strict=True):
        if member.offset != offset:
            raise FormatError(
                f"bundle member {member.name!r} is at offset {member.offset}, "
                f"the members before it end at {offset}"
            )
    if payload_size != expected_size:
        raise FormatError(
            f"bundle payload_size is {payload_size}, its members make {expected_size}"
        )


def _parse_chunk_digests(value: Any, expected: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) != expected:
        raise FormatError(f"bundle index must list exactly {expected} chunk digests")
    for digest in value:
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
            raise FormatError("bundle index has an invalid chunk digest")
    return tuple(value)


def parse_index(
    data: bytes,
    *,
    payload_offset: int,
    index_digest: str,
    signer_key_id: str | None,
    limits: BundleLimits,
) -> BundleIndex:
    """Parse and check the index JSON (already size-bounded and, if required, verified).

    Raises:
        UnsupportedVersionError: a newer format version.
        FormatError: anything malformed or inconsistent with the payload layout.
    """
    document = loads_strict(data, "index")
    version = check_format_version(document)
    allowed = INDEX_FIELDS | (OPTIONAL_INDEX_FIELDS if version >= 3 else frozenset())
    present = frozenset(document) & allowed | INDEX_FIELDS
    fields = _check_fields(document, present, "index")
    release = _parse_release(fields["release"]) if "release" in fields else None
    chunk_size = _int_field(
        fields["chunk_size"], "chunk_size", MIN_CHUNK_SIZE, limits.max_chunk_size
    )
    payload_size = _int_field(
        fields["payload_size"], "payload_size", 0, limits.max_bundle_size
    )
    if payload_offset + payload_size > limits.max_bundle_size:
        raise FormatError(f"bundle would be larger than the limit of {limits.max_bundle_size}")
    members = _parse_members(fields["members"], limits)
    _check_layout(members, payload_size)
    chunks = _parse_chunk_digests(fields["chunk_digests"], chunk_count(payload_size, chunk_size))
    content = fields["content"]
    if not isinstance(content, dict):
        raise FormatError("bundle index field content must be a JSON object")
    return BundleIndex(
        format_version=version,
        content=content,
        members=members,
        chunk_size=chunk_size,
        chunk_digests=chunks,
        payload_offset=payload_offset,
        payload_size=payload_size,
        index_digest=index_digest,
        signer_key_id=signer_key_id,
        release=release,
    )
