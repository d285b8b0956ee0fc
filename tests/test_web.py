"""`relay web` over HTTP on loopback: access control, sessions, CSRF, headers, reading.

One real console process (a filled archive, three accounts) serves the module;
tests that need another configuration (a short session, clamd) start their own.
"""

from __future__ import annotations

import html
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path

import pytest

from relay.web import i18n
from tests.archive_helpers import TIEPDAN
from tests.web_helpers import (
    ADMIN,
    AUDITOR,
    FLOOD_BODY,
    FLOOD_SUBJECT,
    PETITIONS,
    Client,
    Console,
    wait_verdict,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "relay" / "web" / "templates"
PROTECTED = ["/", "/archive", "/archive/1", "/archive/1/eml", "/access-log", "/integrity",
             "/petitions", "/admin/users", "/admin/health", "/reason"]


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = Console(tmp_path_factory.mktemp("web")).fill().users().start()
    yield c
    c.stop()


def signed_in(console, user=AUDITOR, reason=None):
    client = Client(console.url)
    resp = client.login(user)
    assert resp.status == 303, resp.text[:300]
    if reason:
        assert client.post("/reason", {"reason": reason, "next": "/archive"}).status == 303
    return client


# --- anonymous requests -----------------------------------------------------------------
@pytest.mark.parametrize("path", PROTECTED)
def test_anonymous_browser_is_sent_to_login(console, path):
    resp = Client(console.url).get(path)
    assert resp.status == 303
    assert resp.location.startswith("/login?next=")
    assert urllib.parse.unquote(resp.location.split("next=")[1].split("&")[0]) == path


@pytest.mark.parametrize("path", PROTECTED)
def test_anonymous_non_html_request_gets_401(console, path):
    resp = Client(console.url).get(path, html=False)
    assert resp.status == 401
    assert "Kính gửi" not in resp.text


def test_login_page_and_stylesheet_are_public(console):
    client = Client(console.url)
    assert client.get("/login").status == 200
    css = client.get("/static/style.css", html=False)
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")


def test_forged_or_foreign_cookie_is_anonymous(console):
    client = signed_in(console)
    good = client.cookie()
    assert client.get("/archive").status == 200
    payload, stamp, signature = good.rsplit(".", 2)
    for forged in (f"{payload}.{stamp}.{signature[:-2]}AA", f"x{good}", "a" * 5000):
        other = Client(console.url)
        other.request("/archive", headers={"Cookie": f"relay_session={forged}"})
        resp = other.request("/archive", html=False,
                             headers={"Cookie": f"relay_session={forged}"})
        assert resp.status == 401, forged[:40]


# --- login, lockout, logout ----------------------------------------------------------------
def test_wrong_password_refused_and_right_one_accepted(console):
    client = Client(console.url)
    resp = client.post("/login", {"username": AUDITOR[0], "password": "sai-mat-khau-roi"},
                       csrf=True)
    assert resp.status == 401
    assert "Sai tên đăng nhập hoặc mật khẩu" in resp.text
    assert client.get("/archive", html=False).status == 401
    resp = client.login(AUDITOR)
    assert resp.status == 303 and resp.location == "/archive"
    assert client.get("/archive").status == 200


def test_login_without_csrf_token_is_refused(console):
    client = Client(console.url)
    client.get("/login")
    resp = client.post("/login", {"username": AUDITOR[0], "password": AUDITOR[1]}, csrf=False)
    assert resp.status == 403
    assert client.get("/archive", html=False).status == 401


def test_session_is_renewed_at_login(console):
    """No session fixation: the anonymous session's CSRF token is void after login."""
    client = Client(console.url)
    before = client.csrf("/login")
    client.login(AUDITOR)
    after = client.csrf("/archive")
    assert before != after
    assert client.post("/integrity/run", {"csrf": before}).status == 403


def test_login_next_stays_on_this_site(console):
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"):
        client = Client(console.url)
        token = client.csrf("/login")
        resp = client.post("/login", {"username": AUDITOR[0], "password": AUDITOR[1],
                                      "csrf": token, "next": target})
        assert resp.status == 303
        assert resp.location in ("/", "/archive"), target


def test_lockout_after_failures_then_unlock(console):
    client = Client(console.url)
    for _ in range(5):
        assert client.post("/login", {"username": ADMIN[0], "password": "wrong-password-x"}
                           ).status == 401
    # locked: the right password is refused too, with the same words
    resp = client.login(ADMIN)
    assert resp.status == 401 and "Sai tên đăng nhập" in resp.text
    listed = console.cli("user", "list", "--json")
    assert '"locked_until": null' not in [line for line in listed.stdout.decode().splitlines()
                                          if ADMIN[0] in line][0]
    assert console.cli("user", "unlock", ADMIN[0]).returncode == 0
    assert client.login(ADMIN).status == 303


def test_logout_ends_the_session_also_for_a_copied_cookie(console):
    client = signed_in(console)
    copied = client.cookie()
    assert client.post("/logout", {}).status == 303
    thief = Client(console.url)
    resp = thief.request("/archive", html=False, headers={"Cookie": f"relay_session={copied}"})
    assert resp.status == 401


def test_disabling_a_user_ends_its_sessions(console):
    admin = signed_in(console, ADMIN)
    victim = Client(console.url)
    assert victim.login(PETITIONS).status == 303
    assert victim.get("/petitions").status == 200
    assert admin.post(f"/admin/users/{PETITIONS[0]}/disable", {}).status == 303
    assert victim.get("/petitions", html=False).status == 401
    assert Client(console.url).login(PETITIONS).status == 401
    assert admin.post(f"/admin/users/{PETITIONS[0]}/enable", {}).status == 303
    assert victim.login(PETITIONS).status == 303


def test_session_expires_after_session_timeout(tmp_path):
    # the cookie's timestamp has whole seconds: a 3 s timeout ends between 3 and 4 s
    console = Console(tmp_path, web={"session_timeout": "3s"}).users().start()
    try:
        client = signed_in(console)
        assert client.get("/archive").status == 200
        time.sleep(1.5)
        assert client.get("/archive").status == 200  # used: the idle time starts again
        time.sleep(1.5)
        assert client.get("/archive").status == 200
        time.sleep(4.5)
        resp = client.get("/archive")
        assert resp.status == 303 and "expired=1" in resp.location
    finally:
        console.stop()


# --- roles -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/archive", "/archive/1", "/archive/1/eml", "/access-log",
                                  "/integrity", "/admin/users", "/admin/health"])
