"""specs.module_specs: IoT Edge and Compose deployment documents -> ContainerCreate bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltaport.agent.runtime.model import DesiredStatus, ModuleSpec, RestartPolicy
from deltaport.agent.runtime.specs import (
    CREATE_OPTIONS_CHUNK,
    MAX_CREATE_OPTIONS_CHUNKS,
    MAX_STARTUP_ORDER,
    SpecSet,
    join_create_options,
    module_specs,
    parse_duration,
    parse_port,
    parse_volume,
    split_create_options,
)
from deltaport.desired import DesiredModule, DesiredState, ManifestKind
from deltaport.errors import FormatError

HOST = "127.0.0.1:5000"


def image_id(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")


def state(kind: ManifestKind, manifest: dict[str, Any], names: list[str]) -> DesiredState:
    modules = tuple(DesiredModule(n, f"{HOST}/demo/{n.lower()}:v2", image_id(i + 1))
                    for i, n in enumerate(names))
    return DesiredState(device="dev-1", version=7, deployment="d-1",
                        issued_at="2026-12-02T10:00:00Z", kind=kind, modules=modules,
                        manifest=manifest)


def edge(modules: dict[str, Any], system: dict[str, Any] | None = None,
         names: list[str] | None = None) -> SpecSet:
    desired = {"schemaVersion": "1.1", "modules": modules,
               "systemModules": system if system is not None else {}}
    doc = {"modulesContent": {"$edgeAgent": {"properties.desired": desired}}}
    return module_specs(state(ManifestKind.IOTEDGE, doc, names or list(modules)))


def edge_module(**fields: Any) -> dict[str, Any]:
    settings_ = fields.pop("settings", {"image": "ignored:latest"})
    return {"type": "docker", "settings": settings_, **fields}


def compose(services: dict[str, Any]) -> SpecSet:
    return module_specs(state(ManifestKind.COMPOSE, {"services": services}, list(services)))


def one(specs: SpecSet) -> ModuleSpec:
    assert len(specs.modules) == 1
    return specs.modules[0]


# -- IoT Edge --------------------------------------------------------------------------

CREATE: dict[str, Any] = {"Env": ["A=1", "B=2"], "Labels": {"x": "y"},
          "HostConfig": {"Binds": ["/srv/data:/data"], "NetworkMode": "none"}}


def test_iotedge_module_gets_its_signed_image_and_create_options() -> None:
    spec = one(edge({"sensor": edge_module(settings={"image": "x", "createOptions":
                                                      json.dumps(CREATE)})}))
    assert (spec.module, spec.image, spec.image_id) == (
        "sensor", f"{HOST}/demo/sensor:v2", image_id(1))
    assert spec.create_body["Env"] == ["A=1", "B=2"]
    assert spec.create_body["HostConfig"]["Binds"] == ["/srv/data:/data"]
    assert spec.create_body["HostConfig"]["RestartPolicy"] == {"Name": "always",
                                                               "MaximumRetryCount": 0}
    assert (spec.desired_status, spec.restart_policy, spec.startup_order) == (
        DesiredStatus.RUNNING, RestartPolicy.ALWAYS, MAX_STARTUP_ORDER)


def test_split_create_options_are_joined_in_number_order() -> None:
    text = json.dumps({**CREATE, "Env": [f"V{i}={'x' * 40}" for i in range(30)]})
    chunks = split_create_options(text)
    assert list(chunks)[:3] == ["createOptions", "createOptions01", "createOptions02"]
    assert all(len(c) <= CREATE_OPTIONS_CHUNK for c in chunks.values())
    shuffled = dict(reversed(list(chunks.items())))
    spec = one(edge({"m": edge_module(settings={"image": "x", **shuffled})}))
    assert spec.create_body == json.loads(text) | {"HostConfig": {
        **CREATE["HostConfig"], "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}}


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30),
       st.integers(min_value=1, max_value=600))
def test_any_split_of_create_options_joins_to_the_same_body(value: Any, size: int) -> None:
    body = {"Labels": {"k": json.dumps(value)}, "Value": value}
    text = json.dumps(body, ensure_ascii=False)
    size = max(size, -(-len(text) // MAX_CREATE_OPTIONS_CHUNKS))  # at most 100 chunks
    assert join_create_options(split_create_options(text, size), "m") == body


def test_more_than_100_chunks_are_refused() -> None:
    chunks = split_create_options(json.dumps({"Env": ["x" * 600]}), 6)
    assert len(chunks) > MAX_CREATE_OPTIONS_CHUNKS
    with pytest.raises(FormatError, match="m createOptions: more than 100 chunks"):
        join_create_options(chunks, "m")


def test_create_options_as_an_object_is_taken_as_is_and_copied() -> None:
    options = {"HostConfig": {"Privileged": True}}
    spec = one(edge({"m": edge_module(settings={"image": "x", "createOptions": options})}))
    assert spec.create_body["HostConfig"]["Privileged"] is True
    assert "RestartPolicy" not in options["HostConfig"]


@pytest.mark.parametrize(("settings_", "message"), [
    ({"createOptions": "{", "createOptions02": "}"}, "createOptions01 is missing"),
    ({"createOptions01": "{}"}, "createOptions is missing"),
    ({"createOptions": "{", "createOptions01": 5}, "01: must be a string"),
    ({"createOptions": "[1]"}, "must be an object"),
    ({"createOptions": "{nope"}, "is not valid JSON"),
])
def test_bad_create_options_name_module_and_key(settings_: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=rf"module m settings createOptions.*{message}"):
        edge({"m": edge_module(settings={"image": "x", **settings_})})


def test_env_is_appended_and_wins_over_create_options() -> None:
    spec = one(edge({"m": edge_module(
        settings={"image": "x", "createOptions": json.dumps(CREATE)},
        env={"B": {"value": "from-env"}, "C": {"value": 3}, "D": {"value": True}})}))
    assert spec.create_body["Env"] == ["A=1", "B=from-env", "C=3", "D=true"]


def test_env_without_create_options_makes_env() -> None:
    spec = one(edge({"m": edge_module(env={"X": {"value": "1"}})}))
    assert spec.create_body["Env"] == ["X=1"]


@pytest.mark.parametrize(("policy", "engine"), [
    ("never", "no"), ("on-failure", "on-failure"), ("on-unhealthy", "always"),
    ("always", "always"),
])
def test_restart_policy_maps_to_the_engine(policy: str, engine: str) -> None:
    spec = one(edge({"m": edge_module(restartPolicy=policy)}))
    assert spec.restart_policy is RestartPolicy(policy)
    assert spec.create_body["HostConfig"]["RestartPolicy"]["Name"] == engine


def test_create_options_restart_policy_is_replaced_with_a_warning() -> None:
    specs = edge({"m": edge_module(restartPolicy="never", settings={
        "image": "x", "createOptions": '{"HostConfig":{"RestartPolicy":{"Name":"always"}}}'})})
    assert one(specs).create_body["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert any("RestartPolicy is replaced" in w for w in specs.warnings)


def test_status_and_startup_order() -> None:
    specs = edge({
        "late": edge_module(),
        "first": edge_module(startupOrder=0, status="stopped"),
        "second": edge_module(startupOrder=1),
    })
    assert [s.module for s in specs.modules] == ["first", "second", "late"]
    assert specs.modules[0].desired_status is DesiredStatus.STOPPED


def test_edge_system_modules_are_skipped_with_a_warning() -> None:
    system = {"edgeAgent": {"type": "docker", "settings": {"image": "agent"}},
              "edgeHub": edge_module(startupOrder=0)}
    specs = edge({"m": edge_module()}, system)
    assert [s.module for s in specs.modules] == ["m"]
    assert len([w for w in specs.warnings if "deltaport is the device agent" in w]) == 2


def test_image_in_create_options_is_dropped_with_a_warning() -> None:
    specs = edge({"m": edge_module(settings={"image": "x", "createOptions": '{"Image":"evil"}'})})
    assert "Image" not in one(specs).create_body
    assert any("Image is ignored" in w for w in specs.warnings)


@pytest.mark.parametrize(("module", "message"), [
    (edge_module(restartPolicy="sometimes"), "module m restartPolicy: 'sometimes' is not one"),
    (edge_module(status="paused"), "module m status: 'paused' is not one of running, stopped"),
    (edge_module(startupOrder=-1), "module m startupOrder: must be an integer"),
    (edge_module(startupOrder="1"), "module m startupOrder: must be an integer"),
    (edge_module(env={"X": "1"}), "module m env.X: must be an object"),
    (edge_module(env={"X": {"value": [1]}}), "module m env.X.value: must be a string"),
    ({"type": "docker"}, "module m settings: must be an object"),
    ({"type": "wasm", "settings": {}}, "module m type: 'wasm' is not docker"),
    ("text", "module m: must be an object"),
])
def test_bad_edge_module_names_module_and_key(module: Any, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        edge({"m": module})


def test_edge_module_without_a_signed_image_is_refused() -> None:
    with pytest.raises(FormatError, match="module extra: is not in the signed modules list"):
        edge({"m": edge_module(), "extra": edge_module()}, names=["m"])


@pytest.mark.parametrize("doc", [{}, {"modulesContent": {}},
                                 {"modulesContent": {"$edgeAgent": {}}}])
def test_edge_document_without_agent_desired_properties_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(FormatError, match="must be an object"):
        module_specs(state(ManifestKind.IOTEDGE, doc, ["m"]))


# -- Compose ---------------------------------------------------------------------------


def test_compose_service_maps_the_common_keys() -> None:
    spec = one(compose({"app": {
        "image": "registry.example/app:2", "command": "serve --port '8 0'",
        "entrypoint": ["/bin/tini", "--"], "environment": {"A": 1, "B": None, "C": "x"},
        "labels": ["team=edge", "tier=1"], "user": 1000, "working_dir": "/app",
        "hostname": "app", "network_mode": "none", "privileged": False,
        "cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"], "tmpfs": ["/run:size=1m", "/tmp"],
        "stop_signal": "SIGINT", "stop_grace_period": "1m30s",
    }}))
    body, host = spec.create_body, spec.create_body["HostConfig"]
    assert spec.image == f"{HOST}/demo/app:v2" and spec.image_id == image_id(1)
    assert body["Cmd"] == ["serve", "--port", "8 0"]
    assert body["Entrypoint"] == ["/bin/tini", "--"]
    assert body["Env"] == ["A=1", "C=x"]
    assert body["Labels"] == {"team": "edge", "tier": "1"}
    assert (body["User"], body["WorkingDir"], body["Hostname"]) == ("1000", "/app", "app")
    assert (body["StopSignal"], body["StopTimeout"]) == ("SIGINT", 90)
    assert host["NetworkMode"] == "none" and host["Privileged"] is False
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_ADMIN"], ["ALL"])
    assert host["Tmpfs"] == {"/run": "size=1m", "/tmp": ""}
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert spec.restart_policy is RestartPolicy.NEVER


def test_compose_environment_list_and_bare_names() -> None:
    specs = compose({"app": {"environment": ["A=1", "B=x=y", "C="], "labels": {"k": "v"}}})
    assert one(specs).create_body["Env"] == ["A=1", "B=x=y", "C="]
    specs = compose({"app": {"environment": ["FROM_SHELL"]}})
    assert "Env" not in one(specs).create_body
    assert any("FROM_SHELL has no value" in w for w in specs.warnings)


@pytest.mark.parametrize(("restart", "policy", "engine"), [
    ("no", RestartPolicy.NEVER, {"Name": "no", "MaximumRetryCount": 0}),
    ("always", RestartPolicy.ALWAYS, {"Name": "always", "MaximumRetryCount": 0}),
    ("unless-stopped", RestartPolicy.ALWAYS, {"Name": "unless-stopped", "MaximumRetryCount": 0}),
    ("on-failure", RestartPolicy.ON_FAILURE, {"Name": "on-failure", "MaximumRetryCount": 0}),
    ("on-failure:5", RestartPolicy.ON_FAILURE, {"Name": "on-failure", "MaximumRetryCount": 5}),
])
def test_compose_restart(restart: str, policy: RestartPolicy, engine: dict[str, Any]) -> None:
    spec = one(compose({"app": {"restart": restart}}))
    assert spec.restart_policy is policy
    assert spec.create_body["HostConfig"]["RestartPolicy"] == engine


@pytest.mark.parametrize("restart", ["sometimes", "always:3", "on-failure:x", 1])
def test_bad_compose_restart(restart: Any) -> None:
    with pytest.raises(FormatError, match="service app restart"):
        compose({"app": {"restart": restart}})


def test_compose_healthcheck_durations_are_nanoseconds() -> None:
    spec = one(compose({"app": {"healthcheck": {
        "test": ["CMD", "curl", "-f", "http://localhost"], "interval": "1m30s",
        "timeout": "10s", "start_period": "500ms", "start_interval": "2s", "retries": 3}}}))
    assert spec.create_body["Healthcheck"] == {
        "Test": ["CMD", "curl", "-f", "http://localhost"], "Interval": 90_000_000_000,
        "Timeout": 10_000_000_000, "StartPeriod": 500_000_000, "StartInterval": 2_000_000_000,
        "Retries": 3}


def test_compose_healthcheck_string_disable_and_none() -> None:
    assert one(compose({"a": {"healthcheck": {"test": "curl -f x"}}})).create_body[
        "Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f x"]}
    assert one(compose({"a": {"healthcheck": {"disable": True, "test": "x"}}})).create_body[
        "Healthcheck"] == {"Test": ["NONE"]}
    assert one(compose({"a": {"healthcheck": {"test": ["NONE"]}}})).create_body[
        "Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize(("check", "message"), [
    ({"test": ["RUN", "x"]}, "healthcheck.test: must start with NONE, CMD or CMD-SHELL"),
    ({"test": ["CMD"]}, "healthcheck.test: CMD needs a command"),
    ({"test": "x", "interval": "10 seconds"}, "healthcheck.interval: '10 seconds' is not a"),
    ({"test": "x", "retries": -1}, "healthcheck.retries: must be a non-negative integer"),
    ("curl", "healthcheck: must be an object"),
])
def test_bad_compose_healthcheck(check: Any, message: str) -> None:
    with pytest.raises(FormatError, match=f"service app {message}"):
        compose({"app": {"healthcheck": check}})


@pytest.mark.parametrize(("text", "ns"), [
    ("10s", 10_000_000_000), ("1m30s", 90_000_000_000), ("1h", 3_600_000_000_000),
    ("1.5s", 1_500_000_000), ("250ms", 250_000_000), ("20us", 20_000), ("7ns", 7),
    ("2h45m10s", 9_910_000_000_000), (3, 3_000_000_000), (0.5, 500_000_000),
])
def test_parse_duration(text: Any, ns: int) -> None:
    assert parse_duration(text, "x") == ns


@pytest.mark.parametrize("text", ["", "10", "s", "1d", "1m 30s", "-1s", True, None, -2])
def test_parse_duration_refuses(text: Any) -> None:
    with pytest.raises(FormatError, match="x: "):
        parse_duration(text, "x")


def test_depends_on_orders_startup_dependencies_first() -> None:
    specs = compose({
        "web": {"depends_on": ["api", "cache"]},
        "api": {"depends_on": {"db": {"condition": "service_healthy"}}},
        "db": {},
        "cache": {},
        "worker": {"depends_on": {"db": {"condition": "service_started"}}},
    })
    names = [s.module for s in specs.modules]
    assert names == ["cache", "db", "api", "web", "worker"]
    assert [s.startup_order for s in specs.modules] == [0, 1, 2, 3, 4]
    assert [w for w in specs.warnings if "condition" in w] == [
        "service api depends_on: db condition service_healthy is not waited for; "
        "services start in dependency order"]


def test_depends_on_cycle_is_refused_naming_its_services() -> None:
    with pytest.raises(FormatError, match="services a, b, c: depends_on has a cycle"):
        compose({"a": {"depends_on": ["c"]}, "b": {"depends_on": ["a"]},
                 "c": {"depends_on": ["b"]}, "d": {}})


def test_depends_on_an_unknown_service_is_refused() -> None:
    with pytest.raises(FormatError, match="service a depends_on: names 'ghost'"):
        compose({"a": {"depends_on": ["ghost"]}})


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=8))
    names = [f"s{i}" for i in range(n)]
    return {name: {"depends_on": draw(st.lists(st.sampled_from(names[:i]), unique=True))
                   if i else []} for i, name in enumerate(names)}


@settings(max_examples=100, deadline=None)
@given(dags())
def test_every_service_starts_after_what_it_depends_on(services: dict[str, Any]) -> None:
    shuffled = dict(reversed(list(services.items())))
    order = {s.module: s.startup_order for s in compose(shuffled).modules}
    for name, svc in services.items():
        assert all(order[dep] < order[name] for dep in svc["depends_on"])


@pytest.mark.parametrize(("item", "expected"), [
    ("80", [("80/tcp", {"HostIp": "", "HostPort": ""})]),
    (80, [("80/tcp", {"HostIp": "", "HostPort": ""})]),
    ("8080:80", [("80/tcp", {"HostIp": "", "HostPort": "8080"})]),
    ("127.0.0.1:8080:80/udp", [("80/udp", {"HostIp": "127.0.0.1", "HostPort": "8080"})]),
    ("127.0.0.1::80", [("80/tcp", {"HostIp": "127.0.0.1", "HostPort": ""})]),
    ("[::1]:6001:6001", [("6001/tcp", {"HostIp": "::1", "HostPort": "6001"})]),
    ("9090-9091:8080-8081", [("8080/tcp", {"HostIp": "", "HostPort": "9090"}),
                             ("8081/tcp", {"HostIp": "", "HostPort": "9091"})]),
    ({"target": 80, "published": "8080", "host_ip": "0.0.0.0", "protocol": "udp"},
     [("80/udp", {"HostIp": "0.0.0.0", "HostPort": "8080"})]),
    ({"target": 443}, [("443/tcp", {"HostIp": "", "HostPort": ""})]),
])
def test_parse_port(item: Any, expected: list[Any]) -> None:
    assert parse_port(item, "p") == expected


@pytest.mark.parametrize("item", ["http", "70000", "0", "1:2:3:4", "80/icmp",
                                  "9090-9092:8080-8081", "[::1", {"target": "80"}, None])
def test_parse_port_refuses(item: Any) -> None:
    with pytest.raises(FormatError, match=r"^p"):
        parse_port(item, "p")


def test_ports_become_exposed_ports_and_bindings() -> None:
    body = one(compose({"app": {"ports": ["8080:80", "127.0.0.1:8081:80", "53:53/udp"]}})
               ).create_body
    assert body["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert body["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "8081"}],
        "53/udp": [{"HostIp": "", "HostPort": "53"}]}


@pytest.mark.parametrize(("item", "expected"), [
    ("/srv/data:/data", ("/srv/data:/data", None)),
    ("/srv/data:/data:ro", ("/srv/data:/data:ro", None)),
    ("/srv/data:/data:ro,z", ("/srv/data:/data:ro,z", None)),
    ("cache:/cache", (None, {"Type": "volume", "Source": "cache", "Target": "/cache",
                             "ReadOnly": False})),
    ("cache:/cache:ro", (None, {"Type": "volume", "Source": "cache", "Target": "/cache",
                                "ReadOnly": True})),
    ("/anonymous", (None, {"Type": "volume", "Target": "/anonymous", "ReadOnly": False})),
    ({"type": "bind", "source": "/etc/app", "target": "/cfg", "read_only": True},
     ("/etc/app:/cfg:ro", None)),
    ({"type": "volume", "source": "db", "target": "/var/lib/db"},
     (None, {"Type": "volume", "Source": "db", "Target": "/var/lib/db", "ReadOnly": False})),
    ({"type": "tmpfs", "target": "/scratch"},
     (None, {"Type": "tmpfs", "Target": "/scratch", "ReadOnly": False})),
])
def test_parse_volume(item: Any, expected: Any) -> None:
    assert parse_volume(item, "v") == expected


@pytest.mark.parametrize(("item", "message"), [
    ("./data:/data", "relative host path"), ("~/data:/data", "relative host path"),
    ("/srv:data", "container path must be absolute"), ("a:/b:ro:x", "SOURCE:TARGET"),
    ({"type": "bind", "source": "data", "target": "/d"}, "absolute host path"),
    ({"type": "npipe", "target": "/d"}, "is not bind, volume or tmpfs"),
    ({"type": "volume"}, "must be a container path"), (5, "is not a volume"),
])
def test_parse_volume_refuses(item: Any, message: str) -> None:
    with pytest.raises(FormatError, match=f"^v.*{message}"):
        parse_volume(item, "v")


def test_volumes_become_binds_and_mounts() -> None:
    host = one(compose({"app": {"volumes": ["/srv:/srv:ro", "data:/data"]}})).create_body[
        "HostConfig"]
    assert host["Binds"] == ["/srv:/srv:ro"]
    assert host["Mounts"] == [{"Type": "volume", "Source": "data", "Target": "/data",
                               "ReadOnly": False}]


def test_env_file_is_refused() -> None:
    with pytest.raises(FormatError, match="service app env_file: is not supported"):
        compose({"app": {"env_file": ".env"}})


def test_unknown_and_ignored_keys_are_warnings() -> None:
    specs = compose({"app": {"build": ".", "container_name": "x", "deploy": {}, "x-meta": 1}})
    assert specs.warnings == (
        "service app: build is ignored (devices run the signed image; nothing is built on them)",
        "service app: container_name is ignored (deltaport names containers <module>.v<version>)",
        "service app: deploy is not supported by deltaport and is ignored",
        "service app: x-meta is not supported by deltaport and is ignored",
    )


@pytest.mark.parametrize(("service", "message"), [
    ({"command": 5}, "service app command: must be a list of strings"),
    ({"command": "a 'b"}, "service app command: cannot be split"),
    ({"environment": "A=1"}, "service app environment: must be a list of strings"),
    ({"environment": ["=1"]}, "service app environment: '=1' has no name"),
    ({"labels": {"a": {"b": 1}}}, "service app labels.a: must be a string or number"),
    ({"privileged": "yes"}, "service app privileged: must be true or false"),
    ({"user": ["root"]}, "service app user: must be a string"),
    ({"tmpfs": ["run"]}, "service app tmpfs: 'run' must be an absolute path"),
    ({"ports": "80"}, "service app ports: must be a list"),
    ({"stop_grace_period": "soon"}, "service app stop_grace_period: 'soon' is not a duration"),
])
def test_bad_compose_service_names_service_and_key(service: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        compose({"app": service})


def test_compose_document_without_services_is_refused() -> None:
    with pytest.raises(FormatError, match="compose manifest services: must be an object"):
        module_specs(state(ManifestKind.COMPOSE, {"version": "3"}, ["app"]))


def test_compose_service_without_a_signed_image_is_refused() -> None:
    doc: dict[str, Any] = {"services": {"app": {}, "sidecar": {}}}
    with pytest.raises(FormatError, match="service sidecar: is not in the signed modules"):
        module_specs(state(ManifestKind.COMPOSE, doc, ["app"]))
