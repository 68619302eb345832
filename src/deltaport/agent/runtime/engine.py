"""DockerEngine: the :class:`Engine` protocol over a Docker Engine API (docker SDK 7.2).

One adapter for Docker/moby, balena-engine and podman's compat API (``podman system
service``): it speaks only the low-level API (``client.api``) at a fixed version, and
creates containers from the raw ContainerCreate body, so IoT Edge createOptions reach
the engine exactly as written. Images are pulled **by digest** from the device's local
registry after checking that the tag's config digest is the signed image ID, and the
engine's image ID is checked again after the pull: a container is never started from
a tag alone.

What differs between engines, and how it is read here:

- podman (4.3, no systemd) never runs healthchecks by itself: ``State.Health.Status``
  stays ``starting``. :meth:`DockerEngine.probe_health` runs the check through the
  exec API instead. podman reports ``State.Health`` with an empty ``Status`` when no
  healthcheck is defined (older libpod answers call it ``Healthcheck``); both are read.
- podman restarts a container whose restart policy says so at once, with no back-off,
  and shows it as ``stopped`` between runs (Docker says ``restarting``); both are
  BACKOFF here, and ``RestartCount`` counts the restarts on both.
- podman keeps a Dockerfile HEALTHCHECK only from Docker-format images (the OCI image
  config has no Healthcheck field).
- podman answers 500 (Docker: 409) for a taken name and for an exec in a stopped
  container, refuses (500 "state improper") to remove a container between two
  restarts (retried), and leaves an exec session's two conmon processes running after
  it ended, so every probe_health costs two processes until podman restarts.

Foreign errors are mapped at this boundary: engine unreachable -> TransferError, an
error answer -> RegistryError (with the status), a missing object -> NotFoundError.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import docker
import docker.errors
import requests.exceptions

from deltaport.agent.engine import load_errors
from deltaport.agent.runtime.model import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_MODULE,
    LABEL_VERSION,
    LOG_LINE_CHARS,
    Health,
    ModuleObservation,
    ModuleSpec,
    RuntimeStatus,
)
from deltaport.errors import (
    DeltaportError,
    IntegrityError,
    NotFoundError,
    RegistryError,
    TransferError,
    UsageError,
)
from deltaport.oci import TransportOptions, open_source, parse_reference

API_VERSION = "1.41"  # Docker 20.10+, balena-engine 20.10+ and podman 4 all speak it
NEVER = "0001-01-01"  # how engines write "no time" (Go's zero time.Time)
DEFAULT_HEALTH_TIMEOUT = 30.0  # seconds, Docker's default healthcheck timeout
NANOSECONDS = 1_000_000_000
MAX_LOG_BYTES = 1 << 20  # read at most this much of a log tail
MAX_PULL_ANSWER = 1 << 20  # bytes of a pull's progress stream searched for errors
CONFLICT = 409
NOT_RUNNING = (409, 500)  # exec on a stopped container: Docker 409, podman 500
REMOVE_ATTEMPTS = 5  # podman refuses (500) to kill a container it is restarting; retry
REMOVE_RETRY_DELAY = 0.2  # seconds


class DockerEngine:
    """The Engine protocol against the Docker-API engine at DOCKER_HOST.

    REGISTRY_HOST is the device's local registry ("127.0.0.1:5000"); every image comes
    from it. Nothing is contacted until a method is called.
    """

    def __init__(self, docker_host: str, registry_host: str, *, timeout: float = 120.0) -> None:
        self.docker_host = docker_host
        self.registry_host = registry_host
        self.timeout = timeout
        with self._mapped("connect"):
            self._client = docker.DockerClient(
                base_url=docker_host, version=API_VERSION, timeout=math.ceil(timeout))
        self._api = self._client.api

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Translate docker SDK and requests errors raised while doing WHAT.

        Raises:
            NotFoundError: the engine answered 404.
            RegistryError: the engine answered another error status.
            TransferError: the engine could not be reached or did not answer in time.
        """
        where = f"engine {self.docker_host}: {what}"
        try:
            yield
        except docker.errors.NotFound as exc:
            raise NotFoundError(f"{where}: not found ({_explanation(exc)})", 404) from exc
        except docker.errors.APIError as exc:
            raise RegistryError(f"{where}: {exc.status_code} {_explanation(exc)}",
                                exc.status_code) from exc
        except (requests.exceptions.RequestException, docker.errors.DockerException,
                OSError) as exc:
            raise TransferError(f"{where}: {exc}") from exc

    # -- images -----------------------------------------------------------------------

    def ensure_image(self, reference: str, image_id: str) -> None:
        """Make the engine hold IMAGE_ID, pulled by digest from the local registry.

        Already there (by ID): nothing to do. Else the reference's tag is resolved in
        the local registry to its manifest digest, its config digest checked, the image
        pulled as ``host/repo@sha256:…`` and the engine's image ID checked.

        Raises:
            IntegrityError: REFERENCE is not in the local registry, or the registry or
                the engine has another image than IMAGE_ID.
            NotFoundError: the local registry does not know REFERENCE.
            RegistryError / TransferError: the engine refused the pull or is unreachable.
        """
        if self._image_id(image_id) == image_id:
            return
        try:
            name = parse_reference("docker://" + reference).name
        except UsageError as exc:
            raise IntegrityError(f"{reference!r} is not an image reference") from exc
        if name is None or name.host != self.registry_host:
            raise IntegrityError(f"{reference} is not in the local registry {self.registry_host}")
        with open_source("docker://" + reference, TransportOptions(insecure=True)) as source:
            digest, found = source.manifest_digest(), source.image_id()
        if found != image_id:
            raise IntegrityError(f"local registry has {reference} as {found}, "
                                 f"the signed manifest requires {image_id}")
        pinned = f"{name.host}/{name.repository}@{digest}"
        with self._mapped(f"pull {pinned}"):
            answer = self._api.pull(pinned)
        errors = load_errors(str(answer).encode()[:MAX_PULL_ANSWER])
        if errors:
            raise RegistryError(f"engine {self.docker_host}: pull {pinned}: {'; '.join(errors)}")
        pulled = self._image_id(pinned)
        if pulled != image_id:
            raise IntegrityError(f"engine {self.docker_host} pulled {pinned} as {pulled}, "
                                 f"the signed manifest requires {image_id}")

    def _image_id(self, name: str) -> str | None:
        """The engine's ID of image NAME (an ID or reference); None if it has none."""
        try:
            with self._mapped(f"inspect image {name}"):
                found = self._api.inspect_image(name)  # type: ignore[no-untyped-call]
        except NotFoundError:
            return None
        return _sha256(found.get("Id"))

    def remove_image(self, image_id: str) -> None:
        """Remove the image from the engine, never forced.

        In use by a container (the engine answers 409): kept, as it must be. Gone
        already (404): nothing to do.

        Raises:
            RegistryError / TransferError: another refusal, or the engine is unreachable.
        """
        try:
            with self._mapped(f"remove image {image_id}"):
                self._api.remove_image(image_id)
        except NotFoundError:
            return
        except RegistryError as exc:
            if exc.status != CONFLICT:
                raise

    # -- containers -------------------------------------------------------------------

    def create(self, spec: ModuleSpec, *, name: str, labels: dict[str, str]) -> str:
        """Create (not start) container NAME from SPEC's body, with Image set to the
        verified image ID and LABELS merged over the body's; returns its id.

        Raises:
            RegistryError: the engine refused the body (409: the name is taken).
            TransferError: the engine is unreachable.
        """
        body = copy.deepcopy(spec.create_body)
        body["Image"] = spec.image_id
        body["Labels"] = {**(body.get("Labels") or {}), **labels}
        with self._mapped(f"create container {name} ({spec.module}, {spec.image})"):
            created = self._api.create_container_from_config(  # type: ignore[no-untyped-call]
                body, name=name)
        return str(created["Id"])

    def start(self, container_id: str) -> None:
        """Start the container (already running: nothing happens).

        Raises:
            NotFoundError: no such container. RegistryError: the engine could not start
                it (the message holds the engine's reason).
        """
        with self._mapped(f"start container {container_id}"):
            self._api.start(container_id)

    def stop(self, container_id: str, timeout: float) -> None:
        """Stop the container: SIGTERM (or its StopSignal), SIGKILL after TIMEOUT
        seconds. Already stopped: nothing happens.

        Raises:
            NotFoundError: no such container.
        """
        with self._mapped(f"stop container {container_id}"):
            self._api.stop(container_id, timeout=math.ceil(timeout))

    def remove(self, container_id: str) -> None:
        """Remove the container (killing it if running) and its anonymous volumes;
        gone already is fine.

        podman answers 500 "container state improper" when asked to kill a container
        it is between two runs of (restart policy); that is retried a few times.

        Raises:
            RegistryError: the engine still refuses after REMOVE_ATTEMPTS.
        """
        for attempt in range(1, REMOVE_ATTEMPTS + 1):
            try:
                with self._mapped(f"remove container {container_id}"):
                    self._api.remove_container(container_id, force=True, v=True)
                return
            except NotFoundError:
                return
            except RegistryError as exc:
                if "state improper" not in str(exc) or attempt == REMOVE_ATTEMPTS:
                    raise
                time.sleep(REMOVE_RETRY_DELAY)

    def observe(self) -> Sequence[ModuleObservation]:
        """Every container labelled ``io.deltaport.managed=true``, as the engine shows
        it now (one that disappears while being read is left out).

        Raises:
            TransferError / RegistryError: the engine is unreachable or refused.
        """
        with self._mapped("list containers"):
            listed = self._api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
        found = []
        for entry in listed:
            try:
                with self._mapped(f"inspect container {entry['Id']}"):
                    doc = self._api.inspect_container(entry["Id"])
            except NotFoundError:
                continue
            found.append(observation(doc))
        return found

    def logs(self, container_id: str, lines: int) -> list[str]:
        """The last LINES lines of stdout+stderr, each cut to LOG_LINE_CHARS (at most
        MAX_LOG_BYTES are read).

        Raises:
            NotFoundError: no such container.
        """
        if lines <= 0:
            return []
        data = bytearray()
        with self._mapped(f"logs of container {container_id}"):
            # follow=False: the SDK follows a streamed log unless told not to
            stream = self._api.logs(container_id, stdout=True, stderr=True, stream=True,
                                    follow=False, tail=lines)
            for chunk in stream:
                data += chunk
                if len(data) >= MAX_LOG_BYTES:
                    break
            stream.close()
        text = bytes(data[:MAX_LOG_BYTES]).decode("utf-8", errors="replace")
        return [line[:LOG_LINE_CHARS] for line in text.splitlines()[-lines:]]

    def probe_health(self, container_id: str) -> Health | None:
        """Run the container's configured healthcheck once now, through the exec API,
        bounded by its Timeout: exit 0 -> HEALTHY, anything else (a non-zero exit, a
        timeout, a container that is not running) -> UNHEALTHY; None: no healthcheck.

        A check that times out is left to finish inside the container (the exec API
        cannot kill it); its result is not waited for.

        Raises:
            NotFoundError: no such container. TransferError: the engine is unreachable.
        """
        with self._mapped(f"inspect container {container_id}"):
            doc = self._api.inspect_container(container_id)
        check = (doc.get("Config") or {}).get("Healthcheck") or {}
        argv = health_argv(check.get("Test"))
        if argv is None:
            return None
        if not (doc.get("State") or {}).get("Running"):
            return Health.UNHEALTHY
        timeout = (check.get("Timeout") or 0) / NANOSECONDS or DEFAULT_HEALTH_TIMEOUT
        try:
            with self._mapped(f"healthcheck of container {container_id}"):
                exec_id = self._api.exec_create(container_id, argv)["Id"]
        except RegistryError as exc:
            if exc.status in NOT_RUNNING:  # it stopped since the inspect
                return Health.UNHEALTHY
            raise
        if not self._run_exec(exec_id, timeout):
            return Health.UNHEALTHY
        with self._mapped(f"healthcheck of container {container_id}"):
            code = self._api.exec_inspect(exec_id).get("ExitCode")
        return Health.HEALTHY if code == 0 else Health.UNHEALTHY

    def _run_exec(self, exec_id: str, timeout: float) -> bool:
        """Run exec EXEC_ID to its end; False if it takes longer than TIMEOUT seconds.

        In a thread because the SDK reads an exec's output with no socket timeout, and
        not detached because podman 4.3 keeps reporting a detached exec as running.

        Known: podman 4.3 (compat API, no systemd) leaves the two conmon processes of
        every exec session running after it ended, even past the container's removal
        (a fresh connection per exec does not help).
        """
        failure: list[DeltaportError] = []

        def run() -> None:
            try:
                with self._mapped(f"healthcheck exec {exec_id}"):
                    self._api.exec_start(exec_id)
            except DeltaportError as exc:
                failure.append(exc)

        worker = threading.Thread(target=run, name=f"healthcheck-{exec_id[:12]}", daemon=True)
        worker.start()
        worker.join(timeout)
        if failure:
            raise failure[0]
        return not worker.is_alive()


