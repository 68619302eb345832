"""A deployment's page in a real browser updates itself while a real agent downloads.

The real agent (``deltaport.agent``) and the real hub, as in tests/hub/test_with_agent.py,
with the bundle coming through a throttled TCP link (~14 s for the bundle). The browser
opens the deployment's page while the image is in transit and, without a reload, sees
the bytes received that the agent reports (POST /progress) rise, and then the image
present, arrived and the count change.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from deltaport.agent import Agent, AgentConfig, HubSettings
from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.bundle.keys import generate_keypair
from deltaport.config import Settings
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import Device
from deltaport.fleet.queries import hash_token
from deltaport.hub.client import HubClient
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.oci import TransportOptions, copy_image
from tests.fixtures.images import Entry, build_image, default_layers, write_oci_layout
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.services import Registry, free_port, run_registry
from tests.hub.conftest import OPERATOR_TOKEN, hub_in_thread
from tests.ui.test_browser import CHROMIUM, DRIVER

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver as ChromeDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

OPTS = TransportOptions(insecure=True)
DOWNLOAD_SECONDS = 14.0
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (scripts/setup.sh)"),
]


def _browser() -> ChromeDriver:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,700"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    return ChromeDriver(service=Service(DRIVER), options=options)


def _progress(driver: ChromeDriver) -> tuple[int, int]:
    """The first progress bar's value and the bytes received it reports (-1 without one):
    read in one script, because htmx may swap the element between a find and a read (a
    stale element, seen in CI)."""
    value = driver.execute_script(
        "const bar = document.querySelector('#cells progress');"
        "const got = document.querySelector('#cells .received');"
        "return [bar ? Number(bar.getAttribute('value') || 0) : -1,"
        "        got ? Number(got.dataset.received) : -1];")
    return int(value[0]), int(value[1])


def _text(driver: ChromeDriver, element_id: str) -> str | None:
    """An element's text, found and read in one script (htmx swaps the live part)."""
    found = driver.execute_script(
        "const el = document.getElementById(arguments[0]);"
        "return el === null ? null : el.innerText;", element_id)
    return None if found is None else str(found)


def _present_shown(driver: ChromeDriver) -> bool:
    return bool(driver.execute_script("return document.getElementById('count-present') !== null;"))


def test_the_page_follows_a_real_download(registry: Registry, tmp_path: Path) -> None:
    layouts = {}
    v2_layers = default_layers(1)  # with 1.5 MB of noise: several progress reports
    v2_layers[2].append(Entry("app/payload.bin", data=random.Random(5).randbytes(1_500_000)))
    images = {"v1": build_image(0), "v2": build_image(1, layers=v2_layers)}
    for tag in ("v1", "v2"):
        layout = write_oci_layout(tmp_path / f"layout-{tag}", images[tag], tag="t")
        layouts[tag] = f"oci:{layout}:t"
        copy_image(layouts[tag], registry.ref(f"demo/app:{tag}"), OPTS)
    data = tmp_path / "data"
    keys = generate_keypair(data / "keys")
    manifest_keys = generate_keypair(data / "keys", "manifest")
    db_url = f"sqlite:///{data / 'deltaport.db'}"
    settings = HubServerSettings(
        fleet=Settings(data_dir=data, db_url=db_url), registry_insecure=True, port=free_port(),
        operators=(OperatorToken("ci", hash_token(OPERATOR_TOKEN)),),
    )
    with (
        run_registry(tmp_path / "device-registry") as device_registry,
        hub_in_thread(settings) as url,
        HubClient(url, OPERATOR_TOKEN, timeout=120) as hc,
    ):
        copy_image(layouts["v1"], device_registry.ref("demo/app:v1"), OPTS)
        for tag in ("v1", "v2"):
            hc.register_image(registry.ref(f"demo/app:{tag}"))
        token = hc.add_device("edge-1", local_registry=device_registry.host)["token"]
        with TcpProxy(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as link:
            config = AgentConfig(
                device="edge-1", trusted_keys=(keys.public_key_path,), inbox=tmp_path / "inbox",
                state_dir=tmp_path / "state", registry=f"docker://{device_registry.host}",
                desired_manifest=tmp_path / "desired.json",
                runtime=RuntimeSettings(kind=RuntimeKind.FILE,
                                        manifest_keys=(manifest_keys.public_key_path,),
                                        desired_file=tmp_path / "desired.json"),
                hub=HubSettings(link.url, token, timeout=30.0, insecure=True),
                poll_interval=0.2,
            )
            with Agent(config) as agent:
                agent.run_once()  # check-in: the hub learns the device has v1
                plan = hc.deploy(f"services:\n  app:\n    image: {registry.host}/demo/app:v2\n",
                                 by="ci", email="ops@example.com", devices=["edge-1"])
                size = int(plan["devices"][0]["bytes"])
                rate = max(256.0, size / DOWNLOAD_SECONDS)  # bytes per second on the link
                link.set_rate(rate)
                engine = init_db(db_url)
                with session_scope(engine) as s:  # the hub estimates at the device's rate
                    s.execute(update(Device).values(link_rate_bps=int(rate * 8)))
                engine.dispose()
                driver = _browser()
                try:
                    driver.get(url + "/ui/login")
                    driver.find_element(By.ID, "token").send_keys(OPERATOR_TOKEN)
                    driver.find_element(By.ID, "login").submit()
                    driver.get(f"{url}/ui/deployments/{plan['deployment']}")
                    driver.execute_script("window.notReloaded = true")
                    assert _text(driver, "count-in_transit") == "1"
                    seen: list[tuple[int, int]] = []
                    arrived = threading.Event()

                    failures: list[BaseException] = []

                    def watch() -> None:  # the browser, polled while the agent works
                        deadline = time.monotonic() + 40
                        try:
                            while time.monotonic() < deadline:
                                seen.append(_progress(driver))
                                if _present_shown(driver):
                                    arrived.set()
                                    return
                                time.sleep(0.25)
                        except BaseException as exc:  # shown by the test, not lost in a thread
                            failures.append(exc)

                    watcher = threading.Thread(target=watch, daemon=True)
                    started = time.monotonic()
                    watcher.start()
                    for _ in range(20):  # the agent's passes (in the thread that made it)
                        agent.run_once()
                        doc = hc.deployment(plan["deployment"])["devices"][0]["images"]
                        if set(doc.values()) == {"present"}:
                            break
                    downloaded = time.monotonic() - started
                    watcher.join(timeout=45)
                    assert not failures, failures
                    assert arrived.is_set(), seen
                    assert _text(driver, "count-present") == "1"
                    assert _text(driver, "count-in_transit") is None
                    assert driver.execute_script("return window.notReloaded") is True
                    bars = [bar for bar, got in seen if got >= 0]  # the estimate may run ahead
                    assert bars == sorted(bars), seen
                    received = [got for _, got in seen if got >= 0]  # the agent's reports
                    assert len(set(received)) >= 2 and received == sorted(received), seen
                    assert 0 < received[0] < size and received[-1] <= size, seen
                    assert link.bytes_down >= size
                    assert downloaded >= DOWNLOAD_SECONDS * 0.6, downloaded
                finally:
                    driver.quit()
