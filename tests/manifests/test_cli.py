"""`deltaport manifest images|render` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deltaport.cli.manifest import app

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "compose.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_images_json_is_one_object(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  web:\n    image: ${REG:-ghcr.io}/acme/web:${TAG}\n"
        "  dbg:\n    image: busybox\n    profiles: [debug]\n",
    )
    (tmp_path / ".env").write_text("TAG=3\n")
    result = runner.invoke(app, ["images", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "kind": "compose",
        "images": [{"module": "web", "reference": "ghcr.io/acme/web:3"}],
        "warnings": [],
    }
    result = runner.invoke(
        app, ["images", str(path), "--json", "--var", "TAG=4", "--profile", "debug"]
    )
    assert [i["reference"] for i in json.loads(result.stdout)["images"]] == [
        "ghcr.io/acme/web:4",
        "busybox",
    ]


def test_from_env_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAG", "env")
    path = write(tmp_path, "services:\n  a:\n    image: reg.io/a:${TAG:-none}\n")
    plain = json.loads(runner.invoke(app, ["images", str(path), "--json"]).stdout)
    asked = json.loads(runner.invoke(app, ["images", str(path), "--json", "--from-env"]).stdout)
    assert plain["images"][0]["reference"] == "reg.io/a:none"
    assert asked["images"][0]["reference"] == "reg.io/a:env"


def test_env_file_option(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  a:\n    image: reg.io/a:${TAG:?set TAG}\n")
    env = write(tmp_path, "TAG=7\n", "prod.env")
    out = runner.invoke(app, ["images", str(path), "--json", "--env-file", str(env)])
    assert json.loads(out.stdout)["images"][0]["reference"] == "reg.io/a:7"


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        (
            "services:\n  a:\n    image: reg.io/a:${TAG:?set TAG}\n",
            3,
            "required variable TAG is missing a value: set TAG",
        ),
        ("services:\n  a:\n    image: 'nginx:'\n", 3, "services.a: image 'nginx:'"),
        ("services: [\n", 3, "invalid YAML"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    tmp_path: Path, text: str, code: int, message: str
) -> None:
    path = write(tmp_path, text)
    result = runner.invoke(app, ["images", str(path)])
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]


def test_bad_var_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  a:\n    image: x\n")
    result = runner.invoke(app, ["images", str(path), "--var", "novalue"])
    assert result.exit_code == 2 and "NAME=VALUE" in result.stderr


def test_images_table_and_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  a:\n    image: x/y${T}\n  b:\n    build: .\n")
    result = runner.invoke(app, ["images", str(path)])
    assert result.exit_code == 0
    assert "x/y" in result.stdout
    assert "variable T is not set" in result.stderr and "services.b has only 'build'" in (
        result.stderr
    )


def test_render_points_at_the_local_registry(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  a:\n    image: ghcr.io/acme/a:1\n    build: .\n")
    result = runner.invoke(app, ["render", str(path), "--local-registry", "127.0.0.1:5000"])
    assert result.exit_code == 0, result.output
    image = "127.0.0.1:5000/ghcr.io/acme/a:1"  # the source registry stays in the path
    assert json.loads(result.stdout) == {"services": {"a": {"image": image}}}


def test_extends_another_file_beside_the_manifest(tmp_path: Path) -> None:
    write(tmp_path, "services:\n  web:\n    image: reg.io/web:${TAG:-1}\n", "common.yml")
    path = write(tmp_path, "services:\n  a:\n    extends: {file: common.yml, service: web}\n")
    result = runner.invoke(app, ["images", str(path), "--json", "--var", "TAG=9"])
    assert json.loads(result.stdout)["images"] == [{"module": "a", "reference": "reg.io/web:9"}]


def test_several_files_merged_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  a:\n    image: reg.io/a:1\n    ports: ['80']\n")
    over = write(tmp_path, "services:\n  a:\n    image: reg.io/a:2\n  b:\n    image: b\n", "o.yaml")
    result = runner.invoke(app, ["render", str(path), "-f", str(over), "--local-registry", "l:5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["services"] == {
        "a": {"image": "l:5/reg.io/a:2", "ports": ["80"]},
        "b": {"image": "l:5/library/b:latest"},
    }


def test_deltaport_manifest_images_is_mounted_on_the_main_cli(tmp_path: Path) -> None:
    """`deltaport manifest images FILE --json` through the installed entry point."""
    import subprocess
    import sys

    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  web:\n    image: ghcr.io/acme/web:${TAG:-2}\n")
    out = subprocess.run(
        [sys.executable, "-m", "deltaport.cli.main", "manifest", "images", str(compose), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kind"] == "compose"
    assert doc["images"] == [{"module": "web", "reference": "ghcr.io/acme/web:2"}]