# -- pure: reading what the engine answers ---------------------------------------------


def _explanation(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)[:500]


def _sha256(value: Any) -> str | None:
    """An image ID as "sha256:<hex>" (podman's lists may give the bare hex)."""
    if not isinstance(value, str) or not value:
        return None
    return value if ":" in value else f"sha256:{value}"


def _time(value: Any) -> str | None:
    return value if isinstance(value, str) and value and not value.startswith(NEVER) else None


def health_argv(test: Any) -> list[str] | None:
    """The command a healthcheck Test runs: ["CMD", a, …] -> [a, …], ["CMD-SHELL", s]
    -> ["/bin/sh", "-c", s]; None for no check (absent, [], ["NONE"], unknown)."""
    if not isinstance(test, list) or len(test) < 2 or not all(isinstance(t, str) for t in test):
        return None
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return None


def _will_restart(state: dict[str, Any], policy: dict[str, Any], restarts: int) -> bool:
    """Whether the engine's restart policy restarts a container that exited so."""
    name = policy.get("Name") or "no"
    if name in ("always", "unless-stopped"):
        return True
    limit = policy.get("MaximumRetryCount") or 0
    return name == "on-failure" and state.get("ExitCode", 0) != 0 and (
        limit == 0 or restarts < limit)


def runtime_status(state: dict[str, Any], policy: dict[str, Any], restarts: int) -> RuntimeStatus:
    """edgeAgent's runtimeStatus of an inspected container's STATE.

    running -> RUNNING (restarting -> BACKOFF); created / exited with 0 -> STOPPED;
    exited non-zero, OOM-killed or dead -> FAILED; podman's ``stopped`` (exited, about
    to be restarted by its POLICY) -> BACKOFF, else as exited.
    """
    status = state.get("Status")
    if state.get("Restarting") or status == "restarting":
        return RuntimeStatus.BACKOFF
    if status == "running":
        return RuntimeStatus.RUNNING
    if status in ("created", "configured"):
        return RuntimeStatus.STOPPED
    if status == "stopped" and _will_restart(state, policy, restarts):
        return RuntimeStatus.BACKOFF
    if status in ("exited", "stopped"):
        failed = state.get("OOMKilled") or state.get("ExitCode", 0) != 0
        return RuntimeStatus.FAILED if failed else RuntimeStatus.STOPPED
    if status == "dead":
        return RuntimeStatus.FAILED
    return RuntimeStatus.UNKNOWN


