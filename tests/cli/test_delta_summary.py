"""`delta create`'s summary is honest (issue 13): a layer the device has is shown as
reused, not as a 0 B layer, and the bundle is priced against the whole image and
against a layer pull of what the --from images lack."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from deltaport.cli import delta as delta_cli
from tests.fixtures.images import Entry, TestImage, build_image, default_layers, write_oci_layout


def _images(tmp_path: Path) -> tuple[TestImage, str, str]:
    """v2 and a v3 that shares v2's first two layers; their oci: references."""
    v2 = build_image(1)
    layers = default_layers(1)
    layers[2] = [*layers[2], Entry("app/v3.txt", data=b"three\n")]
    v3 = build_image(1, layers=layers)
    write_oci_layout(tmp_path / "v2", v2, tag="v2")
    write_oci_layout(tmp_path / "v3", v3, tag="v3")
    return v3, f"oci:{tmp_path / 'v3'}:v3", f"oci:{tmp_path / 'v2'}:v2"


def test_a_reused_layer_is_not_shown_as_an_empty_one(tmp_path: Path) -> None:
    v3, to, source = _images(tmp_path)
    result = CliRunner().invoke(delta_cli.app, ["create", "--to", to, "--from", source,
                                                "-o", str(tmp_path / "v3.bundle")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if re.match(r"│ \d ", line)]
    assert len(rows) == 3, result.stdout
    reused = [row for row in rows if "reused (on the device)" in row]
    assert len(reused) == 2, result.stdout
    for row, layer in zip(reused, v3.layers, strict=False):
        assert f"blob {human(len(layer.blob))}" in row, row  # its size, not "0 B"
    assert v3.image_id in result.stdout  # the whole image ID
    image = sum(len(layer.blob) for layer in v3.layers)
    assert f"of the whole image: {human(image)} in 3 compressed layers" in result.stdout
    assert (f"of a layer pull: {human(len(v3.layers[2].blob))}, the 1 layer the --from "
            "images lack (2 layers reused from them, 0 B)") in result.stdout


def test_the_json_summary_holds_both_prices(tmp_path: Path) -> None:
    v3, to, source = _images(tmp_path)
    result = CliRunner().invoke(delta_cli.app, ["create", "--to", to, "--from", source,
                                                "-o", str(tmp_path / "v3.bundle"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["image_blob_bytes"] == sum(len(layer.blob) for layer in v3.layers)
    assert doc["layer_pull_bytes"] == len(v3.layers[2].blob)
    assert doc["bundle_bytes"] == (tmp_path / "v3.bundle").stat().st_size


def human(n: int) -> str:
    from deltaport.cli.common import human_bytes

    return human_bytes(n)


def test_bundle_inspect_shows_sizes_in_units_and_whole_digests(tmp_path: Path) -> None:
    import deltaport.cli.main as cli_main

    if not cli_main.app.registered_groups:
        cli_main._register_groups()
    _, to, source = _images(tmp_path)
    bundle = tmp_path / "v3.bundle"
    made = CliRunner().invoke(delta_cli.app, ["create", "--to", to, "--from", source,
                                              "-o", str(bundle), "--json"])
    assert made.exit_code == 0, made.output
    shown = CliRunner().invoke(cli_main.app, ["bundle", "inspect", str(bundle)])
    assert shown.exit_code == 0, shown.output
    first = shown.stdout.splitlines()[0]
    assert f"{human(bundle.stat().st_size)} (head " in first and "1 chunk of 1.0 MB" in first
    assert "bytes" not in first and "chunk(s)" not in first
    doc = json.loads(CliRunner().invoke(cli_main.app, ["bundle", "inspect", str(bundle),
                                                   "--json"])
                     .stdout)
    [payload] = doc["members"]
    assert payload["digest"] in shown.stdout and "…" not in shown.stdout
    assert f"│ {human(payload['size'])}" in shown.stdout


def test_progress_steps_say_the_layer_size_and_never_none() -> None:
    from deltaport.cli.delta import step_text

    sizes = [6_800, 137_000_000]
    assert step_text("building", "layer 2/2", 1, 2, sizes) == (
        "building: layer 2/2 (137.0 MB compressed)", "1/2 done")
    assert step_text("applying", "layer 1/2", 0, 0, []) == ("applying: layer 1/2", "")
    assert "None" not in "".join(step_text("building", "reading", 0, 0, sizes))
