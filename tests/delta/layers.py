"""Generated tar layers for the delta engine tests (tarfile writes them; bytes vary)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import strategies as st

FORMATS = (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT)


@dataclass(frozen=True)
class Member:
    """One member of a generated layer."""

    name: str
    kind: str  # file, dir, symlink, hardlink
    data: bytes = b""
    mtime: int = 1_700_000_000
    link: str = ""
    pax: tuple[tuple[str, str], ...] = ()


def write_layer(path: Path, members: list[Member], fmt: int, trailer: bytes = b"") -> str:
    """Write members as a tar at path; returns its diff_id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mtime = m.mtime
            info.pax_headers = dict(m.pax)
            if m.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            elif m.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = m.link
                tf.addfile(info)
            elif m.kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = m.link
                tf.addfile(info)
            else:
                info.size = len(m.data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(m.data))
    data = buf.getvalue() + trailer
    path.write_bytes(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


_names = st.text(alphabet="abcdefgh0123456789._-", min_size=1, max_size=12)
_long = st.text(alphabet="abcxyz/é", min_size=101, max_size=160).map(
    lambda s: "long/" + s.replace("//", "/").strip("/") + "x"
)


def _content() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=700),
        st.just(b""),
        st.integers(0, 3000).map(lambda n: b"line %d of text\n" * n),
        st.tuples(st.binary(max_size=64), st.integers(0, 200_000)).map(
            lambda t: t[0] + bytes(t[1]) + t[0]
        ),
    )


@st.composite
def trees(draw: st.DrawFn) -> list[Member]:
    """A random source layer: dirs, files, long names, symlinks, hard links, PAX records."""
    members: list[Member] = [Member("etc", "dir")]
    seen = {"etc"}
    for _ in range(draw(st.integers(1, 12))):
        name = draw(st.one_of(_names.map(lambda n: "etc/" + n), _long))
        if name in seen:
            continue
        seen.add(name)
        pax = draw(st.sampled_from([(), (("comment", "héllo wörld"),)]))
        members.append(Member(name, "file", draw(_content()), pax=pax))
    files = [m for m in members if m.kind == "file"]
    if bool(files) and draw(st.booleans()):
        members.append(Member("etc/hard", "hardlink", link=files[0].name))
    if draw(st.booleans()):
        members.append(Member("etc/sym", "symlink", link="../" + "t" * draw(st.integers(1, 150))))
    return members


def _edit_bytes(data: bytes, pos: int, insert: bytes) -> bytes:
    pos = pos % (len(data) + 1)
    return data[:pos] + insert + data[pos + len(insert) // 2 :]


@st.composite
def edits(draw: st.DrawFn, members: list[Member]) -> list[Member]:
    """A target made from a source: content edits, version-bump renames, new files, mtimes."""
    mtime = draw(st.sampled_from([1_700_000_000, 1_800_000_000]))
    out: list[Member] = []
    for m in members:
        action = draw(st.sampled_from(["keep", "keep", "edit", "rename", "drop"]))
        m = replace(m, mtime=mtime)
        if m.kind == "file" and action == "edit":
            insert = draw(st.binary(max_size=40))
            m = replace(m, data=_edit_bytes(m.data, draw(st.integers(0, 10**6)), insert))
        elif m.kind == "file" and action == "rename" and not m.name.startswith("long/"):
            m = replace(m, name=m.name + ".2")
        elif action == "drop" and m.kind == "file" and not any(x.link == m.name for x in members):
            continue
        out.append(m)
    if draw(st.booleans()):
        out.append(Member("etc/new-" + draw(_names), "file", draw(_content())))
    if draw(st.booleans()):
        out.reverse()  # rebuilt layers come in another order
        out.sort(key=lambda m: m.kind == "hardlink")  # hard links after their target
    return out
