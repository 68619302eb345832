"""The tar scanner agrees with tarfile; the header transform is a bijection."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from deltaport.delta.tarscan import (
    common_mtime_field,
    header_chunk_info,
    scan_tar,
    transform_headers,
)
from tests.delta.layers import FORMATS, Member, write_layer


@settings(max_examples=200, deadline=None)
@given(chunk=st.binary(max_size=3000), mtime=st.binary(min_size=12, max_size=12))
def test_header_transform_round_trips_any_bytes(chunk: bytes, mtime: bytes) -> None:
    assert transform_headers(transform_headers(chunk, mtime), mtime, restore=True) == chunk


def test_scan_matches_tarfile_and_zeroes_common_fields(tmp_path: Path) -> None:
    members = [
        Member("d", "dir"),
        Member("d/" + "x" * 150, "file", b"abc"),
        Member("d/é", "file", b"", pax=(("comment", "c"),)),
        Member("d/s", "symlink", link="y" * 120),
    ]
    for fmt in FORMATS:
        path = tmp_path / f"{fmt}.tar"
        write_layer(path, members, fmt)
        data = path.read_bytes()
        layout = scan_tar(io.BytesIO(data), len(data))
        with tarfile.open(path) as tf:
            infos = tf.getmembers()
        assert [e.path for e in layout.entries] == [i.name.strip("/") for i in infos]
        assert [e.data_len for e in layout.entries] == [i.size if i.isreg() else 0 for i in infos]
        assert [e.linkname for e in layout.entries] == [i.linkname for i in infos]
        mtime = common_mtime_field(layout)
        for e in layout.entries:
            run = data[e.header_offset : e.data_offset]
            assert header_chunk_info(run) == (e.path, e.data_len)
            main = transform_headers(run, mtime)[-512:]
            assert main[136:156] == bytes(20)  # mtime and checksum fields vanish
