"""Reader gaps the manifest corpus found, each pinned by a small test.

.env values that interpolate, nested extends and included files read relative to the
file that names them, the compose-spec ``!reset``/``!override`` tags, and iotedgedev's
``${MODULEDIR<path>}`` placeholder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deltaport.cli.manifest import _load_compose
from deltaport.errors import FormatError
from deltaport.manifests import parse_manifest
from deltaport.manifests.interpolation import parse_env_file, resolve_variables


def images(data: str, tmp_path: Path | None = None, **kwargs: Any) -> dict[str, str]:
    load = (lambda other: _load_compose(tmp_path / other)) if tmp_path else None
    manifest = parse_manifest(data.encode(), kwargs.pop("variables", {}), load_file=load, **kwargs)
    return {m.module: m.reference for m in manifest.modules}


# --- .env interpolation (compose-go dotenv: lookup first, then earlier lines) -----------


def test_env_values_interpolate_earlier_values_and_defaults() -> None:
    text = 'REPO=reg.io/acme\nIMAGE="${REPO}/${NAME:-app}"\nTAG=${TAG:-1.0}\nBOTH=$REPO:$TAG\n'
    assert parse_env_file(text, ".env") == {
        "REPO": "reg.io/acme",
        "IMAGE": "reg.io/acme/app",
        "TAG": "1.0",
        "BOTH": "reg.io/acme:1.0",
    }


def test_env_single_quotes_and_escaped_dollars_stay_literal() -> None:
    text = "A='${NOT}'\nB=\"cost \\$5\"\nC=x$$y\n"
    assert parse_env_file(text, ".env") == {"A": "${NOT}", "B": "cost $5", "C": "x$y"}


def test_env_interpolation_looks_up_given_values_first(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=${TAG:-1.0}\nIMAGE=app:${TAG}\n")
    values = resolve_variables({"TAG": "2.0"}, manifest_path=tmp_path / "compose.yaml")
    assert values == {"TAG": "2.0", "IMAGE": "app:2.0"}
    plain = resolve_variables({}, manifest_path=tmp_path / "compose.yaml", environ={"TAG": "9"})
    assert plain["IMAGE"] == "app:1.0"  # the environment only with from_env
    env = resolve_variables(
        {}, manifest_path=tmp_path / "compose.yaml", from_env=True, environ={"TAG": "9"}
    )
    assert env["IMAGE"] == "app:9"


def test_env_required_value_missing_names_the_line() -> None:
    with pytest.raises(FormatError, match=r"prod\.env:2: .*REGISTRY"):
        parse_env_file("A=1\nIMAGE=${REGISTRY:?set it}/app\n", "prod.env")


# --- files named by other files -----------------------------------------------------


def test_nested_extends_file_is_relative_to_the_file_naming_it(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mid.yaml").write_text(
        "services:\n  s:\n    extends: {file: base.yaml, service: s}\n"
    )
    (tmp_path / "lib" / "base.yaml").write_text("services:\n  s:\n    image: reg.io/base:1\n")
    doc = "services:\n  s:\n    extends: {file: lib/mid.yaml, service: s}\n"
    assert images(doc, tmp_path) == {"s": "reg.io/base:1"}


def test_included_file_extends_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "inc.yaml").write_text(
        "services:\n  q:\n    extends: {file: base.yaml, service: q}\n"
    )
    (tmp_path / "stack" / "base.yaml").write_text("services:\n  q:\n    image: rabbitmq:3\n")
    doc = "include:\n  - path: [stack/inc.yaml]\n"
    assert images(doc, tmp_path) == {"q": "rabbitmq:3"}


# --- !reset and !override (compose-spec "Merge and override") ----------------------------


def test_reset_removes_what_the_base_gave() -> None:
    doc = (
        "services:\n  base:\n    image: alpine\n    command: sleep 1\n"
        "  w:\n    extends: base\n    command: !reset null\n    ports: !reset []\n"
    )
    manifest = parse_manifest(doc.encode(), {})
    assert manifest.document["services"]["w"] == {"image": "alpine"}


def test_override_replaces_instead_of_merging() -> None:
    doc = (
        "services:\n  base:\n    image: alpine\n    environment: {A: '1', B: '2'}\n"
        "  w:\n    extends: base\n    environment: !override {C: '3'}\n"
    )
    manifest = parse_manifest(doc.encode(), {})
    assert manifest.document["services"]["w"]["environment"] == {"C": "3"}
    assert manifest.document["services"]["base"]["environment"] == {"A": "1", "B": "2"}


def test_reset_in_an_override_file_removes_the_image_key() -> None:
    base = b"services:\n  a:\n    image: alpine\n    build: .\n"
    over = b"services:\n  a:\n    build: !reset\n"
    manifest = parse_manifest(base, {}, overrides=[("over.yaml", over)])
    assert manifest.document["services"]["a"] == {"image": "alpine"}


# --- iotedgedev ${MODULEDIR<path>} --------------------------------------------------------

MODULEDIR_TEMPLATE = """{"modulesContent": {"$edgeAgent": {"properties.desired": {
  "systemModules": {}, "modules": {"m": {"settings": {"image": "${MODULEDIR<./mods/m>.debug}"}}}
}}}}"""


def test_moduledir_placeholder_needs_genconfig_or_a_var() -> None:
    with pytest.raises(FormatError, match=r"MODULEDIR<\./mods/m>\.debug.*iotedgedev genconfig"):
        parse_manifest(MODULEDIR_TEMPLATE.encode(), {})
    given = {"MODULEDIR<./mods/m>.debug": "reg.io/m:1-debug"}
    assert images(MODULEDIR_TEMPLATE, variables=given) == {"m": "reg.io/m:1-debug"}


# --- COMPOSE_PROFILES (compose-go WithDefaultProfiles) --------------------------------------

PROFILED = "services:\n  a:\n    image: alpine\n  b:\n    image: busybox\n    profiles: [x]\n"


def test_compose_profiles_variable_activates_when_no_profile_is_given() -> None:
    assert images(PROFILED, variables={"COMPOSE_PROFILES": " x ,y"}) == {
        "a": "alpine",
        "b": "busybox",
    }
    assert images(PROFILED, variables={"COMPOSE_PROFILES": "x"}, profiles=["other"]) == {
        "a": "alpine"
    }


# --- sequences merged as the compose-spec "Merge and override" says --------------------

MERGE_BASE = b"""services:
  app:
    image: reg.io/app:1
    command: ["serve", "--port", "80"]
    dns: [1.1.1.1]
    ports: ["8080:80", "127.0.0.1:9000:9000/udp"]
    volumes: ["data:/var/lib/app", "./conf:/etc/app:ro"]
    secrets: [token]
    environment: [MODE=base, LEVEL=info]
    healthcheck: {test: ["CMD", "true"], interval: 5s}
