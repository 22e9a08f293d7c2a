"""The Airflow UI in headless Chromium against the engine's API server: what an on-call engineer sees.

Debian's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` only (Selenium Manager never downloads a
browser: both paths are given). Screenshots land in ``test-artifacts/browser/`` (git-ignored).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import requests
from engine_stack import EXPECTED_DAG_IDS, REPO_ROOT, EngineStack, parse_time, wait_for
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
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


# --- Backfill from the UI: the Trigger dialog's Backfill tab, dates picked in its calendar -----------

REINDEX_DAG = "gir_es_reindex_dc2"
DATE_PICKER = "[data-testid=datetime-input]"  # Airflow 3.3's DateTimeInput: a button opening a popover
OPEN_POPOVER = "[data-scope=popover][data-part=content][data-state=open]"
# The calendar's "Nov 2026" between its previous-month and next-month arrow buttons.
MONTH_HEADER = ".//p[preceding-sibling::button and following-sibling::button]"


def open_date_picker(driver: WebDriver, trigger: WebElement) -> WebElement:
    """Click a From/To field; return its open popover (time zone, Date/Time inputs, a month calendar)."""
    trigger.click()

    def popover(d: WebDriver) -> WebElement | bool:
        for element in d.find_elements(By.CSS_SELECTOR, OPEN_POPOVER):
            if element.is_displayed() and element.find_elements(
                By.XPATH, ".//input[@placeholder='YYYY/MM/DD']"
            ):
                return element
        return False

    return WebDriverWait(driver, 10).until(popover)


def popover_closed(popover: WebElement) -> bool:
    try:
        return not popover.is_displayed()
    except StaleElementReferenceException:  # unmounted on close
        return True


def pick_day(driver: WebDriver, trigger: WebElement, day: date, name: str) -> str:
    """Pick ``day`` as a person would: open the picker, page the calendar to its month, click the day.

    Returns what the picker's Date/Time inputs then show. The calendar's header reads e.g. "Nov 2026"
    between a previous-month and a next-month arrow button; its grid shows the month's days 1..N, padded
    with the neighbouring months' days (which a person does not pick here).
    """
    popover = open_date_picker(driver, trigger)
    wanted = day.strftime("%b %Y")

    def month_shown() -> str:
        return popover.find_element(By.XPATH, MONTH_HEADER).text.strip()

    for _ in range(24):
        shown_text = month_shown()
        if shown_text == wanted:
            break
        shown = datetime.strptime(shown_text, "%b %Y").date()
        header = popover.find_element(By.XPATH, MONTH_HEADER)
        earlier, later = header.find_elements(
            By.XPATH, "./preceding-sibling::button[1] | ./following-sibling::button[1]"
        )
        (earlier if (day.year, day.month) < (shown.year, shown.month) else later).click()
        WebDriverWait(driver, 5).until(lambda _d, before=shown_text: month_shown() != before)
    else:
        raise AssertionError(f"the calendar never showed {wanted}")
    days = [b for b in popover.find_elements(By.TAG_NAME, "button") if b.text.strip().isdigit()]
    numbers = [int(b.text) for b in days]
    first = numbers.index(1)
    last = numbers.index(1, first + 1) if 1 in numbers[first + 1 :] else len(numbers)
    this_month = days[first:last]
    assert [int(b.text) for b in this_month] == list(range(1, len(this_month) + 1)), numbers
    this_month[day.day - 1].click()
    inputs = [i.get_attribute("value") for i in popover.find_elements(By.TAG_NAME, "input")]
    screenshot(driver, name)
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()  # closes the popover, not the dialog
    WebDriverWait(driver, 10).until(lambda _d: popover_closed(popover))
    return " ".join(inputs)


def daily_ticks(schedule: str, timezone: str, first: date, last: date) -> list[tuple[datetime, datetime]]:
    """The data intervals of a daily ``M H * * *`` schedule starting on each local date first..last."""
    minute, hour, *rest = schedule.split()
    assert rest == ["*", "*", "*"], f"this test expects a daily schedule, got {schedule!r}"
    zone = ZoneInfo(timezone)

    def tick(day: date) -> datetime:
        return datetime.combine(day, time(int(hour), int(minute)), zone).astimezone(UTC)

    count = (last - first).days + 1
    return [(tick(first + timedelta(days=n)), tick(first + timedelta(days=n + 1))) for n in range(count)]


@pytest.mark.timeout(600)
def test_ui_backfill_dialog_dates_picked_in_the_calendar_create_one_run_per_day_and_reindex_them(
    engine: EngineStack, browser: WebDriver
) -> None:
    """An operator backfills DC2's re-index from the UI: Trigger → Backfill, From and To clicked in the
    date picker's calendar (the UI's time zone is UTC: its sidebar clock reads +00:00), Missing Runs, Run
    Backfill. Per docs/gir_es_reindex.md ("Backfill: what the dates mean"), From is the picked day's
    midnight and To the end of its day, so one run per DC2 tick (02:00 Paris) on each picked day, both ends
    included; DC2's RWS then receives exactly those days' windows."""
    admin = engine.api("admin")
    dc2 = next(dc for dc in engine.topology_document["data_centers"] if dc["site"] == "DC2")
    # Days no other test touches (the others use the last three days); both before today in every zone.
    today = datetime.now(UTC).date()
    first_day, last_day = today - timedelta(days=10), today - timedelta(days=8)
    expected_runs = daily_ticks(dc2["reindex"]["schedule"], dc2["timezone"], first_day, last_day)
    assert len(expected_runs) == 3

    # Deployed, DC2's DAG is created unpaused; the engine creates every DAG paused (tests unpause what they
    # run), so it may be either here. Paused, the dialog offers "Unpause ... on trigger", ticked by default
    # (backfill runs of a paused DAG stay queued). Unpaused, its runs may still be going: let them end.
    paused = admin.get(f"/dags/{REINDEX_DAG}")["is_paused"]
    for run in admin.runs(REINDEX_DAG):
        admin.wait_run_finished(REINDEX_DAG, run["dag_run_id"], timeout=180)
    runs_before = {r["dag_run_id"] for r in admin.runs(REINDEX_DAG)}
    assert not [
        r
        for r in admin.runs(REINDEX_DAG)
        if first_day <= parse_time(r["data_interval_start"]).date() <= last_day
    ]
    backfills_before = {b["id"] for b in admin.get("/backfills", dag_id=REINDEX_DAG)["backfills"]}
    posts_before = len(engine_force_index_posts(engine, "DC2"))

    log_in(browser, engine, "admin")
    browser.get(f"{engine.api_url}/dags/{REINDEX_DAG}")
    wait_for_text(browser, REINDEX_DAG, "+00:00")  # the sidebar clock: the UI shows UTC
    button(browser, "Trigger", timeout=30).click()
    backfill_tab = WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.XPATH, "//span[@data-part='item-text' and text()='Backfill']")
    )
    backfill_tab.click()
    wait_for_text(browser, f"Run Backfill - {REINDEX_DAG}", "Date Range", "Reprocess Behavior")
    screenshot(browser, "10-backfill-dialog")

    # The dialog's first two date pickers are From and To (the DAG's own from/to params follow, below).
    from_picker, to_picker = [
        e for e in browser.find_elements(By.CSS_SELECTOR, DATE_PICKER) if e.is_displayed()
    ][:2]
    assert pick_day(browser, from_picker, first_day, "11-from-picked") == f"{first_day:%Y/%m/%d} 00:00"
    assert pick_day(browser, to_picker, last_day, "12-to-picked") == f"{last_day:%Y/%m/%d} 23:59"
    assert from_picker.text == f"{first_day:%b %d, %Y} 00:00", from_picker.text
    assert to_picker.text == f"{last_day:%b %d, %Y} 23:59", to_picker.text
    browser.find_element(By.XPATH, "//span[@data-part='item-text' and text()='Missing Runs']").click()
    unpause = f"Unpause {REINDEX_DAG} on trigger"
    if paused:
        # Ticked by default: the operator leaves it so.
        wait_for_text(browser, unpause)
        checkbox = browser.find_element(
            By.XPATH, f"//label[.//*[normalize-space(text())='{unpause}']]//input[@type='checkbox']"
        )
        assert checkbox.is_selected()
    else:
        assert unpause not in page_text(browser)
    wait_for_text(browser, "3 runs will be triggered.")  # the dialog's dry run agrees with the docs
    screenshot(browser, "13-backfill-ready")
    button(browser, "Run Backfill").click()
    wait_for_text(browser, "Backfill generated")
    screenshot(browser, "14-backfill-generated")

    created = [
        b for b in admin.get("/backfills", dag_id=REINDEX_DAG)["backfills"] if b["id"] not in backfills_before
    ]
    assert len(created) == 1, created
    backfill = created[0]
    assert parse_time(backfill["from_date"]) == datetime.combine(first_day, time(0), UTC), backfill
    # To is the end of the picked day (the picker's endOfDay), to the millisecond.
    assert parse_time(backfill["to_date"]) == datetime.combine(last_day, time(23, 59, 59, 999000), UTC), (
        backfill
    )
    assert backfill["reprocess_behavior"] == "none", backfill
    wait_for(
        "the UI's backfill to complete",
        lambda: admin.backfill(backfill["id"])["completed_at"],
        timeout=300,
        interval=2,
        on_timeout=lambda: "\n".join(
            admin.describe_run(REINDEX_DAG, r["dag_run_id"]) for r in admin.runs(REINDEX_DAG)
        ),
    )
    assert admin.get(f"/dags/{REINDEX_DAG}")["is_paused"] is False
    new_runs = [r for r in admin.runs(REINDEX_DAG) if r["dag_run_id"] not in runs_before]
    runs = [r for r in new_runs if r["run_type"] == "backfill"]
    # Unpausing lets the scheduler start the latest period's run too (catchup off): never one of ours.
    others = [r for r in new_runs if r["run_type"] != "backfill"]
    assert all(r["run_type"] == "scheduled" for r in others), others
    for run in others:
        admin.wait_run_finished(REINDEX_DAG, run["dag_run_id"], timeout=180)
    for run in runs:
        assert admin.wait_run(REINDEX_DAG, run["dag_run_id"], timeout=180)["state"] == "success"
    assert sorted(
        (parse_time(r["data_interval_start"]), parse_time(r["data_interval_end"])) for r in runs
    ) == (expected_runs)

    # What DC2's RWS received since: per run, contact center and kind, its interval cut into windows of at
    # most max_window_hours (a 25-hour DST day makes two); nothing else.
    step = timedelta(hours=dc2["reindex"]["max_window_hours"])
    windows = [
        (start + n * step, min(start + (n + 1) * step, end))
        for start, end in expected_runs
        for n in range(-(-int((end - start) / timedelta(hours=1)) // int(step / timedelta(hours=1))))
    ]
    kinds = ("recordings", "screen-recordings") if dc2["rws"]["screen_recording"] else ("recordings",)
    expected_posts = sorted(
        (cc, kind, int(a.timestamp() * 1000), int(b.timestamp() * 1000))
        for cc in dc2["rws"]["contact_centers"]
        for kind in kinds
        for a, b in windows
    )
    other_intervals = [
        (parse_time(r["data_interval_start"]), parse_time(r["data_interval_end"])) for r in others
    ]

    def from_another_run(post: dict[str, Any]) -> bool:
        start = datetime.fromtimestamp(post["body"]["from"] / 1000, UTC)
        return any(a - timedelta(hours=1) <= start < b for a, b in other_intervals)  # widened to the hour

    posts = [p for p in engine_force_index_posts(engine, "DC2")[posts_before:] if not from_another_run(p)]
    received = sorted(
        (p["path"].rsplit("/", 2)[1], p["path"].rsplit("/", 2)[2], p["body"]["from"], p["body"]["to"])
        for p in posts
    )
    assert received == expected_posts
    assert all(p.get("http_status") == 200 and p.get("status_code") == 0 for p in posts), posts

    browser.get(f"{engine.api_url}/dags/{REINDEX_DAG}/backfills")
    wait_for_text(browser, f"{first_day:%Y-%m-%d}")
    screenshot(browser, "15-backfills-tab")


def engine_force_index_posts(engine: EngineStack, site: str) -> list[dict[str, Any]]:
    return [
        r for r in engine_requests(engine, site) if r["method"] == "POST" and "/contact-centers/" in r["path"]
    ]
