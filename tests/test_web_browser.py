"""The console in a real Chromium (Debian's chromium + chromium-driver, via Selenium).

One browser and one console serve the whole module, and the tests run in the order
an auditor works: refused, signed in, search, read, integrity, access log. Set
RELAY_WEB_SCREENSHOTS=docs/web to save the screenshots of the main pages there.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

from tests.web_helpers import (
    ADMIN,
    AUDITOR,
    FLOOD_BODY,
    FLOOD_SUBJECT,
    HTML_SAFE_TEXT,
    PETITIONS,
    Client,
    Console,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = os.environ.get("RELAY_WEB_SCREENSHOTS")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not Path(CHROMEDRIVER).exists(),
    reason="chromium and chromium-driver (Debian packages) are not installed")


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = Console(tmp_path_factory.mktemp("webui")).fill().users()
    for sub, names in (("active", ("A1B2C3", "D4E5F6")), ("hold", ("G7H8I9",))):
        (c.dir / "var" / "queue" / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (c.dir / "var" / "queue" / sub / name).write_bytes(b"queued")
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="relay-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1200,900", "--lang=vi"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def by(css):
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR, css


def navigate(driver, element):
    """Click something that loads a page, and wait until the new page is there."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(*by("html"))
    element.click()

    def replaced(_driver: object) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:  # stale, or (mid-load) "does not belong to the document"
            return True
        return False

    WebDriverWait(driver, 20).until(replaced)


def shot(driver, name, phone=False):
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    if phone:
        driver.set_window_size(390, 844)
    driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
    if phone:
        driver.set_window_size(1200, 900)


def login(driver, console, user):
    driver.delete_all_cookies()
    driver.get(console.url + "/login")
    driver.find_element(*by("input[name=username]")).send_keys(user[0])
    driver.find_element(*by("input[name=password]")).send_keys(user[1])
    navigate(driver, driver.find_element(*by("form.stack button[type=submit]")))


def give_reason(driver, reason="thanh tra theo quyết định 12/QĐ-TTr"):
    if "/reason" in driver.current_url:
        driver.find_element(*by("input[name=reason]")).send_keys(reason)
        navigate(driver, driver.find_element(*by("form.stack button[type=submit]")))


def test_wrong_password_is_refused(browser, console):
    browser.delete_all_cookies()
    browser.get(console.url + "/archive")
    assert "/login" in browser.current_url  # sent to the login page first
    browser.find_element(*by("input[name=username]")).send_keys(AUDITOR[0])
    browser.find_element(*by("input[name=password]")).send_keys("khong-dung-mat-khau")
    navigate(browser, browser.find_element(*by("form.stack button[type=submit]")))
    error = browser.find_element(*by("#login-error")).text
    assert "Sai tên đăng nhập hoặc mật khẩu" in error
    assert "/login" in browser.current_url
    shot(browser, "login-refused")


def test_login(browser, console):
    login(browser, console, AUDITOR)
    assert browser.current_url == console.url + "/archive"
    assert AUDITOR[0] in browser.find_element(*by("form.who")).text


def test_search_finds_exactly_the_flood_entry(browser, console):
    login(browser, console, AUDITOR)
    field = browser.find_element(*by("input[name=q]"))
    field.clear()
    field.send_keys("lũ quét")
    navigate(browser, browser.find_element(*by("form.search button[type=submit]")))
    rows = browser.find_elements(*by("#results tbody tr"))
    assert len(rows) == 1
    assert FLOOD_SUBJECT in rows[0].text
    assert f"#{console.seqs['flood']}" in rows[0].text
    shot(browser, "search")
    shot(browser, "search-phone", phone=True)


def test_entry_shows_its_body(browser, console):
    navigate(browser, browser.find_element(*by("#results tbody tr a")))
    give_reason(browser)
    assert browser.current_url == console.url + f"/archive/{console.seqs['flood']}"
    assert FLOOD_BODY in browser.find_element(*by("#body")).text
    assert browser.find_element(*by("#subject")).text == FLOOD_SUBJECT
    recorded = browser.find_element(*by("#recorded")).text
    assert recorded.endswith("+0700 (Asia/Ho_Chi_Minh)")
    shot(browser, "entry")
    shot(browser, "entry-phone", phone=True)


def test_access_log_shows_the_view_by_the_web_user(browser, console):
    browser.get(console.url + "/access-log")
    rows = [r.text for r in browser.find_elements(*by("#access-log tbody tr"))]
    mine = [r for r in rows if "web:kiemtoan1" in r and f'"entry": {console.seqs["flood"]}' in r]
    assert mine, rows
    assert "show" in mine[0] and "thanh tra theo quyết định 12/QĐ-TTr" in mine[0]
    shot(browser, "access-log")