def test_petitions_user_cannot_open_the_archive(console, path):
    client = signed_in(console, PETITIONS)
    resp = client.get(path)
    assert resp.status == 403
    assert "Không được phép" in resp.text
    assert "Kính gửi" not in resp.text and FLOOD_BODY not in resp.text


def test_petitions_page_without_petitions_enabled_lists_assigned_mailboxes(console):
    client = signed_in(console, PETITIONS)
    resp = client.get("/petitions")
    assert resp.status == 200
    assert "Sổ theo dõi đơn thư chưa được bật" in resp.text
    assert TIEPDAN in resp.text
    assert 'href="/archive"' not in resp.text  # no archive link in the menu


@pytest.mark.parametrize("path", ["/admin/users", "/admin/health"])
def test_auditor_is_not_admin(console, path):
    assert signed_in(console).get(path).status == 403


def test_admin_may_do_both(console):
    client = signed_in(console, ADMIN, reason="kiểm tra định kỳ")
    for path in ("/archive", "/petitions", "/admin/users", "/admin/health", "/integrity"):
        assert client.get(path).status == 200, path


def test_post_without_csrf_token_changes_nothing(console):
    admin = signed_in(console, ADMIN)
    resp = admin.request(f"/admin/users/{AUDITOR[0]}/disable", data=b"x=1")
    assert resp.status == 403
    resp = admin.post(f"/admin/users/{AUDITOR[0]}/disable", {"csrf": "not-the-token"})
    assert resp.status == 403
    assert signed_in(console).get("/archive").status == 200  # still enabled


def test_oversized_and_malformed_forms_are_refused(console):
    client = Client(console.url)
    client.get("/login")
    big = b"username=" + b"a" * 20_000 + b"&password=x"
    assert client.request("/login", data=big).status == 400
    many = "&".join(f"f{i}=1" for i in range(100)).encode()
    assert client.request("/login", data=many).status == 400
    assert client.request("/login", data=b"username=\xff\xfe").status == 400
    assert client.request("/login", data=b"{}", headers={
        "Content-Type": "application/json"}).status == 400


# --- headers -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/login", "/nope", "/archive"])
def test_security_headers_everywhere(console, path):
    client = Client(console.url)
    resp = client.get(path) if path != "/archive" else signed_in(console).get(path)
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # no script at all
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["cache-control"] == "no-store"
    assert "server" not in resp.headers


def test_session_cookie_flags(console):
    client = Client(console.url)
    resp = client.get("/login")
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")


