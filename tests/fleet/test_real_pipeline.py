"""deploy with the real pieces: a real registry, real images, the real delta builder,
signed bundles that really rebuild the target — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from deltaport.bundle.keys import generate_keypair, load_private_key, load_public_key
from deltaport.delta.image import apply_image_delta
from deltaport.desired import decode_envelope
from deltaport.fleet import device_images, queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry, StatusMessage
from deltaport.fleet.models import Bundle, DeviceImage
from deltaport.oci import TransportOptions, copy_image, open_source
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.adapters import (
    DeltaBundleBuilder,
    DeltaSignatureMaker,
    OciIdentityReader,
    SignatureRanker,
)
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.manifest import parse_manifest
from deltaport.storage.folder import FolderStore
from tests.fixtures.images import build_image, write_oci_layout
from tests.fixtures.services import Registry


def test_three_devices_one_deployment(engine: Engine, registry: Registry, tmp_path: Path) -> None:
    opts = TransportOptions(insecure=True)
    layouts = {}
    for tag, variant in (("1", 0), ("2", 1)):
        layout = write_oci_layout(tmp_path / f"layout{tag}", build_image(variant), tag="v")
        layouts[tag] = f"oci:{layout}:v"
        copy_image(layouts[tag], registry.ref(f"app:{tag}"), opts)
    keys = generate_keypair(tmp_path / "keys")
    store = FolderStore(tmp_path / "outbox")
    with session_scope(engine) as s:
        for tag in ("1", "2"):
            i2d.register(
                s,
                reference=registry.ref(f"app:{tag}"),
                name=None,
                reader=OciIdentityReader(opts),
                signer=DeltaSignatureMaker(opts),
                signatures_dir=tmp_path / "sigs",
            )
        for dev in ("a", "b", "c"):
            queries.add_device(s, name=dev, link_rate_bps=1_000_000)
        ids = {t: queries.find_image(s, f"{registry.host}/app:{t}").image_id for t in ("1", "2")}
        for dev, have in (("a", ["1"]), ("c", ["2"])):
            inv = Inventory(tuple(InventoryEntry(ids[t]) for t in have))
            device_images.record_inventory(s, device=queries.get_device(s, dev), inventory=inv)
    manifest = parse_manifest(f"services:\n  app:\n    image: {registry.host}/app:2\n".encode())
    result = i2d.deploy(
        engine,
        i2d.DeployRequest(manifest, "ci", "ops@example.com", ("a", "b", "c")),
        ranker=SignatureRanker(),
        builder=DeltaBundleBuilder(opts, load_private_key(keys.private_key_path)),
        store=store,
        work_dir=tmp_path / "work",
    )
    rows = {r.device: r for r in result.devices}
    assert len(result.built) == 2 and rows["c"].bundles == ()
    assert 0 < rows["a"].bytes < rows["b"].bytes  # the delta from v1 is smaller than full
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Bundle)) == 2
        assert s.scalar(select(func.count()).where(DeviceImage.status == "in_transit")) == 2
    # device a rebuilds app:2 from its app:1 with the bundle from the outbox, verified
    order = json.loads(
        (store.root / "devices" / "a" / "orders" / f"{result.deployment_id}.json").read_text()
    )
    bundle = store.root / order["bundles"][0]["store_key"]
    out = tmp_path / "device-a"
    apply_image_delta(
        bundle,
        [layouts["1"]],
        f"oci:{out}:app2",
        trusted_keys=[load_public_key(keys.public_key_path)],
        scratch=tmp_path,
    )
    with open_source(f"oci:{out}:app2") as rebuilt:
        assert rebuilt.image_id() == ids["2"]
    # both devices report success: the deployment completes and is activated
    msgs = [
        StatusMessage(f"m-{d}", d, ids["2"], "present", deployment=result.deployment_id)
        for d in ("a", "b")
    ]
    manifest_keys = generate_keypair(tmp_path / "keys", "manifest")
    done = handle_status_messages(
        engine, msgs, store=store, manifest_key=manifest_keys.private_key_path
    )
    assert done.completed == (result.deployment_id,) and done.activated == done.completed
    desired = decode_envelope(
        (store.root / "devices" / "b" / "desired.json").read_bytes(),
        [load_public_key(manifest_keys.public_key_path)],
        device="b",
    )
    assert desired.modules[0].reference == (
        f"localhost:5000/{registry.host.replace(':', '_')}/app:2")
    assert desired.modules[0].image_id == ids["2"]


def _register_app(registry: Registry, tmp_path: Path, ref: str, variant: int) -> typer.Typer:
    """The `image register` command function (mounted in deltaport.cli.image) as an app,
    with image REF (build_image(VARIANT)) pushed to REGISTRY."""
    from deltaport.cli import fleet as cli_fleet

    copy_image(
        f"oci:{write_oci_layout(tmp_path / 'l', build_image(variant), tag='v')}:v",
        registry.ref(ref),
        TransportOptions(insecure=True),
    )
    app = typer.Typer()
    cli_fleet.add_global_options(app)
    app.command("register")(cli_fleet.image_register_command)
    app.command("unused")(lambda: None)
    return app


def test_image_register_command(registry: Registry, tmp_path: Path) -> None:
    app = _register_app(registry, tmp_path, "svc:1", 0)
    home = tmp_path / "home"
    args = ["--data-dir", str(home), "register", registry.ref("svc:1"), "--insecure", "--json"]
    out = CliRunner().invoke(app, [*args, "--build-id", "ci-9", "--by", "ci"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["image"] == f"{registry.host}/svc:1" and doc["layers"] == 3
    assert Path(doc["signature"]).is_file() and Path(doc["signature"]).parent == home / "signatures"
    missing = CliRunner().invoke(
        app, ["--data-dir", str(home), "register", registry.ref("nope:1"), "--insecure"]
    )
    assert missing.exit_code != 0 and missing.exception is not None
    from deltaport.errors import NotFoundError

    assert isinstance(missing.exception, NotFoundError)


def test_image_register_prebuild_fills_the_patch_cache(registry: Registry, tmp_path: Path) -> None:
    """`image register --prebuild`: every layer's self-contained patch is built once, ahead."""
    from deltaport.delta.image import create_image_delta
    from deltaport.delta.patchcache import PatchCache

    app = _register_app(registry, tmp_path, "svc:2", 1)
    home = tmp_path / "home"
    args = ["--data-dir", str(home), "register", registry.ref("svc:2"), "--insecure", "--json"]
    first = CliRunner().invoke(app, [*args, "--prebuild"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["prebuilt_layers"] == 3
    assert len(list((home / "patch-cache").glob("*.patch"))) == 3
    again = CliRunner().invoke(app, [*args, "--prebuild"])
    assert again.exit_code == 0 and json.loads(again.stdout)["prebuilt_layers"] == 0
    summary = create_image_delta(
        registry.ref("svc:2"), [], tmp_path / "first.dpb",
        options=TransportOptions(insecure=True), patch_cache=PatchCache(home / "patch-cache"),
    ).to_json()
    assert [layer["stats"]["cached"] for layer in summary["layers"]] == [True, True, True]
