"""`deltaport demo`: a whole fleet deployment on this machine, every part real.

It starts a hub (``deltaport hub serve``: SQLite and a bundle folder in a temporary
data dir), a cloud registry and one local registry per device (Docker Distribution),
an SMTP server for the requester's email, and one agent process per device
(``deltaport agent run``), each reaching the hub through its own throttled link
that drops connections at random (:mod:`deltaport.demo.link`). The devices start
from different inventories (:mod:`deltaport.demo.fleet`). Through the hub's operator
API it registers v1 and v2 of a realistic image, deploys v1, and — once v1 is on
every device and the deployment is activated — v2, as a rollout in two waves (staged
everywhere, activated on the first device, then on the others); it shows live progress,
then a table of what crossed each link next to what a layer pull would have cost.

It fails (a :class:`~deltaport.errors.DeltaportError`, so a non-zero exit) unless
every image arrived verified: the image ID in each device registry equals the
registered one, the hub's database says ``present``, every deployment set is
``active`` and each agent wrote its desired manifest. Every process it started is
stopped by PID on the way out, also on Ctrl-C or failure.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from deltaport.agent.registry import LocalRegistry
from deltaport.cli.common import human_bytes
from deltaport.delta.image import target_name
from deltaport.demo.fleet import (
    REQUESTER_EMAIL,
    DeviceSetup,
    HubFiles,
    agent_config_text,
    device_setups,
    prepare_hub_dir,
    write_agent_config,
)
from deltaport.demo.images import DemoSizes, write_demo_image, write_tools_image
from deltaport.demo.link import TcpProxy
from deltaport.demo.mail import MailCatcher, Received
from deltaport.demo.model import DemoImage, DemoOptions, DemoResult, Device
from deltaport.demo.outcome import (
    report_document,
    rollout_line,
    runtime_table,
)
from deltaport.demo.podman import Engine, run_podman_service
from deltaport.demo.processes import ProcessGroup, agent_command, hub_command, log_tail
from deltaport.demo.progress import DeviceLine, LiveView
from deltaport.demo.report import (
    LEGEND,
    Delivery,
    diff_ids,
    duration,
    failure_lines,
    layer_blobs,
    pull_bytes,
    results_table,
    totals,
)
from deltaport.demo.services import Registry, free_port, run_registry
from deltaport.demo.verify import EXPECTED, FINAL_ACTIVATIONS, activations, verify
from deltaport.errors import IntegrityError, StateError, UsageError
from deltaport.fsutil import write_atomic
from deltaport.hub.client import HubClient
from deltaport.oci import TransportOptions, copy_image
from deltaport.pipelines.image_to_device import bundle_store_key

POLL_SECONDS = 0.5  # how often the demo asks the hub how things stand
ROLLOUT_TAG = "v2"  # deployed as a rollout: the first device is the canary, then the rest
FAULTS = ("corrupt-bundle",)
T = TypeVar("T")


# --- setting up -------------------------------------------------------------------------


@contextmanager
def _work_dir(keep: Path | None) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="deltaport-demo-") as tmp:
            yield Path(tmp)
        return
    if keep.exists() and any(keep.iterdir()):
        raise UsageError(f"--keep {keep}: the folder must be empty or not exist yet")
    keep.mkdir(parents=True, exist_ok=True)
    yield keep.resolve()


def _build_images(cloud: Registry, sizes: DemoSizes, options: TransportOptions) -> dict[str, str]:
    """Write app v1, v2 and the tools image to the cloud registry; tag → docker:// ref."""
    refs = {
        "v1": cloud.ref("demo/app:v1"),
        "v2": cloud.ref("demo/app:v2"),
        "v3": cloud.ref("demo/app:v3"),
        "tools": cloud.ref("demo/tools:v1"),
    }
    for version in (1, 2, 3):
        write_demo_image(version, refs[f"v{version}"], options, sizes)
    write_tools_image(refs["tools"], options, sizes)
    return refs


def _seed(setup: DeviceSetup, registry: Registry, refs: dict[str, str],
          options: TransportOptions) -> None:
    """Put the device's starting inventory straight into its registry."""
    if setup.start == "has-v1":
        copy_image(refs["v1"], registry.ref("demo/app:v1"), options)
    elif setup.start == "shares-base":
        copy_image(refs["tools"], registry.ref("demo/tools:v1"), options)


