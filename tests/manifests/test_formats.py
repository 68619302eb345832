"""Compose profiles/build/provider and IoT Edge templates, layered deployments, rewrite."""

from __future__ import annotations

import json

import pytest

from deltaport.errors import FormatError
from deltaport.manifests import Kind, parse_manifest, rewrite_for_device
from deltaport.manifests.iotedge import CREATE_OPTIONS_CHUNK

COMPOSE = b"""
services:
  web:
    image: nginx:1.25
    pull_policy: build
    build: ./web
  debug:
    image: busybox
    profiles: [debug]
  builder:
    build: ./b
  model:
    provider:
      type: model
"""


def test_compose_profiles_build_and_providers() -> None:
    m = parse_manifest(COMPOSE, name="c.yaml")
    assert m.kind is Kind.COMPOSE
    assert [(x.module, x.reference) for x in m.modules] == [("web", "nginx:1.25")]
    assert m.warnings == (
        "c.yaml: services.builder has only 'build', no image to send; skipped",
        "c.yaml: services.model is a provider service (no image); skipped",
    )
    with_debug = parse_manifest(COMPOSE, profiles=["debug"])
    assert with_debug.references == ("nginx:1.25", "busybox")


def test_compose_rewrite_drops_build_and_pull_policy() -> None:
    out = rewrite_for_device(parse_manifest(COMPOSE), "l:5000")
    assert out["services"] == {"web": {"image": "l:5000/library/nginx:1.25"}}
    kept = parse_manifest(b"services:\n  a:\n    image: x/y\n    pull_policy: always\n")
    assert rewrite_for_device(kept, "l:1")["services"]["a"]["pull_policy"] == "always"


def template(modules: dict[str, object], **extra: object) -> str:
    desired = {
        "$schema-template": "4.0.0",
        "schemaVersion": "1.1",
        "systemModules": {
            "edgeAgent": {
                "type": "docker",
                "settings": {
                    "image": "mcr.microsoft.com/azureiotedge-agent:1.4",
                    "createOptions": {},
                },
            }
        },
        "modules": modules,
    }
    return json.dumps(
        {
            "$schema-template": "4.0.0",
            "modulesContent": {
                "$edgeAgent": {"properties.desired": desired},
                "$edgeHub": {"properties.desired": {"$schema-template": "4.0.0", "routes": {}}},
            },
            **extra,
        }
    )


