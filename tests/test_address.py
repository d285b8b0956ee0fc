"""Address syntax (RFC 5321, RFC 6531) and the DSN builder, by example and by fuzzing.

The fuzz tests are bounded (examples and a deadline per example) so CI stays fast;
`HYPOTHESIS_PROFILE=long` runs them longer by hand."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.address import mailbox_name, sender_routing, valid_address
from relay.dsn import build_dsn, field_value, parse_dsn_recipients
from relay.spool import QueueEnvelope
from tests.dsn_helpers import LINE_BREAKERS, assert_dsn_shape

settings.register_profile("ci", max_examples=300, deadline=500,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.mark.parametrize("address", [
    "annv@dienbien.gov.vn",
    "a.b-c+tag@example.org",
    "o'brien/x=y@example.org",
    "!#$%&'*+-/=?^_`{|}~@example.org",
    '"a b"@example.org',
    '"a\\"b"@example.org',
    '"v@example.net"@dienbien.gov.vn',
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "a@b",
    "x" * 64 + "@example.org",
])
def test_valid_ascii_addresses(address: str):
    assert valid_address(address, smtputf8=False)


@pytest.mark.parametrize("address", ["người.gửi@example.org", '"người gửi"@example.org',
                                     "an@điệnbiên.vn"])
def test_utf8_addresses_need_smtputf8(address: str):
    assert valid_address(address, smtputf8=True)
    assert not valid_address(address, smtputf8=False)


@pytest.mark.parametrize("address", [
    "", "@example.org", "a@", "a", "a@@b", ".a@b", "a.@b", "a..b@b", "a b@b", "a\x00b@b",
    "a@b..c", "a@-b", "a@b-", "a@b_c", "a@[300.1.1.1]", "a@[IPv6:zz::1]", "a@[1.2.3.4",
    '""@b', '"a@b', 'a"@b', '"a"b"@b', '"a\\"@b', '"a\x7f"@b', '"a\tb"@b',
    "x" * 65 + "@b", "a@" + "b" * 64 + ".org", "a@" + ("b" * 60 + ".") * 5 + "org",
    '"x\u2028Bcc: evil@example.net"@example.org',  # the reproduced DSN injection
    '"x\u2029y"@example.org', '"x\x85y"@example.org', "x\u2028y@example.org",
    '"x\u200by"@example.org', "x\u202ey@example.org", "a@b\u2028c", "a@b\u00a0c",
    '"x\ud800y"@example.org', '"x\x1cy"@example.org',
])
def test_invalid_addresses(address: str):
    assert not valid_address(address, smtputf8=True)


def test_length_limits_count_octets():
    assert valid_address("ư" * 32 + "@example.org")  # 64 octets
    assert not valid_address("ư" * 33 + "@example.org")  # 66 octets, 33 characters


@pytest.mark.parametrize("address,routed,name", [
    ("annv@dienbien.gov.vn", False, "annv@dienbien.gov.vn"),
    ("AnNV@DienBien.gov.vn", False, "annv@dienbien.gov.vn"),
    ("v%example.net@dienbien.gov.vn", True, "v%example.net@dienbien.gov.vn"),
    ("v!example.net@dienbien.gov.vn", True, "v!example.net@dienbien.gov.vn"),
    ('"v@example.net"@dienbien.gov.vn', True, None),
    ('"annv"@dienbien.gov.vn', False, None),
    ("x/y@dienbien.gov.vn", False, None),
    ("a\x00b@dienbien.gov.vn", False, None),
])
def test_routing_and_mailbox_names(address: str, routed: bool, name: str | None):
    assert sender_routing(address) is routed
    assert mailbox_name(address) == name


# --- fuzzing ---------------------------------------------------------------------------
SAFE_FIELD = re.compile(r"[^\x00-\x1f\x7f\x85\u2028\u2029]*")


@given(st.text(max_size=300))
def test_fuzz_a_valid_address_carries_no_line_breaker_or_control(text: str):
    for smtputf8 in (False, True):
        if valid_address(text, smtputf8):
            assert not any(ch in text for ch in LINE_BREAKERS)
            assert all(ch.isprintable() for ch in text)
            assert len(text.encode("utf-8")) <= 254
            assert smtputf8 or text.isascii()
            name = mailbox_name(text)
            assert name is None or ("/" not in name and not name.startswith("."))


ATEXT = st.sampled_from(list("abcXYZ019!#$%&'*+-/=?^_`{|}~") + ["ư", "đ", "\u2028", "\x85"])
LOCAL = st.one_of(
    st.lists(st.text(ATEXT, min_size=1, max_size=8), min_size=1, max_size=4).map(".".join),
    st.text(max_size=20).map(lambda t: '"' + t + '"'),
)
DOMAIN = st.one_of(st.just("example.org"), st.just("dienbien.gov.vn"),
                   st.text(min_size=1, max_size=20).map(lambda t: t + ".vn"))
ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)


@given(ADDRESS)
def test_fuzz_structured_addresses(address: str):
    """Closer to the grammar than random text: the same promises must hold."""
    if valid_address(address):
        assert not any(ch in address for ch in LINE_BREAKERS)
        assert valid_address(address.lower())  # case never makes an address invalid


@given(sender=st.one_of(ADDRESS, st.text(max_size=80)),
       failures=st.dictionaries(st.one_of(ADDRESS, st.text(max_size=60)),
                                st.text(max_size=200), min_size=1, max_size=3),
       original=st.binary(max_size=300), hostname=st.text(min_size=1, max_size=40),
       expired=st.booleans())
def test_fuzz_dsn_has_exactly_its_fields(sender: str, failures: dict[str, str], original: bytes,
                                         hostname: str, expired: bool):
    """Whatever the envelope, replies, original header and host name hold, the bounce has
    its eight top fields and four per recipient: nothing folds into a new field."""
    env = QueueEnvelope(queue_id="0123456789ABCDEF", sender=sender, recipients=list(failures))
    dsn = build_dsn(env, original, failures, hostname, expired=expired)
    assert_dsn_shape(dsn, failures)


@given(st.text(max_size=2000))
def test_fuzz_field_value_is_one_line(text: str):
    value = field_value(text)
    assert SAFE_FIELD.fullmatch(value)
    assert len(value.encode()) <= 900


def test_dsn_for_a_line_separator_address_stays_in_its_field():
    """The reproduced injection: what came out as Bcc: and X-Injected: fields."""
    sender = '"x\u2028Bcc: evil@example.net\u2028X-Injected: 1"@example.org'
    failures = {'"r\u2029X-Y: z"@dienbien.gov.vn': "550 5.1.1 no\u0085X-Z: 1"}
    dsn = build_dsn(QueueEnvelope("Q1", sender, list(failures)), b"Subject: s\r\n\r\nb\r\n",
                    failures, "mail.dienbien.gov.vn")
    assert_dsn_shape(dsn, failures)
    assert b"\nBcc:" not in dsn and b"\nX-Injected:" not in dsn and b"\nX-Z:" not in dsn
    assert parse_dsn_recipients(dsn)[0][1] == "5.1.1"


# --- the engine's address rules, fuzzed --------------------------------------------------
@pytest.fixture(scope="module")
def engine_tx(tmp_path_factory: pytest.TempPathFactory):
    """One engine for every example (hypothesis reruns the test body, not the fixture)."""
    import asyncio

    from relay.config import from_dict
    from relay.engine import Engine
    from relay.model import Transaction
    from relay.policyset import configure
    from relay.services import Services

    config = from_dict({"server": {"state_dir": str(tmp_path_factory.mktemp("engine"))}})
    services = Services.build(config, archive=False)
    engine = Engine(config, configure(config), services)
    loop = asyncio.new_event_loop()
    yield loop, engine, Transaction(listener="mx", listener_kind="mx", client_ip="192.0.2.1")
    loop.run_until_complete(services.aclose())
    loop.close()


@given(address=st.one_of(ADDRESS, st.text(max_size=80)), smtputf8=st.booleans())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_fuzz_engine_accepts_only_addresses_it_can_store(engine_tx, address: str,
                                                         smtputf8: bool):
    loop, engine, tx = engine_tx
    tx.reset_envelope()
    tx.smtputf8 = smtputf8
    reply = loop.run_until_complete(engine.rcpt(tx, address))
    if reply is None:
        assert valid_address(address, smtputf8)
        assert engine.config.is_local(address)  # an untrusted MX client relays nowhere
        assert mailbox_name(address) is not None and not sender_routing(address)
    else:
        assert 400 <= reply.code < 600
        text = reply.render(smtputf8)
        assert all(line[:3].isdigit() for line in text.split("\r\n"))
        assert not any(ch in text.replace("\r\n", "") for ch in LINE_BREAKERS)
