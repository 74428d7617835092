"""The Grafana dashboards: built from code (dashboards/build.py) and committed as that code builds
them, valid against the JSON schema generated from Grafana's npm @grafana/schema (the dashboard
and each panel type's options and field config), provisioned, and every query parses in promtool
and reads only metrics safehold exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from monitoring_support import (
    DASHBOARD_VARIABLES,
    DASHBOARDS,
    EXPORTED_METRICS,
    MONITORING,
    PROMETHEUS_METRICS,
    ROOT,
    expand_grafana_variables,
    metric_names,
    panels,
    promtool_parse,
    queries,
)

SCHEMA = MONITORING / "grafana" / "schema"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))


@cache
def schema(name: str) -> dict:
    return json.loads((SCHEMA / name).read_text())


def validate(instance: object, schema_name: str) -> list[str]:
    validator = jsonschema.Draft7Validator(schema(schema_name))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_there_are_the_three_dashboards():
    titles = {load(path)["title"] for path in DASHBOARD_FILES}
    assert titles == {"safehold overview", "safehold backup trends", "safehold storage capacity"}


def test_committed_dashboards_are_what_the_code_builds():
    result = subprocess.run([sys.executable, str(DASHBOARDS / "build.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_dashboard_matches_grafana_schema(path):
    document = load(path)
    assert validate(document, "dashboard.schema.json") == []
    for panel in panels(document):
        kind = panel["type"]
        if kind == "row":
            continue
        assert (SCHEMA / "panels" / f"{kind}.options.schema.json").exists(), f"no schema for panel type {kind}"
        assert validate(panel.get("options", {}), f"panels/{kind}.options.schema.json") == [], panel["title"]
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            assert validate(custom, f"panels/{kind}.fieldconfig.schema.json") == [], panel["title"]


def test_the_schema_catches_a_misspelled_key():
    """The generated schema is strict enough to matter: unknown keys are refused at every level."""
    document = load(DASHBOARDS / "safehold-overview.json")
    document["refreshh"] = "1m"
    assert any("refreshh" in error for error in validate(document, "dashboard.schema.json"))
    document = load(DASHBOARDS / "safehold-overview.json")
    document["panels"][1]["gridPos"]["width"] = 6
    assert validate(document, "dashboard.schema.json")
    stat_options = next(panel for panel in panels(document) if panel["type"] == "stat")["options"]
    assert validate({**stat_options, "colourMode": "value"}, "panels/stat.options.schema.json")


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_dashboard_structure(path):
    document = load(path)
    assert re.fullmatch(r"safehold-[a-z-]+", document["uid"])
    ids = [panel["id"] for panel in panels(document)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in document["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            assert target["refId"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)
def test_every_query_parses_and_reads_only_safehold_metrics(path):
    expressions = [expand_grafana_variables(text, DASHBOARD_VARIABLES) for text in queries(load(path))]
    assert expressions
    result = promtool_parse(expressions)
    assert result.returncode == 0, result.stdout + result.stderr
    allowed = EXPORTED_METRICS | PROMETHEUS_METRICS
    for expression in expressions:
        assert metric_names(expression), f"no metric in {expression}"
        assert metric_names(expression) <= allowed, f"{expression} reads {metric_names(expression) - allowed}"


def test_promtool_parse_refuses_a_broken_query():
    assert promtool_parse(["sum(rate(safehold_backup_bytes_read_total[5m])"]).returncode != 0


def test_dashboards_show_what_the_issue_asks_for():
    text = {path.name: path.read_text() for path in DASHBOARD_FILES}
    overview = text["safehold-overview.json"]
    for metric in ("safehold_backup_last_status", "safehold_jobs_running", "safehold_target_rpo_seconds",
                   "safehold_restore_test_last_duration_seconds", "safehold_target_rto_seconds"):
        assert metric in overview
    assert "safehold_backup_duration_seconds_bucket" in text["safehold-backup-trends.json"]
    assert "safehold_backup_bytes_added_total" in text["safehold-backup-trends.json"]
    assert "predict_linear(safehold_repository_stored_bytes" in text["safehold-capacity.json"]


def test_schema_grafana_image_and_sdk_versions_agree():
    """The schema was generated from the @grafana/schema version that generate.sh pins, which is
    the Grafana image of docker-compose.yml, and the dashboard SDK targets the same minor version."""
    pinned = re.search(r"^GRAFANA_VERSION=(\S+)$", (SCHEMA / "generate.sh").read_text(), re.MULTILINE).group(1)
    assert (SCHEMA / "VERSION").read_text().splitlines()[0] == f"@grafana/schema {pinned}"
    compose = yaml.safe_load((MONITORING / "docker-compose.yml").read_text())
    assert compose["services"]["grafana"]["image"] == f"grafana/grafana:{pinned}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    sdk = re.search(r'"grafana-foundation-sdk==\d+!(\d+\.\d+)\.\d+"', pyproject)
    assert sdk, "grafana-foundation-sdk must be pinned in pyproject.toml"
    assert pinned.startswith(sdk.group(1) + "."), (pinned, sdk.group(1))
    from importlib.metadata import version

    assert version("grafana-foundation-sdk").split("!")[-1].startswith(sdk.group(1) + ".")


def test_provisioning_points_at_the_dashboards_and_the_datasource_uid():
    datasources = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["uid"] == "prometheus" and datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/safehold.yml").read_text())
    (provider,) = providers["providers"]
    compose = yaml.safe_load((MONITORING / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../dashboards:{provider['options']['path']}:ro" in mounts
    # Grafana loads every .json under that path: only dashboards may live there
    for path in DASHBOARDS.rglob("*.json"):
        assert "panels" in load(path) and "schemaVersion" in load(path), path