def _health(state: dict[str, Any]) -> Health | None:
    """State.Health.Status (Docker, podman compat) or State.Healthcheck (older libpod);
    empty or "none" means no healthcheck."""
    holder = state.get("Health") or state.get("Healthcheck") or {}
    try:
        return Health(str(holder.get("Status")))
    except ValueError:
        return None


def _description(state: dict[str, Any]) -> str:
    if state.get("Error"):
        return str(state["Error"])[:LOG_LINE_CHARS]
    if state.get("OOMKilled"):
        return "killed: out of memory"
    return str(state.get("Status") or "")


def observation(doc: dict[str, Any]) -> ModuleObservation:
    """A ModuleObservation of one ``GET /containers/{id}/json`` answer DOC."""
    state = doc.get("State") or {}
    labels = (doc.get("Config") or {}).get("Labels") or {}
    restarts = int(doc.get("RestartCount") or 0)
    policy = (doc.get("HostConfig") or {}).get("RestartPolicy") or {}
    started = _time(state.get("StartedAt"))
    running = bool(state.get("Running"))
    version = str(labels.get(LABEL_VERSION, ""))
    name = str(doc.get("Name") or "").lstrip("/")
    return ModuleObservation(
        module=str(labels.get(LABEL_MODULE) or name),
        container_id=str(doc.get("Id")),
        name=name,
        deployment=str(labels.get(LABEL_DEPLOYMENT, "")),
        version=int(version) if version.isdigit() else 0,
        image_id=_sha256(doc.get("Image")) or "",
        status=runtime_status(state, policy, restarts),
        running=running,
        exit_code=None if running or started is None else int(state.get("ExitCode") or 0),
        restart_count=restarts,
        started_at=started,
        finished_at=_time(state.get("FinishedAt")),
        health=_health(state),
        description=_description(state),
    )
