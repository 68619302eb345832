"""Fast tests of the agent's pure rules and its SQLite state (no servers)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import cast

import pytest

from deltaport.agent.config import config_from_mapping, load_config
from deltaport.agent.hub import (
    BundleOffer,
    Rejection,
    download_order,
    parse_accepted,
    parse_bundle_list,
    parse_status_answer,
    same_origin,
)
from deltaport.agent.inbox import Verdict, is_candidate, judge
from deltaport.agent.messages import LocalImage, inventory_document
from deltaport.agent.reconstruct import Target, already_present, disk_needed, refusal
from deltaport.agent.registry import next_page
from deltaport.agent.state import AgentState
from deltaport.errors import (
    FormatError,
    IntegrityError,
    SignatureError,
    StorageError,
    TruncatedError,
    UsageError,
)
from deltaport.fleet.documents import StatusMessage, parse_inventory, parse_status_messages

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64


# -- the inbox rule ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "quiet", "verdict"),
    [
        (None, 0.0, Verdict.READY),
        (TruncatedError("short"), 0.0, Verdict.WAIT),
        (TruncatedError("short"), 99.0, Verdict.WAIT),  # growing slowly is not an error
        (TruncatedError("short"), 1000.0, Verdict.REJECT),  # stale: given up
        (SignatureError("untrusted"), 1.0, Verdict.WAIT),  # may be preallocated, filling
        (SignatureError("untrusted"), 60.0, Verdict.REJECT),
        (IntegrityError("chunk 3"), 61.0, Verdict.REJECT),
        (FormatError("not a bundle"), 61.0, Verdict.REJECT),
        (StorageError("unreadable"), 5000.0, Verdict.WAIT),
    ],
)
def test_inbox_rule(error: Exception | None, quiet: float, verdict: Verdict) -> None:
    assert judge(error, quiet, settle=60.0, stale=1000.0).verdict is verdict  # type: ignore[arg-type]


def test_stale_zero_waits_forever() -> None:
    assert judge(TruncatedError("x"), 1e9, settle=60, stale=0).verdict is Verdict.WAIT


def test_reject_reason_names_the_error() -> None:
    j = judge(SignatureError("signed by an untrusted key"), 100, settle=60, stale=1000)
    assert "SignatureError" in j.reason and "untrusted key" in j.reason


@pytest.mark.parametrize(("name", "ok"), [("b.bundle", True), (".b.bundle", False),
                                           ("b.bundle.part", False), ("x.tmp", False),
                                           ("b.bundle.reason", False), ("bundle", True)])
def test_inbox_candidates(name: str, ok: bool) -> None:
    assert is_candidate(name) is ok


# -- hub documents ---------------------------------------------------------------------
def test_bundle_list_order_and_urls() -> None:
    doc = {"bundles": [
        {"digest": D, "size": 10, "image_id": E, "priority": 5, "target": "a:v1"},
        {"digest": E, "url": "http://cdn.example/b", "size": 20, "image_id": D, "priority": 0},
        {"digest": D, "url": "/api/v1/device/bundles/x", "size": 30, "image_id": E},
    ]}
    offers = download_order(parse_bundle_list(doc, "http://hub:8080"))
    assert [o.size for o in offers] == [20, 30, 10]  # priority 0 first, then list order
    assert offers[0].url == "http://cdn.example/b"
    assert offers[1].url == "http://hub:8080/api/v1/device/bundles/x"
    assert offers[2].url == f"http://hub:8080/api/v1/device/bundles/{D}"  # default URL
    assert same_origin(offers[1].url, "http://hub:8080")
    assert not same_origin(offers[0].url, "http://hub:8080")  # no token to a CDN


@pytest.mark.parametrize("doc", [
    [], {"bundles": {}}, {"bundles": [1]},
    {"bundles": [{"digest": "md5:x", "size": 1, "image_id": E}]},
    {"bundles": [{"digest": D, "size": 0, "image_id": E}]},
    {"bundles": [{"digest": D, "size": True, "image_id": E}]},
    {"bundles": [{"digest": D, "size": 1, "image_id": E, "priority": "high"}]},
    {"bundles": [{"digest": D, "size": 1, "image_id": E}] * 1001},
])
def test_bad_bundle_lists(doc: object) -> None:
    with pytest.raises(FormatError):
        parse_bundle_list(doc, "http://hub")


def test_accepted() -> None:
    assert parse_accepted({"accepted": ["a", "b"]}) == ["a", "b"]
    with pytest.raises(FormatError):
        parse_accepted({"accepted": [1]})


def test_status_answer_with_rejections() -> None:
    answer = parse_status_answer({
        "accepted": ["a"], "rejected": [{"message_id": "b", "error": "unknown deployment 'd'"}]})
    assert answer.accepted == ("a",)
    assert answer.rejected == (Rejection("b", "unknown deployment 'd'"),)
    assert parse_status_answer({"accepted": ["a"]}).rejected == ()  # a hub that omits it
    long = parse_status_answer({"accepted": [], "rejected": [{"message_id": "c",
                                                              "error": "x" * 10_000}]})
    assert len(long.rejected[0].error) == 2000
    for bad in ({"accepted": [], "rejected": {"b": "e"}},
                {"accepted": [], "rejected": [{"error": "e"}]},
                {"accepted": [], "rejected": [{"message_id": "b", "error": 3}]}):
        with pytest.raises(FormatError):
            parse_status_answer(bad)


def test_next_page() -> None:
    assert next_page('</v2/_catalog?last=b&n=2>; rel="next"') == "/v2/_catalog?last=b&n=2"
    assert next_page(None) is None and next_page("garbage") is None


# -- reconstruction checks ----------------------------------------------------------
def test_refusal_by_device_list() -> None:
    t = Target("app:v2", D, 100, "dep", ("dev-2", "dev-3"))
    reason = refusal(t, "dev-1")
    assert reason is not None and "dev-2" in reason and "dev-1" in reason
    assert refusal(t, "dev-3") is None
    assert refusal(Target("app:v2", D, 100, None, None), "anyone") is None


def test_disk_estimate_and_presence() -> None:
    t = Target("app:v2", D, 1000, None, None)
    assert disk_needed(t, 500, 64) == 500 + 2 * 1000 + 64
    assert already_present(t, [LocalImage("app:v2", D)])
    assert not already_present(t, [LocalImage("app:v1", D), LocalImage("app:v2", E)])


def test_inventory_document_parses_as_the_hub_does() -> None:
    doc = inventory_document([LocalImage("b:v1", D), LocalImage("a:v1", E),
                              LocalImage("a:v1", E)])
    assert doc == {"images": [{"image_id": E, "name": "a:v1"}, {"image_id": D, "name": "b:v1"}]}
    assert parse_inventory(json.dumps(doc).encode()).image_ids == {D, E}


# -- config -------------------------------------------------------------------------
def test_config_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("secret\n")
    (tmp_path / "agent.toml").write_text(
        'device = "dev-1"\ntrusted_keys = ["k.pub"]\ninbox = "in"\nstate_dir = "/var/x"\n'
        'registry = "docker://127.0.0.1:5000"\nmax_rate = 125000\n'
        '[hub]\nurl = "http://hub:8080/"\ntoken_file = "tok"\ninsecure = true\n')
    cfg = load_config(tmp_path / "agent.toml")
    assert cfg.trusted_keys == (tmp_path / "k.pub",)
    assert cfg.inbox == tmp_path / "in" and cfg.state_dir == Path("/var/x")
    assert cfg.hub is not None and cfg.hub.token == "secret" and cfg.hub.url == "http://hub:8080"
    assert cfg.max_rate == 125000 and cfg.registry_host == "127.0.0.1:5000"


@pytest.mark.parametrize("change", [
    {"devcie": "typo"}, {"trusted_keys": []}, {"registry": "127.0.0.1:5000"},
    {"poll_interval": 0}, {"max_rate": "fast"}, {"hub": {"url": "ftp://x", "token": "t"}},
    {"hub": {"url": "http://x"}},
])
def test_config_errors(change: dict[str, object]) -> None:
    doc = {"device": "d", "trusted_keys": ["k"], "inbox": "i", "state_dir": "s",
           "registry": "docker://127.0.0.1:5000", **change}
    with pytest.raises(UsageError):
        config_from_mapping(doc, Path("/"))


# -- the durable outbox -----------------------------------------------------------------
def _msg(status: str = "present") -> dict[str, object]:
    return {"device": "dev-1", "image_id": D, "status": status}


def test_outbox_survives_reopen_and_ids_are_minted_once(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent.db")
    first = state.record("hub:x", "done", image_id=D, message=_msg())
    second = state.enqueue(_msg("failed") | {"reason": "r"})
    state.close()
    state = AgentState(tmp_path / "agent.db")  # a restart
    pending = state.pending_messages(10)
    assert [m["message_id"] for m in pending] == [first, second]
    assert len({first, second}) == 2
    parsed = parse_status_messages(json.dumps({"messages": pending}).encode())
    assert [cast(StatusMessage, p).status for p in parsed] == ["present", "failed"]
    outcome = state.outcome("hub:x")
    assert outcome is not None and outcome.outcome == "done"
    state.mark_delivered([str(first)])
    assert [m["message_id"] for m in state.pending_messages(10)] == [second]
    assert state.counts().messages_pending == 1 and state.counts().messages_delivered == 1
    state.close()


def test_rejected_messages_are_kept_not_resent(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent.db")
    first = state.enqueue(_msg())
    second = state.enqueue(_msg("failed") | {"reason": "r"})
    state.mark_delivered([second])
    state.mark_rejected({first: "unknown deployment 'd'", second: "too late"})
    state.close()
    state = AgentState(tmp_path / "agent.db")  # a restart
    assert state.pending_messages(10) == []
    counts = state.counts()
    assert (counts.messages_pending, counts.messages_delivered, counts.messages_rejected) == (
        0, 1, 1)  # a delivered message stays delivered
    [kept] = state.rejected_messages(10)
    assert (kept.message_id, kept.error) == (first, "unknown deployment 'd'")
    assert kept.message == {"message_id": first, **_msg()}
    state.close()


def test_an_older_state_file_gains_the_rejected_columns(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL "
        "UNIQUE, body TEXT NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL "
        "DEFAULT 0, delivered REAL);"
        "INSERT INTO outbox (message_id, body, created) VALUES ('m', '{\"message_id\": "
        "\"m\"}', 0);")
    old.close()
    state = AgentState(path)
    assert [m["message_id"] for m in state.pending_messages(10)] == ["m"]
    state.mark_rejected({"m": "no"})
    assert state.pending_messages(10) == [] and state.counts().messages_rejected == 1
    state.close()


def test_inventory_coalesces(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent.db")
    assert state.set_inventory({"images": []})
    older = state.pending_inventory()
    assert older is not None
    assert state.set_inventory({"images": [{"image_id": D, "name": "a:v1"}]})
    pending = state.pending_inventory()
    assert pending is not None and pending[0]["images"][0]["image_id"] == D
    state.mark_inventory_delivered(older[1])  # a stale delivery does not count
    assert state.pending_inventory() is not None
    state.mark_inventory_delivered(pending[1])
    assert state.pending_inventory() is None
    assert not state.set_inventory({"images": [{"image_id": D, "name": "a:v1"}]})  # unchanged
    assert state.set_inventory({"images": [{"image_id": D, "name": "a:v1"}]}, force=True)
    state.close()


def test_offer_round_trips_through_json(tmp_path: Path) -> None:
    from deltaport.agent.fetch import load_offer, save_offer

    offer = BundleOffer(D, "http://h/x", 5, E, "a:v1", "dep", 2, 1)
    save_offer(tmp_path, offer)
    assert load_offer(tmp_path) == offer