def _register(hub: HubClient, refs: dict[str, str]) -> dict[str, DemoImage]:
    images = {}
    for tag, ref in refs.items():
        answer = hub.register_image(ref, build_id=f"demo-{tag}")
        images[tag] = DemoImage(tag, ref, str(answer["image"]), ref.split("/", 3)[3],
                                str(answer["image_id"]), on_device=target_name(ref))
    return images


def _start_hub(group: ProcessGroup, files: HubFiles, logs: Path) -> str:
    port = free_port()
    hub = group.start("hub", hub_command(files.data_dir, port), logs / "hub.log")
    url = f"https://127.0.0.1:{port}"
    hub.wait_http(url + "/healthz", ca_file=files.ca_file)
    return url


def _start_device(stack: ExitStack, group: ProcessGroup, hub: HubClient, hub_port: int,
                  files: HubFiles, setup: DeviceSetup, registry: Registry, work: Path,
                  options: DemoOptions, seed: int | None, engine: Engine) -> Device:
    """Add the device at the hub, open its link, write its agent.toml, start its agent."""
    rate = f"{options.link_bps}"
    token = str(hub.add_device(setup.name, link_rate=rate, local_registry=registry.host,
                               labels={"start": setup.start})["token"])
    link = stack.enter_context(TcpProxy(("127.0.0.1", hub_port), rate=options.link_bps / 8,
                                        cut_between=options.cut_between, seed=seed,
                                        scheme="https"))
    text = agent_config_text(device=setup.name, token=token, hub_url=link.url,
                             registry_host=registry.host, public_key=files.public_key,
                             poll_interval=options.poll_interval,
                             manifest_key=files.manifest_public_key,
                             docker_host=engine.docker_host, registry_root=registry.root,
                             ca_file=files.ca_file)
    agent_files = write_agent_config(work / "devices" / setup.name, text)
    device = Device(setup, registry, link, agent_files, engine)
    device.agent = group.start(f"agent {setup.name}", agent_command(agent_files.config),
                               agent_files.log)
    return device


# --- waiting, with live progress ----------------------------------------------------------


def _while_refreshing(view: LiveView, fn: Callable[[], T]) -> T:
    """Run FN in a thread, keeping the live view ticking until it returns.

    On Ctrl-C the caller does not wait for FN: stopping the hub ends its request.
    """
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(fn)
        while not future.done():
            view.refresh()
            time.sleep(POLL_SECONDS)
        return future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _check_agents(devices: list[Device]) -> None:
    for d in devices:
        if d.agent is not None and not d.agent.running():
            raise StateError(f"the agent of {d.name} exited with status "
                             f"{d.agent.proc.returncode}; log {d.files.log}:\n"
                             f"{log_tail(d.files.log)}")