def test_html_message_script_does_not_run(browser, console):
    browser.get(console.url + f"/archive/{console.seqs['html']}")
    give_reason(browser)
    # the text form: the words, none of the script
    body = browser.find_element(*by("#body")).text
    assert HTML_SAFE_TEXT in body and "PWNED" not in body and "document" not in body
    browser.find_element(*by("details.html summary")).click()
    frame = browser.find_element(*by("#html-frame"))
    assert frame.get_attribute("sandbox") == ""
    time.sleep(0.5)  # give any script a chance to run, if it could
    assert "PWNED" not in browser.title
    browser.switch_to.frame(frame)
    try:
        inner = browser.find_element(*by("body")).text
        assert HTML_SAFE_TEXT in inner  # the HTML is shown...
        assert "PWNED" not in inner  # ...and neither <script> nor onerror ran
    finally:
        browser.switch_to.default_content()
    assert "PWNED" not in browser.find_element(*by("body")).text
    browser.execute_script("arguments[0].scrollIntoView()", frame)  # for the screenshot
    shot(browser, "entry-html")


def test_request_without_the_session_cookie_is_refused(browser, console):
    browser.get(console.url + "/archive")
    assert browser.current_url == console.url + "/archive"
    browser.delete_cookie("relay_session")
    browser.get(console.url + f"/archive/{console.seqs['flood']}")
    assert "/login" in browser.current_url
    assert FLOOD_BODY not in browser.page_source
    # and without a browser: no cookie, no page
    assert Client(console.url).get(f"/archive/{console.seqs['flood']}", html=False).status == 401


def test_petitions_user_cannot_open_archive_entries(browser, console):
    login(browser, console, PETITIONS)
    assert browser.current_url == console.url + "/petitions"
    assert "Sổ theo dõi đơn thư chưa được bật" in browser.find_element(*by("#no-petitions")).text
    shot(browser, "petitions")
    browser.get(console.url + f"/archive/{console.seqs['flood']}")
    assert "Không được phép" in browser.find_element(*by("h1")).text
    assert FLOOD_BODY not in browser.page_source
    browser.get(console.url + f"/archive/{console.seqs['flood']}/eml")
    assert "Không được phép" in browser.find_element(*by("h1")).text


def test_admin_health_and_users(browser, console):
    login(browser, console, ADMIN)
    browser.get(console.url + "/admin/health")
    assert "kết nối được" in browser.find_element(*by("#database")).text
    shot(browser, "health")
    browser.get(console.url + "/admin/users")
    names = browser.find_element(*by("#users")).text
    assert all(n in names for n in ("kiemtoan1", "tiepdan1", "quantri1"))
    shot(browser, "users")


def test_english_is_available(browser, console):
    login(browser, console, AUDITOR)
    navigate(browser, browser.find_element(*by(".lang a[hreflang=en]")))
    assert browser.find_element(*by("h1")).text == "Search the archive"
    navigate(browser, browser.find_element(*by(".lang a[hreflang=vi]")))
    assert browser.find_element(*by("h1")).text == "Tìm kiếm trong lưu trữ"


def _verdict(browser, console, previous=None, timeout=60):
    """Click "run", then wait on the self-refreshing page for a new verdict."""
    browser.get(console.url + "/integrity")
    navigate(browser, browser.find_element(*by("#run-verify")))
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # the page reloads itself every 2 s while the run goes on
            found = browser.find_elements(*by("#verdict"))
            if found and not browser.find_elements(*by("#progress")) and \
                    browser.page_source != previous:
                return browser
        except WebDriverException:
            pass
        time.sleep(0.3)
        browser.get(console.url + "/integrity")
    raise AssertionError(browser.page_source[-2000:])


def test_integrity_intact_then_first_bad_entry_after_tampering(browser, console):
    login(browser, console, AUDITOR)
    _verdict(browser, console)
    assert "TOÀN VẸN" in browser.find_element(*by("#verdict")).text
    shot(browser, "integrity-intact")
    before = browser.page_source
    bad = console.seqs["plain2"]
    with sqlite3.connect(console.database) as db:
        db.execute("UPDATE archive_entry SET subject = 'Thông báo đã bị sửa' WHERE seq = ?",
                   (bad,))
    _verdict(browser, console, previous=before)
    assert "BỊ THAY ĐỔI" in browser.find_element(*by("#verdict")).text
    first = browser.find_element(*by("#first-bad"))
    assert f"#{bad}" in first.text
    assert first.find_element(*by("a")).get_attribute("href").endswith(f"/archive/{bad}")
    shot(browser, "integrity-tampered")
