"""Issue 10, item 3: the AUTH lockout holds against parallel guessing, reloads, restarts and
several nodes, because it lives in the directory database and an attempt is counted
before its password is checked. Also item 12: no deprecation warning on every AUTH."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import smtplib
import threading
from pathlib import Path
from typing import Any

import pytest

from relay.config import from_dict
from relay.directory import Directory, DirectoryStore
from tests.fixtures.relayproc import Relay, wait_for
from tests.test_directory_smtp import DOMAIN, PASSWORD, seed, submission

LOGIN = f"annv@{DOMAIN}"


def auth_plain(client: smtplib.SMTP, login: str, password: str) -> int:
    """One AUTH PLAIN (smtplib's login() would try PLAIN, then LOGIN: two attempts)."""
    client.user, client.password = login, password
    try:
        return client.auth("PLAIN", client.auth_plain)[0]
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code


def try_login(relay: Relay, password: str) -> int:
    with submission(relay) as client:
        return auth_plain(client, LOGIN, password)


def test_parallel_wrong_passwords_get_no_more_tries_than_the_limit(relay_factory: Any):
    relay = relay_factory(start=False, directory={
        "auth_max_failures": 5, "auth_ip_max_failures": 1000, "auth_lockout": 300,
        "auth_failure_delay": 0})
    seed(relay).close()
    relay.start()
    ready = threading.Barrier(24, timeout=60)
    codes: list[int] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        with submission(relay) as client:  # EHLO, STARTTLS, EHLO: then all at once
            ready.wait()
            code = auth_plain(client, LOGIN, f"wrong-password-{n}")
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == [535] * 24
    log = relay.log.read_text()
    checked = log.count("auth failed (wrong password)")
    assert 1 <= checked <= 5, f"{checked} passwords were checked; the limit is 5"
    assert log.count("auth refused (locked out)") == 24 - checked
    # and now the right password is refused too: the login is locked out
    assert try_login(relay, PASSWORD) == 535
    # the administrator sees it and clears it
    listed = [json.loads(line) for line in
              relay.cli("directory", "lockout", "list", "--json").stdout.splitlines()]
    [entry] = [e for e in listed if e["scope"] == "login"]
    assert entry["subject"] == LOGIN and entry["locked"] and entry["failures"] >= 5
    assert relay.cli("directory", "lockout", "list", "--locked").stdout.startswith(b"login ")
    out = relay.cli("directory", "lockout", "clear", LOGIN)
    assert out.returncode == 0, out.stderr
    assert try_login(relay, PASSWORD) == 235
    assert relay.cli("directory", "lockout", "clear", LOGIN).returncode == 1  # nothing left
    assert PASSWORD not in relay.log.read_text()


def test_successful_auth_logs_no_deprecation_warning(relay_factory: Any):
    """Item 12: aiosmtpd set its deprecated Session.login_data on every AUTH and warned."""
    relay = relay_factory(start=False)
    seed(relay).close()
    relay.start()
    for _ in range(2):
        assert try_login(relay, PASSWORD) == 235
    log = relay.log.read_text()
    assert "auth ok" in log  # the log is the relay's, and AUTH went through the directory
    assert "deprecated" not in log


def test_lockout_survives_reload_and_restart_and_holds_on_every_node(relay_factory: Any):
    limits = {"auth_max_failures": 3, "auth_lockout": 300, "auth_failure_delay": 0}
    first = relay_factory(start=False, directory=limits)
    seed(first).close()
    first.start()
    for _ in range(3):
        assert try_login(first, "wrong-password") == 535
    assert try_login(first, PASSWORD) == 535
    # SIGHUP builds a new runtime and a new directory store: the lockout stays
    assert first.proc is not None
    first.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "configuration reloaded" in first.log.read_text())
    assert try_login(first, PASSWORD) == 535
    first.stop()
    first.start()
    assert try_login(first, PASSWORD) == 535
    # a second node on the same database
    second = relay_factory(directory={**limits,
                                      "url": f"sqlite:///{first.state / 'directory.db'}"})
    assert try_login(second, PASSWORD) == 535
    assert second.cli("directory", "lockout", "clear", "--all").returncode == 0
    assert try_login(first, PASSWORD) == 235
    assert try_login(second, PASSWORD) == 235


# --- the store itself, on SQLite and PostgreSQL -----------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = "" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    config = from_dict({
        "server": {"state_dir": str(tmp_path / "var")},
        "directory": {"url": url, "auth_max_failures": 4, "auth_ip_max_failures": 6,
                      "auth_lockout": 300, "auth_failure_delay": 0}})
    directory = Directory(config)
    with directory.write("t", "QĐ 1") as w:
        w.add_agency("stttt", "Sở Thông tin và Truyền thông")
        w.add_mailbox(LOGIN, "personal", "stttt", w.add_person("Nguyễn Văn An", "stttt"),
                      PASSWORD)
    yield DirectoryStore(config, directory)
    directory.close()


async def test_parallel_attempts_are_counted_atomically(store: DirectoryStore,
                                                        caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, "relay.auth")
    results = await asyncio.gather(*(store.authenticate(LOGIN, f"wrong-{n}", f"192.0.2.{n}")
                                     for n in range(24)))
    assert not any(results)
    assert caplog.text.count("auth failed (wrong password)") <= 4
    assert not await store.authenticate(LOGIN, PASSWORD, "192.0.2.200")
    assert await store.locked_out(LOGIN, "192.0.2.201")
    await store.aclose()


async def test_ipv6_clients_are_counted_per_64(store: DirectoryStore):
    from relay.directory.lockout import network_key

    assert network_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert network_key("::ffff:192.0.2.7") == "192.0.2.7"
    # IPv4 is taken as it is written, without parsing: the same key parsing gives, for
    # addresses and for strings that are not one (those are keys as they are)
    import ipaddress

    from relay.anvil import client_key

    for text in ("192.0.2.7", "0.0.0.0", "255.255.255.255", "192.0.2.07", "192.0.2.7%1",
                 "", "1.2.3", "16909060", "x"):
        try:
            parsed = str(ipaddress.ip_address(text))
        except ValueError:
            parsed = text
        assert client_key(text) == parsed, text
    for n in range(6):  # six logins guessed from six addresses of one /64
        assert not await store.authenticate(f"guess{n}@{DOMAIN}", "x" * 12,
                                            f"2001:db8:1:2::{n + 1:x}")
    # another address in that /64 is locked out, even with the right password
    assert not await store.authenticate(LOGIN, PASSWORD, "2001:db8:1:2:ffff::9")
    # the next /64 is somebody else
    assert await store.authenticate(LOGIN, PASSWORD, "2001:db8:1:3::1")
    await store.aclose()


async def test_a_right_password_gives_its_attempt_back(store: DirectoryStore):
    """A mail client that logs in all day never locks out its office's network."""
    for n in range(20):
        assert await store.authenticate(LOGIN, PASSWORD, "198.51.100.9"), n
    # a login with a NUL (AUTH LOGIN can carry one) is refused, stored printable
    assert not await store.authenticate("an\x00nv", PASSWORD, "198.51.100.9")
    await store.aclose()
