"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

One browser and one hub (real uvicorn, SQLite) for the module; the tests run in
order, as an operator's visit would: refused without a session, sign in, every view,
numbers against the database, a filter and a search, a live update without a reload,
script in a device name and a label shown as text, an action as operator, a forged
CSRF token and a viewer refused, sign out. Screenshots go to the test's temporary
folder (and to ``$DELTAPORT_UI_SCREENSHOTS`` if set: docs/screenshots is made so).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import pytest

from deltaport.fleet import device_images
from deltaport.fleet import queries as fq
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import DeploymentSet, Device
from deltaport.fleet.states import ImageEvent
from tests.hub.conftest import OPERATOR_TOKEN, World, build_world, fake_toolkit, hub_in_thread
from tests.ui.test_roles import VIEWER_TOKEN

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


class _BrowserLogs(Protocol):
    """Chromium's driver has the browser console log (selenium leaves it untyped)."""

    def get_log(self, log_type: str) -> list[dict[str, Any]]: ...


XSS_NAME = "<img src=x onerror=alert(1)>"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (scripts/setup.sh)"),
]


class Visit:
    """The hub, its fleet, the browser, and where screenshots go."""

    def __init__(self, url: str, world: World, driver: WebDriver, shots: Path) -> None:
        self.url, self.world, self.driver, self.shots = url, world, driver, shots

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def text(self, element_id: str) -> str:
        """The element's rendered text, found and read in one script: a live page swaps its
        elements every few seconds, and a find then a read can meet a stale element."""
        found = self.driver.execute_script(
            "const el = document.getElementById(arguments[0]);"
            "return el === null ? null : el.innerText;", element_id)
        if found is None:
            raise AssertionError(f"no element #{element_id} on {self.driver.current_url}")
        return str(found)

    def follow(self, link_text: str, *, partial: bool = False) -> None:
        """Open the link with LINK_TEXT (or containing it): found and read in one script,
        then loaded (a live page can swap the link between a find and a click)."""
        href = self.driver.execute_script(
            "for (const a of document.querySelectorAll('a')) {"
            " const t = a.innerText.trim();"
            " if (arguments[1] ? t.includes(arguments[0]) : t === arguments[0]) return a.href; }"
            "return null;", link_text, partial)
        if href is None:
            raise AssertionError(f"no link {link_text!r} on {self.driver.current_url}")
        self.driver.get(str(href))

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        extra = os.environ.get("DELTAPORT_UI_SCREENSHOTS")
        if extra:
            shutil.copy(path, Path(extra) / path.name)

    def sign_in(self, token: str) -> None:
        self.open("/ui/login")
        self.driver.find_element(By.ID, "token").send_keys(token)
        self.driver.find_element(By.ID, "login").submit()

    def transition(self, device: str, event: ImageEvent, reason: str | None = None) -> None:
        engine = init_db(self.world.db_url)
        try:
            with session_scope(engine) as s:
                dev = fq.get_device(s, device)
                device_images.transition_image(s, device_id=dev.id, image_id=self.world.v2,
                                               event=event, reason=reason)
        finally:
            engine.dispose()

    def no_alert(self) -> None:
        with pytest.raises(NoAlertPresentException):
            _ = self.driver.switch_to.alert.text

    def csp_violations(self) -> list[str]:
        logs = cast(_BrowserLogs, self.driver).get_log("browser")
        return [e["message"] for e in logs
                if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]


@pytest.fixture(scope="module")
def visit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Visit]:
    root = tmp_path_factory.mktemp("browser")
    # bundles of 1.5 kB for images of 4 kB: the savings shown are the usual kind
    world = build_world(root / "data", f"sqlite:///{root / 'hub.db'}", bundle_size=1500)
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:  # a name the CLI would refuse, as a raw row
            s.add(Device(name=XSS_NAME, token_hash=fq.hash_token("x" * 40), link_rate_bps=9600,
                         labels={"note": "<script>alert(2)</script>"}))
    finally:
        engine.dispose()
    import dataclasses

    from deltaport.hub.settings import OperatorRole, OperatorToken

    settings = world.settings()
    settings = dataclasses.replace(settings, operators=(
        *settings.operators,
        OperatorToken("vera", fq.hash_token(VIEWER_TOKEN), OperatorRole.VIEWER)))
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,860"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with hub_in_thread(settings, toolkit=fake_toolkit(world.registry)) as url:
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        try:
            yield Visit(url, world, driver, root)
        finally:
            driver.quit()


