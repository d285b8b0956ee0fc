"""webmail (Điều 9): free-webmail senders, citizen-intake exemption, outbound, MX check
against a real DNS server on loopback (tests/fixtures/dns.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from policies.webmail import DomainSet, read_list
from relay.config import from_dict
from relay.directory import naming
from tests.content_helpers import make_message, run_cli, run_engine
from tests.fixtures.dns import DnsServer

GMAIL = "citizen.nguyen@gmail.com"
PERSONAL = "nguyenvana@dienbien.gov.vn"
OFFICIAL = "soyte@dienbien.gov.vn"
INTAKE = "tiepdan@dienbien.gov.vn"
AGENCY_INTAKE = "tiepdan.soyte@dienbien.gov.vn"


def msg(sender: str, to: str = PERSONAL) -> bytes:
    return make_message(sender, to)


async def run(options: dict, sender: str, recipients: list[str], raw: bytes | None = None,
              **kw: object):
    return await run_engine({"webmail": options}, raw or msg(sender, recipients[0]), sender,
                            recipients, **kw)


def test_shipped_list():
    webmail = DomainSet(read_list("webmail_domains.txt"))
    for domain in ("gmail.com", "googlemail.com", "yahoo.com", "yahoo.com.vn", "hotmail.fr",
                   "outlook.com", "live.com", "msn.com", "aol.com", "icloud.com", "me.com",
                   "mail.ru", "yandex.ru", "gmx.de", "proton.me", "protonmail.com",
                   "zoho.com", "qq.com", "163.com", "126.com"):
        assert domain in webmail, domain
    for domain in ("dienbien.gov.vn", "vnpt.vn", "example.com", "notgmail.com",
                   "yahoo.example.com", "fpt.com.vn"):
        assert domain not in webmail, domain


def test_naming_rule():
    assert naming.kind_of("tiepdan@dienbien.gov.vn") == "citizen_intake"
    assert naming.kind_of("Tiepdan.SoYTe@dienbien.gov.vn") == "citizen_intake"
    assert naming.kind_of("tiepdanvien@dienbien.gov.vn") == "personal"
    # one rule for every part of the relay: ubnd@ is the province's official mailbox
    assert naming.kind_of("ubnd@dienbien.gov.vn") == "official"


@pytest.mark.parametrize("rcpt", [PERSONAL, OFFICIAL])
async def test_gmail_to_provincial_mailbox_rejected(rcpt):
    tx, out = await run({}, GMAIL, [rcpt])
    reply = out["rcpt"][rcpt]
    assert reply is not None and (reply.code, reply.status) == (550, "5.7.1")
    assert "Điều 9" in reply.render() and "Article 9" in reply.render()
    assert "tiepdan@dienbien.gov.vn" in reply.render()
    [d] = tx.decisions
    assert (d.finding.code, d.finding.recipient) == ("webmail.inbound", rcpt)
    assert "data" not in out  # no recipient left


@pytest.mark.parametrize("rcpt", [INTAKE, AGENCY_INTAKE])
async def test_gmail_to_citizen_intake_accepted(rcpt):
    tx, out = await run({}, GMAIL, [rcpt])
    assert out["rcpt"][rcpt] is None
    assert out["data"].outcome == "accept" and tx.decisions == []


async def test_per_recipient_other_recipients_still_get_it():
    tx, out = await run({}, "dan@yahoo.com.vn", [PERSONAL, INTAKE])
    assert out["rcpt"][PERSONAL].code == 550
    assert out["rcpt"][INTAKE] is None
    assert tx.rcpt_to == [INTAKE] and out["data"].outcome == "accept"


async def test_other_senders_accepted():
    for sender in ("doitac@congty.com.vn", "partner@example.com", ""):
        tx, out = await run({}, sender, [PERSONAL], raw=msg("partner@example.com"))
        assert out["rcpt"][PERSONAL] is None, sender
        assert tx.decisions == []


async def test_add_and_remove():
    opts = {"add": ["example.com", "freemail.*"], "remove": ["gmail.com"]}
    _, out = await run(opts, GMAIL, [PERSONAL])
    assert out["rcpt"][PERSONAL] is None
    _, out = await run(opts, "a@example.com", [PERSONAL])
    assert out["rcpt"][PERSONAL].code == 550
    _, out = await run(opts, "a@freemail.de", [PERSONAL])
    assert out["rcpt"][PERSONAL].code == 550


def test_bad_domain_in_config_names_the_key():
    from relay.config import ConfigError
    from relay.policyset import configure
    with pytest.raises(ConfigError, match=r"policies\.webmail\.add: .*'not a domain'"):
        configure(from_dict({"policies": {"webmail": {"add": ["not a domain"]}}}))


async def test_vn_only():
    _, out = await run({"vn_only": True}, "partner@example.com", [PERSONAL])
    assert out["rcpt"][PERSONAL].code == 550
    tx, out = await run({"vn_only": True}, "doitac@congty.com.vn", [PERSONAL])
    assert out["rcpt"][PERSONAL] is None
    tx, out = await run({"vn_only": True, "allow": ["example.com"]}, "p@example.com",
                        [PERSONAL])
    assert out["rcpt"][PERSONAL] is None
    tx, _ = await run({"vn_only": True}, "partner@example.com", [PERSONAL])
    assert tx.decisions[0].finding.code == "webmail.unregistered"


async def test_header_from_at_data():
    raw = make_message(GMAIL, PERSONAL)
    tx, out = await run({}, "bounce@mailer.example.com", [PERSONAL, INTAKE], raw=raw)
    assert out["rcpt"][PERSONAL] is None  # the envelope is fine
    verdict = out["data"]
    assert verdict.outcome == "reject" and verdict.reply.code == 550
    [d] = tx.decisions
    assert (d.finding.code, d.finding.recipient) == ("webmail.header_from", PERSONAL)
    assert "Điều 9" in verdict.reply.render()


async def test_outbound_own_code_and_action():
    opts = {"actions": {"webmail.outbound": "log"}}
    raw = make_message(PERSONAL, GMAIL)
    tx, out = await run(opts, PERSONAL, [GMAIL, "doitac@congty.com.vn"], raw=raw,
                        auth=PERSONAL)
    assert out["rcpt"][GMAIL] is None and out["data"].outcome == "accept"
    [d] = tx.decisions
    assert (d.finding.code, d.finding.recipient, d.action.value) == (
        "webmail.outbound", GMAIL, "log")
    _, out = await run({}, PERSONAL, [GMAIL], raw=raw, auth=PERSONAL)
    assert out["rcpt"][GMAIL].code == 550


async def test_citizen_intake_may_answer_citizens():
    tx, out = await run({}, INTAKE, [GMAIL], raw=make_message(INTAKE, GMAIL), auth=INTAKE)
    assert out["rcpt"][GMAIL] is None and tx.decisions == []


async def test_the_directory_is_asked_for_the_kind(tmp_path):
    """A real directory: its citizen-intake mailbox is exempt, its agency mailbox is not."""
    from relay.directory import Directory

    settings = {"directory": {"url": f"sqlite:///{tmp_path / 'directory.db'}"}}
    config = from_dict({"server": {"state_dir": str(tmp_path)}, **settings})
    with Directory(config).write("test", "test") as w:
        w.add_agency("soyte", "Sở Y tế")
        w.add_mailbox(OFFICIAL, "official", "soyte")
        w.add_mailbox(AGENCY_INTAKE, "citizen_intake", "soyte")
    _, out = await run({}, GMAIL, [OFFICIAL, AGENCY_INTAKE], settings=settings)
    assert out["rcpt"][OFFICIAL].code == 550
    assert out["rcpt"][AGENCY_INTAKE] is None


# --- MX check against a real DNS server ------------------------------------------
@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


def mx_opts(server, **kw: object) -> dict:
    return {"mx_check": True, "nameservers": [server.address], **kw}


@pytest.mark.parametrize("domain,mx", [("gmail-hosted.test", "aspmx.l.google.com"),
                                       ("zoho-hosted.test", "mx.zoho.com")])
async def test_mx_at_free_provider(dns_server, domain, mx):
    tx, out = await run(mx_opts(dns_server), f"sales@{domain}", [PERSONAL])
    assert out["rcpt"][PERSONAL].code == 550
    [d] = tx.decisions
    assert d.finding.code == "webmail.mx" and d.finding.details["mx"] == mx
    assert "Điều 9" in out["rcpt"][PERSONAL].render()


@pytest.mark.parametrize("domain", ["company.test", "no-mx.test", "does-not-exist.test"])
async def test_mx_elsewhere_accepted(dns_server, domain):
    tx, out = await run(mx_opts(dns_server), f"a@{domain}", [PERSONAL])
    assert out["rcpt"][PERSONAL] is None and tx.decisions == []
    assert dns_server.queries[f"{domain}. MX"] == 1


async def test_mx_cached(dns_server, tmp_path):
    from relay.model import Transaction
    from relay.runtime import Runtime

    config = from_dict({"server": {"state_dir": str(tmp_path)},
                        "policies": {"webmail": mx_opts(dns_server)}})
    runtime = await Runtime.build(config, archive=False, inline=True)
    for _ in range(3):
        tx = Transaction()
        await runtime.engine.mail(tx, "a@gmail-hosted.test")
        assert (await runtime.engine.rcpt(tx, PERSONAL)).code == 550
    await runtime.aclose()
    assert dns_server.queries["gmail-hosted.test. MX"] == 1


async def test_concurrent_lookups_ask_once(dns_server):
    import asyncio

    from policies.webmail import MxChecker

    checker = MxChecker(DomainSet(["google.com"]), 2, 60, 10, 100, [dns_server.address])
    results = await asyncio.gather(*(checker.lookup("gmail-hosted.test") for _ in range(20)))
    assert {r.outcome for r in results} == {"free"}
    assert dns_server.queries["gmail-hosted.test. MX"] == 1


async def test_cache_is_bounded(dns_server):
    from policies.webmail import MxChecker

    checker = MxChecker(DomainSet(["google.com"]), 2, 60, 10, 2, [dns_server.address])
    for domain in ("company.test", "no-mx.test", "gmail-hosted.test"):
        await checker.lookup(domain)
    assert list(checker.cache) == ["no-mx.test", "gmail-hosted.test"]


async def test_dns_servfail_tempfails(dns_server):
    tx, out = await run(mx_opts(dns_server), "a@servfail.test", [PERSONAL])
    reply = out["rcpt"][PERSONAL]
    assert (reply.code, reply.status) == (451, "4.4.3")
    assert tx.decisions[0].finding.code == "webmail.dns_error"


async def test_dns_timeout_tempfails_within_deadline(dns_server):
    t0 = time.monotonic()
    tx, out = await run(mx_opts(dns_server, mx_timeout=0.5), "a@silent.test", [PERSONAL])
    assert time.monotonic() - t0 < 3
    assert out["rcpt"][PERSONAL].code == 451
    assert "within" in tx.decisions[0].finding.details["error"]


async def test_dns_error_action_configurable(dns_server):
    tx, out = await run(mx_opts(dns_server, actions={"webmail.dns_error": "log"}),
                        "a@servfail.test", [PERSONAL])
    assert out["rcpt"][PERSONAL] is None and out["data"].outcome == "accept"
    assert [d.action.value for d in tx.decisions] == ["log"]


async def test_mx_not_asked_for_citizen_intake(dns_server):
    await run(mx_opts(dns_server), "a@gmail-hosted.test", [INTAKE])
    assert not dns_server.queries


# --- relay test-message --json ----------------------------------------------------
CLI_TOML = """
[server]
local_domains = ["dienbien.gov.vn"]
state_dir = "var"