def _await_checkins(hub: HubClient, devices: list[Device], view: LiveView,
                    expected: dict[str, int], timeout: float) -> None:
    """Wait until every agent has told the hub what its registry holds."""
    view.set_phase("agents check in with their inventories")
    deadline = time.monotonic() + timeout
    waiting = {d.name for d in devices}
    while waiting:
        _check_agents(devices)
        for d in devices:
            if d.name not in waiting:
                continue
            status = hub.device(d.name)
            present = [i for i in status["images"] if i["status"] == "present"]
            if status["last_seen"] and len(present) >= expected[d.name]:
                waiting.discard(d.name)
                names = ", ".join(str(i["image"]).split("/", 1)[-1] for i in present)
                view.set_state(d.name, f"checked in: {names or 'nothing'}")
        if time.monotonic() > deadline:
            raise StateError(f"no check-in from {', '.join(sorted(waiting))} within "
                             f"{timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def _device_have(device: Device, options: TransportOptions) -> set[str]:
    """diff_ids the device's registry holds now."""
    local = LocalRegistry(device.registry.host, options)
    return diff_ids([local.ref(i.name) for i in local.images()], options)


def _compose(image: DemoImage) -> str:
    return f"services:\n  app:\n    image: {image.name}\n    restart: always\n"


def _corrupt_bundle(hub_dir: Path, key: str) -> Path:
    """Flip a byte inside the signed index of bundle KEY in the hub's bundle folder."""
    path = hub_dir / "outbox" / bundle_store_key(key)
    with path.open("r+b") as fh:
        fh.seek(600)
        byte = fh.read(1)
        fh.seek(600)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return path


@dataclass
class _Phase:
    """One deployment being watched."""

    image: DemoImage
    deployment: str
    started: float
    link_start: dict[str, int]
    planned: dict[str, int]  # device → bundle bytes
    already: set[str]  # devices that had the image at deploy time
    arrived: dict[str, tuple[float, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    rollout: str | None = None  # the rollout activating it wave by wave


def _roll_out(hub: HubClient, manifest: Path, devices: list[Device]) -> dict[str, Any]:
    """Stage MANIFEST on every device, activate it in two waves: the canary, then the rest."""
    return hub.rollout_create({
        "manifest": manifest.read_text(), "devices": [d.name for d in devices],
        "canaries": [devices[0].name], "waves": "1%,100%", "success_threshold": "100%",
        "error_threshold": "1", "by": "demo", "email": REQUESTER_EMAIL,
        "manifest_name": manifest.name})


def _deploy(hub: HubClient, image: DemoImage, devices: list[Device], view: LiveView,
            work: Path, hub_dir: Path, fault: str | None, waves: bool = False) -> _Phase:
    """Write the compose file, deploy it to every device (the hub builds the bundles)."""
    manifest = work / "manifests" / f"app-{image.tag}.compose.yml"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(_compose(image))
    view.set_phase(f"deploy {image.repo_tag}: the hub plans and builds bundles "
                   f"({manifest.name})")
    victim = next((d for d in devices if d.setup.start == "empty"), devices[0])
    link_start = {d.name: d.link.bytes_down for d in devices}  # agents may start before we hear
    if fault:
        victim.link.set_outage(True)  # the victim must not fetch before the bundle is spoilt
    rollout = None
    try:
        if waves:
            made = _while_refreshing(view, lambda: _roll_out(hub, manifest, devices))
            plan, rollout = made["plan"], str(made["rollout"])
            view.console.print(f"rollout {rollout}: {image.repo_tag} staged on every device, "
                               f"activated on {devices[0].name} first, then the others")
        else:
            plan = _while_refreshing(view, lambda: hub.deploy(
                manifest.read_text(), by="demo", email=REQUESTER_EMAIL,
                devices=[d.name for d in devices], manifest_name=manifest.name))
        if fault == "corrupt-bundle":
            for row in plan["devices"]:
                if row["device"] == victim.name and row["bundles"]:
                    path = _corrupt_bundle(hub_dir, str(row["bundles"][0]))
                    view.console.print(f"[red]fault:[/] flipped a byte of {path.name} "
                                       f"(the bundle for {victim.name})")
    finally:
        victim.link.set_outage(False)
    rows = {str(r["device"]): r for r in plan["devices"]}
    return _Phase(
        image=image,
        deployment=str(plan["deployment"]),
        started=time.monotonic(),
        link_start=link_start,
        planned={name: int(r["bytes"]) for name, r in rows.items()},
        already={name for name, r in rows.items() if r["present"] and not r["sending"]},
        rollout=rollout,
    )


def _failure_reason(hub: HubClient, device: str, image_id: str) -> str:
    for row in hub.device(device)["images"]:
        if row["image_id"] == image_id and row.get("failure_reason"):
            return str(row["failure_reason"])
    return "(no reason given)"


def _poll(hub: HubClient, phase: _Phase, devices: dict[str, Device], view: LiveView) -> str:
    """One look at the deployment; updates PHASE and the view; returns the set's state."""
    status = hub.deployment(phase.deployment)
    now = time.monotonic()
    for row in status["devices"]:
        name = str(row["device"])
        state = str(row["images"].get(phase.image.name, "absent"))
        link_bytes = devices[name].link.bytes_down - phase.link_start[name]
        if state == "present" and name not in phase.arrived:
            phase.arrived[name] = (0.0, 0) if name in phase.already else (
                now - phase.started, link_bytes)
        if state == "failed" and name not in phase.failed:
            phase.failed[name] = _failure_reason(hub, name, phase.image.image_id)
        shown, detail = f"{phase.image.tag}: {state}", ""
        if state == "in_transit" and phase.planned.get(name):
            done = min(99, 100 * link_bytes // phase.planned[name])
            detail = f", ~{done}% of a {human_bytes(phase.planned[name])} bundle"
        elif name in phase.already:
            shown += " (had it already)"
        view.set_state(name, shown, detail)
    return str(status["state"])


def _watch(hub: HubClient, phase: _Phase, devices: list[Device], view: LiveView,
           timeout: float) -> None:
    """Poll until every device finished activating the deployment, an image failed, or
    TIMEOUT passed."""
    by_name = {d.name: d for d in devices}
    view.set_phase(f"deliver {phase.image.repo_tag} (deployment {phase.deployment})")
    deadline = time.monotonic() + timeout
    while True:
        _check_agents(devices)
        state = _poll(hub, phase, by_name, view)
        if phase.failed or time.monotonic() > deadline:
            return
        if state == "active":
            outcomes = activations(hub, phase.deployment)
            for name, (outcome, reason) in outcomes.items():
                view.set_state(name, f"{phase.image.tag}: {outcome}",
                               f" ({reason})" if reason else "")
            if all(o in FINAL_ACTIVATIONS for o, _ in outcomes.values()):
                return
        time.sleep(POLL_SECONDS)


def _deliveries(phase: _Phase, devices: list[Device], blobs: dict[str, int],
                have: dict[str, set[str]]) -> list[Delivery]:
    out = []
    for d in devices:
        seconds, link_bytes = phase.arrived.get(d.name, (time.monotonic() - phase.started,
                                                         d.link.bytes_down - phase.link_start[
                                                             d.name]))
        if d.name in phase.failed:
            status = f"failed: {phase.failed[d.name]}"
        elif d.name in phase.arrived:
            status = "had it" if d.name in phase.already else "present"
        else:
            status = "did not arrive"
        out.append(Delivery(d.name, phase.image.repo_tag, phase.planned.get(d.name, 0),
                            link_bytes, sum(blobs.values()), pull_bytes(blobs, have[d.name]),
                            seconds, status))
    return out


def _await_emails(mail: MailCatcher | None, expected: int, timeout: float = 10.0) -> list[Received]:
    if mail is None:
        return []
    deadline = time.monotonic() + timeout
    while len(mail.messages()) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return mail.messages()


# --- the demo ---------------------------------------------------------------------------


def _expected_checkin(setup: DeviceSetup) -> int:
    return 0 if setup.start == "empty" else 1


def _phases(hub: HubClient, devices: list[Device],
            images: dict[str, DemoImage], view: LiveView, work: Path, hub_dir: Path,
            options: DemoOptions, transport: TransportOptions, result: DemoResult) -> None:
    """Deploy v1, then (if v1 went through everywhere) v2; collect deliveries."""
    for tag in EXPECTED:
        image = images[tag]
        blobs = layer_blobs(image.ref, transport)
        have = {d.name: _device_have(d, transport) for d in devices}
        phase = _deploy(hub, image, devices, view, work, hub_dir,
                        options.fault if tag == "v1" else None, waves=tag == ROLLOUT_TAG)
        result.deployments.append(phase.deployment)
        _watch(hub, phase, devices, view, options.timeout)
        if phase.rollout is not None:
            result.rollout = _settled_rollout(hub, phase.rollout)
            if result.rollout["state"] != "complete":
                result.problems.append(f"rollout {phase.rollout} is {result.rollout['state']}: "
                                       f"{result.rollout.get('reason')}")
        result.deliveries.extend(_deliveries(phase, devices, blobs, have))
        for name, reason in sorted(phase.failed.items()):
            result.problems.append(f"{name}: {image.repo_tag} failed: {reason}")
        missing = [d.name for d in devices
                   if d.name not in phase.arrived and d.name not in phase.failed]
        if missing:
            result.problems.append(f"{image.repo_tag} did not arrive on {', '.join(missing)} "
                                   f"within {options.timeout:.0f} s")
        if result.problems:
            return


def _settled_rollout(hub: HubClient, rollout: str, timeout: float = 10.0) -> dict[str, Any]:
    """The rollout's status once it stopped moving (its last wave's reports counted)."""
    deadline = time.monotonic() + timeout
    doc = hub.rollout(rollout)
    while doc["state"] not in ("complete", "paused", "cancelled") and \
            time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        doc = hub.rollout(rollout)
    return doc


def run_demo(console: Console, options: DemoOptions | None = None) -> DemoResult:
    """Run the fleet demo; returns what happened if every image arrived verified.

    Raises:
        IntegrityError: something did not arrive verified (every reason listed).
        UsageError: bad options, or a required program (docker-registry) is missing.
        StateError / StorageError / TransferError: a part did not start or answer.
    """
    options = options or DemoOptions()
    if options.fault is not None and options.fault not in FAULTS:
        raise UsageError(f"--fault must be one of {', '.join(FAULTS)}")
    setups = device_setups(options.devices)
    transport = TransportOptions(insecure=True)
    result = DemoResult()
    with ExitStack() as stack:
        work = stack.enter_context(_work_dir(options.keep))
        console.print(f"working in [bold]{work}[/]")
        mail = stack.enter_context(MailCatcher()) if options.email else None
        cloud = stack.enter_context(run_registry(work / "registries" / "cloud"))
        registries = {s.name: stack.enter_context(run_registry(work / "registries" / s.name))
                      for s in setups}
        with console.status("building demo images v1, v2 and tools from this machine's files"):
            refs = _build_images(cloud, options.sizes, transport)
            for s in setups:
                _seed(s, registries[s.name], refs, transport)
        console.print(f"cloud registry {cloud.host}: demo/app:v1, demo/app:v2, demo/tools:v1; "
                      + ", ".join(f"{s.name} starts with {s.start}" for s in setups))
        hub_files = prepare_hub_dir(work / "hub",
                                    smtp=(mail.host, mail.port) if mail is not None else None)
        group = stack.enter_context(ProcessGroup())
        hub_url = _start_hub(group, hub_files, work)
        hub = stack.enter_context(HubClient(hub_url, hub_files.operator_token, timeout=900,
                                            ca_file=hub_files.ca_file))
        console.print(f"hub {hub_url} (data in {hub_files.data_dir}); registering images")
        images = _register(hub, refs)
        hub_port = int(hub_url.rsplit(":", 1)[1])
        with console.status("starting a container engine (podman) per device"):
            engines = {s.name: stack.enter_context(run_podman_service(
                work / "engines" / s.name, [registries[s.name].host])) for s in setups}
        devices = [_start_device(stack, group, hub, hub_port, hub_files, s, registries[s.name],
                                 work, options, None if options.seed is None else options.seed + k,
                                 engines[s.name])
                   for k, s in enumerate(setups)]
        lines = [DeviceLine(d.name, d.setup.start, d.link) for d in devices]
        with LiveView(console, lines, options.link_bps) as view:
            _await_checkins(hub, devices, view, {s.name: _expected_checkin(s) for s in setups},
                            options.timeout)
            _phases(hub, devices, images, view, work, hub_files.data_dir, options,
                    transport, result)
        verify(hub, result, devices, images, transport)
        result.emails = _await_emails(mail, len(result.deployments))
        _show(console, result, options)
        if options.report is not None:
            write_atomic(options.report, json.dumps(
                report_document(result.outcomes, not result.problems, result.problems,
                                result.rollout),
                indent=2).encode())
    if result.problems:
        raise IntegrityError("not every image arrived verified:\n  "
                             + "\n  ".join(result.problems))
    return result


def _show(console: Console, result: DemoResult, options: DemoOptions) -> None:
    console.print(results_table(result.deliveries, options.link_bps))
    for line in failure_lines(result.deliveries):
        console.print(f"[red]{escape(line)}[/]", highlight=False)
    for line in LEGEND:
        console.print(f"[dim]{line}[/]", highlight=False)
    if result.outcomes:
        console.print(runtime_table(result.outcomes, result.tags))
    sent, pulled = totals(result.deliveries)
    console.print(f"bundles: {human_bytes(sent)} in all; a layer pull would have moved "
                  f"{human_bytes(pulled)} ({duration(pulled * 8 / options.link_bps)} at the "
                  "link rate if it never dropped: a pull restarts the layer when it does)")
    if result.rollout is not None:
        console.print(rollout_line(result.rollout), highlight=False)
    for email in result.emails:
        console.print(f"email to {', '.join(email.to)}: [italic]{email.subject}[/]")
    for problem in result.problems:
        console.print(f"[bold red]problem:[/] {problem}", highlight=False)
