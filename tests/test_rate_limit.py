"""`rate_limit`: messages per login and per client IP, counted in the shared database so
that every relay node sees the same counts; atomic on SQLite and PostgreSQL; visible
in the decision log and `relay directory mailbox show`."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from relay.ratelimit import Limit, RateLimiter, ip_key, parse_limit, usage
from tests.antispam_helpers import LOCAL, codes, message, transact
from tests.fixtures.relayproc import run_cli, to_toml

AN = f"annv@{LOCAL}"


def test_parse_limit():
    assert parse_limit("500/1h") == Limit(500, 3600)
    assert parse_limit("20 / 10m") == Limit(20, 600)
    assert parse_limit("1000/d") == Limit(1000, 86400)
    for bad in ("500", "x/1h", "0/1h", "5/0s", "5/60d", 5):
        with pytest.raises(ValueError):
            parse_limit(bad)


def test_ipv6_counts_per_64():
    assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::9") == \
        "2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("::ffff:192.0.2.1") == ip_key("192.0.2.1") == "192.0.2.1"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'directory.db'}"
    return request.getfixturevalue("pg_url")


def test_limit_and_sliding_window(db_url):
    limiter = RateLimiter(db_url)
    limit = Limit(5, 100)
    got = [limiter.hit_now("login", AN, limit, now=1000.0 + i) for i in range(7)]
    assert [u.over for u in got] == [False] * 5 + [True] * 2
    assert got[-1].refused == 2 and got[4].count == 5
    # half-way through the next window, half of the previous one still counts
    later = [limiter.hit_now("login", AN, limit, now=1150.0 + i * 0.01) for i in range(4)]
    assert [u.over for u in later] == [False, False, True, True]
    # other keys are not touched
    assert not limiter.hit_now("login", "other@x", limit, now=1001.0).over
    limiter.close()


def test_two_nodes_never_pass_the_limit_together(db_url):
    """Eight threads on two engines (two nodes) race for 50 slots: exactly 50 win."""
    nodes = [RateLimiter(db_url), RateLimiter(db_url)]
    limit = Limit(50, 3600)
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker(node: RateLimiter) -> None:
        for _ in range(20):
            usage_ = node.hit_now("ip", "192.0.2.1", limit, now=7200.5)
            with lock:
                allowed.append(not usage_.over)

    threads = [threading.Thread(target=worker, args=(nodes[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(allowed) == 160 and sum(allowed) == 50
    seen = usage(nodes[0].engine, "ip", "192.0.2.1", limit, now=7200.6)
    assert (seen["count"], seen["over"], seen["refused_last_7d"]) == (50, True, 110)
    for node in nodes:
        node.close()


async def test_policy_tempfails_the_login_over_its_limit(tmp_path):
    settings = {"directory": {"url": f"sqlite:///{tmp_path / 'directory.db'}"}}
    policies = {"rate_limit": {"per_login": "3/1h", "per_ip": ""}}
    outs = []
    for _ in range(4):
        tx, out = await transact(policies, "127.0.0.1:9", AN, ["x@example.test"],
                                 message(AN), client_ip="192.0.2.5", auth=AN,
                                 settings=settings)
        outs.append((tx, out))
    assert [o.stage for _, o in outs] == ["data", "data", "data", "mail"]
    tx, out = outs[-1]
    assert (out.reply.code, out.reply.status) == (450, "4.7.1")
    assert f"Mailbox {AN} sent more than 3 messages (3/1h)" in out.reply.render()
    [d] = tx.decisions
    assert d.finding.code == "rate_limit.login"
    assert d.finding.details == {"scope": "login", "key": AN, "count": 3.0, "limit": "3/1h",
                                 "over": True, "refused": 1}


async def test_policy_counts_ips_but_not_trusted_networks(tmp_path):
    settings = {"directory": {"url": f"sqlite:///{tmp_path / 'directory.db'}"},
                "server": {"trusted_networks": ["10.0.0.0/8"]}}
    policies = {"rate_limit": {"per_ip": "1/1h"}}
    sender = "a@example.test"
    results = []
    for ip in ("2001:db8:1:2::1", "2001:db8:1:2::99", "10.1.1.1", "10.1.1.1"):
        tx, out = await transact(policies, "127.0.0.1:9", sender, [AN], message(sender),
                                 client_ip=ip, settings=settings)
        results.append(codes(tx))
    assert results == [[], ["rate_limit.ip"], [], []]


async def test_database_down_is_temperror(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    settings = {"directory": {"url": f"sqlite:///{blocker / 'directory.db'}"}}
    tx, out = await transact({"rate_limit": {}}, "127.0.0.1:9", AN, ["x@example.test"],
                             message(AN), auth=AN, settings=settings)
    assert out.stage == "mail" and out.reply.code == 451
    assert codes(tx) == ["rate_limit.temperror"]


def test_directory_show_names_a_limited_mailbox(tmp_path: Path):
    from relay.config import load
    from relay.directory import Directory

    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"server": {"state_dir": "var", "local_domains": [LOCAL]},
                            "policies": {"rate_limit": {"per_login": "2/1h"}}}))
    config = load(cfg)
    directory = Directory(config)
    with directory.write("test", "QĐ 1") as w:
        w.add_agency("stttt", "Sở TTTT")
        an = w.add_person("Nguyễn Văn An", "stttt", hr_id="NV1")
        w.add_mailbox(AN, "personal", "stttt", an)
    limiter = RateLimiter(config.directory_url)
    for _ in range(3):
        limiter.hit_now("login", AN, Limit(2, 3600))
    limiter.close()
    directory.close()
    shown = run_cli("directory", "mailbox", "show", AN, "-c", str(cfg))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "limit 2/1h: OVER THE LIMIT" in text
    assert "1 messages refused in the last 7 days" in text
    data = json.loads(run_cli("directory", "mailbox", "show", AN, "--json", "-c",
                              str(cfg)).stdout)
    assert data["rate"]["over"] is True and data["rate"]["refused_last_7d"] == 1
