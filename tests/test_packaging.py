"""Packaging (issue 14, item 10): a licence, man pages that `man -l` renders and that say
what the code says, units whose Documentation= points at them, the Debian layout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from relay.cli import main
from tests.fixtures.relayproc import ROOT
from tests.test_cli_json import leaves

MAN = ROOT / "man"


def test_license_and_table_provenance():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    assert 'license = {text = "MIT"}' in (ROOT / "pyproject.toml").read_text()
    notice = (ROOT / "NOTICE").read_text()
    # every conversion table's source line is accounted for in NOTICE
    for table in sorted((ROOT / "relay" / "tcvn" / "tables").glob("*.tsv")):
        assert table.name in notice, table.name
        sources = [line for line in table.read_text().splitlines() if line.startswith("# Source")]
        assert sources, f"{table.name} names no source"


def test_man_pages_are_current():
    result = subprocess.run([sys.executable, str(MAN / "build.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("page", ["relay.8", "relay.toml.5"])
def test_man_renders_without_warnings(page):
    if shutil.which("man") is None:
        pytest.skip("man not installed (Debian package man-db)")
    result = subprocess.run(["man", "--warnings", "-l", str(MAN / page)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "MANWIDTH": "100"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    text = re.sub(r".\x08", "", result.stdout)  # no bold/underline overstrikes
    if page == "relay.8":
        # every command of the CLI, and the exit codes of issue 14
        for path in leaves(main):
            assert f"relay {path}" in text, path
        for code in ("64", "69", "73", "75", "78"):
            assert re.search(rf"^\s+{code} \(EX_", text, re.M), code
        assert "SIGUSR2" in text and "relay.toml(5)" in text
    else:
        # every key of the example relay.toml is described
        for key in ("max_message_size", "metrics_bind", "mail_log", "checkpoint_interval",
                    "auth_lockout", "socket_mode", "mx_check", "fail_open"):
            assert re.search(rf"^\s+{key} = ", text, re.M), key
        assert re.search(r"\[policies\.antivirus\]\s+\(not enabled by default\)", text)


@pytest.mark.parametrize("unit", ["relay.service", "relay-milter.service"])
def test_units_document_with_the_man_pages(unit):
    text = (ROOT / "systemd" / unit).read_text()
    [line] = [x for x in text.splitlines() if x.startswith("Documentation=")]
    assert "man:relay(8)" in line and "man:relay.toml(5)" in line
    for ref in re.findall(r"man:([\w.]+)\((\d)\)", line):
        assert (MAN / f"{ref[0]}.{ref[1]}").exists(), ref


def test_debian_layout_is_documented():
    text = (ROOT / "docs" / "debian-layout.md").read_text()
    for path in ("/etc/relay/relay.toml", "/var/lib/relay", "/var/spool/relay",
                 "/usr/share/man/man8/relay.8", "/usr/share/man/man5/relay.toml.5",
                 "/etc/logrotate.d/relay", "relay.sysusers", "relay.tmpfiles",
                 "relay.service", "relay-milter.service"):
        assert path in text, path
