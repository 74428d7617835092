"""Helpers shared by the monitoring tests (static checks here, the real stack in tests/e2e).

``ROOT`` is the checkout; the shipped files live under ``monitoring/``, ``dashboards/`` and
``runbooks/``. ``metric_names(expression)`` lists the metric names a PromQL expression reads,
from a real PromQL parser (promql-parser); ``promtool_parse`` has Debian's promtool, the parser
of the Prometheus that runs the rules, check that expressions parse.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "alert.rules.yml"
RULE_TESTS = sorted((MONITORING / "prometheus" / "tests").glob("*.test.yml"))
ALERTMANAGER = MONITORING / "alertmanager" / "alertmanager.yml"
ROUTE_CASES = MONITORING / "alertmanager" / "routes.test.yml"
DASHBOARDS = ROOT / "dashboards"
RUNBOOKS = ROOT / "runbooks"

# The metric names safehold exports (docs/monitoring.md, DESIGN.md "Metrics"); histograms
# are exported as their _bucket/_sum/_count series.
EXPORTED_METRICS = frozenset(
    {
        "safehold_backup_last_success_timestamp_seconds",
        "safehold_backup_last_attempt_timestamp_seconds",
        "safehold_backup_last_status",
        "safehold_backup_skipped_items",
        "safehold_backup_duration_seconds_bucket",
        "safehold_backup_duration_seconds_sum",
        "safehold_backup_duration_seconds_count",
        "safehold_backup_bytes_read_total",
        "safehold_backup_bytes_added_total",
        "safehold_target_rpo_seconds",
        "safehold_target_rto_seconds",
        "safehold_target_last_art_seconds",
        "safehold_restore_test_last_success_timestamp_seconds",
        "safehold_restore_test_last_status",
        "safehold_restore_test_last_duration_seconds",
        "safehold_restore_test_interval_seconds",
        "safehold_jobs_running",
        "safehold_job_failures_total",
        "safehold_repository_stored_bytes",
        "safehold_repository_capacity_bytes",
        "safehold_repository_snapshots",
        "safehold_build_info",
        "safehold_copy_last_success_timestamp_seconds",
        "safehold_copy_last_bytes_sent",
        "safehold_snapshot_suspicious",
        "safehold_snapshot_suspicion_score",
    }
)
# Exported only by a control plane with workers (scheduler.executor: procrastinate; covered by
# tests/integration/workers).
WORKER_METRICS = frozenset(
    {
        "safehold_worker_up",
        "safehold_worker_last_heartbeat_timestamp_seconds",
        "safehold_worker_jobs_running",
    }
)
# Exported only for drills configured under `drills:` (tests/unit/engine/test_drill.py covers them).
DRILL_METRICS = frozenset(
    {
        "safehold_drill_last_success_timestamp_seconds",
        "safehold_drill_last_duration_seconds",
        "safehold_drill_last_status",
        "safehold_drill_target_art_seconds",
        "safehold_drill_interval_seconds",
    }
)
EXPORTED_METRICS = EXPORTED_METRICS | DRILL_METRICS | WORKER_METRICS
# Series Prometheus itself writes for every scrape and every alert.
PROMETHEUS_METRICS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

ALERT_NAMES = (
    "BackupJobFailed",
    "BackupPartial",
    "RPOViolated",
    "BackupStorageCapacityHigh",
    "RestoreTestFailed",
    "RestoreTestOverdue",
    "RTOAtRisk",
    "RTOApproaching",
    "SafeholdDown",
    "DRDrillFailed",
    "DRDrillOverdue",
    "CopyLagging",
    "SuspiciousChanges",
    "WorkerDown",
)


def tool(name: str) -> str:
    """Path of a required program; installed by scripts/services.d/monitoring.sh in CI."""
    path = shutil.which(name)
    assert path, f"{name} is missing: run `bash scripts/services.d/monitoring.sh install`"
    return path


def load_yaml(path: Path) -> object:
    with path.open() as handle:
        return yaml.safe_load(handle)


def alert_rules() -> list[dict]:
    """Every alerting rule of the shipped rules file (several rules may share an alert name)."""
    document = load_yaml(RULES)
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def _children(node: object) -> Iterator[object]:
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield child
    yield from getattr(node, "args", None) or ()


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects, from promql-parser's syntax tree."""
    import promql_parser

    names: set[str] = set()
    stack = [promql_parser.parse(expression)]
    while stack:
        node = stack.pop()
        if type(node).__name__ == "VectorSelector":
            name = node.name or next(
                (matcher.value for matcher in node.matchers.matchers if matcher.name == "__name__"), None
            )
            assert name, f"a selector without a metric name in {expression!r}"
            names.add(name)
        stack.extend(_children(node))
    return names


def promtool_parse(expressions: Iterable[str]) -> subprocess.CompletedProcess[str]:
    """Have promtool parse every expression (as recording rules of a throwaway rule file)."""
    rules = [{"record": f"check:expression_{index}", "expr": text} for index, text in enumerate(expressions)]
    with tempfile.TemporaryDirectory(prefix="safehold-promql-") as folder:
        path = Path(folder) / "expressions.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}))
        return subprocess.run(
            [tool("promtool"), "check", "rules", "--lint=none", str(path)],
            capture_output=True, text=True, timeout=60,
        )


# Example values for Grafana's variables, so that PromQL parsers see what Prometheus will.
DASHBOARD_VARIABLES = {"target": ".+", "__rate_interval": "1m", "__interval": "15s", "__range": "1d"}


def panels(document: dict) -> list[dict]:
    found = []
    for panel in document["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(document: dict) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and label_values() variable queries."""
    found = [target["expr"] for panel in panels(document) for target in panel.get("targets", [])]
    for variable in document.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text or "")
        if match:
            found.append(match.group(1))
    return found


def dashboard_queries() -> dict[str, list[str]]:
    """Dashboard file name -> its queries with example values for Grafana's variables."""
    import json

    return {
        path.name: [expand_grafana_variables(text, DASHBOARD_VARIABLES)
                    for text in queries(json.loads(path.read_text()))]
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def expand_grafana_variables(expression: str, values: dict[str, str]) -> str:
    """Replace Grafana's $variables in a panel query with example values so PromQL parsers accept it."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown Grafana variable ${name} in {expression!r}"
        return values[name]

    return GRAFANA_VARIABLE.sub(replace, expression)
