"""Archived messages made fit to show: hostile input in, bounded inert text out."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from relay.web import mailview
from relay.web.mailview import MAX_TEXT, RenderTimeout, html_to_text, render, render_isolated
from tests.web_helpers import HTML_SAFE_TEXT, attachment_message, html_message


def plain(body: str = "Xin chào", headers: str = "Subject: Chào\r\n") -> bytes:
    return (f"From: a@example.vn\r\nTo: b@dienbien.gov.vn\r\n{headers}"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + body).encode("utf-8", "surrogateescape")


def test_plain_message():
    out = render(plain("Kính gửi UBND tỉnh.\r\nTrân trọng."))
    assert "Kính gửi UBND tỉnh." in out.text and "Trân trọng." in out.text
    assert ("Subject", "Chào") in out.headers
    assert out.html is None and not out.attachments and not out.problems


def test_controls_and_bidi_overrides_are_made_visible():
    raw = plain("a\x1b[2Jb\x00c\u202eexe.pdf", headers="Subject: =?utf-8?b?"
                "SGVsbG8bWzMxbSDigK5nbnAuZXhl?=\r\n")
    out = render(raw)
    subject = dict(out.headers)["Subject"]
    assert "\x1b" not in subject and "\u202e" not in subject
    assert "‹U+001B›" in subject and "‹U+202E›" in subject
    assert "‹U+001B›[2Jb‹U+0000›c‹U+202E›exe.pdf" in out.text


def test_raw_utf8_headers_are_read_as_utf8():
    out = render("From: a@example.vn\r\nSubject: Lũ quét\r\n\r\nx".encode())
    assert dict(out.headers)["Subject"] == "Lũ quét"
    out = render(b"From: a@example.vn\r\nSubject: \xff\xfe broken\r\n\r\nx")
    assert dict(out.headers)["Subject"] == "\ufffd\ufffd broken"


def test_decomposed_vietnamese_is_composed():
    out = render(plain("Lu\u0303 que\u0301t"))
    assert "Lũ quét" in out.text


def test_html_becomes_text_without_scripts_and_keeps_the_markup_for_the_frame():
    out = render(html_message())
    assert out.text_from_html
    assert HTML_SAFE_TEXT in out.text
    assert "PWNED" not in out.text and "document" not in out.text
    assert "<script>" in out.html  # shown only inside the sandboxed frame


def test_html_to_text_blocks_and_hidden_parts():
    text = html_to_text("<style>p{}</style><p>một</p><p>hai<br>ba</p><script>x()</script>"
                        "<img alt='ảnh'><!-- note --><noscript>no</noscript>")
    assert text.split("\n") == ["một", "", "hai", "ba", "[ảnh]"]
    assert html_to_text("<p>" + "<b>" * 50_000) == ""  # unbalanced tags: no blow-up


def test_attachments_listed_not_shown():
    out = render(attachment_message())
    [att] = out.attachments
    assert att.content_type == "application/pdf" and att.size == 15
    assert att.filename == "bao-cao‹U+202E›fdp.exe"
    assert out.text.strip() == "Xem tệp đính kèm."


def test_header_bomb_is_bounded():
    fields = "".join(f"X-H{i}: {'v' * 200}\r\n" for i in range(5000))
    started = time.perf_counter()
    out = render(plain(headers=fields))
    assert time.perf_counter() - started < 5
    assert any("limit" in p for p in out.problems)


def _parts(n: int) -> bytes:
    parts = "".join(f"--b\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Disposition: attachment; filename=f{i}.bin\r\n\r\nxx\r\n"
                    for i in range(n))
    return ("From: a@b.vn\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts
            + "--b--\r\n").encode()


def test_many_parts_and_deep_nesting_are_bounded():
    out = render(_parts(500))
    assert len(out.attachments) == mailview.MAX_ATTACHMENTS
    assert any("attachments" in p for p in out.problems)
    out = render(_parts(3000))  # past the parser's budget: headers, no parts, a problem
    assert not out.attachments and any("MIME parts" in p for p in out.problems)
    assert out.headers
    nested = "From: a@b.vn\r\n" + "".join(
        f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(60))
    out = render((nested + "Content-Type: text/plain\r\n\r\ndeep\r\n").encode())
    assert any("deeper" in p for p in out.problems)


def test_the_relays_hostile_corpus_renders_quickly():
    from tests import hostile

    for raw in (hostile.quadratic_header(), hostile.many_members_zip(20_000)):
        started = time.perf_counter()
        render_isolated(raw, 30)
        assert time.perf_counter() - started < 10


def test_long_body_is_cut():
    out = render(plain("lũ " * (MAX_TEXT // 2)))
    assert out.truncated and len(out.text) <= MAX_TEXT + 1


def test_unknown_and_hostile_charsets():
    for charset in ("x-unknown", "utf-8\x00", "../../etc", "utf-7"):
        raw = (f"From: a@b.vn\r\nContent-Type: text/plain; charset=\"{charset}\"\r\n\r\n"
               "ch\xe0o").encode("latin-1")
        out = render(raw)
        assert out.text.startswith("ch")


def test_isolated_render_matches_inline():
    raw = attachment_message()
    assert render_isolated(raw, 30) == render(raw)


def test_isolated_render_is_killed_at_its_deadline():
    big = plain("Kính gửi. " * 3_000_000)  # ~30 MB: about a second and a half to parse
    started = time.perf_counter()
    with pytest.raises(RenderTimeout):
        render_isolated(big, 0.2)
    assert time.perf_counter() - started < 5
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()  # no parser left running
