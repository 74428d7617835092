"""Render previews of dashboards/*.json as PNG images from a live Prometheus (no Grafana needed).

    python dashboards/render.py --prometheus http://127.0.0.1:9090 --out docs/images [--range 15m]

No Grafana server can be installed where safehold is built, so this draws each panel at its grid
position from the dashboard JSON with matplotlib, with the data its queries return from a real
Prometheus: stat and gauge panels as their (mapped, threshold-coloured) value, bar gauges as bars,
time series as lines over the range, tables as text. It is a preview of layout and data, not
Grafana's look. tests/e2e/test_monitoring_stack.py calls it when SAFEHOLD_RENDER_DASHBOARDS names
a folder, which is how the images in docs/images were made (matplotlib: the monitoring extra).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIABLES = {"target": ".+", "__rate_interval": "1m", "__interval": "15s", "__range": "1d"}
COLORS = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff9830", "blue": "#3274d9", "yellow": "#fade2a"}
SERIES_COLORS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]


def expand(expression: str) -> str:
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: VARIABLES[m.group(1) or m.group(2)], expression)


def fetch(prometheus: str, path: str, **parameters: object) -> list[dict]:
    url = f"{prometheus}{path}?{urllib.parse.urlencode(parameters)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template or "")
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("job", "instance")) or "value"


def threshold_color(panel: dict, value: float) -> str:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    color = "green"
    for step in steps:
        if step.get("value") is None or value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def mapped(panel: dict, value: float) -> tuple[str, str | None]:
    for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        result = mapping.get("options", {}).get(str(int(value)) if value == int(value) else str(value))
        if result:
            return result.get("text", str(value)), COLORS.get(result.get("color"), result.get("color"))
    return format_value(panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), value), None


def format_value(unit: str | None, value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "bytes":
        for name in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or name == "TiB":
                return f"{value:.1f} {name}" if name != "B" else f"{value:.0f} B"
            value /= 1024
    if unit == "s":
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.1f} s"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def draw_panel(axes, panel: dict, prometheus: str, start: float, end: float) -> None:
    kind = panel["type"]
    axes.set_title(panel["title"], fontsize=8, loc="left", color="#d8d9da", pad=3)
    targets = panel.get("targets", [])
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if kind == "timeseries":
        for index, target in enumerate(targets):
            step = max(1.0, (end - start) / 200)
            for number, series in enumerate(fetch(prometheus, "/api/v1/query_range", query=expand(target["expr"]),
                                                  start=start, end=end, step=step)):
                xs = [float(t) - end for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                axes.plot(xs, ys, linewidth=1.2, color=SERIES_COLORS[(index * 3 + number) % len(SERIES_COLORS)],
                          label=legend(target.get("legendFormat", ""), series["metric"])[:40])
        ticker = __import__("matplotlib").ticker
        axes.tick_params(labelsize=6, colors="#999", pad=1)
        axes.yaxis.set_major_locator(ticker.MaxNLocator(4))
        axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda tick, _: format_value(unit, tick)))
        axes.xaxis.set_major_locator(ticker.MaxNLocator(5))
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda tick, _: f"{-tick:.0f}s ago" if tick else "now"))
        axes.grid(color="#2a2d33", linewidth=0.5)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=5, loc="upper left", framealpha=0.3)
        return
    axes.set_xticks([])
    axes.set_yticks([])
    results = [(target, series) for target in targets
               for series in fetch(prometheus, "/api/v1/query", query=expand(target["expr"]), time=end)]
    if kind in ("stat", "gauge"):
        cells = results or [({"legendFormat": "no data"}, {"metric": {}, "value": [end, "nan"]})]
        width = 1 / len(cells)
        for number, (target, series) in enumerate(cells):
            value = float(series["value"][1])
            text, color = mapped(panel, value)
            color = color or threshold_color(panel, value)
            axes.add_patch(__import__("matplotlib").patches.Rectangle((number * width + 0.01, 0.05), width - 0.02, 0.8,
                                                                       color=color, alpha=0.85))
            axes.text(number * width + width / 2, 0.45, text, ha="center", va="center",
                      fontsize=14 if len(cells) < 4 else 9, color="white", weight="bold")
            if len(cells) > 1:
                name = legend(target.get("legendFormat", ""), series["metric"])[:18]
                axes.text(number * width + width / 2, 0.15, name, ha="center", fontsize=6, color="white")
    elif kind == "bargauge":
        maximum = panel.get("fieldConfig", {}).get("defaults", {}).get("max", 1) or 1
        rows = sorted(results, key=lambda item: legend(item[0].get("legendFormat", ""), item[1]["metric"]))
        for number, (target, series) in enumerate(rows):
            value = float(series["value"][1])
            y = 1 - (number + 1) / (len(rows) + 1)
            axes.barh(y, min(value, maximum) / maximum * 0.6, left=0.38, height=0.6 / (len(rows) + 1),
                      color=threshold_color(panel, value))
            axes.text(0.01, y, legend(target.get("legendFormat", ""), series["metric"])[:28], va="center", fontsize=6,
                      color="#d8d9da")
            axes.text(0.99, y, format_value(unit, value), va="center", ha="right", fontsize=6, color="#d8d9da")
    elif kind == "table":
        rows: dict[str, dict[str, str]] = {}
        for target, series in results:
            name = series["metric"].get("target", "?")
            row = rows.setdefault(name, {"tier": series["metric"].get("tier", "")})
            value = float(series["value"][1])
            row[target["refId"]] = ("passed" if value == 1 else "failed") if target["refId"] == "status" \
                else format_value("s", value)
        columns = ["target", "tier", "status", "art", "rto", "age"]
        headers = ["Target", "Tier", "Last test", "ART (last pass)", "RTO", "Last pass (ago)"]
        cells = [[name, *[row.get(column, "") for column in columns[1:]]] for name, row in sorted(rows.items())]
        if cells:
            table = axes.table(cellText=cells, colLabels=headers, loc="upper center", cellLoc="left")
            table.auto_set_font_size(False)
            table.set_fontsize(6)
            for cell in table.get_celld().values():
                cell.set_facecolor("#181b1f")
                cell.set_edgecolor("#333")
                cell.get_text().set_color("#d8d9da")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)


def render(dashboard: dict, prometheus: str, output: Path, range_seconds: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time()
    height = max(panel["gridPos"]["y"] + panel["gridPos"]["h"] for panel in dashboard["panels"])
    figure = plt.figure(figsize=(16, height * 0.42 + 1.0), facecolor="#111217")
    heading = f"{dashboard['title']}: preview drawn from live data by dashboards/render.py (not Grafana)"
    figure.text(0.005, 0.995, heading, color="#d8d9da", fontsize=11, va="top")
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        left, width = grid["x"] / 24, grid["w"] / 24
        scale = 0.96 / height                     # the top 4 % hold the heading
        bottom = 0.96 - (grid["y"] + grid["h"]) * scale
        # The gap between panels, at most 30 % of a panel's height: a one-unit row on a tall
        # dashboard (the overview's fourth row) is thinner than a fixed gap of 3 % of the figure.
        gap = min(0.03, grid["h"] * scale * 0.3)
        box = [left + 0.02 * width + 0.01 * (panel["type"] == "timeseries"), bottom + gap * 0.4,
               width * 0.96 - 0.01 * (panel["type"] == "timeseries"), grid["h"] * scale - gap]
        axes = figure.add_axes(box, facecolor="#181b1f")
        for spine in axes.spines.values():
            spine.set_color("#333")
        if panel["type"] == "row":
            axes.set_xticks([])
            axes.set_yticks([])
            axes.text(0.005, 0.5, panel["title"], va="center", fontsize=9, color="#d8d9da", weight="bold")
            continue
        draw_panel(axes, panel, prometheus, end - range_seconds, end)
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{dashboard['uid']}.png"
    figure.savefig(path, dpi=80, facecolor=figure.get_facecolor())
    plt.close(figure)
    return path


def render_all(prometheus: str, output: Path, range_seconds: float = 900) -> list[Path]:
    return [render(json.loads(path.read_text()), prometheus, output, range_seconds)
            for path in sorted(HERE.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL of a Prometheus scraping safehold")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--range", default="15m", help="time range of the time series panels (s, m, h)")
    arguments = parser.parse_args()
    number, unit = int(arguments.range[:-1]), arguments.range[-1]
    seconds = number * {"s": 1, "m": 60, "h": 3600}[unit]
    for path in render_all(arguments.prometheus, arguments.out, seconds):
        print(path)


if __name__ == "__main__":
    main()
