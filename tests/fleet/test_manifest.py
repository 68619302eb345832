"""Deployment manifests: IoT Edge (with ${VAR}) and Compose; malformed input named clearly."""

from __future__ import annotations

import json

import pytest

from deltaport.errors import FormatError
from deltaport.pipelines.manifest import (
    KIND_COMPOSE,
    KIND_IOTEDGE,
    local_reference,
    normalize_reference,
    parse_manifest,
    rewrite_for_device,
)


def edge(
    modules: dict[str, str], system: dict[str, str] | None = None, dotted: bool = True
) -> bytes:
    desired = {
        "schemaVersion": "1.1",
        "systemModules": {
            n: {"type": "docker", "settings": {"image": i}} for n, i in (system or {}).items()
        },
        "modules": {
            n: {"type": "docker", "settings": {"image": i, "createOptions": "{}"}}
            for n, i in modules.items()
        },
    }
    agent = {"properties.desired": desired} if dotted else {"properties": {"desired": desired}}
    return json.dumps({"modulesContent": {"$edgeAgent": agent, "$edgeHub": {}}}).encode()


def test_iotedge_template_with_variables() -> None:
    data = edge(
        {"sensor": "${ACR}/sensor:${TAG}", "web": "${ACR}/web:1.0"},
        {"edgeAgent": "mcr.microsoft.com/azureiotedge-agent:1.4"},
    )
    m = parse_manifest(data, {"ACR": "myacr.azurecr.io", "TAG": "2.1"})
    assert m.kind == KIND_IOTEDGE
    assert m.references == (
        "mcr.microsoft.com/azureiotedge-agent:1.4",
        "myacr.azurecr.io/sensor:2.1",
        "myacr.azurecr.io/web:1.0",
    )
    assert [x.module for x in m.modules] == ["edgeAgent", "sensor", "web"]


def test_iotedge_nested_properties_form() -> None:
    m = parse_manifest(edge({"a": "reg.io/a:1"}, dotted=False))
    assert m.references == ("reg.io/a:1",)


def test_unresolved_variables_are_all_named() -> None:
    with pytest.raises(FormatError, match=r"\$\{ACR\}, \$\{TAG\}.*--var"):
        parse_manifest(edge({"s": "${ACR}/s:${TAG}"}))


def test_compose() -> None:
    data = b"services:\n  web:\n    image: nginx:1.25\n  db:\n    image: reg.local:5000/pg\n"
    m = parse_manifest(data)
    assert m.kind == KIND_COMPOSE
    assert m.references == ("nginx:1.25", "reg.local:5000/pg")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "invalid JSON"),
        (b"services: [\n", "invalid YAML"),
        (b"[1, 2]", "top level must be an object"),
        (b"hello: world", "neither an IoT Edge"),
        (b'{"modulesContent": {}}', r"missing modulesContent.\$edgeAgent"),
        (b'{"modulesContent": {"$edgeAgent": {}}}', "properties.desired"),
        (b"services:\n  web:\n    build: .\n", "no service to deploy"),
        (b"services:\n  web:\n    image: 42\n", "services.web has no image"),
        (b"services:\n  web:\n    image: 'bad ref!'\n", "invalid repository name"),
        (b"services: {}\n", "non-empty"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_manifests(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        parse_manifest(data, name="m.json")


def test_module_without_settings() -> None:
    data = json.dumps(
        {"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {"x": {}}}}}}
    ).encode()
    with pytest.raises(FormatError, match=r"desired\.modules\.x has no settings"):
        parse_manifest(data)


def test_too_large() -> None:
    with pytest.raises(FormatError, match="larger than"):
        parse_manifest(b" " * (4 * 1024 * 1024 + 1))


def test_references_normalized_and_rewritten() -> None:
    assert normalize_reference("docker://reg.io/app") == "reg.io/app:latest"
    assert normalize_reference("reg.io:5000/app:1") == "reg.io:5000/app:1"
    assert local_reference("myacr.azurecr.io/team/app:1.0", "localhost:5000") == (
        "localhost:5000/myacr.azurecr.io/team/app:1.0"
    )  # the registry stays in the path: another registry's team/app is another image
    # the device stores a Docker Hub image under its full path (delta.image.target_name)
    assert local_reference("redis", "localhost:5000") == "localhost:5000/library/redis:latest"


def test_rewrite_for_device_keeps_everything_else() -> None:
    m = parse_manifest(edge({"web": "reg.io/web:1"}, {"edgeHub": "mcr.microsoft.com/hub:1.4"}))
    out = rewrite_for_device(m, "127.0.0.1:5000")
    desired = out["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert desired["modules"]["web"]["settings"] == {
        "image": "127.0.0.1:5000/reg.io/web:1",
        "createOptions": "{}",
    }
    assert desired["systemModules"]["edgeHub"]["settings"]["image"] == (
        "127.0.0.1:5000/mcr.microsoft.com/hub:1.4")
    assert (
        m.document["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["web"][
            "settings"
        ]["image"]
        == "reg.io/web:1"
    )  # the original is untouched
    c = rewrite_for_device(parse_manifest(b"services:\n  a:\n    image: x/y:2\n"), "l:1")
    assert c["services"]["a"]["image"] == "l:1/x/y:2"
