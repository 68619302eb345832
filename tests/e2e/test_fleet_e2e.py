"""End to end through a link that drops every 64 KiB: operator deploys, devices run it, DB knows.

Hub and agents are separate processes, registries and SMTP are the real servers.
dev-1 starts empty, dev-2 with an unrelated image sharing the base layer. v1 then v2
are deployed to both; each agent reaches the hub through its own proxy cutting every
connection after 64 KiB. Checked: skopeo reads the registered image IDs from the
device registries, the hub's database says present, both deployment sets are
active and each agent wrote the desired manifest, the requester got an email per
deployment, and what crossed each link is at most 1.05 × the bundle bytes sent.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import pytest

from deltaport.demo.fleet import agent_config_text, write_agent_config
from deltaport.demo.link import TcpProxy
from deltaport.demo.mail import MailCatcher
from deltaport.demo.processes import ProcessGroup, agent_command
from deltaport.oci import copy_image
from deltaport.pipelines.adapters import delivered_name
from tests.e2e.conftest import (
    OPTS,
    REQUESTER,
    Cloud,
    Hub,
    active,
    checked_in,
    compose,
    desired_deployment,
    skopeo_image_id,
    wait_for,
)
from tests.fixtures.services import run_registry

pytestmark = pytest.mark.slow  # end to end: `-m "not slow"` leaves it out

CUT = 64 * 1024
OVERHEAD = 1.05  # link bytes / bundle bytes, API calls and HTTP headers included
# Over https a cut also loses the TLS record in flight (at most 16 KiB, received but
# unusable) and each new connection costs a handshake (about 2 KiB here, down).
PER_CONNECTION = 16 * 1024 + 2 * 1024


def test_fleet_over_links_cut_every_64k(
    cloud: Cloud,
    start_hub: Callable[..., Hub],
    group: ProcessGroup,
    mail: MailCatcher,
    tmp_path: Path,
) -> None:
    hub = start_hub()
    hc = hub.client
    registered = {tag: hc.register_image(ref) for tag, ref in cloud.refs.items()}
    starts = {"dev-1": None, "dev-2": "tools"}
    with ExitStack() as stack:
        registries, links, agents = {}, {}, {}
        for name, start in starts.items():
            reg = stack.enter_context(run_registry(tmp_path / "registries" / name))
            if start:
                copy_image(cloud.refs[start], reg.ref("demo/tools:v1"), OPTS)
            token = hc.add_device(name, local_registry=reg.host)["token"]
            link = stack.enter_context(TcpProxy(("127.0.0.1", hub.port), cut_after=CUT,
                                                    scheme="https"))
            files = write_agent_config(tmp_path / "devices" / name, agent_config_text(
                device=name, token=token, hub_url=link.url, registry_host=reg.host,
                public_key=hub.files.public_key, poll_interval=2.0,
                manifest_key=hub.files.manifest_public_key, ca_file=hub.files.ca_file))
            group.start(f"agent {name}", agent_command(files.config), files.log)
            registries[name], links[name], agents[name] = reg, link, files
        logs = (tmp_path / "hub.log", *(f.log for f in agents.values()))
        for name, start in starts.items():
            wait_for(partial(checked_in, hc, name, 1 if start else 0),
                     f"{name} to check in", 30, logs=logs)

        sent = {name: 0 for name in starts}
        deployments = []
        for tag in ("v1", "v2"):
            plan = hc.deploy(compose(registered[tag]["image"]), by="e2e", email=REQUESTER,
                             devices=list(starts))
            for row in plan["devices"]:
                assert row["sending"], row  # every device gets a bundle for every version
                sent[row["device"]] += row["bytes"]
            deployment = plan["deployment"]
            deployments.append(deployment)
            wait_for(partial(active, hc, deployment), f"{tag} to be active", 90, logs=logs)

            def all_desire(d: str = deployment) -> bool:
                return all(desired_deployment(f.desired_manifest) == d for f in agents.values())

            wait_for(all_desire, f"desired manifests of {tag}", 30, logs=logs)

        for name in starts:
            for tag in ("v1", "v2"):
                ref = registries[name].ref(delivered_name(registered[tag]["image"]))
                assert skopeo_image_id(ref) == registered[tag]["image_id"], (name, tag)
            at_hub = {i["image_id"]: i["status"] for i in hc.device(name)["images"]}
            for tag in ("v1", "v2"):
                assert at_hub[registered[tag]["image_id"]] == "present", (name, tag, at_hub)
            link = links[name]
            assert link.cuts > 0, f"{name}: the link never cut a connection"
            assert link.bytes_down <= OVERHEAD * sent[name] + PER_CONNECTION * link.connections, (
                f"{name}: {link.bytes_down} bytes crossed the link in {link.connections} "
                f"connections for {sent[name]} bundle bytes")
            assert link.bytes_down >= sent[name]  # every bundle byte did cross this link

    for deployment in deployments:
        status = hc.deployment(deployment)
        assert status["state"] == "active"
        assert all(set(row["images"].values()) == {"present"} for row in status["devices"])
    desired = desired_deployment(agents["dev-1"].desired_manifest)
    assert desired == deployments[-1]
    subjects = wait_for(lambda: [m.subject for m in mail.messages()
                                 if REQUESTER in m.to] if len(mail.messages()) >= 2 else None,
                        "two emails", 15)
    for deployment in deployments:
        assert any(deployment in s and "complete" in s for s in subjects), subjects
