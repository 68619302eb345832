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
from deltaport.delta.signature import content_kind
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


def test_estimate_pays_once_for_a_file_the_image_holds_twice(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 400
    one = _sig(tmp_path, "one.tar", [Member("a/x.js", "file", blob)])
    two = _sig(tmp_path, "two.tar", [Member("b/y.js", "file", blob)])
    alone = estimate_patch_size([one], []).bytes
    assert estimate_patch_size([one, two], []).bytes < alone + 20  # the copy costs an op


def test_same_size_change_is_cheap_except_in_code(tmp_path: Path) -> None:
    """A .pyc rebuilt with a new timestamp keeps its size and costs bytes, not a fraction
    of itself; a rebuilt shared object of the same size is still code that moved."""
    old = bytes(range(256)) * 200
    new = b"\x01" + old[1:]
    for path, cheap in (("lib/m.cpython-311.pyc", True), ("lib/libx.so.1", False)):
        base = _sig(tmp_path, f"b-{cheap}.tar", [Member(path, "file", old)])
        target = _sig(tmp_path, f"t-{cheap}.tar", [Member(path, "file", new)])
        resized = _sig(tmp_path, f"r-{cheap}.tar", [Member(path, "file", new + b"tail")])
        same = estimate_patch_size([target], [base]).bytes
        other = estimate_patch_size([resized], [base]).bytes
        assert (same < other / 10) is cheap, (path, same, other)


@pytest.mark.parametrize(("path", "kind"), [
    ("usr/lib/python3/dist-packages/yaml/_yaml.cpython-311-x86_64-linux-gnu.so", "code"),
    ("usr/lib/x86_64-linux-gnu/libssl.so.3", "code"),
    ("usr/bin/python3.11", "code"),
    ("app/node_modules/x/index.js", "text"),
    ("app/__pycache__/m.cpython-311.pyc", "bytecode"),
    ("usr/share/doc/x/changelog.Debian.gz", "compressed"),
    ("etc/machine-id", "other"),
])
def test_content_kind_from_the_path(path: str, kind: str) -> None:
    assert content_kind(path) == kind
