"""dashboards/render.py's value formatting, legends and colours (the drawing itself needs
matplotlib and a live Prometheus: tests/e2e/test_monitoring_stack.py runs it on request)."""

from __future__ import annotations

import importlib.util
import json

from monitoring_support import DASHBOARDS

spec = importlib.util.spec_from_file_location("render", DASHBOARDS / "render.py")
render = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render)


def test_values_are_formatted_by_unit():
    assert render.format_value("percentunit", 0.876) == "87.6%"
    assert render.format_value("bytes", 56 * 1024 * 1024) == "56.0 MiB"
    assert render.format_value("bytes", 512) == "512 B"
    assert render.format_value("s", 5400) == "1.5 h"
    assert render.format_value("s", 2.5) == "2.5 s"
    assert render.format_value(None, 3.0) == "3"


def test_legends_fill_grafana_templates():
    assert render.legend("{{target}} (tier {{tier}})", {"target": "db", "tier": "1"}) == "db (tier 1)"
    assert render.legend("", {"target": "db", "job": "safehold"}) == "target=db"


def test_colours_follow_the_panels_thresholds_and_mappings():
    overview = json.loads((DASHBOARDS / "safehold-overview.json").read_text())
    newest = next(panel for panel in overview["panels"] if panel["title"] == "Newest backup per target")
    assert render.mapped(newest, 0.0) == ("failed", render.COLORS["red"])
    assert render.mapped(newest, 1.0) == ("ok", render.COLORS["green"])
    rpo = next(panel for panel in overview["panels"] if panel["title"].startswith("Age of the last good backup"))
    assert render.threshold_color(rpo, 0.5) == render.COLORS["green"]
    assert render.threshold_color(rpo, 0.9) == render.COLORS["orange"]
    assert render.threshold_color(rpo, 1.2) == render.COLORS["red"]


def test_variables_are_expanded():
    assert render.expand('x{target=~"$target"}[$__rate_interval]') == 'x{target=~".+"}[1m]'
