"""The approvals console in a real browser: headless Chromium driven by Selenium, each approver with Chrome's
virtual authenticator as their passkey. Two people enroll by link, an agent asks for a critical payment, the list
shows it without a reload, both approve in the browser, and the agent's waiting request receives the JWS with both
approvers in its claims. Every page is photographed (in .build/console-screenshots, or $COUNTERSIGN_SCREENSHOTS), at
desktop and at phone width, where nothing may scroll sideways."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from countersign import AsyncClient, LineItem, PendingApproval, fetch_jwks, verify

from .conftest import REPO, Server
from .passkey import enrollment_link

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SHOTS = Path(os.environ.get("COUNTERSIGN_SCREENSHOTS", REPO / ".build" / "console-screenshots"))

if not (CHROMIUM and DRIVER):
    if os.environ.get("COUNTERSIGN_REQUIRE_BROWSER"):
        raise RuntimeError("COUNTERSIGN_REQUIRE_BROWSER is set but chromium and chromedriver are not installed (make test installs them)")
    pytest.skip("chromium and chromedriver are not installed (make test installs them)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.virtual_authenticator import Protocol, Transport, VirtualAuthenticatorOptions  # noqa: E402
from selenium.webdriver.support import expected_conditions as until  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    authenticator = VirtualAuthenticatorOptions()
    authenticator.protocol = Protocol.CTAP2
    authenticator.transport = Transport.INTERNAL
    authenticator.has_resident_key = True
    authenticator.has_user_verification = True
    authenticator.is_user_verified = True
    authenticator.is_user_consenting = True
    driver.add_virtual_authenticator(authenticator)
    return driver


@pytest.fixture
def two_browsers() -> Iterator[tuple[webdriver.Chrome, webdriver.Chrome]]:
    first, second = browser(), browser()
    try:
        yield first, second
    finally:
        first.quit()
        second.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver: webdriver.Chrome, condition, seconds: float = 30):  # noqa: ANN001, ANN201
    return WebDriverWait(driver, seconds).until(condition)


def enroll(driver: webdriver.Chrome, server: Server, name: str) -> None:
    driver.get(enrollment_link(server, name))
    wait(driver, until.element_to_be_clickable((By.ID, "register")))
    shot(driver, "enroll")
    driver.find_element(By.ID, "register").click()
    wait(driver, until.url_contains("/console/approvals"))


def approve(driver: webdriver.Chrome, server: Server, authorization_id: str) -> str:
    driver.get(f"{server.console_origin}/console/approvals/{authorization_id}")
    button = wait(driver, until.element_to_be_clickable((By.ID, "approve")))
    button.click()
    # The passkey signs, the verdict is recorded, and the page reloads with the new status.
    wait(driver, until.staleness_of(button))
    return wait(driver, until.presence_of_element_located((By.ID, "approval-status"))).text


def test_two_approvers_approve_a_critical_payment_in_the_browser_with_passkeys(server: Server, two_browsers) -> None:  # noqa: ANN001
    henry, iris = two_browsers
    names = (f"henry-{uuid.uuid4().hex[:6]}", f"iris-{uuid.uuid4().hex[:6]}")
    enroll(henry, server, names[0])
    enroll(iris, server, names[1])
    shot(henry, "approvals-before")

    # The agent asks, then waits on its connection for the approvers.
    asked: queue.Queue[str] = queue.Queue()
    outcome: dict = {}

    def agent() -> None:
        async def scenario() -> None:
            async with AsyncClient.from_credential_file(server.credential("agent-es"), server.address) as client:
                pending = await client.authorize(
                    idempotency_key=f"browser-{uuid.uuid4()}", amount=8_800_000, currency="USD",
                    line_items=[LineItem("inference cluster node", 2, 4_400_000)], merchant_id="m-cluster", merchant_category_code="5045",
                    description="two inference cluster nodes",
                )
                assert isinstance(pending, PendingApproval)
                asked.put(pending.authorization_id)
                outcome["authorization"] = await client.wait_for_approval(pending.authorization_id, timeout=180)

        try:
            asyncio.run(scenario())
        except BaseException as error:  # reported by the test below
            outcome["error"] = error
            asked.put("")

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    authorization_id = asked.get(timeout=60)
    assert authorization_id, outcome.get("error")

    # The list, open since the enrollment, shows the new payment without a reload (server-sent events).
    wait(henry, lambda d: d.find_elements(By.CSS_SELECTOR, f'a[href="/console/approvals/{authorization_id}"]'))
    assert "88000.00 USD" in henry.find_element(By.ID, "approval-rows").text
    shot(henry, "approvals")

    henry.get(f"{server.console_origin}/console/approvals/{authorization_id}")
    wait(henry, until.presence_of_element_located((By.ID, "request-json")))
    page = henry.find_element(By.TAG_NAME, "main").text
    assert "two inference cluster nodes" in page and "m-cluster" in page and "critical" in page
    assert '"idempotency_key"' in henry.find_element(By.ID, "request-json").text
    shot(henry, "approval")

    assert approve(henry, server, authorization_id) == "pending_approval"
    assert approve(iris, server, authorization_id) == "authorized"
    shot(iris, "approval-decided")

    thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    authorization = outcome["authorization"]
    assert authorization.approvers == names
    claims = verify(authorization.jws, fetch_jwks(server.jwks_url), audience="m-cluster")
    assert claims.approvers == names and claims.tier == "critical"

    # The decided payment left the list (live, again).
    henry.get(f"{server.console_origin}/console/approvals")
    wait(henry, lambda d: not d.find_elements(By.CSS_SELECTOR, f'a[href="/console/approvals/{authorization_id}"]'))

    # The audit log: an entry's inclusion proof, recomputed in the page, leads to the signed checkpoint's root.
    henry.get(f"{server.console_origin}/console/audit")
    first = wait(henry, until.element_to_be_clickable((By.CSS_SELECTOR, "button.check-proof")))
    index = first.get_attribute("data-index")
    first.click()
    result = wait(henry, lambda d: d.find_element(By.ID, f"proof-{index}").text or None)
    assert result.startswith("✓"), result
    shot(henry, "audit")
    for path, name in (("/console/keys", "keys"), ("/console/agents", "agents")):
        henry.get(server.console_origin + path)
        shot(henry, name)

    # At phone width nothing scrolls sideways, and the page's script and styles ran under the strict CSP.
    henry.set_window_size(390, 844)
    for path, name in ((f"/console/approvals/{authorization_id}", "approval-phone"), ("/console/approvals", "approvals-phone")):
        henry.get(server.console_origin + path)
        wait(henry, until.presence_of_element_located((By.TAG_NAME, "main")))
        overflow = henry.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{path} is {overflow}px wider than the phone"
        shot(henry, name)
    violations = [entry["message"] for entry in henry.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert violations == []
