"""The GIR readiness page in headless Chromium, reached from Airflow's navigation on the real engine.

Logs in through SimpleAuthManager's page (``test_browser.log_in``), clicks "GIR readiness" in the UI's
navigation, and reads the plugin's page inside Airflow's frame. The keystore check and the backup shipping
really run first (Celery worker, simulator), so the page shows what they recorded. Screenshots land in
``test-artifacts/browser/`` (git-ignored); ``readiness.png`` is the one the README shows.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import pytest
from engine_stack import EngineStack, wait_for
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from test_browser import browser, log_in, page_text, screenshot, wait_for_text

from include.gir_ops.readiness.spec import NAV_NAME, NAV_ROUTE, URL_PREFIX

pytestmark = [pytest.mark.engine, pytest.mark.browser]
__all__ = ["browser"]  # the fixture, imported for this module's tests

KEYSTORE_DAG = "gir_rcs_keystore_check"
SHIP_DAG = "gir_speechminer_backup_ship"
REINDEX_DAG = "gir_es_reindex_dc2"


def nav_entry(driver: WebDriver, name: str, timeout: float = 30) -> WebElement:
    """The navigation entry named ``name``: a link or button in the nav, or inside the Plugins menu."""

    def find(d: WebDriver) -> WebElement | bool:
        for element in d.find_elements(By.XPATH, f"//*[self::a or self::button][normalize-space()='{name}']"):
            if element.is_displayed():
                return element
        for element in d.find_elements(By.XPATH, f"//*[@aria-label='{name}' or @title='{name}']"):
            if element.is_displayed():
                return element
        for element in d.find_elements(By.XPATH, "//nav//button | //*[@role='navigation']//button"):
            label = (element.accessible_name or element.text or "").strip()
            if label == "Plugins" and element.is_displayed():
                element.click()  # the entry is in the Plugins menu: open it and look again
        return False

    return WebDriverWait(driver, timeout).until(find)


def run_and_wait(engine: EngineStack, dag_id: str) -> str:
    admin = engine.api("admin")
    admin.unpause(dag_id)
    try:
        run_id = admin.trigger(dag_id)["dag_run_id"]
        admin.wait_run(dag_id, run_id, timeout=240)
    finally:
        admin.pause(dag_id)
    return run_id


@pytest.mark.timeout(600)
def test_readiness_page_from_the_navigation_shows_each_dc(engine: EngineStack, browser: WebDriver) -> None:
    keystore_run = run_and_wait(engine, KEYSTORE_DAG)
    run_and_wait(engine, SHIP_DAG)

    # Not logged in: the plugin's routes answer nothing.
    browser.delete_all_cookies()
    browser.get(f"{engine.api_url}{URL_PREFIX}/api/status")
    assert "DC2" not in page_text(browser)
    assert "Not authenticated" in page_text(browser)

    log_in(browser, engine, "oncall")
    wait_for_text(browser, "Welcome")
    nav_entry(browser, NAV_NAME).click()
    WebDriverWait(browser, 30).until(lambda d: f"/plugin/{NAV_ROUTE}" in d.current_url)
    frame = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
    browser.switch_to.frame(frame)
    wait_for_text(browser, "GIR DR readiness", "DC1", "DC2", "DC3", "rcs-dc2-a", timeout=60)
    verdict = browser.find_element(By.ID, "verdict").text
    assert verdict.startswith("DC2 "), verdict
    # The keystore check just ran and matched everywhere; the backup was just shipped to DC2.
    keystore = browser.find_element(By.ID, "keystore").text
    assert keystore.startswith("ok"), keystore
    link = browser.find_element(By.CSS_SELECTOR, "#keystore a")
    assert keystore_run.replace("+", "%2B").replace(":", "%3A") in (link.get_attribute("href") or "")
    dcs = browser.find_element(By.ID, "dcs").text
    assert "reachable" in dcs and "not reachable" not in dcs, dcs
    assert "ok: index-" in dcs, dcs
    # Nothing was re-indexed on this engine: the gap is red and offers its re-index link.
    assert "Elasticsearch index at DC2 misses" in verdict
    try:
        gap = browser.find_element(By.CSS_SELECTOR, "table.coverage a")
    except NoSuchElementException:
        raise AssertionError(f"no re-index link on the page:\n{page_text(browser)[:2000]}") from None
    href = gap.get_attribute("href") or ""
    assert f"{URL_PREFIX}/reindex?site=DC2" in href
    browser.switch_to.default_content()
    browser.set_window_size(1400, 1300)
    path = screenshot(browser, "readiness")
    assert path.stat().st_size > 10_000

    # The gap's link opens, inside Airflow's frame, the re-index of exactly that range; its button
    # triggers it through the REST API in the user's own session.
    browser.switch_to.frame(browser.find_elements(By.TAG_NAME, "iframe")[0])
    browser.find_element(By.CSS_SELECTOR, "table.coverage a").click()
    wait_for_text(browser, "Trigger re-index", "gir_es_reindex_dc2")
    browser.find_element(By.ID, "trigger").click()
    wait_for_text(browser, "Triggered: run manual__")
    browser.switch_to.default_content()
    screenshot(browser, "readiness-reindex-triggered")
    browser.switch_to.frame(browser.find_elements(By.TAG_NAME, "iframe")[0])
    run_id = browser.find_element(By.CSS_SELECTOR, "#result a").text.removeprefix("run ")
    admin = engine.api("admin")
    run = admin.run(REINDEX_DAG, run_id)
    query = parse_qs(urlsplit(href).query)
    assert run["conf"] == {
        "from": query["from"][0],
        "to": query["to"][0],
        "contact_centers": query["contact_center_id"],
        "kinds": query["kind"],
        "purge_old": False,
    }
    assert run["triggering_user_name"] == "oncall"
    # Leave the engine as found (the helper's request() would parse the empty 204 body as JSON). When an
    # earlier test unpaused the DAG the run is already going, and Airflow deletes no running run (409):
    # ask again until it has ended.
    path = f"{admin.base_url}/api/v2/dags/{REINDEX_DAG}/dagRuns/{quote(run_id, safe='')}"
    wait_for(
        f"{REINDEX_DAG} {run_id} deleted once it is not running",
        lambda: admin.session.delete(path, timeout=30).status_code == 204,
        timeout=300,
        interval=3.0,
    )
