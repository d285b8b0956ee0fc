"""TCVN 6909 in attached documents (issue 16): found per format, converted exactly,
opened by LibreOffice, and bounded on hostile input."""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import io
import json
import shutil
import subprocess
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from relay.message import Message
from relay.tcvn.attachment import DocumentOptions, inspect_document, kind_of, ole_fonts
from relay.tcvn.container import Limits
from relay.tcvn.message import inspect_message
from relay.tcvn.tables import encode_legacy, read_1252
from tests.fixtures.relayproc import run_cli, to_toml
from tests.tcvn_documents import FORMATS, blocks, documents, docx, odt, rtf_doc, same

ZIPPED = ("docx", "xlsx", "pptx", "odt", "ods")
TITLE = "ỦY BAN NHÂN DÂN TỈNH ĐIỆN BIÊN"
LINE = "Kính gửi: Thủ trưởng các sở, ban, ngành tỉnh Điện Biên."


# --- found, per format -------------------------------------------------------------------


def test_every_legacy_document_is_found_and_no_clean_one():
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    alarms = []
    for doc in documents(per_variant=4):
        report = inspect_document(doc.data, f"file.{doc.format}")
        assert report is not None and report.error is None, doc.name
        key = f"{doc.format} {doc.variant}"
        total[key] += 1
        if doc.expect is None:
            if report.found:
                alarms.append(doc.name)
            continue
        found[key] += report.found and doc.expect in report.label
        if doc.variant in ("tcvn3 font", "vni font") and doc.format not in ("txt", "csv"):
            assert report.fonts, doc.name  # the finding names the font
    assert alarms == []
    assert {k for k in total if k.split()[0] in FORMATS} and len(total) == 43
    assert found == {k: v for k, v in total.items() if "unicode" not in k and "western" not in k}


def test_the_format_comes_from_the_bytes_not_the_name():
    data = docx([(read_1252(encode_legacy(LINE, "tcvn3")), ".VnTime")])
    assert kind_of(data, "report.pdf", "application/pdf") == "docx"
    assert kind_of(odt([("x", "Arial")]), None, None) == "odt"
    assert kind_of(rtf_doc([("x", "Arial")]), "a.txt", "text/plain") == "rtf"
    assert kind_of(b"%PDF-1.4", "a.pdf", "application/pdf") is None
    assert kind_of(b"PK\x03\x04 not a zip at all", "a.docx", None) == "docx"  # and says so
    report = inspect_document(b"PK\x03\x04 not a zip at all", "a.docx")
    assert report is not None and report.error and not report.over_limits


# --- converted ------------------------------------------------------------------------


def test_conversion_is_exact_and_keeps_everything_else():
    inexact = []
    for doc in documents(per_variant=3):
        if doc.expect is None:
            continue
        report = inspect_document(doc.data, f"f.{doc.format}", convert=True)
        assert report is not None and report.converted is not None, doc.name
        if not same(blocks(doc.format, report.converted), doc.paragraphs, doc.expect):
            inexact.append(doc.name)
        again = inspect_document(report.converted, f"f.{doc.format}")
        assert again is not None and not again.found, doc.name  # no legacy font left
        if doc.format in ZIPPED:
            before = zipfile.ZipFile(io.BytesIO(doc.data))
            after = zipfile.ZipFile(io.BytesIO(report.converted))
            assert [i.filename for i in after.infolist()] == before.namelist()
            for info in before.infolist():
                if info.filename.endswith((".rels", ".bin", "mimetype", "manifest.xml")) \
                        or info.filename == "[Content_Types].xml":
                    assert after.read(info.filename) == before.read(info.filename)
                assert after.getinfo(info.filename).compress_type == info.compress_type
    assert inexact == []


def test_fonts_are_mapped_and_capitals_restored():
    stored = [(read_1252(encode_legacy(TITLE.lower(), "tcvn3")), ".VnTimeH"),
              (read_1252(encode_legacy(LINE, "tcvn3")), ".VnArial")]
    report = inspect_document(docx(stored), "a.docx", convert=True,
                              font_map={".VnArial": "Liberation Sans"})
    assert report is not None and report.converted is not None
    assert report.fonts == [".VnTimeH", ".VnArial"]
    assert blocks("docx", report.converted) == [TITLE, LINE]
    members = zipfile.ZipFile(io.BytesIO(report.converted))
    xml = members.read("word/document.xml").decode()  # the heading's run names its font
    assert 'w:ascii="Times New Roman"' in xml and ".Vn" not in xml
    styles = members.read("word/styles.xml").decode()  # the body's comes from Normal
    assert 'w:hAnsi="Liberation Sans"' in styles and ".Vn" not in styles
    assert ".Vn" not in members.read("word/fontTable.xml").decode()


