"""docker_host: the rebuilt image is loaded into a real Docker-API engine (podman's)."""

from __future__ import annotations

from pathlib import Path

from deltaport.agent import Agent
from deltaport.agent.engine import engine_client, load_errors
from tests.agent.conftest import World, agent_config, image_id_in
from tests.fixtures.podman import podman_socket  # noqa: F401 - a fixture
from tests.fixtures.services import Registry


def test_load_errors_are_found_in_the_stream() -> None:
    stream = b'{"stream":"Loading"}\n{"errorDetail":{"message":"x"},"error":"no space"}\n'
    assert load_errors(stream) == ["no space"]
    assert load_errors(b'{"stream":"Loaded image: a:b"}\n') == []


def test_rebuilt_image_is_loaded_into_the_engine(
        tmp_path: Path, world: World, device_registry: Registry,
        podman_socket: str,  # noqa: F811 - the fixture imported above
) -> None:
    config = agent_config(tmp_path, world, device_registry.host, docker_host=podman_socket)
    config.inbox.mkdir(parents=True)
    (config.inbox / "v2.bundle").write_bytes(world.small.path.read_bytes())
    with Agent(config) as agent:
        report = agent.run_once()
        assert report.reconstructed == 1
        message = agent.state.pending_messages(1)[0]
    engine_name = f"{device_registry.host}/{world.small.target}"
    assert message["engine"] == {"loaded": True, "name": engine_name}
    assert image_id_in(device_registry, world.small.target) == world.small.image_id
    with engine_client(podman_socket) as http:
        inspect = http.get(f"/v1.41/images/{engine_name}/json")
    assert inspect.status_code == 200 and inspect.json()["Id"] == world.small.image_id
