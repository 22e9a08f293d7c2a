"""The Airflow UI in headless Chromium against the engine's API server: what an on-call engineer sees.

Debian's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` only (Selenium Manager never downloads a
browser: both paths are given). Screenshots land in ``test-artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from engine_stack import EXPECTED_DAG_IDS, REPO_ROOT, EngineStack
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = [pytest.mark.engine, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
FAILOVER_DAG = "gir_eservices_failover"
FAILOVER_PARAM_TITLES = ("Target eServices site", "Reason", "Change ticket", "Dry run")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    assert not missing, f"{missing} not installed: `make browser-deps` installs chromium, chromium-driver"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="gir-ops-chromium-") as profile:
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def page_text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver: WebDriver, *texts: str, timeout: float = 30) -> None:
    """Wait until the page shows every text; on timeout say which are missing and save a screenshot."""
    try:
        WebDriverWait(driver, timeout).until(lambda d: all(text in page_text(d) for text in texts))
    except TimeoutException:
        shown = page_text(driver)
        missing = [text for text in texts if text not in shown]
        driver.save_screenshot(str(ARTIFACTS / "failure.png"))
        raise AssertionError(
            f"{driver.current_url} does not show {missing} after {timeout:.0f}s (screenshot failure.png); "
            f"it shows:\n{shown[:2000]}"
        ) from None


def screenshot(driver: WebDriver, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    return path


def button(driver: WebDriver, text: str, timeout: float = 20) -> WebElement:
    def find(d: WebDriver) -> WebElement | bool:
        for element in d.find_elements(By.TAG_NAME, "button"):
            if element.is_displayed() and (element.text.strip() == text or element.accessible_name == text):
                return element
        return False

    return WebDriverWait(driver, timeout).until(find)


def log_in(driver: WebDriver, engine: EngineStack, user: str) -> None:
    """SimpleAuthManager's login page, as a person would use it."""
    driver.delete_all_cookies()
    driver.get(f"{engine.api_url}/")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=username]"))
    assert "/auth/login" in driver.current_url, driver.current_url
    driver.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys(user)
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(engine.passwords()[user])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 30).until(lambda d: "/auth/login" not in d.current_url)


@pytest.mark.timeout(420)
def test_ui_lists_dags_renders_failover_form_and_opens_the_pending_approval(
    engine: EngineStack, browser: WebDriver
) -> None:
    admin = engine.api("admin")
    assert admin.import_errors() == []

    # Log in; the home page would show "Dag Import Errors" if a DAG file failed to import.
    log_in(browser, engine, "admin")
    wait_for_text(browser, "Welcome", "Health", "Active Dags")
    assert "Import Error" not in page_text(browser), page_text(browser)
    screenshot(browser, "01-home-after-login")

    browser.get(f"{engine.api_url}/dags")
    wait_for_text(browser, f"{len(EXPECTED_DAG_IDS)} Dags", *EXPECTED_DAG_IDS)
    assert "Import Error" not in page_text(browser)
    screenshot(browser, "02-dags-list")

    # The failover DAG's trigger form renders its params (and refuses to trigger without them).
    browser.get(f"{engine.api_url}/dags/{FAILOVER_DAG}")
    button(browser, "Trigger", timeout=30).click()
    wait_for_text(browser, f"Trigger Dag - {FAILOVER_DAG}", "Run Parameters", *FAILOVER_PARAM_TITLES)
    wait_for_text(browser, "This field is required")
    screenshot(browser, "03-failover-trigger-form")

    # A failover run triggered by admin (dry run: nothing is POSTed) waits for an approver.
    conf = {
        "target_site": "DC3",
        "reason": "browser test: approval page",
        "change_ticket": "CHG-UI",
        "dry_run": True,
    }
    run_id = admin.trigger(FAILOVER_DAG, conf)["dag_run_id"]
    try:
        admin.wait_task_state(FAILOVER_DAG, run_id, "approve_failover", ["awaiting_input"], timeout=150)
        subject = admin.hitl_detail(FAILOVER_DAG, run_id, "approve_failover")["subject"]
        assert "DC3" in subject, subject

        log_in(browser, engine, "approver")
        browser.get(f"{engine.api_url}/required_actions?response_received=false")
        wait_for_text(browser, subject, run_id, "Approval Required")
        screenshot(browser, "04-required-actions-pending")

        task_page = f"/dags/{FAILOVER_DAG}/runs/{quote(run_id, safe='')}/tasks/approve_failover"
        browser.get(f"{engine.api_url}{task_page}/required_actions")
        wait_for_text(
            browser, "Awaiting Input", subject, "Triggered by:", "admin", "browser test: approval page"
        )
        approve = button(browser, "Approve")
        button(browser, "Reject")
        screenshot(browser, "05-pending-approval")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", approve)
        screenshot(browser, "06-approve-reject-buttons")

        # Approve from the page, as the approver would.
        approve.click()
        run = admin.wait_run(FAILOVER_DAG, run_id, timeout=180)
        assert run["state"] == "success"
        detail = admin.hitl_detail(FAILOVER_DAG, run_id, "approve_failover")
        assert detail["chosen_options"] == ["Approve"]
        assert detail["responded_by_user"]["id"] == "approver"
        switches = [
            r
            for site in engine.sim_ports
            for r in engine_requests(engine, site)
            if r["method"] == "POST" and r["path"].endswith("/multimedia-switch") and "DC3" in str(r["body"])
        ]
        assert switches == [], "a dry run must not POST a switch"
        browser.refresh()
        wait_for_text(browser, "Response received at", "from approver", "Success")
        screenshot(browser, "07-approval-received")
    finally:
        if admin.run(FAILOVER_DAG, run_id)["state"] not in ("success", "failed"):
            approver = engine.api("approver")
            # Never leave a run waiting for approval behind (it would block later failover runs).
            approver.answer_hitl(FAILOVER_DAG, run_id, "approve_failover", ["Reject"], expect=(200, 404, 409))
            admin.wait_run_finished(FAILOVER_DAG, run_id, timeout=120)


def engine_requests(engine: EngineStack, site: str) -> list[dict[str, Any]]:
    received = requests.get(f"{engine.sim_url(site)}/_sim/requests", timeout=10).json()
    return [r for r in received if r["path"].startswith("/api/")]
