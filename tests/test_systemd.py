"""The systemd units: notify type, no restart loop on a config error, hardened."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.fixtures.relayproc import ROOT

UNIT = ROOT / "systemd" / "relay.service"


def test_unit_contract():
    text = UNIT.read_text()
    for line in ("Type=notify", "RestartPreventExitStatus=78", "ExecReload=/bin/kill -HUP $MAINPID",
                 "ExecStartPre=/usr/bin/relay check-config", "StateDirectory=relay",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE", "User=relay",
                 "SyslogIdentifier=relay", "WatchdogSec="):
        assert line in text, line


def test_exposure_is_at_most_2():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (package systemd) is not installed")
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                         capture_output=True, text=True, check=False).stdout
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert score <= 2.0, out
