"""The `tcvn6909` policy (Điều 9): found in parts and headers, converted in place,
through `relay test-message` and `relay text`."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import quopri
import unicodedata
from pathlib import Path

import pytest

from relay.message import Message
from relay.tcvn.message import inspect_message, rewrite_message
from relay.tcvn.mime import fold, header_chunks, leaf_spans
from relay.tcvn.tables import encode_legacy
from tests.fixtures.relayproc import run_cli, to_toml
from tests.tcvn_corpus import mojibake

SUBJECT = "Giấy mời họp giao ban tháng mười hai"
NAME = "Nguyễn Văn Thưởng"
BODY = ("Kính gửi: Thủ trưởng các sở, ban, ngành.\n"
        "Ủy ban nhân dân tỉnh Điện Biên đề nghị các đồng chí dự họp đúng giờ.\n"
        "Trân trọng cảm ơn.")
FILENAME = "Báo cáo quý bốn.doc"
RCPT = "an@dienbien.gov.vn"


def q_word(data: bytes, charset: str = "windows-1252") -> bytes:
    return b"=?" + charset.encode() + b"?Q?" + b"".join(
        b"=%02X" % c if c > 127 or c in b" =?_" else bytes([c]) for c in data) + b"?="


def simple(enc: str, charset: str | None = None) -> bytes:
    """A one-part message whose subject, sender name and body are in `enc`, raw 8-bit."""
    ct = b"text/plain" + (b"; charset=" + charset.encode() if charset else b"")
    return (b"From: " + encode_legacy(NAME, enc) + b" <thuong@example.org>\r\n"
            b"To: " + RCPT.encode() + b"\r\n"
            b"Subject: " + encode_legacy(SUBJECT, enc) + b"\r\n"
            b"Date: Mon, 1 Dec 2025 10:00:00 +0700\r\nMessage-ID: <t1@example.org>\r\n"
            b"Content-Type: " + ct + b"\r\n\r\n"
            + encode_legacy(BODY, enc).replace(b"\n", b"\r\n") + b"\r\n")


def mojibake_message() -> bytes:
    """What a Unicode mail client sends when TCVN3 text is pasted: UTF-8 mojibake."""
    body = mojibake(encode_legacy(BODY, "tcvn3"))
    subject = mojibake(encode_legacy(SUBJECT, "tcvn3"))
    return (b"From: a@example.org\r\nTo: " + RCPT.encode() + b"\r\n"
            b"Subject: =?utf-8?B?" + base64.b64encode(subject) + b"?=\r\n"
            b"Date: Mon, 1 Dec 2025 10:00:00 +0700\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + base64.encodebytes(body).replace(b"\n", b"\r\n"))


DKIM = (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;\r\n"
        b"\th=from:to:subject; bh=abc=; b=def=\r\n")
ATTACHMENT = b"%PDF-1.4 not really\r\n"


def multipart_vni() -> bytes:
    """multipart/mixed: alternative(plain, html with VNI-Times) + attachment with a VNI name."""
    vni = encode_legacy
    plain = quopri.encodestring(vni(BODY, "vni").replace(b"\n", b"\r\n"))
    html = (b'<html><head><meta charset="windows-1252"></head><body>'
            b'<p style="font-family:&quot;VNI-Times&quot;">' + vni(BODY, "vni") + b"</p></body>"
            b"</html>")
    name = q_word(vni(FILENAME, "vni"))
    return (DKIM + b"From: a@example.org\r\nTo: " + RCPT.encode() + b"\r\n"
            b"Subject: " + q_word(vni(SUBJECT, "vni")) + b"\r\n"
            b"Date: Mon, 1 Dec 2025 10:00:00 +0700\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
            b"This is a multi-part message.\r\n--outer\r\n"
            b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
            b"--inner\r\nContent-Type: text/plain; charset=windows-1252; format=flowed\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + plain + b"\r\n"
            b"--inner\r\nContent-Type: text/html; charset=windows-1252\r\n\r\n" + html
            + b"\r\n--inner--\r\n\r\n--outer\r\n"
            b"Content-Type: application/pdf; name=\"" + name + b"\"\r\n"
            b"Content-Disposition: attachment; filename=\"" + name + b"\"\r\n\r\n"
            + ATTACHMENT + b"--outer--\r\n")


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def text_parts(msg: email.message.EmailMessage) -> list[str]:
    return [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]


def assert_nfc(*texts: str) -> None:
    for text in texts:
        assert unicodedata.is_normalized("NFC", text)


# --- reading header words ------------------------------------------------------------------


def test_header_chunks_join_adjacent_words_and_keep_8bit_bytes():
    data = "ÄÆ°á»".encode("latin-1")
    value = ("=?utf-8?b?" + base64.b64encode(data[:3]).decode() + "?= =?utf-8?b?"
             + base64.b64encode(data[3:]).decode() + "?= plain")
    assert header_chunks(value) == [(data, "utf-8"), (b" plain", None)]
    raw = b"Nguy\xd4n V\xa8n".decode("utf-8", "surrogateescape")
    assert header_chunks(raw) == [(b"Nguy\xd4n V\xa8n", None)]


def test_folded_fields_never_start_a_new_header_line():
    atoms = ["=?utf-8?b?" + "A" * 60 + "?="] * 5
    field = fold("Subject", atoms, b"\r\n")
    lines = field.split(b"\r\n")[:-1]
    assert lines[0].startswith(b"Subject: ") and all(ln.startswith(b" ") for ln in lines[1:])
    with pytest.raises(ValueError):
        fold("Subject", ["ok\r\nBcc: x@evil"], b"\r\n")


def test_leaf_spans_number_parts_as_the_parser_does():
    raw = multipart_vni()
    spans = leaf_spans(raw)
    msg = Message(raw)
    assert [p.path for p in msg.parts] == ["1.1", "1.2", "2"] == list(spans)
    for part in msg.parts:
        leaf = email.message_from_bytes(raw[spans[part.path].start:spans[part.path].end],
                                        policy=email.policy.compat32)
        assert leaf.get_payload(decode=True) == part.payload


# --- finding ------------------------------------------------------------------------------


def test_findings_name_encoding_and_place():
    items = inspect_message(Message(multipart_vni()))
    found = {i.where: (i.detection.label, i.codes) for i in items}
    assert found == {
        "part 1.1": ("vni", ["tcvn6909.legacy_disguised"]),
        "part 1.2": ("vni", ["tcvn6909.legacy_disguised", "tcvn6909.legacy_font"]),
        "Subject": ("vni", ["tcvn6909.legacy_disguised"]),
        "part 2 filename": ("vni", ["tcvn6909.legacy_disguised"]),
    }


def test_unicode_message_has_no_findings():
    raw = (b"From: =?utf-8?b?" + base64.b64encode(NAME.encode()) + b"?= <a@example.org>\r\n"
           b"Subject: =?utf-8?b?" + base64.b64encode(SUBJECT.encode()) + b"?=\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + BODY.encode() + b"\r\n")
    assert inspect_message(Message(raw)) == []


def test_western_european_message_has_no_findings():
    body = "Le conseil a approuvé à l’unanimité le budget prévisionnel. Für Rückfragen: Grüße."
    raw = (b"From: Ren\xe9 M\xfcller <r@example.org>\r\nSubject: R\xe9union du comit\xe9\r\n"
           b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n" + body.encode("cp1252"))
    assert inspect_message(Message(raw)) == []


# --- converting ---------------------------------------------------------------------------


def test_rewrite_converts_parts_headers_and_filename_and_keeps_the_rest():
    raw = multipart_vni()
    msg = Message(raw)
    out, notes = rewrite_message(raw, msg, inspect_message(msg))
    assert notes == ["part 1.1 vni->utf-8", "part 1.2 vni->utf-8", "Subject vni->utf-8",
                     "part 2 filename vni->utf-8"]
    assert out.startswith(b"X-TCVN-Converted: part 1.1 vni->utf-8; part 1.2 vni->utf-8;\r\n ")
    assert DKIM in out  # other fields are not re-folded
    assert b"\r\n\r\n" + ATTACHMENT + b"--outer--\r\n" in out  # the attachment is untouched
    new = parsed(out)
    assert new["Subject"] == SUBJECT
    plain, html = text_parts(new)
    assert plain.replace("\r\n", "\n").rstrip("\n") == BODY
    html = html.replace("\r\n", "\n")
    assert BODY in html and "VNI-Times" not in html and "&quot;Times New Roman&quot;" in html
    assert_nfc(new["Subject"], plain, html)
    [attachment] = [p for p in new.walk() if p.get_content_type() == "application/pdf"]
    assert attachment.get_filename() == FILENAME
    assert Message(out).problems == []
    assert inspect_message(Message(out)) == []  # nothing left to convert


def test_header_injection_through_an_encoded_crlf_is_impossible():
    # CVE-2024-6923 family: a decoded CR/LF must not become a header line on re-encoding
    evil = encode_legacy(SUBJECT, "tcvn3") + b"\r\nBcc: victim@example.org"
    raw = (b"From: a@example.org\r\nSubject: =?windows-1252?b?" + base64.b64encode(evil)
           + b"?=\r\nContent-Type: text/plain\r\n\r\n" + encode_legacy(BODY, "tcvn3") + b"\r\n")
    msg = Message(raw)
    out, notes = rewrite_message(raw, msg, inspect_message(msg))
    assert "Subject tcvn3->utf-8" in notes
    new = Message(out)
    assert [n for n, _ in new.headers] == ["X-TCVN-Converted", "From", "Subject", "Content-Type",
                                          "Content-Transfer-Encoding", "MIME-Version"]
    assert "Bcc" not in parsed(out) and "\n" not in parsed(out)["Subject"]


def test_address_fields_keep_their_addresses():
    raw = (b"From: " + encode_legacy(NAME, "tcvn3") + b" <thuong@example.org>\r\n"
           b"To: \"" + encode_legacy("Lò Thị Huyền", "tcvn3") + b"\" <huyen@dienbien.gov.vn>, "
           b"ubnd@dienbien.gov.vn\r\nContent-Type: text/plain\r\n\r\n"
           + encode_legacy(BODY, "tcvn3"))
    msg = Message(raw)
    out, notes = rewrite_message(raw, msg, inspect_message(msg))
    assert {"From tcvn3->utf-8", "To tcvn3->utf-8"} <= set(notes)
    new = parsed(out)
    assert new["From"].addresses[0].display_name == NAME
    assert new["From"].addresses[0].addr_spec == "thuong@example.org"
    to = new["To"].addresses
    assert [a.addr_spec for a in to] == ["huyen@dienbien.gov.vn", "ubnd@dienbien.gov.vn"]
    assert to[0].display_name == "Lò Thị Huyền"


def test_a_group_address_field_is_reported_but_left_alone():
    raw = (b"From: a@example.org\r\nTo: " + encode_legacy("Các đơn vị trực thuộc", "tcvn3")
           + b": a@dienbien.gov.vn, b@dienbien.gov.vn;\r\nContent-Type: text/plain\r\n\r\n"
           + encode_legacy(BODY, "tcvn3"))
    msg = Message(raw)
    items = inspect_message(msg)
    assert "To" in {i.where for i in items}
    out, notes = rewrite_message(raw, msg, items)
    assert "To tcvn3->utf-8" not in notes
    assert b"\r\nTo: " + encode_legacy("Các đơn vị trực thuộc", "tcvn3") in out


# --- through relay test-message ---------------------------------------------------------------


def run_test_message(tmp_path: Path, message: bytes, policy: dict) -> tuple[int, dict, bytes]:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"policies": {"headers": {}, "tcvn6909": policy}}))
    msg = tmp_path / "msg.eml"
    msg.write_bytes(message)
    output = tmp_path / "out.eml"
    result = run_cli("test-message", "-c", str(cfg), "--from", "a@example.org", "--to", RCPT,
                     str(msg), "--json", "--output", str(output))
    data = output.read_bytes() if output.exists() else b""
    return result.returncode, json.loads(result.stdout), data


@pytest.mark.parametrize("name,message,encoding", [
    ("tcvn3", simple("tcvn3"), "tcvn3"),
    ("vni", simple("vni", "windows-1252"), "vni"),
    ("mojibake", mojibake_message(), "tcvn3"),
])
def test_convert_delivers_utf8_nfc(tmp_path, name, message, encoding):
    code, out, data = run_test_message(tmp_path, message, {"action": "convert"})
    assert code == 0 and out["action"] == "accept"
    codes = {f["code"] for f in out["findings"]}
    expected = "tcvn6909.mojibake" if name == "mojibake" else "tcvn6909.legacy_disguised"
    assert codes == {expected}
    assert all(f["article"] == "Điều 9" and f["details"]["encoding"] == encoding
               for f in out["findings"])
    assert expected in out["conversions"]
    new = parsed(data)
    assert new["X-TCVN-Converted"].startswith(f"part 1 {encoding}->utf-8")
    assert new["Subject"] == SUBJECT
    [body] = text_parts(new)
    assert body.replace("\r\n", "\n").rstrip("\n") == BODY
    assert new.get_content_charset() == "utf-8"
    assert_nfc(new["Subject"], body)
    if name != "mojibake":
        assert new["From"].addresses[0].display_name == NAME


def test_reject_cites_article_9_in_both_languages(tmp_path):
    code, out, data = run_test_message(tmp_path, simple("vni"), {"action": "reject"})
    assert code == 1 and out["action"] == "reject" and data == b""
    assert out["reply"].startswith("550-5.6.0 Phần 1: bảng mã cũ VNI-Windows")
    assert "(Điều 9)" in out["reply"] and "(Article 9)" in out["reply"]
    assert "Part 1: legacy encoding VNI-Windows sent as no charset" in out["reply"]


def test_tag_adds_a_header_and_leaves_the_text(tmp_path):
    message = simple("tcvn3")
    code, out, data = run_test_message(tmp_path, message, {"action": "tag"})
    assert code == 0
    assert "X-TCVN6909: tcvn6909.legacy_disguised; tcvn3; part 1" in out["added_headers"]
    assert data.endswith(message)


def test_log_changes_nothing(tmp_path):
    message = simple("tcvn3")
    code, out, data = run_test_message(tmp_path, message, {"action": "log"})
    assert code == 0 and data == message and out["added_headers"] == []
    assert {f["action"] for f in out["findings"]} == {"log"}


def test_per_code_action_normalises_nfd_and_rejects_legacy(tmp_path):
    policy = {"action": "reject", "actions": {"tcvn6909.not_nfc": "convert"}}
    nfd = (b"From: a@example.org\r\nDate: Mon, 1 Dec 2025 10:00:00 +0700\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
           + unicodedata.normalize("NFD", BODY).encode())
    code, out, data = run_test_message(tmp_path, nfd, policy)
    assert code == 0 and [f["code"] for f in out["findings"]] == ["tcvn6909.not_nfc"]
    assert parsed(data)["X-TCVN-Converted"] == "part 1 nfd->nfc"
    assert text_parts(parsed(data))[0].replace("\r\n", "\n").rstrip("\n") == BODY
    code, out, _ = run_test_message(tmp_path, simple("tcvn3"), policy)
    assert code == 1


# --- relay text -----------------------------------------------------------------------------


def test_text_check_and_convert_a_plain_file(tmp_path):
    src = tmp_path / "congvan.txt"
    src.write_bytes(encode_legacy(BODY, "tcvn3"))
    result = run_cli("text", "check", str(src), "--json")
    assert result.returncode == 1
    [found] = json.loads(result.stdout)["found"]
    assert found["encoding"] == "tcvn3" and found["codes"] == ["tcvn6909.legacy_disguised"]
    result = run_cli("text", "convert", str(src))
    assert result.returncode == 0 and result.stdout.decode() == BODY
    out = tmp_path / "out.txt"
    assert run_cli("text", "convert", str(src), "-o", str(out)).returncode == 0
    assert out.read_text("utf-8") == BODY
    clean = tmp_path / "clean.txt"
    clean.write_bytes(BODY.encode())
    assert run_cli("text", "check", str(clean)).returncode == 0


def test_text_check_and_convert_a_message(tmp_path):
    src = tmp_path / "m.eml"
    src.write_bytes(multipart_vni())
    result = run_cli("text", "check", str(src))
    assert result.returncode == 1 and b"part 2 filename: vni" in result.stdout
    out = tmp_path / "out.eml"
    assert run_cli("text", "convert", str(src), "-o", str(out)).returncode == 0
    assert parsed(out.read_bytes())["Subject"] == SUBJECT
    assert run_cli("text", "check", str(out)).returncode == 0


# --- bad input ------------------------------------------------------------------------------


def test_a_field_with_a_bare_cr_is_reported_but_not_rewritten():
    raw = (b"From: a@example.org\r\nSubject: " + encode_legacy(SUBJECT, "tcvn3")
           + b"\rBcc: x@example.org\r\nContent-Type: text/plain\r\n\r\n"
           + encode_legacy(BODY, "tcvn3"))
    msg = Message(raw)
    items = inspect_message(msg)
    assert "Subject" in {i.where for i in items}
    out, notes = rewrite_message(raw, msg, items)
    assert notes == ["part 1 tcvn3->utf-8"]
    assert b"\r\nSubject: " + encode_legacy(SUBJECT, "tcvn3") + b"\rBcc: x@example.org\r\n" in out


def test_mangled_messages_never_crash_and_never_gain_header_fields():
    import random

    rnd = random.Random(4)
    seeds = [multipart_vni(), simple("tcvn3"), mojibake_message()]
    pieces = [b"\r\n", b"\n", b"\r", b"--outer", b"=?", b"?=", b";", b'"', b"\x00",
              b"boundary=", b"\xb8\xa9", b"=0D=0A", b"\r\nBcc: x@y\r\n"]
    ours = {"x-tcvn-converted", "mime-version", "content-transfer-encoding", "content-type"}
    for _ in range(300):
        raw = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 12)):
            pos = rnd.randrange(len(raw))
            op = rnd.random()
            if op < 0.4:
                raw[pos] = rnd.randrange(256)
            elif op < 0.7:
                del raw[pos:pos + rnd.randint(1, 30)]
            else:
                raw[pos:pos] = rnd.choice(pieces)
        msg = Message(bytes(raw))
        out, notes = rewrite_message(bytes(raw), msg, inspect_message(msg))
        before = {n.lower() for n, _ in msg.headers}
        after = {n.lower() for n, _ in Message(out).headers}
        assert after - before <= ours, bytes(raw)


def test_a_signed_part_is_reported_but_not_changed():
    body = encode_legacy(BODY, "tcvn3")
    raw = (b"From: a@example.org\r\nSubject: " + encode_legacy(SUBJECT, "tcvn3") + b"\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; "
           b'protocol="application/pkcs7-signature"; boundary=s\r\n\r\n'
           b"--s\r\nContent-Type: text/plain; charset=windows-1252\r\n\r\n" + body + b"\r\n"
           b"--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nMIIB\r\n--s--\r\n")
    msg = Message(raw)
    items = inspect_message(msg)
    assert {i.where for i in items} == {"part 1", "Subject"}
    out, notes = rewrite_message(raw, msg, items)
    assert notes == ["Subject tcvn3->utf-8"]  # the signature covers the part, not the header
    assert b"\r\n\r\n" + body + b"\r\n--s\r\n" in out


def test_viqr_subject_is_found_and_converted():
    raw = (b"From: a@example.org\r\nSubject: " + encode_legacy(SUBJECT, "viqr") + b"\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + BODY.encode())
    msg = Message(raw)
    [item] = inspect_message(msg)
    assert item.where == "Subject" and item.codes == ["tcvn6909.viqr"]
    out, notes = rewrite_message(raw, msg, [item])
    assert notes == ["Subject viqr->utf-8"] and parsed(out)["Subject"] == SUBJECT


def test_utf8_labelled_latin1_is_relabelled():
    raw = (b"From: a@example.org\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n" + BODY.encode())
    msg = Message(raw)
    [item] = inspect_message(msg)
    assert item.codes == ["tcvn6909.legacy_disguised"]
    assert item.detection.describe()[1] == "UTF-8 text labelled iso-8859-1"
    out, notes = rewrite_message(raw, msg, [item])
    assert notes == ["part 1 utf-8-mislabelled->utf-8"]
    assert text_parts(parsed(out))[0].replace("\r\n", "\n").rstrip("\n") == BODY


def test_the_rewriter_lives_in_relay_tcvn_and_the_policy_declares_its_codes():
    """`relay text` needs no policy module; every code the rewriter's items carry is one
    the policy declares (else `self.finding()` would refuse it at run time)."""
    from policies.tcvn6909 import CODES
    from relay.tcvn.message import FONT_CODE, KIND_CODE, NFC_CODE
    from tests.test_architecture import import_graph

    graph = import_graph()
    for module in ("relay.cli.text", "relay.tcvn.message"):
        assert not {d for d in graph[module] if d.startswith("policies")}, module
    assert {*KIND_CODE.values(), FONT_CODE, NFC_CODE} <= set(CODES)


def test_a_two_word_subject_alone_is_found_and_converted():
    """Issue 16: short subjects (here the only legacy text in the message) are found."""
    raw = (b"From: a@example.org\r\nTo: " + RCPT.encode() + b"\r\n"
           b"Subject: " + encode_legacy("Nội vụ", "tcvn3") + b"\r\n"
           b"Date: Mon, 1 Dec 2025 10:00:00 +0700\r\n\r\nOK\r\n")
    msg = Message(raw)
    items = inspect_message(msg)
    assert [(i.where, i.codes) for i in items] == [("Subject", ["tcvn6909.legacy_disguised"])]
    out, notes = rewrite_message(raw, msg, items)
    assert notes == ["Subject tcvn3->utf-8"]
    assert parsed(out)["Subject"].lower() == "nội vụ"
