"""The pipelines end to end over fakes of the OCI/delta pieces, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from deltaport.bundle.keys import KeyPair, generate_keypair, load_public_key
from deltaport.config import SmtpSettings
from deltaport.desired import DesiredState, decode_envelope
from deltaport.errors import StateError
from deltaport.fleet import deployment_sets, device_images, queries, status
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry, StatusMessage
from deltaport.fleet.models import Bundle, BundleDevice, DeploymentSet, DeviceImage, Event
from deltaport.notify.email import SmtpNotifier
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.manifest import parse_manifest
from deltaport.pipelines.manifest_to_device import activate, desired_key
from deltaport.pipelines.retry_policy import RetryPolicy
from deltaport.storage.folder import FolderStore
from tests.fleet.conftest import SmtpServer
from tests.fleet.fakes import CountingRanker, FakeBuilder, FakeRegistry, FakeSigner

IMAGES = {
    "reg.io/base:1": ["os"],
    "reg.io/app:1": ["os", "rt", "app1"],
    "reg.io/app:2": ["os", "rt", "app2"],
    "reg.io/web:1": ["os", "nginx", "web1"],
    "reg.io/web:2": ["os", "nginx", "web2"],
}
COMPOSE = b"services:\n  app:\n    image: reg.io/app:2\n  web:\n    image: ${REG}/web:2\n"


@dataclass
class Fleet:
    engine: Engine
    store: FolderStore
    registry: FakeRegistry
    builder: FakeBuilder
    ranker: CountingRanker
    work: Path
    tokens: dict[str, str]
    keys: KeyPair  # the hub's manifest key pair

    @property
    def manifest_key(self) -> Path:
        return self.keys.private_key_path

    def desired(self, device: str) -> DesiredState:
        """The signed desired manifest published for DEVICE, verified."""
        data = (self.store.root / desired_key(device)).read_bytes()
        return decode_envelope(data, [load_public_key(self.keys.public_key_path)], device=device)

    def image_id(self, name: str) -> str:
        return self.registry.images[name].image_id

    def deploy(self, devices: tuple[str, ...], **kw: object) -> i2d.DeployResult:
        request = i2d.DeployRequest(
            manifest=parse_manifest(COMPOSE, {"REG": "reg.io"}),
            requested_by="alice",
            contact_email="alice@example.com",
            device_names=devices,
        )
        return i2d.deploy(
            self.engine,
            request,
            ranker=self.ranker,
            builder=self.builder,
            store=self.store,
            work_dir=self.work,
            manifest_key=self.manifest_key,
            **kw,  # type: ignore[arg-type]
        )

    def report(self, device: str, *names: str) -> None:
        inv = Inventory(tuple(InventoryEntry(self.image_id(n), n) for n in names))
        with session_scope(self.engine) as s:
            device_images.record_inventory(s, device=queries.get_device(s, device), inventory=inv)

    def msg(self, mid: str, device: str, image: str, ok: bool = True, **kw: str) -> StatusMessage:
        return StatusMessage(
            message_id=mid,
            device=device,
            image_id=self.image_id(image),
            status="present" if ok else "failed",
            reason=None if ok else "diff_id mismatch",
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture
def fleet(engine: Engine, tmp_path: Path) -> Iterator[Fleet]:
    """Five registered images; devices a, b (v1), c (base only), d (already v2)."""
    registry = FakeRegistry()
    for name, layers in IMAGES.items():
        registry.add(name, layers)
    f = Fleet(
        engine,
        FolderStore(tmp_path / "outbox"),
        registry,
        FakeBuilder(),
        CountingRanker(),
        tmp_path / "work",
        {},
        generate_keypair(tmp_path / "keys", "manifest"),
    )
    with session_scope(engine) as s:
        for name in IMAGES:
            i2d.register(
                s,
                reference=f"docker://{name}",
                name=None,
                reader=registry,
                signer=FakeSigner(),
                signatures_dir=tmp_path / "sigs",
                build_id="ci-1",
                registered_by="ci",
            )
        for dev in "abcd":
            _, f.tokens[dev] = queries.add_device(s, name=dev, link_rate_bps=1_000_000)
    f.report("a", "reg.io/app:1", "reg.io/web:1")
    f.report("b", "reg.io/app:1", "reg.io/web:1")
    f.report("c", "reg.io/base:1")
    f.report("d", "reg.io/app:2", "reg.io/web:2")
    yield f


def count(engine: Engine, stmt: object) -> int:
    with session_scope(engine) as s:
        return int(s.scalar(stmt) or 0)  # type: ignore[call-overload]


def test_deploy_builds_each_bundle_once_and_records_everything(fleet: Fleet) -> None:
    result = fleet.deploy(("a", "b", "c", "d"))
    rows = {r.device: r for r in result.devices}
    assert result.state == "pending"
    assert len(fleet.builder.built) == 4 and len(result.built) == 4 and not result.reused
    assert rows["a"].bundles == rows["b"].bundles and len(rows["a"].bundles) == 2
    assert rows["d"].bundles == () and set(rows["d"].present) == {"reg.io/app:2", "reg.io/web:2"}
    assert rows["a"].bytes > 0 and rows["a"].eta_seconds == rows["a"].bytes * 8 / 1_000_000
    # the outbox: each bundle once, and an order per device that gets something
    outbox = fleet.store.root
    assert len(list((outbox / "bundles").iterdir())) == 4
    for dev in "abc":
        order = json.loads(
            (outbox / "devices" / dev / "orders" / f"{result.deployment_id}.json").read_text()
        )
        assert {b["key"] for b in order["bundles"]} == set(rows[dev].bundles)
    assert not (outbox / "devices" / "d").exists()
    # sources the builder was given are on the device
    app_for_a = next(
        s
        for s in fleet.builder.built
        if s.target.name == "reg.io/app:2"
        and any(i.name == "reg.io/app:1" for i in s.source_images)
    )
    assert set(fleet.registry.images["reg.io/app:1"].diff_ids) <= set(app_for_a.sources)
    # database rows
    e = fleet.engine
    assert count(e, select(func.count()).select_from(Bundle)) == 4
    assert count(e, select(func.count()).select_from(BundleDevice)) == 6
    assert count(e, select(func.count()).where(DeviceImage.status == "in_transit")) == 6
    with session_scope(e) as s:
        dep = status.deployment_status(s, result.deployment_id)
    assert dep["counts"] == {"in_transit": 6, "present": 2}
    assert dep["requested_by"] == "alice"


def test_nothing_to_send_finishes_and_activates(fleet: Fleet) -> None:
    result = fleet.deploy(("d",))
    assert result.state == "active" and result.activated and not fleet.builder.built
    desired = fleet.desired("d")
    assert desired.manifest["services"]["app"]["image"] == "localhost:5000/reg.io/app:2"
    assert desired.version == 1 and desired.deployment == result.deployment_id
    assert desired.image_of("app").image_id == fleet.image_id("reg.io/app:2")
    assert desired.image_of("web").reference == "localhost:5000/reg.io/web:2"
    with session_scope(fleet.engine) as s:
        dset = s.get(DeploymentSet, result.deployment_id)
        assert dset is not None and dset.finished_at is not None


def test_second_deploy_waits_for_in_transit_and_reuses_bundles(fleet: Fleet) -> None:
    first = fleet.deploy(("a", "b", "c"))
    again = fleet.deploy(("a", "b", "c"))
    assert len(fleet.builder.built) == 4  # nothing rebuilt
    assert all(r.bundles == () and len(r.waiting) == 2 for r in again.devices)
    assert again.state == "pending" and again.deployment_id != first.deployment_id
    # a new device with the same inventory as a and b reuses their bundles
    with session_scope(fleet.engine) as s:
        queries.add_device(s, name="e", link_rate_bps=64_000)
    fleet.report("e", "reg.io/app:1", "reg.io/web:1")
    third = fleet.deploy(("e",))
    assert len(fleet.builder.built) == 4
    assert set(third.reused) == set(next(r for r in first.devices if r.device == "a").bundles)
    assert third.devices[0].eta_seconds == third.devices[0].bytes * 8 / 64_000


def test_status_messages_complete_activate_and_email(fleet: Fleet, smtp_server: SmtpServer) -> None:
    result = fleet.deploy(("a", "c", "d"))
    notifier = SmtpNotifier(
        SmtpSettings(host=smtp_server.host, port=smtp_server.port, sender="dp@x")
    )
    dep = result.deployment_id
    msgs = [
        fleet.msg("m1", "a", "reg.io/app:2", deployment=dep),
        fleet.msg("m2", "a", "reg.io/web:2"),
        fleet.msg("m3", "c", "reg.io/app:2"),
    ]
    r1 = handle_status_messages(
        fleet.engine, msgs, notifier=notifier, store=fleet.store, manifest_key=fleet.manifest_key
    )
    assert [x.outcome for x in r1.results] == ["applied"] * 3 and r1.completed == ()
    # failure: email to the contact, set failed
    r2 = handle_status_messages(
        fleet.engine,
        [fleet.msg("m4", "c", "reg.io/web:2", ok=False)],
        notifier=notifier,
        store=fleet.store,
        manifest_key=fleet.manifest_key,
        retry_policy=RetryPolicy(retries=0),  # failed for good at once: mailed
    )
    assert r2.results[0].status == "failed"
    with session_scope(fleet.engine) as s:
        assert deployment_sets.get_deployment_set(s, dep).state == "failed"
    # the agent retries and succeeds: the set completes, is activated, and email is sent
    r3 = handle_status_messages(
        fleet.engine,
        [fleet.msg("m5", "c", "reg.io/web:2"), fleet.msg("m5", "c", "reg.io/web:2")],
        notifier=notifier,
        store=fleet.store,
        manifest_key=fleet.manifest_key,
    )
    assert [x.outcome for x in r3.results] == ["applied", "duplicate"]
    assert r3.completed == (dep,) and r3.activated == (dep,)
    for dev in "acd":
        assert (fleet.store.root / desired_key(dev)).exists()
    mails = smtp_server.messages()
    assert [m["Subject"] for m in mails] == [
        f"deltaport: deployment {dep} failed on c",
        f"deltaport: deployment {dep} complete",
    ]
    assert all(m["To"] == "alice@example.com" and m["From"] == "dp@x" for m in mails)
    assert "diff_id mismatch" in mails[0].get_payload()
    assert "activated" in mails[1].get_payload()
    with session_scope(fleet.engine) as s:
        dset = deployment_sets.get_deployment_set(s, dep)
        assert dset.state == "active" and dset.finished_at is not None
        kinds = (
            s.execute(
                select(Event.to_status).where(
                    Event.deployment_set_id == dep, Event.kind == "deployment_set"
                )
            )
            .scalars()
            .all()
        )
    assert kinds == ["pending", "failed", "complete", "active"]


def test_bad_messages(fleet: Fleet) -> None:
    result = fleet.deploy(("a",))
    ok = fleet.msg("m1", "a", "reg.io/app:2")
    batch = [
        fleet.msg("x1", "nobody", "reg.io/app:2"),
        fleet.msg("x2", "a", "reg.io/app:2", deployment="d-unknown"),
        fleet.msg("x3", "c", "reg.io/app:2"),  # nothing was sent to c: out of order
        ok,
        ok,  # duplicate
        fleet.msg("x4", "a", "reg.io/app:2", ok=False),  # stale failure after success
    ]
    r = handle_status_messages(fleet.engine, batch)
    assert [x.outcome for x in r.results] == [
        "rejected",
        "rejected",
        "rejected",
        "applied",
        "duplicate",
        "rejected",
    ]
    errors = [x.error or "" for x in r.results]
    assert "unknown device 'nobody'" in errors[0]
    assert "unknown deployment 'd-unknown'" in errors[1]
    assert "cannot go from absent on arrived" in errors[2]
    assert "cannot go from present on failed" in errors[5]
    with pytest.raises(StateError, match="unknown deployment"):
        handle_status_messages(fleet.engine, [batch[1]], strict=True)
    # the rejected out-of-order message is accepted once the send is recorded
    assert result.deployment_id
    # strict mode applies nothing when one message is bad
    with pytest.raises(StateError):
        handle_status_messages(
            fleet.engine, [fleet.msg("y1", "a", "reg.io/web:2"), batch[0]], strict=True
        )
    with session_scope(fleet.engine) as s:
        assert not device_images.message_seen(s, "y1")


def test_activate_lists_what_is_missing(fleet: Fleet) -> None:
    result = fleet.deploy(("a", "c"))
    with pytest.raises(StateError) as err, session_scope(fleet.engine) as s:
        activate(
            s, set_id=result.deployment_id, store=fleet.store, manifest_key=fleet.manifest_key
        )
    text = str(err.value)
    assert "4 image(s) missing on 2 device(s)" in text
    assert "a: reg.io/app:2 (in_transit)" in text and "c: reg.io/web:2 (in_transit)" in text
    with pytest.raises(StateError, match="unknown deployment"), session_scope(fleet.engine) as s:
        activate(s, set_id="d-nope", store=fleet.store, manifest_key=fleet.manifest_key)
    # inventories report everything: activation now succeeds (pending → complete → active)
    fleet.report("a", "reg.io/app:2", "reg.io/web:2")
    fleet.report("c", "reg.io/app:2", "reg.io/web:2", "reg.io/base:1")
    with session_scope(fleet.engine) as s:
        done = activate(
            s, set_id=result.deployment_id, store=fleet.store, manifest_key=fleet.manifest_key
        )
    assert set(done.desired) == {"a", "c"}


def test_bad_deploy_input(fleet: Fleet) -> None:
    with pytest.raises(StateError, match="unknown devices: nope, zed"):
        fleet.deploy(("a", "nope", "zed"))
    bad = i2d.DeployRequest(
        manifest=parse_manifest(
            b"services:\n  x:\n    image: reg.io/x:9\n  y:\n    image: reg.io/app:2\n"
        ),
        requested_by="bob",
        contact_email="b@x",
        device_names=("a",),
    )
    with pytest.raises(StateError, match=r"not registered.*reg.io/x:9"):
        i2d.deploy(
            fleet.engine,
            bad,
            ranker=fleet.ranker,
            builder=fleet.builder,
            store=fleet.store,
            work_dir=fleet.work,
        )


def test_inventory_with_unregistered_image_changes_nothing(fleet: Fleet) -> None:
    stranger = Inventory((InventoryEntry("sha256:" + "e" * 64, "mystery:1"),))
    with (
        pytest.raises(StateError, match="never registered: sha256:eee"),
        session_scope(fleet.engine) as s,
    ):
        device_images.record_inventory(s, device=queries.get_device(s, "a"), inventory=stranger)
    with session_scope(fleet.engine) as s:
        assert len(status.device_status(s, "a")["images"]) == 2


def test_inventory_marks_removed(fleet: Fleet) -> None:
    fleet.report("a", "reg.io/app:1")
    with session_scope(fleet.engine) as s:
        got = {i["image"]: i["status"] for i in status.device_status(s, "a")["images"]}
        img = status.image_status(s, "reg.io/web:1")
        hist = status.history(s, since=status.parse_since("1h"), every="hour")
    assert got == {"reg.io/app:1": "present", "reg.io/web:1": "removed"}
    assert img["counts"] == {"present": 1, "removed": 1}
    assert sum(b["counts"].get("removed", 0) for b in hist) == 1


def test_builder_failure_records_nothing(fleet: Fleet) -> None:
    fleet.builder.fail_on.add("reg.io/web:2")
    from deltaport.errors import MissingSourceError

    with pytest.raises(MissingSourceError):
        fleet.deploy(("a",))
    assert count(fleet.engine, select(func.count()).select_from(DeploymentSet)) == 0
    assert count(fleet.engine, select(func.count()).where(DeviceImage.status == "in_transit")) == 0


def test_smtp_starttls_with_login(smtp_tls_server: SmtpServer) -> None:
    import ssl

    from deltaport.errors import TransferError
    from deltaport.notify.email import Email

    assert smtp_tls_server.cert is not None
    ctx = ssl.create_default_context(cafile=str(smtp_tls_server.cert))
    good = SmtpSettings(
        host="127.0.0.1",
        port=smtp_tls_server.port,
        security="starttls",
        username="dp",
        password="secret",
        sender="dp@x",
    )
    SmtpNotifier(good, ctx).send(Email("ops@x", "hello", "body"))
    assert [m["Subject"] for m in smtp_tls_server.messages()] == ["hello"]
    assert smtp_tls_server.logins == ["dp"]
    bad = SmtpSettings(
        host="127.0.0.1",
        port=smtp_tls_server.port,
        security="starttls",
        username="dp",
        password="wrong",
        timeout=2,  # aiosmtpd stalls after a refused AUTH PLAIN + LOGIN retry
    )
    with pytest.raises(TransferError, match="cannot send email"):
        SmtpNotifier(bad, ctx).send(Email("ops@x", "nope", "body"))
    with pytest.raises(TransferError):  # no TLS where the server demands it
        SmtpNotifier(SmtpSettings(host="127.0.0.1", port=smtp_tls_server.port)).send(
            Email("o@x", "s", "b")
        )
