"""The README's auditor path, run as it is written (issue 14 item 8).

The commands are read from README.md (the `sh` block after the `auditor-path` marker),
never copied here, so the README and this test cannot drift apart. They run in the
README's order against a real relay: the tour's message first, with no signing key, then
`keygen` while the relay runs, then the auditor's commands, each through `bash` in the
folder the tour uses, with `relay` on PATH and `RELAY_CONFIG` standing in for the
embedded defaults (the test's relay listens on free ports).
"""

from __future__ import annotations

import os
import re
import shlex
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from tests.fixtures.relayproc import ROOT, relay_env

MARKER = "auditor-path:"
UBND = "ubnd@dienbien.gov.vn"


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The lines of the shell block after the marker (continuations joined)."""
    lines = readme.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if MARKER in line)
    fence = next(i for i in range(start, len(lines)) if lines[i].startswith("```sh"))
    commands, current = [], ""
    for line in lines[fence + 1:]:
        if line.startswith("```"):
            break
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if current.strip():
                commands.append(current.strip())
            current = ""
    return commands


def _bin(tmp: Path) -> Path:
    """`relay` as the README calls it: this checkout, run by this interpreter."""
    folder = tmp / "bin"
    folder.mkdir()
    shim = folder / "relay"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m relay \"$@\"\n")
    shim.chmod(0o755)
    return folder


def _tour_message() -> bytes:
    """What the tour's swaks command sends: to ubnd@, Subject "Kính gửi UBND tỉnh"."""
    msg = EmailMessage()
    msg["From"] = "dan@example.org"
    msg["To"] = UBND
    msg["Subject"] = "Kính gửi UBND tỉnh"
    msg["Date"] = "Sat, 05 Dec 2026 10:00:00 +0700"
    msg["Message-ID"] = "<tour-1@example.org>"
    msg.set_content("Kính gửi UBND tỉnh Điện Biên.\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def test_the_readme_lists_runnable_commands():
    commands = readme_commands()
    assert commands[0].startswith("relay archive keygen")
    assert all(c.startswith("relay archive ") for c in commands), commands
    # no placeholders a reader would have to replace: ID, MAILBOX, "…", a | b
    for command in commands:
        words = shlex.split(command, comments=True)
        assert not {"ID", "MAILBOX", "…", "|"} & set(words), command


def test_the_readme_auditor_path_works_as_written(relay_factory, tmp_path):
    relay = relay_factory()  # running, and no signing key yet: the README's order
    with smtplib.SMTP("127.0.0.1", relay.mx, timeout=10) as client:
        client.sendmail("dan@example.org", [UBND], _tour_message())
    env = {**relay_env(), "RELAY_CONFIG": str(relay.config_path),
           "PATH": f"{_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}"}
    out: dict[str, str] = {}
    for command in readme_commands():
        done = subprocess.run(["bash", "-c", command], cwd=relay.dir, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        key = " ".join(shlex.split(command, comments=True)[2:4])
        out[key] = out.get(key, "") + done.stdout
        out.setdefault("all", "")
        out["all"] += done.stdout

    assert "key id" in out["keygen"]
    [line] = [x for x in out["log --mailbox"].splitlines() if x.startswith("#1\t")]
    assert "Kính gửi UBND tỉnh" in line and re.search(r"\t\d{4}-\d\d-\d\dT[\d:]{8}Z\t", line)
    assert "Subject: Kính gửi UBND tỉnh" in out["show 1"]
    assert "Converted" not in out["show 1"]  # only the Received: header was added
    assert "with added header(s): Received" in out["show 1"]
    assert "exported 1 entries" in out["export --mailbox"] and "skip" not in out["all"]
    assert out["verify"].rstrip().endswith("INTACT") and "WARNING" not in out["verify"]
    assert out["verify --export"].rstrip().endswith("INTACT")
    assert "hold placed on ubnd@dienbien.gov.vn" in out["hold ubnd@dienbien.gov.vn"]
    assert "QĐ thanh tra số 45/QĐ-TTr" in out["hold"]
    assert "hold on ubnd@dienbien.gov.vn released" in out["release ubnd@dienbien.gov.vn"]
    assert "would purge 0 entries" in out["purge --dry-run"]
    actions = [line.split("\t")[3] for line in out["access-log"].splitlines()]
    assert actions == ["show", "export", "hold", "release"]

