"""The shipped dashboard and alert rules (issue 14, item 6): valid for Prometheus's own
checker, firing when they should (promtool test rules), and built only on metrics the
relay really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MONITORING = Path(__file__).resolve().parents[1] / "docs" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool not installed (Debian package prometheus)")


def dashboard_exprs() -> list[str]:
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in board["panels"] for t in panel["targets"]]


def alert_exprs() -> list[str]:
    text = (MONITORING / "prometheus-alerts.yml").read_text()
    return [e for e in re.findall(r"expr: \|?\n?((?:.+\n)+?)\s+(?:for|labels):", text)]


def exported_names() -> set[str]:
    """Every sample name the relay's metrics module can export (queue gauges included)."""
    from prometheus_client import REGISTRY

    from relay import metrics

    metrics.queue_metrics()
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_every_metric_used_exists():
    names = exported_names()
    used = {m for expr in dashboard_exprs() + alert_exprs()
            for m in re.findall(r"\brelay_[a-z_]+", expr)}
    assert len(used) >= 14
    assert used <= names, used - names
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    titles = " ".join(p["title"] for p in board["panels"])
    for question in ("Transaction duration", "Policy time", "clamd", "DNS", "Delivery",
                     "AUTH", "Queue", "Archive", "Build"):
        assert question in titles


@needs_promtool
def test_alert_rules_pass_promtool_check_and_unit_tests():
    check = subprocess.run([PROMTOOL, "check", "rules", "prometheus-alerts.yml"],
                           cwd=MONITORING, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    tests = subprocess.run([PROMTOOL, "test", "rules", "prometheus-alerts.test.yml"],
                           cwd=MONITORING, capture_output=True, text=True, timeout=60)
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr
    for alert in ("RelayQueueTooOld", "RelayClamdDown", "RelayArchiveCheckpointTooOld",
                  "RelayAuthLockoutStorm"):
        assert f"alertname: {alert}" in (MONITORING / "prometheus-alerts.test.yml").read_text()


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each panel's query as a recording rule (Grafana's $__rate_interval
    stands for a duration)."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(dashboard_exprs()):
        rules += [f"      - record: dashboard:query_{i}",
                  f"        expr: {json.dumps(expr.replace('$__rate_interval', '1m'))}"]
    (tmp_path / "dashboard.yml").write_text("\n".join(rules) + "\n")
    check = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "dashboard.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(dashboard_exprs())} rules found" in check.stdout
