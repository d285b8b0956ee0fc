"""antivirus: real clamd (private instance, EICAR-only database) over TCP and Unix sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from policies.base import Context
from relay.clamd import ClamdClient, parse_reply
from tests.content_helpers import make_message, run_cli, run_engine, zipped
from tests.fixtures.clamd import EICAR, EICAR_SIGNATURE, MAX_FILES, STREAM_MAX_LENGTH

SENDER = "partner@example.org"
RCPT = "nguyenvana@dienbien.gov.vn"

EICAR_PLAIN = make_message(SENDER, RCPT,
                           attachments=[("eicar.com", EICAR, "application/octet-stream")])
EICAR_ZIP = make_message(SENDER, RCPT, attachments=[("tai-lieu.zip", zipped({"eicar.com": EICAR}),
                                                      "application/zip")])
CLEAN = make_message(SENDER, RCPT, attachments=[("bao-cao.txt", b"Bao cao quy 3\n" * 100,
                                                  "text/plain")])


def av(address: str, **kw: object) -> dict:
    return {"antivirus": {"clamd": address, **kw}}


@pytest.mark.parametrize("raw", [EICAR_PLAIN, EICAR_ZIP], ids=["plain", "zipped"])
async def test_eicar_rejected_naming_signature(clamd, raw):
    tx, out = await run_engine(av(clamd.tcp), raw, SENDER, [RCPT])
    verdict = out["data"]
    assert verdict.outcome == "reject"
    assert verdict.reply.code == 554 and verdict.reply.status == "5.7.1"
    assert EICAR_SIGNATURE in verdict.reply.render()
    assert "Điều 7.5" in verdict.reply.render()
    assert [d.finding.code for d in tx.decisions] == ["antivirus.infected"]


async def test_clean_message_accepted_over_unix_socket(clamd):
    tx, out = await run_engine(av(clamd.unix), CLEAN, SENDER, [RCPT])
    assert out["data"].outcome == "accept"
    assert tx.decisions == []
    assert tx.cache["antivirus"].status == "clean"


async def test_eicar_over_unix_socket(clamd):
    result = await ClamdClient(clamd.unix).instream(EICAR_PLAIN)
    assert (result.status, result.signature) == ("infected", EICAR_SIGNATURE)


async def test_archive_over_limits_is_not_clean(clamd):
    # AlertExceedsMax is on in the test clamd.conf; without it this zip passes clean
    bomb = zipped({f"part{i}.txt": b"x" * 100 for i in range(MAX_FILES + 10)})
    raw = make_message(SENDER, RCPT, attachments=[("big.zip", bomb, "application/zip")])
    tx, out = await run_engine(av(clamd.tcp), raw, SENDER, [RCPT])
    assert out["data"].outcome == "reject"
    assert [d.finding.code for d in tx.decisions] == ["antivirus.limits_exceeded"]
    assert tx.decisions[0].finding.details["signature"].startswith("Heuristics.Limits.Exceeded")


async def test_clamd_stopped_tempfails(clamd_factory):
    c = clamd_factory()
    c.stop()
    tx, out = await run_engine(av(c.tcp, retries=0), CLEAN, SENDER, [RCPT])
    verdict = out["data"]
    assert verdict.outcome == "tempfail"
    assert (verdict.reply.code, verdict.reply.status) == (451, "4.7.1")
    assert tx.decisions[0].finding.code == "antivirus.unavailable"
    assert "unreachable" in tx.decisions[0].finding.details["error"]


async def test_clamd_stopped_fail_open_tags(clamd_factory):
    c = clamd_factory()
    c.stop()
    tx, out = await run_engine(av(c.unix, fail_open=True, retries=0), CLEAN, SENDER, [RCPT])
    verdict = out["data"]
    assert verdict.outcome == "accept"
    assert verdict.prefix.startswith(b"X-Virus-Status: Unchecked\r\n")
    assert [(d.finding.code, d.action.value) for d in tx.decisions] == [
        ("antivirus.unavailable", "tag")]


async def test_clamd_restart_within_retry(clamd_factory):
    # clamd refuses connections while it restarts; one retry rides over a short gap
    c = clamd_factory()
    c.stop()
    loop = asyncio.get_running_loop()
    restart = loop.run_in_executor(None, c.start)
    result = await ClamdClient(c.tcp, timeout=20, retries=20, retry_delay=0.1).instream(
        EICAR_PLAIN)
    await restart
    assert result.status == "infected"


async def test_clamd_error_answer_is_not_clean(clamd):
    # more than clamd's StreamMaxLength: clamd answers "INSTREAM size limit exceeded. ERROR"
    raw = b"Subject: x\r\n\r\n" + b"a" * (STREAM_MAX_LENGTH + 1024)
    tx, out = await run_engine(av(clamd.tcp, max_size=STREAM_MAX_LENGTH * 2), raw, SENDER, [RCPT])
    assert out["data"].outcome == "tempfail"
    assert "size limit" in tx.decisions[0].finding.details["error"]


async def test_timeout_is_not_clean():
    # a server that accepts and never answers: the fault a real clamd cannot be made to show
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        t0 = time.monotonic()
        result = await ClamdClient(f"127.0.0.1:{port}", timeout=0.3).instream(CLEAN)
    assert result.status == "error" and "did not answer" in result.error
    assert time.monotonic() - t0 < 2


async def test_too_large_not_scanned(clamd):
    tx, out = await run_engine(av(clamd.tcp, max_size=1024), CLEAN, SENDER, [RCPT])
    assert out["data"].reply.code == 552
    assert tx.decisions[0].finding.code == "antivirus.too_large"


async def test_loop_stays_free_while_scanning(clamd):
    # while clamd works, the event loop keeps running other coroutines
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    big = make_message(SENDER, RCPT, attachments=[("x.bin", bytes(range(256)) * 2000,
                                                    "application/octet-stream")])
    tx, out = await run_engine(av(clamd.tcp), big, SENDER, [RCPT])
    task.cancel()
    assert out["data"].outcome == "accept"
    assert ticks > 1


async def test_scanned_once_per_message(clamd):
    from policies.antivirus import AntivirusPolicy, Options
    from relay.config import from_dict
    from relay.message import Message
    from relay.model import Stage, Transaction
    from relay.services import Services

    config = from_dict({})
    policy = AntivirusPolicy(Options(clamd=clamd.tcp),
                             Context(config, Services.build(config, archive=False)))
    tx = Transaction(message=Message(EICAR_PLAIN))
    first = await policy.check(Stage.DATA, tx)
    result = tx.cache["antivirus"]
    tx.message = Message(CLEAN)  # a second check must not rescan
    second = await policy.check(Stage.DATA, tx)
    assert tx.cache["antivirus"] is result
    assert first == second and first[0].code == "antivirus.infected"


def test_parse_reply():
    assert parse_reply("stream: OK\0").status == "clean"
    r = parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND\0")
    assert (r.status, r.signature) == ("infected", "Win.Test.EICAR_HDB-1")
    assert parse_reply("INSTREAM size limit exceeded. ERROR\0").status == "error"
    assert parse_reply("").status == "error"
    assert parse_reply("something odd").status == "error"


CLI_TOML = """
[server]
local_domains = ["dienbien.gov.vn"]
state_dir = "var"