def test_without_a_session_the_browser_gets_the_login_page(visit: Visit) -> None:
    visit.open("/ui/devices")
    assert "/ui/login" in visit.driver.current_url
    assert "dev-1" not in visit.driver.page_source
    visit.sign_in(visit.world.tokens["dev-1"])  # a device token
    assert "not an operator token" in visit.text("message")
    visit.shot("login")


def test_sign_in_and_the_overview_shows_the_databases_numbers(visit: Visit) -> None:
    visit.sign_in(OPERATOR_TOKEN)
    assert visit.driver.current_url.endswith("/ui/")
    assert visit.text("who") == "ops (operator)"
    assert visit.text("n-devices") == "3"  # dev-1, dev-2 and the hostile name
    assert visit.text("n-online") == "1" and visit.text("n-updating") == "2"
    assert visit.text("n-in-progress") == "1"
    visit.shot("overview")


def test_every_view_opens(visit: Visit) -> None:
    w = visit.world
    visit.open("/ui/deployments")
    visit.follow(w.deployment)
    assert visit.text("count-in_transit") == "2" and visit.text("set-state") == "pending"
    visit.shot("deployment")
    visit.follow("dev-1")  # on a live page
    assert visit.text("device-name") == "dev-1"
    assert "in_transit" in visit.text("images") and "present" in visit.text("images")
    visit.shot("device")
    visit.open("/ui/images")
    visit.follow("demo/app:v2", partial=True)
    assert visit.text("count-in_transit") == "2"
    assert visit.text("bundles").count("1 device(s)") == 2  # one bundle per inventory
    visit.shot("image")
    visit.driver.find_element(By.LINK_TEXT, "History").click()
    WebDriverWait(visit.driver, 5).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, "#chart-bytes[data-drawn=yes] canvas"))
    assert len(visit.driver.find_elements(By.CSS_SELECTOR, ".chart canvas")) == 2  # uPlot drew
    assert visit.text("total-arrived") == "0"
    visit.shot("history")
    assert visit.csp_violations() == []  # htmx and the stylesheet live with the strict CSP


def test_a_filter_and_a_search(visit: Visit) -> None:
    wait = WebDriverWait(visit.driver, 15, 0.2)
    visit.open("/ui/deployments")
    Select(visit.driver.find_element(By.ID, "f-state")).select_by_value("active")
    visit.driver.find_element(By.ID, "f-apply").click()
    wait.until(lambda d: "state=active" in d.current_url)
    wait.until(lambda d: visit.world.deployment not in visit.text("deployments"))
    Select(visit.driver.find_element(By.ID, "f-by")).select_by_value("alice")
    Select(visit.driver.find_element(By.ID, "f-state")).select_by_value("")
    visit.driver.find_element(By.ID, "f-apply").click()
    wait.until(lambda d: "by=alice" in d.current_url)
    wait.until(lambda d: visit.world.deployment in visit.text("deployments"))
    visit.open("/ui/devices")
    box = visit.driver.find_element(By.ID, "q")
    box.send_keys("dev-2")
    box.submit()
    wait.until(lambda d: "q=dev-2" in d.current_url)

    def rows(d: object) -> list[str | None]:
        found = visit.driver.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
        return [r.get_attribute("data-device") for r in found]

    wait.until(lambda d: rows(d) == ["dev-2"])
    visit.shot("devices")


