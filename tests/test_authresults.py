"""The Authentication-Results header (RFC 8601): hostile values cannot end the field or
start a new header line; only fields carrying our authserv-id are removed."""

from __future__ import annotations

from relay.mailauth.authresults import apply, authserv_id_of, render, strip_ours, value
from relay.message import Message

OURS = "mx.dienbien.gov.vn"


def test_values_are_tokens_or_quoted_and_never_break_lines():
    assert value("user@example.org") == "user@example.org"
    assert value('a;b "c"') == '"a;b \\"c\\""'
    assert value("evil\r\nX-Injected: 1") == '"evilX-Injected: 1"'
    assert value("x" * 1000).count("x") == 254
    hostile = value("a@b\r\nBcc: x")
    header = render(OURS, {"spf": [f"spf=pass smtp.mailfrom={hostile}"]})
    parsed = Message(header + b"\r\nbody")
    assert [n for n, _ in parsed.headers] == ["Authentication-Results"]


def test_authserv_id_is_read_past_comments_and_folding():
    assert authserv_id_of(b" (our MX) MX.Dienbien.gov.vn; spf=pass") == b"mx.dienbien.gov.vn"
    assert authserv_id_of(b" mx.dienbien.gov.vn.evil.test; spf=pass") == \
        b"mx.dienbien.gov.vn.evil.test"
    raw = (b"Authentication-Results:\r\n\tmx.dienbien.gov.vn; dkim=pass\r\n"
           b"Authentication-Results: (c) mx.dienbien.gov.vn;\r\n spf=pass\r\n"
           b"authentication-results: mx.dienbien.gov.vn.evil.test; spf=pass\r\n"
           b"Subject: Authentication-Results: mx.dienbien.gov.vn\r\n\r\n"
           b"Authentication-Results: mx.dienbien.gov.vn; in the body\r\n")
    out = strip_ours(raw, OURS)
    assert out == (b"authentication-results: mx.dienbien.gov.vn.evil.test; spf=pass\r\n"
                   b"Subject: Authentication-Results: mx.dienbien.gov.vn\r\n\r\n"
                   b"Authentication-Results: mx.dienbien.gov.vn; in the body\r\n")


def test_folds_and_repeated_lines_cannot_hide_our_id():
    """Each field is judged whole: an identical first line earlier in the header, a
    whitespace-only continuation, a comment folded across lines."""
    forged = [
        b"Authentication-Results:\r\n\tother.example; spf=pass\r\n"
        b"Authentication-Results:\r\n\tmx.dienbien.gov.vn; dkim=pass\r\n",
        b"Authentication-Results:\r\n \r\n mx.dienbien.gov.vn; dkim=pass\r\n",
        b"Authentication-Results: (x\r\n y) mx.dienbien.gov.vn; dkim=pass\r\n",
    ]
    for fields in forged:
        out = strip_ours(fields + b"Subject: s\r\n\r\nbody\r\n", OURS)
        assert b"dkim=pass" not in out, fields
        assert out.endswith(b"Subject: s\r\n\r\nbody\r\n")
    assert strip_ours(forged[0] + b"\r\nb", OURS) == \
        b"Authentication-Results:\r\n\tother.example; spf=pass\r\n\r\nb"


def test_apply_puts_one_of_ours_on_top():
    raw = b"Authentication-Results: mx.dienbien.gov.vn; spf=pass\r\nSubject: x\r\n\r\nb\r\n"
    out = apply(raw, OURS, {"dmarc": ["dmarc=fail header.from=a.test"],
                            "spf": ["spf=fail smtp.mailfrom=x@a.test"]})
    assert out == (b"Authentication-Results: mx.dienbien.gov.vn;\r\n"
                   b"\tspf=fail smtp.mailfrom=x@a.test;\r\n"
                   b"\tdmarc=fail header.from=a.test\r\nSubject: x\r\n\r\nb\r\n")
