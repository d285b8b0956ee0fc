"""A real `relay web` process on a filled archive, and a small cookie-keeping HTTP client.

`Console` writes a relay.toml, fills the archive through `Archive.record` (the path
the relay takes), adds the web accounts with the CLI, and runs `python -m relay web`
on a free loopback port. `Client` speaks HTTP to it with urllib, keeps cookies,
and does not follow redirects, so each test sees what the server answered.
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from relay.archive import Archive, chain
from relay.config import load
from tests.archive_helpers import OUTSIDE, TIEPDAN, UBND, message, tx
from tests.fixtures.relayproc import free_port, relay_env, run_cli, to_toml

AUDITOR = ("kiemtoan1", "mat-khau-kiem-toan")
PETITIONS = ("tiepdan1", "mat-khau-tiep-dan")
ADMIN = ("quantri1", "mat-khau-quan-tri")

FLOOD_SUBJECT = "Khẩn: lũ quét ở Mường Nhé"
FLOOD_BODY = "Nước lũ dâng cao ở bản Huổi Lếch, đề nghị hỗ trợ."
HTML_SUBJECT = "Thư HTML có mã lệnh"
HTML_SAFE_TEXT = "Nội dung HTML hiển thị an toàn"


def html_message() -> bytes:
    markup = (
        "<html><head><title>t</title><script>document.title='PWNED';</script></head><body>"
        f"<p>{HTML_SAFE_TEXT}</p>"
        "<script>document.body.innerHTML='PWNED'; top.document.title='PWNED';</script>"
        "<img src=\"x\" onerror=\"document.body.innerHTML='PWNED'\">"
        "<a href=\"javascript:document.title='PWNED'\">link</a>"
        "</body></html>")
    return (
        f"From: {OUTSIDE}\r\nTo: {TIEPDAN}\r\n"
        f"Subject: =?utf-8?b?{base64.b64encode(HTML_SUBJECT.encode()).decode()}?=\r\n"
        "Date: Mon, 30 Nov 2026 09:00:00 +0700\r\nMessage-ID: <html.1@example.vn>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + markup + "\r\n").encode()


def attachment_message() -> bytes:
    pdf = base64.encodebytes(b"%PDF-1.4\n%test\n").decode().replace("\n", "\r\n")
    return (
        f"From: {UBND}\r\nTo: {OUTSIDE}\r\nSubject: Kèm tệp\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0700\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nXem tệp đính kèm.\r\n"
        "--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=\"bao-cao\u202efdp.exe\"\r\n\r\n"
        f"{pdf}--b1--\r\n").encode()


class Console:
    """seqs: the entries by name ("flood", "html", "attachment", "plain" 1..4)."""

    def __init__(self, directory: Path, web: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data: dict[str, Any] = {
            "server": {"hostname": "web-test.dienbien.gov.vn", "state_dir": "var"},
            "archive": {"checkpoint_every": 4, "checkpoint_interval": 3600},
            "web": {"bind": f"127.0.0.1:{self.port}", **(web or {})},
            **(extra or {}),
        }
        self.config_path = directory / "relay.toml"
        self.config_path.write_text(to_toml(data))
        self.log = directory / "web.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seqs: dict[str, int] = {}

    # --- data ------------------------------------------------------------------------
    def fill(self) -> Console:
        config = load(self.config_path)
        probe = Archive(config)
        chain.generate_keys(probe.signing_key_path, probe.public_key_path)
        probe.close()
        self.seqs = asyncio.run(self._fill(config))
        return self

    @staticmethod
    async def _fill(config: Any) -> dict[str, int]:
        archive = Archive.open(config)
        seqs: dict[str, int] = {}
        try:
            for i in range(1, 5):
                raw = message(i)
                [seqs[f"plain{i}"]] = await archive.record(tx(UBND, OUTSIDE), raw, raw)
            raw = message(7, subject=FLOOD_SUBJECT, sender=OUTSIDE, to=TIEPDAN, body=FLOOD_BODY)
            [seqs["flood"]] = await archive.record(tx(OUTSIDE, TIEPDAN), raw, raw)
            raw = html_message()
            [seqs["html"]] = await archive.record(tx(OUTSIDE, TIEPDAN), raw, raw)
            raw = attachment_message()
            [seqs["attachment"]] = await archive.record(tx(UBND, OUTSIDE), raw, raw)
        finally:
            await archive.aclose()
        return seqs

    def users(self) -> Console:
        for (name, password), role, boxes in ((AUDITOR, "auditor", ()),
                                              (PETITIONS, "petitions", (TIEPDAN,)),
                                              (ADMIN, "admin", ())):
            args = ["web", "-c", str(self.config_path), "user", "add", name, "--role", role,
                    "--password-stdin"]
            for box in boxes:
                args += ["--mailbox", box]
            done = self.cli(*args[3:], input=f"{password}\n".encode())
            assert done.returncode == 0, done.stderr
        return self

    def cli(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return run_cli("web", "-c", str(self.config_path), *args, input=input)

    # --- the process -------------------------------------------------------------------
    def start(self, timeout: float = 30) -> Console:
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", "web", "-c",
                                      str(self.config_path)], env=relay_env(),
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay web exited {self.proc.returncode}:\n"
                                   f"{self.log.read_text()}")
            try:
                urllib.request.urlopen(self.url + "/static/style.css", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"relay web did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def database(self) -> Path:
        return self.dir / "var" / "directory.db"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Response:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        self.page = "/login"  # a page with a form (so a CSRF token) for this client

    def request(self, path: str, data: bytes | None = None, html: bool = True,
                headers: dict[str, str] | None = None) -> Response:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        if html:
            req.add_header("Accept", "text/html,application/xhtml+xml")
        if data is not None and "Content-Type" not in (headers or {}):
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(req, timeout=30) as resp:
                return Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, err.headers, err.read())

    def get(self, path: str, html: bool = True) -> Response:
        return self.request(path, html=html)

    def post(self, path: str, form: dict[str, str], csrf: bool = True) -> Response:
        if csrf and "csrf" not in form:
            form = {**form, "csrf": self.csrf(self.page)}
        return self.request(path, urllib.parse.urlencode(form).encode())

    def csrf(self, page: str) -> str:
        """The CSRF token of this client's session, as a form of `page` carries it."""
        text = self.get(page).text
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        assert found, text[:500]
        return found.group(1)

    def login(self, user: tuple[str, str]) -> Response:
        token = self.csrf("/login")
        resp = self.post("/login", {"username": user[0], "password": user[1], "csrf": token})
        if resp.status == 303:
            self.page = resp.location
        return resp

    def cookie(self, name: str = "relay_session") -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def wait_verdict(client: Client, previous: str = "", timeout: float = 60) -> str:
    """The integrity page once a verify run has finished (the page refreshes itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.get("/integrity").text
        if 'id="verdict"' in page and 'id="progress"' not in page and page != previous:
            return page
        time.sleep(0.3)
    raise AssertionError(page[-2000:])
