"""Checking how the demo ended: every image verified three ways, every device where it
must be (each deployment's outcome at the hub, what its engine runs)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from typing import Any

from deltaport.demo.model import DemoImage, DemoResult, Device
from deltaport.demo.outcome import DeploymentOutcome, DeviceOutcome, engine_modules
from deltaport.errors import DeltaportError
from deltaport.hub.client import HubClient
from deltaport.oci import TransportOptions, open_source

FINAL_ACTIVATIONS = frozenset({"active", "rolled_back", "failed", "refused"})


def activations(hub: HubClient, deployment: str) -> dict[str, tuple[str, str]]:
    """Device → (activation state, reason) of DEPLOYMENT, as the agents reported it."""
    out = {}
    for row in hub.deployment(deployment)["devices"]:
        activation = row.get("activation") or {}
        out[str(row["device"])] = (str(activation.get("state", "pending")),
                                   str(activation.get("reason") or ""))
    return out




def _skopeo_image_id(ref: str) -> str | None:
    """The image ID skopeo reads from REF (None when skopeo is not installed)."""
    if shutil.which("skopeo") is None:
        return None
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", ref],
                         check=True, capture_output=True, timeout=60).stdout
    return str(json.loads(raw)["config"]["digest"])


def verify_device_image(device: Device, image: DemoImage, hub_images: list[dict[str, Any]],
                        options: TransportOptions) -> list[str]:
    """Why IMAGE is not verified on DEVICE (empty: it is): registry, skopeo and hub agree."""
    problems = []
    ref = device.registry.ref(image.on_device)
    try:
        with open_source(ref, options) as src:
            found = src.image_id()
    except DeltaportError as exc:
        return [f"{device.name}: {image.repo_tag} is not in its registry ({exc})"]
    if found != image.image_id:
        problems.append(f"{device.name}: {image.repo_tag} has image ID {found}, "
                        f"registered {image.image_id}")
    seen = _skopeo_image_id(ref)
    if seen not in (None, image.image_id):
        problems.append(f"{device.name}: skopeo reads image ID {seen} for {image.repo_tag}")
    at_hub = {str(i["image_id"]): str(i["status"]) for i in hub_images}
    if at_hub.get(image.image_id) != "present":
        problems.append(f"{device.name}: the hub says {image.repo_tag} is "
                        f"{at_hub.get(image.image_id, 'absent')}")
    return problems


def verify(hub: HubClient, result: DemoResult, devices: list[Device],
            images: dict[str, DemoImage], options: TransportOptions) -> None:
    """Mark each delivery verified or add to ``result.problems`` why it is not."""
    hub_images = {d.name: list(hub.device(d.name)["images"]) for d in devices}
    by_tag = {i.repo_tag: i for i in images.values()}
    by_name = {d.name: d for d in devices}
    for k, delivery in enumerate(result.deliveries):
        found = verify_device_image(by_name[delivery.device], by_tag[delivery.image],
                                    hub_images[delivery.device], options)
        result.problems.extend(found)
        result.deliveries[k] = dataclasses.replace(delivery, verified=not found)
    states = {set_id: hub.deployment(set_id)["state"] for set_id in result.deployments}
    for set_id, state in states.items():
        if state != "active":
            result.problems.append(f"deployment {set_id} is {state}, not active")
    result.tags = {i.image_id: i.repo_tag for i in images.values()}
    for d in devices:
        outcome = _device_outcome(hub, d, result, images)
        result.outcomes.append(outcome)
        result.problems.extend(_runtime_problems(outcome, images))


EXPECTED = {"v1": "active", "v2": "active", "v3": "rolled_back"}  # what each deployment must end as
FINAL_TAG = "v2"  # what every device must run at the end


def _device_outcome(hub: HubClient, device: Device, result: DemoResult,
                    images: dict[str, DemoImage]) -> DeviceOutcome:
    """What runs on DEVICE (asked of its engine) and what became of each deployment."""
    tags = [tag for tag in EXPECTED][: len(result.deployments)]
    given = []
    for tag, set_id in zip(tags, result.deployments, strict=True):
        state, reason = activations(hub, set_id).get(device.name, ("pending", ""))
        given.append(DeploymentOutcome(set_id, images[tag].repo_tag, state, reason))
    running = next((g for g in reversed(given) if g.state == "active"), None)
    return DeviceOutcome(device.name, engine_modules(device.engine.docker_host), running,
                         tuple(given))


def _runtime_problems(outcome: DeviceOutcome, images: dict[str, DemoImage]) -> list[str]:
    """Why OUTCOME is not where the demo must end (empty: it is)."""
    problems = []
    for tag, given in zip(EXPECTED, outcome.deployments, strict=False):
        if given.state != EXPECTED[tag]:
            problems.append(f"{outcome.name}: deployment of {given.image} ended {given.state}, "
                            f"expected {EXPECTED[tag]} {given.reason}".rstrip())
    running = [m for m in outcome.modules if m.state == "running"]
    want = images[FINAL_TAG].image_id
    if [(m.name, m.image_id) for m in running] != [("app", want)]:
        problems.append(f"{outcome.name}: the engine runs "
                        f"{[(m.name, m.image_id[:19]) for m in running] or 'nothing'}, "
                        f"expected app from {images[FINAL_TAG].repo_tag} ({want[:19]})")
    return problems
