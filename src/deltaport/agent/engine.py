"""Loading a reconstructed image into a Docker-API engine (Docker, or podman's compat API).

Optional (``docker_host`` in agent.toml). The image is exported from the local
registry to a ``docker-archive`` tar in the scratch folder and sent to
``POST /images/load``: unlike a pull, this needs no engine-side trust of the local
registry (an insecure ``http://127.0.0.1`` registry is refused by a pull on podman).
The engine's image ID must equal the bundle's. The image is named
``<registry host>/<repository>:<tag>`` in the engine, as a pull from the local
registry would name it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from deltaport.agent.registry import LocalRegistry
from deltaport.errors import IntegrityError, RegistryError, TransferError, UsageError
from deltaport.oci import copy_image

API_VERSION = "v1.41"  # Docker Engine API version spoken (podman 4 and Docker 20.10+ accept it)
MAX_ANSWER_BYTES = 1024 * 1024  # the progress stream of a load
LOAD_TIMEOUT = 600.0  # seconds for the engine to take the archive


def engine_client(docker_host: str) -> httpx.Client:
    """An HTTP client for ``unix:///path/docker.sock``, ``tcp://h:p`` or ``http://h:p``.

    Raises:
        UsageError: another scheme.
    """
    if docker_host.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=docker_host.removeprefix("unix://"))
        return httpx.Client(transport=transport, base_url="http://engine", timeout=LOAD_TIMEOUT)
    if docker_host.startswith(("tcp://", "http://", "https://")):
        base = "http://" + docker_host.removeprefix("tcp://") if docker_host.startswith(
            "tcp://") else docker_host
        return httpx.Client(base_url=base, timeout=LOAD_TIMEOUT)
    raise UsageError(f"docker_host must be unix://, tcp:// or http(s)://, not {docker_host!r}")


def load_errors(stream: bytes) -> list[str]:
    """Pure: the error messages in an engine's JSON-lines progress stream."""
    errors = []
    for line in stream.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("error"):
            errors.append(str(doc["error"])[:1000])
    return errors


def load_into_engine(docker_host: str, registry: LocalRegistry, name: str, image_id: str,
                     scratch: Path) -> str:
    """Load ``name`` ("repo:tag") from the local registry into the engine; return its name there.

    Raises:
        TransferError: the engine cannot be reached.
        RegistryError: the engine refused the archive.
        IntegrityError: the engine's image ID is not ``image_id``.
    """
    engine_name = f"{registry.host}/{name}"
    archive = scratch / "engine-load.tar"
    archive.unlink(missing_ok=True)
    try:
        copy_image(registry.ref(name), f"docker-archive:{archive}:{engine_name}",
                   options=registry.options)
        with engine_client(docker_host) as http, open(archive, "rb") as body:
            answer = http.post(f"/{API_VERSION}/images/load", content=body,
                               headers={"Content-Type": "application/x-tar"})
            if answer.status_code != 200 or load_errors(answer.content[:MAX_ANSWER_BYTES]):
                detail = "; ".join(load_errors(answer.content[:MAX_ANSWER_BYTES]))
                raise RegistryError(f"engine {docker_host} refused {engine_name}: "
                                    f"{answer.status_code} {detail or answer.text[:300]}",
                                    answer.status_code)
            inspect = http.get(f"/{API_VERSION}/images/{engine_name}/json")
    except httpx.HTTPError as exc:
        raise TransferError(f"engine {docker_host}: {type(exc).__name__}: {exc}") from exc
    finally:
        archive.unlink(missing_ok=True)
    got = inspect.json().get("Id") if inspect.status_code == 200 else None
    if got != image_id:
        raise IntegrityError(f"engine {docker_host} has {engine_name} as {got}, "
                             f"expected {image_id}")
    return engine_name