[policies.webmail]
{extra}
"""


def test_cli_gmail_to_personal_rejected(tmp_path):
    rc, out = run_cli(tmp_path, CLI_TOML.format(extra=""), msg(GMAIL), GMAIL, [PERSONAL])
    assert rc == 1 and out["action"] == "reject" and out["stage"] == "rcpt"
    assert out["reply"].startswith("550-5.7.1 ")
    [f] = out["findings"]
    assert (f["code"], f["article"], f["recipient"]) == ("webmail.inbound", "Điều 9", PERSONAL)


def test_cli_gmail_to_tiepdan_accepted(tmp_path):
    rc, out = run_cli(tmp_path, CLI_TOML.format(extra=""), msg(GMAIL, INTAKE), GMAIL, [INTAKE])
    assert (rc, out["action"], out["findings"]) == (0, "accept", [])


def test_cli_mx_check(tmp_path, dns_server):
    extra = f'mx_check = true\nnameservers = ["{dns_server.address}"]'
    rc, out = run_cli(tmp_path, CLI_TOML.format(extra=extra), msg("a@gmail-hosted.test"),
                      "a@gmail-hosted.test", [PERSONAL])
    assert rc == 1 and out["findings"][0]["code"] == "webmail.mx"


async def test_mx_check_asks_the_dns_section_servers(dns_server):
    """[dns] is the one place DNS servers are set; webmail's own keys still override it."""
    settings = {"dns": {"nameservers": [dns_server.address], "timeout": "2s"}}
    tx, out = await run({"mx_check": True}, "a@gmail-hosted.test", [PERSONAL],
                        settings=settings)
    assert out["rcpt"][PERSONAL].code == 550 and tx.decisions[0].finding.code == "webmail.mx"
    assert dns_server.queries["gmail-hosted.test. MX"] == 1
    # a [dns] deadline applies to the MX check too
    settings["dns"]["timeout"] = "0.5s"
    t0 = time.monotonic()
    tx, out = await run({"mx_check": True}, "a@silent.test", [PERSONAL], settings=settings)
    assert out["rcpt"][PERSONAL].code == 451 and time.monotonic() - t0 < 3
