"""A mistyped agent.toml value is a UsageError naming the key; defaults are defined once
(issue 11 item 12). Pure: config_from_mapping, no file system beyond tmp_path names."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from deltaport.agent import config as agent_config
from deltaport.agent.config import AgentConfig, HubSettings, config_from_mapping
from deltaport.agent.runtime.model import RuntimeSettings
from deltaport.errors import UsageError

BASE: dict[str, Any] = {
    "device": "dev-1", "trusted_keys": ["k.pub"], "inbox": "inbox", "state_dir": "state",
    "registry": "docker://127.0.0.1:5000",
}
HUB: dict[str, Any] = {"url": "https://hub.example", "token": "t"}


def _parse(doc: dict[str, Any]) -> AgentConfig:
    return config_from_mapping(doc, Path("/etc/deltaport"))


@pytest.mark.parametrize(("override", "key"), [
    ({"docker_host": 5}, "docker_host"),
    ({"docker_host": ""}, "docker_host"),
    ({"desired_manifest": 5}, "desired_manifest"),
    ({"poll_interval": "x"}, "poll_interval"),
    ({"poll_interval": True}, "poll_interval"),
    ({"inbox": 3}, "inbox"),
    ({"max_rate": 1.5}, "max_rate"),
    ({"download_max_attempts": "8"}, "download_max_attempts"),
    ({"hub": {**HUB, "insecure": "true"}}, "hub.insecure"),
    ({"hub": {**HUB, "timeout": "30"}}, "hub.timeout"),
    ({"hub": {**HUB, "token_file": 5}}, "hub.token_file"),
    ({"hub": {"url": "https://hub.example", "token_file": 5}}, "hub.token_file"),
    ({"runtime": {"docker_host": 5}}, "runtime.docker_host"),
    ({"runtime": {"registry_root": 5}}, "runtime.registry_root"),
    ({"runtime": {"health_window": "60"}}, "runtime.health_window"),
    ({"runtime": {"max_interruptions": 2.5}}, "runtime.max_interruptions"),
])
def test_a_mistyped_value_is_a_usage_error_naming_the_key(
        override: dict[str, Any], key: str) -> None:
    with pytest.raises(UsageError, match=rf"agent config: {key} must be"):
        _parse({**BASE, **override})


def test_well_typed_values_are_taken() -> None:
    cfg = _parse({**BASE, "docker_host": "unix:///run/podman.sock", "poll_interval": 5,
                  "desired_manifest": "desired.json",
                  "runtime": {"manifest_keys": ["m.pub"], "registry_root": "/var/lib/r"},
                  "hub": {**HUB, "timeout": 3}})
    assert cfg.docker_host == "unix:///run/podman.sock" and cfg.poll_interval == 5.0
    assert cfg.desired_manifest == Path("/etc/deltaport/desired.json")
    assert cfg.runtime.registry_root == Path("/var/lib/r")
    assert cfg.hub is not None and cfg.hub.timeout == 3.0


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if f.default is not f.default_factory}


def test_an_empty_config_takes_the_dataclass_defaults() -> None:
    """The parser has no default of its own: each is the dataclass field's."""
    cfg = _parse({**BASE, "hub": HUB})
    for name in ("poll_interval", "inventory_interval", "inbox_settle_seconds",
                 "inbox_stale_seconds", "download_max_attempts", "min_free_bytes",
                 "max_rate", "docker_host", "head_probe_bytes"):
        assert getattr(cfg, name) == _defaults(AgentConfig)[name], name
    assert cfg.hub is not None and cfg.hub.timeout == _defaults(HubSettings)["timeout"]
    runtime = _defaults(RuntimeSettings)
    for name in ("health_window", "health_grace", "health_poll", "stop_timeout",
                 "max_interruptions", "heartbeat_interval", "keep_free"):
        assert getattr(cfg.runtime, name) == runtime[name], name


def test_the_example_in_the_module_docstring_states_the_defaults() -> None:
    """The documented example parses, and every value it calls a default is one."""
    doc = agent_config.__doc__ or ""
    example = doc.split("::", 1)[1].split("Only :func:", 1)[0]
    parsed = tomllib.loads("\n".join(line[4:] for line in example.splitlines()))
    defaults = _defaults(AgentConfig)
    assert parsed["poll_interval"] == defaults["poll_interval"]
    runtime = _defaults(RuntimeSettings)
    for key in ("health_window", "health_grace", "keep_free"):
        assert parsed["runtime"][key] == runtime[key], key
