"""Names with control characters, duplicate ids in a batch, file modes (issue 11, item 11)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deltaport.errors import FormatError, UsageError
from deltaport.fleet import queries
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.documents import check_image_id
from deltaport.hub.settings import add_operator_token, parse_operators
from tests.hub.conftest import LiveHub
from tests.hub.test_device_api import API, message


@pytest.mark.parametrize("name", ["alice\n", "al\nice", "alice\r", "alice\t"])
def test_operator_names_with_control_characters_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "hub.toml"
    with pytest.raises(UsageError):
        add_operator_token(path, name)
    assert not path.exists()
    with pytest.raises(FormatError):
        parse_operators([{"name": name, "token_hash": "sha256:" + "0" * 64}])


def test_device_names_ending_in_a_newline_are_refused(tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with pytest.raises(UsageError), session_scope(engine) as s:
            queries.add_device(s, name="dev-9\n", link_rate_bps=1_000_000)
    finally:
        engine.dispose()


def test_digest_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(FormatError):
        check_image_id("sha256:" + "0" * 64 + "\n", "x")


def test_hub_db_is_created_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "data" / "hub.db"
    engine = init_db(f"sqlite:///{db}")
    try:
        with engine.connect():
            pass
        for path in [db, *tmp_path.glob("data/hub.db-*")]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        engine.dispose()


def test_the_same_id_twice_in_one_batch_has_one_answer(hub: LiveHub) -> None:
    w = hub.world
    bad = message(w, "dev-1", deployment="d-unknown")
    good = message(w, "dev-1", message_id=bad["message_id"])
    with hub.device("dev-1") as c:
        r = c.post(API + "/status", json={"messages": [bad, good]})
    assert r.status_code == 200, r.text
    accepted = r.json()["accepted"]
    rejected = [x["message_id"] for x in r.json()["rejected"]]
    assert rejected == [bad["message_id"]] and accepted == []
