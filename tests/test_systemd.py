"""The systemd units: notify type, no restart loop on a config error, hardened."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.fixtures.relayproc import ROOT

COMMON = ("Type=notify", "RestartPreventExitStatus=78", "ExecReload=/bin/kill -HUP $MAINPID",
          "WatchdogSec=", "User=relay")
UNITS = {
    "relay.service": (*COMMON, "ExecStartPre=/usr/bin/relay check-config",
                      "StateDirectory=relay", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                      "ReadWritePaths=/var/spool/relay",
                      "SyslogIdentifier=relay"),
    "relay-milter.service": (*COMMON, "ExecStart=/usr/bin/relay milter",
                             "Before=postfix.service"),
    "relay-web.service": (*COMMON, "ExecStart=/usr/bin/relay web", "CapabilityBoundingSet=\n",
                          "SyslogIdentifier=relay-web", "MemoryMax="),
    # the daily petitions reminder (Điều 8): a oneshot started by its timer; it queues
    # mail, so it writes the spool that ProtectSystem=strict would otherwise make read-only
    "relay-petitions-remind.service": ("Type=oneshot", "User=relay",
                                       "ExecStart=/usr/bin/relay petitions remind --json",
                                       "ReadWritePaths=/var/spool/relay",
                                       "StateDirectory=relay", "CapabilityBoundingSet=\n"),
}


def test_petitions_reminder_timer_runs_it_daily_on_working_days_in_vietnam():
    text = (ROOT / "systemd" / "relay-petitions-remind.timer").read_text()
    assert "OnCalendar=Mon..Fri *-*-* 07:00:00 Asia/Ho_Chi_Minh" in text
    assert "Persistent=true" in text and "WantedBy=timers.target" in text
    if shutil.which("systemd-analyze") is not None:
        out = subprocess.run(["systemd-analyze", "calendar", "Mon..Fri *-*-* 07:00:00 "
                              "Asia/Ho_Chi_Minh"], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_contract(unit):
    text = (ROOT / "systemd" / unit).read_text()
    for line in UNITS[unit]:
        assert line in text, line


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_exposure_is_at_most_2(unit):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (package systemd) is not installed")
    out = subprocess.run(["systemd-analyze", "security", "--offline=true",
                          str(ROOT / "systemd" / unit)],
                         capture_output=True, text=True, check=False).stdout
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert score <= 2.0, out