def test_a_deployment_page_updates_itself_without_a_reload(visit: Visit) -> None:
    visit.open(f"/ui/deployments/{visit.world.deployment}")
    visit.driver.execute_script("window.notReloaded = true")
    visit.transition("dev-2", ImageEvent.FAILED, reason="no space left on device")
    WebDriverWait(visit.driver, 12, 0.2).until(
        lambda d: d.find_elements(By.ID, "count-failed"))
    assert visit.text("count-failed") == "1" and visit.text("count-in_transit") == "1"
    assert "no space left on device" in visit.text("cells")
    assert visit.driver.execute_script("return window.notReloaded") is True


def test_script_in_a_name_or_label_is_text(visit: Visit) -> None:
    visit.open("/ui/devices")
    cell = visit.driver.find_element(By.CSS_SELECTOR, "#devices tbody tr a")
    assert cell.text == XSS_NAME
    assert "<script>alert(2)</script>" in visit.text("devices")
    assert visit.driver.find_elements(By.CSS_SELECTOR, "#devices img") == []
    visit.no_alert()
    cell.click()
    assert visit.text("device-name") == XSS_NAME
    visit.no_alert()
    engine = init_db(visit.world.db_url)
    try:
        with session_scope(engine) as s:
            dset = s.get(DeploymentSet, visit.world.deployment)
            assert dset is not None
            dset.manifest = {**dset.manifest, "note": "<img src=y onerror=alert(3)>"}
    finally:
        engine.dispose()
    visit.open(f"/ui/deployments/{visit.world.deployment}")
    visit.driver.find_element(By.CSS_SELECTOR, "#manifest summary").click()
    assert "<img src=y onerror=alert(3)>" in visit.text("manifest")
    assert visit.driver.find_elements(By.CSS_SELECTOR, "#manifest img") == []
    visit.no_alert()


def test_an_operator_retries_a_failed_image(visit: Visit) -> None:
    visit.open("/ui/devices/dev-2")
    visit.driver.find_element(By.CSS_SELECTOR, "button.retry").click()
    assert "Retry image" in visit.text("confirm-what")
    visit.driver.find_element(By.ID, "confirm").click()
    assert visit.driver.current_url.endswith("/ui/devices/dev-2")
    rows = visit.driver.find_elements(By.CSS_SELECTOR, "#images tbody tr")
    assert [r.get_attribute("data-status") for r in rows] == ["in_transit"]
    assert "retry asked by ops" in visit.text("timeline")


def test_a_forged_csrf_token_is_refused(visit: Visit) -> None:
    visit.transition("dev-2", ImageEvent.FAILED, reason="again")
    visit.open("/ui/devices/dev-2")
    visit.driver.execute_script(
        "document.querySelector('form.inline input[name=csrf]').value = 'forged'")
    visit.driver.find_element(By.CSS_SELECTOR, "button.retry").click()
    assert "CSRF" in visit.text("error")


def test_a_viewer_is_refused_and_signing_out_ends_the_session(visit: Visit) -> None:
    visit.open("/ui/")
    visit.driver.find_element(By.ID, "sign-out").click()
    assert "/ui/login" in visit.driver.current_url
    visit.sign_in(VIEWER_TOKEN)
    assert visit.text("who") == "vera (viewer)"
    visit.open(f"/ui/deployments/{visit.world.deployment}")
    assert visit.driver.find_elements(By.CSS_SELECTOR, "button.retry, #activate") == []
    visit.driver.execute_script(  # the form an operator would get, posted by hand
        "const f = document.createElement('form'); f.method = 'post';"
        "f.action = '/ui/actions/activate';"
        "for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value],"
        " ['deployment', arguments[0]], ['confirmed', 'yes']]) {"
        " const i = document.createElement('input'); i.type = 'hidden'; i.name = k;"
        " i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();", visit.world.deployment)
    WebDriverWait(visit.driver, 5).until(lambda d: d.find_elements(By.ID, "error"))
    assert "viewer" in visit.text("error")
    visit.open("/ui/")
    visit.driver.find_element(By.ID, "sign-out").click()
    visit.open("/ui/devices")
    assert "/ui/login" in visit.driver.current_url and "dev-1" not in visit.driver.page_source
