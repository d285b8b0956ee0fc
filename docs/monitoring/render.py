"""Draw the panels of grafana-dashboard.json from a real Prometheus, without Grafana.

Grafana is not packaged in Debian, PyPI or npm, so the picture in docs/monitoring.md is
made this way: every panel's own queries (`$__rate_interval` read as 1m) are sent to
Prometheus's HTTP API (query_range) and drawn with matplotlib in the dashboard's grid.
It shows what the queries return, not how Grafana styles them.

    python docs/monitoring/render.py --prometheus http://127.0.0.1:9090 \
        --minutes 10 --output docs/monitoring/panels.png

Needs matplotlib (`pip install matplotlib`); not a dependency of the relay.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def query_range(prometheus: str, expr: str, start: float, end: float, step: float
                ) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{params}", timeout=30) as r:
        return json.load(r)["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) \
        or ", ".join(f"{k}={v}" for k, v in labels.items())


def render(prometheus: str, minutes: float, output: Path, step: float = 5.0,
           rate_interval: str = "1m") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads((HERE / "grafana-dashboard.json").read_text())
    end = time.time()
    start = end - minutes * 60
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    fig = plt.figure(figsize=(24, rows * 0.55), facecolor="#111217")
    grid = fig.add_gridspec(rows, 24, hspace=0.0, wspace=0.6)
    for panel in board["panels"]:
        g = panel["gridPos"]
        # leave room for the title and the time axis inside the panel's own rows
        ax = fig.add_subplot(grid[g["y"] + 1:g["y"] + g["h"] - 1, g["x"]:g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#ccccdc", labelsize=8)
        ax.set_title(panel["title"], color="#ccccdc", fontsize=11, loc="left")
        if panel["type"] == "table":
            ax.axis("off")
            rows_text = []
            for target in panel["targets"]:
                for series in query(prometheus, target["expr"]):
                    labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
                    rows_text.append("   ".join(f"{k}={v}" for k, v in sorted(labels.items())))
            ax.text(0.01, 0.5, "\n".join(rows_text) or "no data", color="#ccccdc",
                    fontsize=10, family="monospace", va="center", transform=ax.transAxes)
            continue
        drawn = 0
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            for series in query_range(prometheus, expr, start, end, step):
                points = [(float(t), float(v)) for t, v in series["values"]
                          if v not in ("NaN", "+Inf", "-Inf")]
                if not points:
                    continue
                xs = [(t - end) / 60 for t, _ in points]
                ax.plot(xs, [v for _, v in points], linewidth=1.2,
                        label=legend(target.get("legendFormat", ""), series["metric"]))
                drawn += 1
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_xlabel("minutes", color="#8e8e8e", fontsize=8)
        ax.set_ylabel({"s": "seconds", "ops": "per second"}.get(unit, ""), color="#8e8e8e",
                      fontsize=8)
        ax.grid(color="#2c3235", linewidth=0.5)
        if drawn:
            ax.legend(fontsize=7, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235",
                      labelcolor="#ccccdc", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", color="#8e8e8e", ha="center", transform=ax.transAxes)
    fig.suptitle(f"{board['title']}: the panels of docs/monitoring/grafana-dashboard.json, "
                 f"queried from Prometheus and drawn by render.py (not Grafana)",
                 color="#ccccdc", fontsize=13, x=0.01, ha="left")
    fig.savefig(output, dpi=70, facecolor=fig.get_facecolor(), bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--step", type=float, default=5)
    parser.add_argument("--output", type=Path, default=HERE / "panels.png")
    args = parser.parse_args()
    render(args.prometheus, args.minutes, args.output, args.step)


if __name__ == "__main__":
    main()