def test_placeholders_expanded_in_text_before_json() -> None:
    text = template({"s": {"settings": {"image": "${ACR}/s:$TAG"}}})
    text = text.replace('"schemaVersion": "1.1"', '"schemaVersion": "1.1", "ttl": ${TTL}')
    m = parse_manifest(text.encode(), {"ACR": "acr.io", "TAG": "2", "TTL": "7200"})
    assert m.references[1] == "acr.io/s:2"
    desired = m.document["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert desired["ttl"] == 7200
    assert "$edgeHub" in m.document["modulesContent"]  # $name without value stays


def test_modules_placeholder_needs_genconfig_or_var() -> None:
    text = template({"f": {"settings": {"image": "${MODULES.filter.amd64}"}}}).encode()
    with pytest.raises(FormatError, match=r"\$\{MODULES.filter.amd64\}.*iotedgedev genconfig"):
        parse_manifest(text, name="deployment.template.json")
    m = parse_manifest(text, {"MODULES.filter.amd64": "acr.io/filter:0.1-amd64"})
    assert m.references[-1] == "acr.io/filter:0.1-amd64"


def test_layered_and_wrapped_deployments() -> None:
    layered = {
        "content": {
            "modulesContent": {
                "$edgeAgent": {
                    "properties.desired.modules.sim": {"settings": {"image": "reg.io/sim:1"}},
                }
            }
        }
    }
    m = parse_manifest(json.dumps(layered).encode())
    assert [(x.module, x.reference) for x in m.modules] == [("sim", "reg.io/sim:1")]
    out = rewrite_for_device(m, "l:5")
    agent = out["content"]["modulesContent"]["$edgeAgent"]
    assert agent["properties.desired.modules.sim"]["settings"]["image"] == "l:5/reg.io/sim:1"


def test_upstream_images_refused_naming_upstream() -> None:
    text = template({"s": {"settings": {"image": "$upstream:443/azureiotedge-agent:1.4"}}})
    with pytest.raises(FormatError, match=r"desired.modules.s: .*\$upstream"):
        parse_manifest(text.encode(), name="d.json")


def test_device_gets_a_deployment_not_a_template() -> None:
    big = {"Env": ["X=" + "y" * 1200], "HostConfig": {"Binds": ["/a:/b"]}}
    m = parse_manifest(
        template({"s": {"settings": {"image": "reg.io/s:1", "createOptions": big}}}).encode()
    )
    out = rewrite_for_device(m, "l:5")
    assert "$schema-template" not in json.dumps(out)
    settings = out["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["s"]["settings"]
    chunks = [settings["createOptions"], settings["createOptions01"], settings["createOptions02"]]
    assert all(len(c) <= CREATE_OPTIONS_CHUNK for c in chunks)
    assert json.loads("".join(chunks)) == big
    agent = out["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"]
    assert agent["edgeAgent"]["settings"]["createOptions"] == "{}"


def test_extends_same_file_and_chain() -> None:
    data = b"""
services:
  base:
    image: reg.io/base:1
    environment: {A: "1"}
  mid:
    extends: base
    environment: {B: "2"}
  app:
    extends: {service: mid}
    image: reg.io/app:${TAG:-2}
"""
    m = parse_manifest(data)
    assert m.references == ("reg.io/base:1", "reg.io/app:2")
    assert m.document["services"]["app"]["environment"] == {"A": "1", "B": "2"}
    assert "extends" not in m.document["services"]["app"]


def test_extends_errors() -> None:
    with pytest.raises(FormatError, match="no service 'nope'"):
        parse_manifest(b"services:\n  a:\n    extends: nope\n")
    with pytest.raises(FormatError, match="a cycle"):
        parse_manifest(b"services:\n  a:\n    extends: b\n  b:\n    extends: a\n")
    with pytest.raises(FormatError, match="cannot be read here"):
        parse_manifest(b"services:\n  a:\n    extends: {file: o.yaml, service: x}\n")


def test_extends_other_file() -> None:
    other = {"services": {"web": {"image": "ghcr.io/acme/web:3", "ports": ["80"]}}}
    m = parse_manifest(
        b"services:\n  a:\n    extends: {file: common.yaml, service: web}\n",
        load_file=lambda path: other if path == "common.yaml" else {},
    )
    assert m.references == ("ghcr.io/acme/web:3",)
    assert m.document["services"]["a"]["ports"] == ["80"]


def test_include() -> None:
    files = {
        "db.yaml": {"services": {"db": {"image": "postgres:16"}}},
        "cache.yaml": {"services": {"cache": {"extends": "base"}, "base": {"image": "redis:7"}}},
    }
    m = parse_manifest(
        b"include:\n  - db.yaml\n  - path: [cache.yaml]\n"
        b"services:\n  app:\n    image: reg.io/a:1\n",
        load_file=files.__getitem__,
    )
    assert [x.module for x in m.modules] == ["app", "db", "cache", "base"]
    assert m.references == ("reg.io/a:1", "postgres:16", "redis:7")
    with pytest.raises(FormatError, match=r"'db' from include 'db\.yaml' conflicts"):
        parse_manifest(
            b"include: [db.yaml]\nservices:\n  db:\n    image: x\n", load_file=files.__getitem__
        )
    with pytest.raises(FormatError, match="cannot be read here"):
        parse_manifest(b"include: [db.yaml]\n")


def test_cloud_registry_credentials_never_reach_the_device() -> None:
    """Every image comes from the device registry: the template's secrets stay on the hub."""
    creds = {"acr": {"username": "ci", "password": "s3cret-pw", "address": "acme.azurecr.io"}}
    text = template({"s": {"settings": {"image": "acme.azurecr.io/s:1"}}})
    doc = json.loads(text)
    desired = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    desired["runtime"] = {"type": "docker", "settings": {"registryCredentials": creds}}
    layered = {"modulesContent": {"$edgeAgent": {
        "properties.desired.modules.s": {"settings": {"image": "acme.azurecr.io/s:1"}},
        "properties.desired.runtime.settings.registryCredentials.acr": creds["acr"]}}}
    for source in (doc, layered):
        out = rewrite_for_device(parse_manifest(json.dumps(source).encode()), "l:5")
        assert "s3cret-pw" not in json.dumps(out) and "acme.azurecr.io\"" not in json.dumps(out)
    out = rewrite_for_device(parse_manifest(json.dumps(doc).encode()), "l:5")
    runtime = out["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]
    assert runtime["settings"]["registryCredentials"] == {}  # kept for edgeAgent's schema
    assert desired["runtime"]["settings"]["registryCredentials"] == creds  # input untouched


def test_an_empty_image_beside_build_is_build_only_and_volume_images_are_warned_of() -> None:
    text = (b"services:\n  built:\n    image: ''\n    build: .\n"
            b"  app:\n    image: reg.io/app:1\n"
            b"    volumes: [{type: image, source: reg.io/models:3, target: /models}]\n")
    m = parse_manifest(text, name="c.yml")
    assert [(x.module, x.reference) for x in m.modules] == [("app", "reg.io/app:1")]
    assert any("built has only 'build'" in w for w in m.warnings)
    assert any("'reg.io/models:3' is not sent" in w for w in m.warnings)