def test_pages_carry_no_script(console):
    client = signed_in(console, ADMIN, reason="kiểm tra")
    for path in ("/archive", f"/archive/{console.seqs['html']}", "/integrity", "/admin/users",
                 "/admin/health", "/access-log", "/petitions"):
        text = client.get(path).text
        # the HTML mail is inside srcdoc, escaped: no live <script> tag on any page
        assert "<script" not in text, path


# --- reading the archive ---------------------------------------------------------------------
def test_search_q_over_subject_sender_and_recipients(console):
    client = signed_in(console)

    def seqs(query):
        text = client.get("/archive?" + urllib.parse.urlencode(query)).text
        return sorted({int(s) for s in re.findall(r'href="/archive/(\d+)"', text)})

    assert seqs({"q": "lũ quét"}) == [console.seqs["flood"]]
    assert seqs({"q": "LŨ QUÉT"}) == [console.seqs["flood"]]
    # decomposed input (TCVN 6909 allows both forms) finds the composed subject
    import unicodedata
    assert seqs({"q": unicodedata.normalize("NFD", "lũ quét")}) == [console.seqs["flood"]]
    assert seqs({"q": "CITIZEN@example"}) == sorted(console.seqs.values())  # either side
    assert console.seqs["flood"] in seqs({"q": "citizen@example.vn", "direction": "in"})
    assert seqs({"q": "citizen@example.vn", "direction": "out"}) == sorted(
        s for n, s in console.seqs.items() if n.startswith("plain") or n == "attachment")
    assert seqs({"mailbox": TIEPDAN}) == sorted([console.seqs["flood"], console.seqs["html"]])
    assert seqs({"q": "100%_"}) == []  # LIKE wildcards are escaped
    assert seqs({"since": "2000-01-01", "until": "2000-01-02"}) == []
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 7 * 3600))
    assert len(seqs({"since": today, "until": today})) == len(console.seqs)


def test_search_refuses_bad_dates_and_survives_hostile_queries(console):
    client = signed_in(console)
    resp = client.get("/archive?since=2026-13-45")
    assert resp.status == 200 and "Ngày không hợp lệ" in resp.text
    for q in ("\x00\x01", "<script>alert(1)</script>", "%" * 1000, "' OR 1=1 --", "🙂" * 300):
        resp = client.get("/archive?" + urllib.parse.urlencode({"q": q}))
        assert resp.status == 200
        assert "<script>alert" not in resp.text
    for before in ("99999999999999999999999", "²", "-1", "1e3", "\uff11"):  # '²'.isdigit()
        assert client.get("/archive?" + urllib.parse.urlencode({"before": before})
                          ).status == 200, before


def test_entry_needs_a_reason_then_logs_the_view(console):
    client = signed_in(console)
    seq = console.seqs["flood"]
    resp = client.get(f"/archive/{seq}")
    assert resp.status == 303 and resp.location.startswith("/reason?next=")
    assert client.post("/reason", {"reason": "", "next": f"/archive/{seq}"}).status == 400
    resp = client.post("/reason", {"reason": "thanh tra 12/2026\x1b[31m", "next": f"/archive/{seq}"})
    assert resp.status == 303 and resp.location == f"/archive/{seq}"
    page = client.get(f"/archive/{seq}").text
    assert FLOOD_BODY in page and FLOOD_SUBJECT in page
    assert "(Asia/Ho_Chi_Minh)" in page and "+0700" in page
    log = html.unescape(client.get("/access-log").text)
    row = [r for r in log.split("<tr>") if f'"entry": {seq}' in r and "web:kiemtoan1" in r]
    assert row and "show" in row[0]
    assert "thanh tra 12/2026‹U+001B›[31m" in row[0]  # the escape byte is shown, not sent


def test_download_is_the_exact_original_and_is_logged(console):
    from relay.archive import Archive
    from relay.config import load

    client = signed_in(console, reason="xuất bản gốc")
    seq = console.seqs["attachment"]
    resp = client.get(f"/archive/{seq}/eml")
    assert resp.status == 200
    assert resp.headers["content-disposition"] == f'attachment; filename="entry-{seq}-delivered.eml"'
    assert resp.headers["content-type"] == "application/octet-stream"
    archive = Archive.open(load(console.config_path), migrate=False)
    try:
        row = archive.get(seq)
        assert resp.body == archive.read_blob(row["delivered_hash"], row["delivered_size"])
        last = archive.access_log(1)[0]
        assert (last["who"], last["action"]) == ("web:kiemtoan1", "download")
        assert last["reason"] == "xuất bản gốc"
    finally:
        archive.close()