"""
MERGE_OVER = b"""services:
  app:
    command: ["serve", "--port", "81"]
    dns: [8.8.8.8]
    ports: ["8443:443", "8080:80"]
    volumes: ["other:/var/lib/app", {type: bind, source: ./logs, target: /var/log/app}]
    secrets: [{source: token2, target: token}, cert]
    environment: {MODE: override}
    healthcheck: {test: ["CMD", "false"]}
"""
MERGED_APP = {
    "image": "reg.io/app:1",
    "command": ["serve", "--port", "81"],
    "dns": ["1.1.1.1", "8.8.8.8"],
    "ports": ["8080:80", "127.0.0.1:9000:9000/udp", "8443:443"],
    "volumes": [
        "other:/var/lib/app",
        "./conf:/etc/app:ro",
        {"type": "bind", "source": "./logs", "target": "/var/log/app"},
    ],
    "secrets": [{"source": "token2", "target": "token"}, "cert"],
    "environment": {"MODE": "override", "LEVEL": "info"},
    "healthcheck": {"test": ["CMD", "false"], "interval": "5s"},
}


def test_override_files_merge_sequences_by_the_spec() -> None:
    manifest = parse_manifest(MERGE_BASE, {}, overrides=[("over.yaml", MERGE_OVER)])
    assert manifest.document["services"]["app"] == MERGED_APP


def test_extends_merges_sequences_by_the_spec() -> None:
    base = MERGE_BASE.decode().replace("  app:\n", "  base:\n")
    own = MERGE_OVER.decode().removeprefix("services:\n").replace(
        "  app:\n", "  app:\n    extends: base\n"
    )
    manifest = parse_manifest((base + own).encode(), {})
    assert manifest.document["services"]["app"] == MERGED_APP


# --- a lone "$" is literal (compose-go template: only $$, $NAME and ${...} are special) ----


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("echo $(cat /proc/sys/kernel/random/uuid)", "echo $(cat /proc/sys/kernel/random/uuid)"),
        ("costs $5 or $ 6", "costs $5 or $ 6"),
        ("ends with $", "ends with $"),
        ("$$(kept) $A", "$(kept) a"),
    ],
)
def test_a_dollar_before_anything_else_is_kept(text: str, value: str) -> None:
    doc = f"services:\n  s:\n    image: alpine\n    command: '{text}'\n"
    manifest = parse_manifest(doc.encode(), {"A": "a"})
    assert manifest.document["services"]["s"]["command"] == value


def test_an_invalid_braced_interpolation_is_still_an_error() -> None:
    with pytest.raises(FormatError, match="invalid interpolation"):
        parse_manifest(b"services:\n  s:\n    image: alpine\n    command: '${1x}'\n", {})
