"""Settings (data dir, db URL, SMTP from config.toml) and the folder bundle store."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltaport.config import load_settings, normalize_db_url, resolve_data_dir
from deltaport.errors import FormatError, StorageError, UsageError
from deltaport.fleet.queries import parse_labels, parse_link_rate
from deltaport.storage.folder import FolderStore


def test_data_dir_precedence(tmp_path: Path) -> None:
    env = {"DELTAPORT_HOME": str(tmp_path / "env"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert resolve_data_dir(tmp_path / "opt", env) == tmp_path / "opt"
    assert resolve_data_dir(None, env) == tmp_path / "env"
    assert resolve_data_dir(None, {"XDG_DATA_HOME": str(tmp_path / "xdg")}) == (
        tmp_path / "xdg" / "deltaport"
    )


def test_defaults_and_config_file(tmp_path: Path) -> None:
    s = load_settings(tmp_path, env={})
    assert s.db_url == f"sqlite:///{tmp_path / 'deltaport.db'}" and s.smtp is None
    assert s.store_dir == tmp_path / "outbox"
    (tmp_path / "config.toml").write_text(
        'db = "postgresql://u@h/db"\n[smtp]\nhost = "mail"\nport = 465\nsecurity = "tls"\n'
        'username = "u"\npassword = "hunter2"\nsender = "dp@x"\n'
    )
    s = load_settings(tmp_path, env={})
    assert s.db_url == "postgresql+psycopg://u@h/db"
    assert s.smtp is not None and (s.smtp.host, s.smtp.port, s.smtp.security) == (
        "mail",
        465,
        "tls",
    )
    assert s.smtp.password == "hunter2" and "hunter2" not in repr(s)  # password kept, not shown
    assert load_settings(tmp_path, "sqlite:///x.db", env={}).db_url == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("db = ", "not valid TOML"),
        ("db = 3", "must be a string"),
        ("[smtp]\nport = 0", "smtp.port"),
        ('[smtp]\nsecurity = "ssl"', "smtp.security"),
        ("smtp = 1", "must be a table"),
    ],
)
def test_bad_config(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(FormatError, match=match):
        load_settings(tmp_path, env={})


def test_normalize_db_url() -> None:
    assert normalize_db_url("postgres://a/b") == "postgresql+psycopg://a/b"
    assert normalize_db_url("sqlite:///x") == "sqlite:///x"


def test_link_rates_and_labels() -> None:
    assert parse_link_rate("1Mbit") == 1_000_000
    assert parse_link_rate("2.5 Mbit/s") == 2_500_000
    assert parse_link_rate("512kbit") == 512_000
    assert parse_link_rate("64000") == 64_000
    for bad in ("fast", "0", "-1Mbit", "1Tbit"):
        with pytest.raises(UsageError):
            parse_link_rate(bad)
    assert parse_labels(["site=mine-3", "tier="]) == {"site": "mine-3", "tier": ""}
    with pytest.raises(UsageError):
        parse_labels(["novalue"])


def test_folder_store(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "out")
    src = tmp_path / "b.bin"
    src.write_bytes(b"x" * 5000)
    loc = store.put_file("bundles/k.dpb", src)
    assert loc.startswith("file://") and store.exists("bundles/k.dpb")
    with store.open("bundles/k.dpb") as fh:
        assert fh.read() == b"x" * 5000
    store.put_bytes("bundles/k.dpb", b"new")
    assert (tmp_path / "out" / "bundles" / "k.dpb").read_bytes() == b"new"
    assert not [p for p in (tmp_path / "out" / "bundles").iterdir() if p.name.startswith(".tmp")]
    store.delete("bundles/k.dpb")
    store.delete("bundles/k.dpb")
    assert not store.exists("bundles/k.dpb")
    with pytest.raises(StorageError, match="has no"):
        store.open("bundles/k.dpb")
    for bad in ("../x", "/abs", "a//b", "a/../b", ".hidden", ""):
        with pytest.raises(UsageError):
            store.put_bytes(bad, b"")


def test_folder_store_unwritable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot access"):
        FolderStore(tmp_path / "file").put_bytes("a/b", b"x")
