"""The README's auditor path on the web, run as written: its shell blocks with the
configuration in RELAY_CONFIG, then what it tells the auditor to do in the browser."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.relayproc import ROOT, relay_env
from tests.web_helpers import FLOOD_BODY, Client, Console, wait_verdict

PASSWORD = "mat-khau-kiem-toan"


def block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- {marker} -->\s*```sh\n(.*?)```", text, re.S)
    assert found, f"README.md has no block after <!-- {marker} -->"
    return found.group(1)


def test_readme_web_auditor_path(tmp_path):
    relay_bin = Path(sys.executable).parent / "relay"
    if not relay_bin.exists():
        pytest.skip(f"no relay command beside {sys.executable} (pip install -e .)")
    console = Console(tmp_path).fill()  # an archive, as the relay leaves it
    env = {**relay_env(), "RELAY_CONFIG": str(console.config_path),
           "PATH": f"{relay_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    accounts = subprocess.run(["bash", "-e", "-c", block("web-auditor-accounts")], env=env,
                              input=f"{PASSWORD}\n".encode(), capture_output=True, timeout=60,
                              check=False)
    assert accounts.returncode == 0, accounts.stderr
    assert b"kiemtoan1\tauditor\tenabled" in accounts.stdout
    [serve] = [line.split("#")[0].strip() for line in block("web-auditor-serve").splitlines()
               if line.strip()]
    server = subprocess.Popen(["bash", "-c", f"exec {serve}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "web.log").open("wb"))
    try:
        _wait_for(console.url, server)
        client = Client(console.url)
        assert client.login(("kiemtoan1", PASSWORD)).location == "/archive"
        found = client.get("/archive?" + urllib.parse.urlencode({"q": "lũ quét"})).text
        [entry] = sorted(set(re.findall(r'href="(/archive/\d+)"', found)))
        assert client.get(entry).location.startswith("/reason")
        client.post("/reason", {"reason": "thanh tra 12/2026", "next": entry})
        assert FLOOD_BODY in client.get(entry).text
        assert client.get(entry + "/eml").body.startswith(b"From: ")
        client.post("/integrity/run", {})
        assert "TOÀN VẸN (INTACT)" in wait_verdict(client)
        log = html.unescape(client.get("/access-log").text)
        assert log.count("web:kiemtoan1") == 2 and "download" in log
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)


def _wait_for(url: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "relay web exited"
        try:
            urllib.request.urlopen(url + "/static/style.css", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)