[policies.antivirus]
clamd = "{address}"
retries = 0
"""


@pytest.mark.parametrize("raw,code,action", [
    (EICAR_PLAIN, 1, "reject"), (EICAR_ZIP, 1, "reject"), (CLEAN, 0, "accept")],
    ids=["eicar", "eicar-zip", "clean"])
def test_cli_test_message(tmp_path, clamd, raw, code, action):
    rc, out = run_cli(tmp_path, CLI_TOML.format(address=clamd.tcp), raw, SENDER, [RCPT])
    assert (rc, out["action"]) == (code, action)
    if action == "reject":
        assert out["reply"].startswith("554")
        assert EICAR_SIGNATURE in out["reply"]
        assert out["findings"][0]["article"] == "Điều 7.5"


def test_cli_clamd_stopped_451(tmp_path, clamd_factory):
    c = clamd_factory()
    c.stop()
    rc, out = run_cli(tmp_path, CLI_TOML.format(address=c.unix), CLEAN, SENDER, [RCPT])
    assert rc == 75 and out["action"] == "tempfail"
    assert out["reply"].startswith("451")
    assert "4.7.1" in out["reply"]


def test_config_errors_name_the_key():
    from relay.config import ConfigError, from_dict
    from relay.policyset import configure

    with pytest.raises(ConfigError, match=r"policies\.antivirus\.clamd: expected a socket"):
        configure(from_dict({"policies": {"antivirus": {"clamd": "localhost"}}}))
    with pytest.raises(ConfigError, match=r"policies\.attachments\.deny_types: expected a MIME"):
        configure(from_dict({"policies": {"attachments": {"deny_types": ["exe"]}}}))


async def test_fail_open_is_counted(clamd_factory):
    from policies.antivirus import SCANS

    before = SCANS.labels("unchecked")._value.get()
    c = clamd_factory()
    c.stop()
    await run_engine(av(c.tcp, fail_open=True, retries=0), CLEAN, SENDER, [RCPT])
    await run_engine(av(c.tcp, retries=0), CLEAN, SENDER, [RCPT])  # fail closed: not counted
    assert SCANS.labels("unchecked")._value.get() == before + 1