def test_a_binary_office_file_is_found_by_its_font_table_but_not_rewritten():
    # an OLE header and Word's font table entry (UTF-16LE), as in a .doc typed in .VnTime
    data = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500
            + ".VnTime".encode("utf-16-le") + b"\x00\x00" + b"\x00" * 100
            + "Times New Roman".encode("utf-16-le"))
    assert ole_fonts(data) == [".VnTime"]
    report = inspect_document(data, "cong-van.doc", convert=True)
    assert report is not None and report.kind == "ole" and report.found
    assert not report.convertible and report.converted is None
    clean = inspect_document(data.replace(".VnTime".encode("utf-16-le"),
                                          "Arial\x00\x00".encode("utf-16-le")), "a.doc")
    assert clean is not None and not clean.found


# --- hostile documents ------------------------------------------------------------------


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return out.getvalue()


def test_a_zip_bomb_disguised_as_docx_stops_at_the_limit_quickly():
    bomb = zip_of([("[Content_Types].xml", b"<Types/>"),
                   ("word/document.xml", b"<w:document " + b" " * (300 * 1024 * 1024) + b"/>")])
    assert len(bomb) < 1024 * 1024  # 300 MB inflated from well under 1 MB
    start = time.perf_counter()
    report = inspect_document(bomb, "bao-cao.docx", limits=Limits(max_total_bytes=16 << 20,
                                                                     max_member_bytes=16 << 20))
    elapsed = time.perf_counter() - start
    assert report is not None and report.over_limits and "inflates past" in (report.error or "")
    assert elapsed < 10  # stops at 16 MB, it does not inflate 300


