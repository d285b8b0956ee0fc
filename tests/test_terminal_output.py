"""Stored and client-supplied text cannot drive the terminal of whoever runs `relay …`.

Issue 10 item 11: a subject with `ESC ] 0 ; title BEL` set the window title of the
person running `relay archive log`. Every human (non-JSON) output goes through
`relay.cli.common.printable`; these tests put hostile text where each command group
reads it from (the archive's own tests cover `relay archive …`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.cli.common import print_json, printable
from relay.spool import QueueEnvelope, RecipientState, Spool, State
from tests.fixtures.relayproc import to_toml

TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the window title
CSI = "\x1b[2J\x1b[1;1H"  # clear the screen, cursor home
C1_CSI = "\x9b31m"  # the one-character CSI of C1
BIDI = "\u202egpj.exe"  # right-to-left override: reads as "exe.jpg"
HOSTILE = f"{TITLE}{CSI}{C1_CSI}{BIDI}\u2028\x7f"
# anything a terminal would act on, or that reorders or breaks what is read
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                 "\u2028\u2029]")


def run(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(to_toml({
        "server": {"state_dir": "state", "local_domains": ["dienbien.gov.vn"]},
        "policies": {"headers": {}, "attachments": {}},
    }))
    return path


# --- the helper ----------------------------------------------------------------------------
def test_printable_escapes_every_class_and_keeps_vietnamese():
    assert printable("Thông báo số 12/TB-UBND") == "Thông báo số 12/TB-UBND"
    assert printable(HOSTILE) == ("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1H\\x9b31m"
                                  "\\u202egpj.exe\\u2028\\x7f")
    assert printable("a\tb\nc\rd") == "a\\x09b\\x0ac\\x0dd"  # one line: a field
    assert printable("a\tb\r\nc\rd\x1b", multiline=True) == "a\tb\nc\\x0dd\\x1b"  # a body
    assert printable("\udcff\u2066x\u2069") == "\\udcff\\u2066x\\u2069"  # undecodable byte
    assert printable(None) == "None"
    assert not RAW.search(printable("".join(map(chr, range(0x00, 0xA0)))))


def test_json_output_escapes_what_json_leaves_raw(capsys):
    print_json({"subject": f"Thông {HOSTILE}\udcff"})
    out = capsys.readouterr().out
    assert not RAW.search(out.rstrip("\n")) and out.count("\n") == 1
    assert "Thông" in out  # Vietnamese stays readable
    assert json.loads(out)["subject"] == f"Thông {HOSTILE}\udcff"  # same value


# --- relay queue ---------------------------------------------------------------------------
def test_queue_list_and_show_escape_sender_reason_and_message(config: Path, tmp_path: Path):
    spool = Spool(tmp_path / "state" / "queue")
    envelope = QueueEnvelope(queue_id="Q1", sender=f"a{TITLE}@example.org",
                             recipients=["ubnd@dienbien.gov.vn"])
    message = f"Subject: {CSI}x\r\n\r\nbody {TITLE}\r\nline 2\r\n".encode()
    asyncio.run(spool.put(envelope, message))
    # the remote server's reply is kept as the delay reason: hostile too
    spool.save_state("Q1", State(attempts=1, recipients={"ubnd@dienbien.gov.vn": RecipientState(
        reason=f"451 4.3.0 try later {CSI}{BIDI}", attempts=1)}))
    spool.close()
    listed = run("queue", "list", "-c", str(config))
    assert not RAW.search(listed.replace("\n", "")), listed
    assert "<a\\x1b]0;pwned\\x07@example.org>" in listed
    assert "(451 4.3.0 try later \\x1b[2J\\x1b[1;1H\\u202egpj.exe)" in listed
    shown = run("queue", "show", "-c", str(config), "Q1")
    assert not RAW.search(shown.replace("\n", "")), shown
    assert "Subject: \\x1b[2J\\x1b[1;1Hx\n\nbody \\x1b]0;pwned\\x07\nline 2" in shown
    raw = CliRunner().invoke(main, ["queue", "show", "-c", str(config), "--raw", "Q1"])
    assert raw.stdout_bytes == message  # --raw: the exact bytes, for a file or a pipe
    assert json.loads(run("queue", "list", "-c", str(config), "--json"))["sender"] == \
        envelope.sender


# --- relay directory -----------------------------------------------------------------------
def test_directory_listings_escape_names_and_legal_basis(config: Path):
    basis = f"QĐ 12/QĐ-UBND {TITLE}"
    run("directory", "agency", "add", "sotc", "--name", f"Sở Tài chính {CSI}", "--basis", basis,
        "-c", str(config))
    run("directory", "mailbox", "add", "an.nguyen@dienbien.gov.vn", "--kind", "personal",
        "--agency", "sotc", "--name", f"Nguyễn Văn An {BIDI}", "--no-password",
        "--basis", basis, "-c", str(config))
    outputs = {
        "agency list": run("directory", "agency", "list", "-c", str(config)),
        "mailbox list": run("directory", "mailbox", "list", "-c", str(config)),
        "mailbox show": run("directory", "mailbox", "show", "an.nguyen@dienbien.gov.vn",
                            "-c", str(config)),
        "log": run("directory", "log", "-c", str(config)),
    }
    for name, out in outputs.items():
        assert not RAW.search(out.replace("\n", "")), (name, out)
    assert "Sở Tài chính \\x1b[2J\\x1b[1;1H" in outputs["agency list"]
    assert "Nguyễn Văn An \\u202egpj.exe" in outputs["mailbox list"]
    assert "[QĐ 12/QĐ-UBND \\x1b]0;pwned\\x07]" in outputs["log"]


# --- relay test-message ----------------------------------------------------------------------
def test_test_message_explains_without_replaying_the_attachment_name(config: Path,
                                                                     tmp_path: Path):
    name = f"bao-cao{TITLE}.exe"
    encoded = base64.b64encode(name.encode()).decode()
    eml = tmp_path / "m.eml"
    eml.write_bytes(
        ("From: an.nguyen@dienbien.gov.vn\r\nTo: x@example.org\r\n"
         "Date: Sun, 29 Nov 2026 10:00:00 +0700\r\nMessage-ID: <1@dienbien.gov.vn>\r\n"
         f"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
         "\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\n"
         f"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
         f"filename=\"=?utf-8?b?{encoded}?=\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         f"{base64.b64encode(b'MZ' + bytes(200)).decode()}\r\n--b--\r\n").encode())
    result = CliRunner().invoke(main, ["test-message", "-c", str(config), "--from",
                                       "an.nguyen@dienbien.gov.vn", "--to", "x@example.org",
                                       "--auth", "an.nguyen", str(eml)])
    assert result.exit_code == 1, result.output  # refused: an executable
    assert "attachments" in result.output
    assert "bao-cao\\x1b]0;pwned\\x07.exe" in result.output
    assert not RAW.search(result.output.replace("\n", "")), result.output