def test_entry_lists_attachments_with_bidi_tricks_visible(console):
    client = signed_in(console, reason="r")
    page = client.get(f"/archive/{console.seqs['attachment']}").text
    assert "bao-cao‹U+202E›fdp.exe" in page
    assert "application/pdf" in page
    assert "\u202e" not in page


def test_unknown_and_absurd_entry_ids(console):
    client = signed_in(console, reason="r")
    assert client.get("/archive/999999").status == 404
    assert client.get("/archive/0").status == 404
    assert client.get("/archive/99999999999999999999999999").status == 404
    assert client.get("/archive/-1").status == 404


def test_every_template_text_has_a_vietnamese_form():
    used = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r'_\("([^"]+)"\)', path.read_text()))
        used |= set(re.findall(r"_\('([^']+)'\)", path.read_text()))
    missing = sorted(t for t in used if t not in i18n.VI)
    assert not missing, missing


def test_english_on_request(console):
    client = signed_in(console)
    resp = client.get("/lang/en?next=/archive")
    assert resp.status == 303 and resp.location == "/archive"
    page = client.get("/archive").text
    assert "Search the archive" in page and '<html lang="en">' in page
    assert client.get("/lang/en?next=//evil.example").location == "/"


def test_tampering_shows_in_integrity(tmp_path):
    """The verify run from the web: intact, then the first bad entry after tampering."""
    console = Console(tmp_path).fill().users().start()
    try:
        client = signed_in(console)
        assert client.post("/integrity/run", {}).status == 303
        page = wait_verdict(client)
        assert "TOÀN VẸN (INTACT)" in page
        with sqlite3.connect(console.database) as db:
            db.execute("UPDATE archive_entry SET sender = 'x@example.vn' WHERE seq = 3")
        assert client.post("/integrity/run", {}).status == 303
        page = wait_verdict(client, previous=page)
        assert "BỊ THAY ĐỔI (TAMPERED)" in page
        first = re.search(r'id="first-bad">.*?</p>', page, re.S).group(0)
        assert 'href="/archive/3"' in first
    finally:
        console.stop()


def test_health_page(console):
    spool = console.dir / "var" / "queue"
    for sub in ("active", "hold"):
        (spool / sub).mkdir(parents=True, exist_ok=True)
    for name in ("Q1", "Q2", "Q3"):
        (spool / "active" / name).write_bytes(b"x")
        (spool / "active" / f"{name}.json").write_text("{}")
    (spool / "hold" / "Q4").write_bytes(b"x")
    page = signed_in(console, ADMIN).get("/admin/health").text
    queue = re.search(r'id="queue">(.*?)</td>', page, re.S).group(1)
    assert "3 thư đang chờ, 1 bị giữ lại" in queue
    checkpoint = re.search(r'id="checkpoint">(.*?)</td>', page, re.S).group(1)
    assert "#" in checkpoint and "trước" in checkpoint
    assert "kết nối được" in re.search(r'id="database">(.*?)</td>', page, re.S).group(1)
    assert "chưa cấu hình" in re.search(r'id="clamd">(.*?)</td>', page, re.S).group(1)


def test_health_reports_clamd_up_and_down(tmp_path, clamd):
    for name, address, expected in (("up", clamd.unix, "kết nối được"),
                                    ("down", str(tmp_path / "no-clamd.sock"),
                                     "không kết nối được")):
        directory = tmp_path / name
        directory.mkdir()
        console = Console(directory, extra={"policies": {"antivirus": {"clamd": address}}})
        console.users().start()
        try:
            page = signed_in(console, ADMIN).get("/admin/health").text
            cell = re.search(r'id="clamd">(.*?)</td>', page, re.S).group(1)
            assert address in cell and cell.strip().endswith(expected), cell
        finally:
            console.stop()


def test_sighup_reloads_the_configuration(tmp_path):
    import signal

    console = Console(tmp_path).start()
    try:
        assert '<html lang="vi">' in Client(console.url).get("/login").text
        text = console.config_path.read_text().replace("[web]\n", '[web]\nlanguage = "en"\n')
        console.config_path.write_text(text)
        console.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while '<html lang="en">' not in Client(console.url).get("/login").text:
            assert time.monotonic() < deadline, console.log.read_text()
            time.sleep(0.1)
        console.config_path.write_text(text.replace('language = "en"', 'language = "fr"'))
        console.proc.send_signal(signal.SIGHUP)  # refused: the running configuration stays
        time.sleep(1)
        assert console.proc.poll() is None
        assert '<html lang="en">' in Client(console.url).get("/login").text
        assert "reload refused" in console.log.read_text()
    finally:
        console.stop()