def test_too_many_zip_members_are_refused_before_any_is_read():
    many = zip_of([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<x/>")]
                  + [(f"word/media/{i}.bin", b"") for i in range(3000)])
    report = inspect_document(many, "a.docx")
    assert report is not None and report.over_limits and "3002 zip members" in (report.error or "")


def test_deeply_nested_xml_and_entities_are_refused():
    deep = b"<a>" * 100_000 + b"</a>" * 100_000
    for member in (deep,
                   b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
                   b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>',
                   b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'):
        data = zip_of([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", member)])
        start = time.perf_counter()
        report = inspect_document(data, "a.docx")
        assert report is not None and report.error, member[:40]
        assert "passwd" not in (report.sample or "")
        assert time.perf_counter() - start < 5


def test_ten_thousand_runs_are_read_and_converted():
    runs = "".join(
        f'<w:r><w:rPr><w:rFonts w:hAnsi=".VnTime"/></w:rPr><w:t>{read_1252(encode_legacy("Điện Biên ", "tcvn3"))}</w:t></w:r>'
        for _ in range(10_000))
    base = docx([("x", ".VnTime")])
    zf = zipfile.ZipFile(io.BytesIO(base))
    members = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    members = [(n, d if n != "word/document.xml" else d.replace(
        b"<w:p>", b'<w:p>' + runs.encode(), 1)) for n, d in members]
    data = zip_of(members)
    start = time.perf_counter()
    report = inspect_document(data, "a.docx", convert=True)
    elapsed = time.perf_counter() - start
    assert report is not None and report.error is None and report.nodes >= 10_000
    assert report.converted is not None
    assert blocks("docx", report.converted)[0].startswith("Điện Biên Điện Biên")
    assert elapsed < 20


def test_deeply_nested_rtf_groups_are_refused():
    data = b"{\\rtf1" + b"{" * 10_000 + b"x" + b"}" * 10_001
    report = inspect_document(data, "a.rtf")
    assert report is not None and report.over_limits


def test_a_corrupt_member_is_an_error_not_a_crash():
    data = bytearray(docx([(read_1252(encode_legacy(LINE, "tcvn3")), ".VnTime")]))
    at = data.find(b"word/document.xml") + 40  # inside the member's compressed bytes
    data[at:at + 20] = b"\xff" * 20
    report = inspect_document(bytes(data), "a.docx")
    assert report is not None and report.error


# --- in a message: the policy ----------------------------------------------------------


def message_with(attachment: bytes, name: str, ctype: str) -> bytes:
    body = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (b"From: van.thu@example.org\r\nTo: ubnd@dienbien.gov.vn\r\n"
            b"Subject: Bao cao\r\nDate: Mon, 1 Dec 2025 10:00:00 +0700\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + "Kính gửi anh chị.".encode() + b"\r\n--b1\r\n"
            b"Content-Type: " + ctype.encode() + b"\r\n"
            b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"--b1--\r\n")


DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def legacy_docx() -> bytes:
    return docx([(read_1252(encode_legacy(TITLE.lower(), "tcvn3")), ".VnTimeH"),
                 (read_1252(encode_legacy(LINE, "tcvn3")), ".VnTime")])


def test_a_text_attachment_is_inspected_too():
    raw = message_with(encode_legacy(LINE, "vni"), "thu.txt", "text/plain")
    items = inspect_message(Message(raw), documents=DocumentOptions())
    assert [i.codes for i in items] == [["tcvn6909.attachment"]]
    assert items[0].document is not None and items[0].document.label == "vni"
    assert inspect_message(Message(raw)) == []  # without documents: as before


def run_test_message(tmp_path: Path, message: bytes, policy: dict) -> tuple[int, dict, bytes]:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"policies": {"headers": {}, "tcvn6909": policy}}))
    msg = tmp_path / "msg.eml"
    msg.write_bytes(message)
    output = tmp_path / "out.eml"
    result = run_cli("test-message", "-c", str(cfg), "--from", "a@example.org", "--to",
                     "ubnd@dienbien.gov.vn", str(msg), "--json", "--output", str(output))
    data = output.read_bytes() if output.exists() else b""
    return result.returncode, json.loads(result.stdout), data


def attachment_of(data: bytes) -> bytes:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    [part] = [p for p in msg.walk() if p.get_filename()]
    return part.get_content()


def test_policy_reports_the_file_and_font_and_converts_only_when_asked(tmp_path):
    message = message_with(legacy_docx(), "cong-van.docx", DOCX_TYPE)
    code, out, data = run_test_message(tmp_path, message, {"action": "reject"})
    assert code == 1
    [finding] = out["findings"]
    assert finding["code"] == "tcvn6909.attachment" and finding["article"] == "Điều 9"
    assert finding["details"]["name"] == "cong-van.docx"
    assert finding["details"]["fonts"] == [".VnTimeH", ".VnTime"]
    assert "Tệp đính kèm cong-van.docx (Word (.docx)): phông chữ cũ .VnTimeH" in out["reply"]
    assert "Attachment cong-van.docx (Word (.docx)): legacy fonts .VnTimeH" in out["reply"]
    assert "(Điều 9)" in out["reply"] and "(Article 9)" in out["reply"]
    # convert, but convert_attachments is off by default: delivered as it came
    code, out, data = run_test_message(tmp_path, message, {"action": "convert"})
    assert code == 0 and attachment_of(data) == legacy_docx()
    code, out, data = run_test_message(tmp_path, message, {
        "action": "convert", "convert_attachments": True, "font_map": {".VnTime": "Cambria"}})
    assert code == 0
    converted = attachment_of(data)
    assert blocks("docx", converted) == [TITLE, LINE]
    assert b'w:hAnsi="Cambria"' in zipfile.ZipFile(io.BytesIO(converted)).read(
        "word/document.xml")
    new = email.message_from_bytes(data, policy=email.policy.default)
    assert new["X-TCVN-Converted"] == "part 2 attachment docx tcvn3->unicode"
    assert "Kính gửi anh chị." in new.get_body().get_content()


def test_a_zip_bomb_attachment_is_its_own_finding(tmp_path):
    bomb = zip_of([("[Content_Types].xml", b"<Types/>"),
                   ("word/document.xml", b"<x>" + b"a" * (80 * 1024 * 1024) + b"</x>")])
    message = message_with(bomb, "bom.docx", DOCX_TYPE)
    code, out, _ = run_test_message(tmp_path, message, {
        "action": "convert", "actions": {"tcvn6909.attachment_uninspected": "reject"}})
    assert code == 1
    [finding] = out["findings"]
    assert finding["code"] == "tcvn6909.attachment_uninspected"
    assert "over the inspection limits" in out["reply"]


def test_font_map_option_is_validated(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text(to_toml({"policies": {"tcvn6909": {"font_map": {".VnTime": "Evil\r\nX"}}}}))
    result = run_cli("check-config", "-c", str(cfg))
    assert result.returncode == 78 and b"font_map" in result.stderr


# --- relay text -----------------------------------------------------------------------


def test_relay_text_checks_and_converts_a_document(tmp_path):
    path = tmp_path / "bao-cao.docx"
    path.write_bytes(legacy_docx())
    result = run_cli("text", "check", str(path), "--json")
    assert result.returncode == 1
    [found] = json.loads(result.stdout)["found"]
    assert found["format"] == "docx" and found["fonts"] == [".VnTimeH", ".VnTime"]
    out = tmp_path / "moi.docx"
    result = run_cli("text", "convert", str(path), "-o", str(out),
                     "--font-map", ".VnTime=Arial")
    assert result.returncode == 0, result.stderr
    assert blocks("docx", out.read_bytes()) == [TITLE, LINE]
    assert run_cli("text", "check", str(out)).returncode == 0
    broken = tmp_path / "hong.docx"
    broken.write_bytes(b"PK\x03\x04 broken")
    result = run_cli("text", "check", str(broken))
    assert result.returncode == 1 and b"cannot inspect" in result.stderr


# --- LibreOffice reads what we wrote ----------------------------------------------------

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


def soffice(tmp_path: Path, target: str, files: list[Path]) -> Path:
    out = tmp_path / "out"
    subprocess.run([SOFFICE or "soffice", "--headless", "--norestore",
                    f"-env:UserInstallation=file://{tmp_path}/profile", "--convert-to", target,
                    "--outdir", str(out), *map(str, files)],
                   capture_output=True, timeout=180, check=True)
    return out


@pytest.mark.skipif(SOFFICE is None, reason="soffice not installed (Debian libreoffice-core, "
                    "libreoffice-writer, libreoffice-calc)")
def test_libreoffice_reads_the_converted_documents_as_the_original_text(tmp_path):
    docs = [d for d in documents(per_variant=1) if d.expect in ("tcvn3", "vni")
            and d.format in ("docx", "odt", "rtf", "html", "xlsx", "ods")]
    writer, calc = [], []
    expected = {}
    for doc in docs:
        report = inspect_document(doc.data, f"f.{doc.format}", convert=True)
        assert report is not None and report.converted is not None
        for tag, data in (("new", report.converted), ("old", doc.data)):
            path = tmp_path / f"{tag}-{doc.name}.{doc.format}"
            path.write_bytes(data)
            (calc if doc.format in ("xlsx", "ods") else writer).append(path)
        expected[doc.name] = doc
    text = soffice(tmp_path, "txt:Text (encoded):UTF8", writer)
    sheets = soffice(tmp_path, "csv:Text - txt - csv (StarCalc):44,34,76", calc)
    checked = 0
    for name, doc in expected.items():
        for tag in ("new", "old"):
            if doc.format in ("xlsx", "ods"):
                raw = (sheets / f"{tag}-{name}.csv").read_text("utf-8-sig")
                lines = [row[0] for row in csv.reader(io.StringIO(raw))]
            else:
                raw = (text / f"{tag}-{name}.txt").read_text("utf-8-sig")
                lines = [line.strip() for line in raw.splitlines() if line.strip()]
            if tag == "new":
                assert same(lines, doc.paragraphs, doc.expect), (name, lines[:2])
                checked += 1
            else:  # the original really reads as mojibake without the legacy font
                assert lines != doc.paragraphs
    assert checked == len(docs) == 18  # six formats, TCVN3 and VNI in fonts, TCVN3 without
    # and the fonts LibreOffice sees are Unicode ones
    [converted_docx] = [p for p in writer if p.name.startswith("new-docx-tcvn3-font")]
    flat = soffice(tmp_path, "fodt", [converted_docx]) / (converted_docx.stem + ".fodt")
    xml = flat.read_text("utf-8")
    assert "Times New Roman" in xml and ".VnTime" not in xml


@pytest.mark.skipif(SOFFICE is None, reason="soffice not installed (Debian libreoffice-core)")
def test_a_real_doc_saved_by_libreoffice_is_found_by_its_font_table(tmp_path):
    source = tmp_path / "cong-van.docx"
    source.write_bytes(legacy_docx())
    doc = soffice(tmp_path, "doc", [source]) / "cong-van.doc"
    report = inspect_document(doc.read_bytes(), "cong-van.doc")
    assert report is not None and report.kind == "ole"
    assert ".VnTime" in report.fonts and not report.convertible


def test_the_time_spent_on_one_message_s_attachments_is_bounded():
    raw = message_with(encode_legacy(LINE, "vni"), "thu.txt", "text/plain")
    assert inspect_message(Message(raw), documents=DocumentOptions())
    assert inspect_message(Message(raw), documents=DocumentOptions(max_seconds=0.0)) == []
