"""Layer / image signatures and the pure size estimate used for ranking."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from deltaport.delta import (
    ImageSignature,
    SignatureLimits,
    dump_image_signature,
    estimate_patch_size,
    layer_signature,
    load_image_signature,
)
from deltaport.errors import FormatError, UnsupportedVersionError
from tests.delta.layers import Member, write_layer


def _sig(tmp_path: Path, name: str, members: list[Member]):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    diff_id = write_layer(path, members, tarfile.PAX_FORMAT)
    with open(path, "rb") as f:
        return layer_signature(f, diff_id)


def test_layer_signature_lists_members(tmp_path: Path) -> None:
    sig = _sig(tmp_path, "a.tar", [Member("etc", "dir"), Member("./etc/a", "file", b"x" * 10),
                                   Member("etc/l", "symlink", link="a")])
    assert sig.size == (tmp_path / "a.tar").stat().st_size
    by_path = {f.path: f for f in sig.files}
    assert by_path["etc/a"].size == 10 and by_path["etc/a"].type == "file"
    assert by_path["etc/a"].sha256 == hashlib.sha256(b"x" * 10).hexdigest()
    assert by_path["etc/l"].link == "a" and by_path["etc/l"].sha256 is None


def test_estimate_ranks_the_closer_source_first(tmp_path: Path) -> None:
    body = [Member(f"lib/f{i}", "file", bytes([i]) * 5000) for i in range(20)]
    target = _sig(tmp_path, "t.tar", [*body, Member("app/main.js", "file", b"v2" * 4000)])
    close = _sig(tmp_path, "c.tar", [*body, Member("app/main.js", "file", b"v1" * 4000)])
    far = _sig(tmp_path, "f.tar", [Member("other", "file", b"z" * 100)])
    assert estimate_patch_size([target], [target]).bytes == 0
    e_close = estimate_patch_size([target], [close])
    e_far = estimate_patch_size([target], [far])
    assert 0 < e_close.bytes < e_far.bytes <= 0.5 * target.size
    assert e_far.target_size == target.size


def test_image_signature_round_trip_and_limits(tmp_path: Path) -> None:
    layer = _sig(tmp_path, "a.tar", [Member("é/long" * 30, "file", b"data")])
    image = ImageSignature("app:v1", "sha256:" + "0" * 64, (layer,))
    buf = io.BytesIO()
    dump_image_signature(image, buf)
    assert load_image_signature(io.BytesIO(buf.getvalue())) == image
    with pytest.raises(FormatError):
        load_image_signature(io.BytesIO(buf.getvalue()), SignatureLimits(max_files=0))
    with pytest.raises(FormatError):
        load_image_signature(io.BytesIO(buf.getvalue()[:-3]))
    newer = zstandard.ZstdCompressor().compress(
        b'{"kind":"deltaport.image-signature","version":2,"image":{},"layers":[]}'
    )
    with pytest.raises(UnsupportedVersionError):
        load_image_signature(io.BytesIO(newer))
    with pytest.raises(FormatError):
        layer_signature(io.BytesIO(b"garbage" * 100), "sha256:x")
