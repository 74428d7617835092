"""The shipped alert rules: they load in Prometheus's own checker, every alert has promtool unit
tests that make it fire and keep it silent, they read only metrics safehold exports, and every
alert carries the texts and runbook an on-call person needs."""

from __future__ import annotations

import re
import subprocess

import pytest
from monitoring_support import (
    ALERT_NAMES,
    EXPORTED_METRICS,
    PROMETHEUS_METRICS,
    ROOT,
    RULE_TESTS,
    RULES,
    alert_rules,
    load_yaml,
    metric_names,
    tool,
)

# The format strings of `printf "..." | query` calls inside annotation templates.
TEMPLATE_QUERY = re.compile(r'printf\s+"((?:[^"\\]|\\.)*)"((?:\s+\$labels\.\w+)*)\s*\|\s*query')


def template_queries(text: str) -> list[str]:
    """The PromQL queries an annotation template runs, with example label values filled in."""
    queries = []
    for match in TEMPLATE_QUERY.finditer(text):
        template = match.group(1).replace('\\"', '"')
        queries.append(template.replace("%q", '"example"'))
    return queries


def test_promtool_check_rules_passes_with_lint():
    result = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda path: path.name)
def test_promtool_rule_unit_tests_pass(test_file):
    result = subprocess.run(
        [tool("promtool"), "test", "rules", test_file.name], cwd=test_file.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_can_fail(tmp_path):
    """A rule that misses the counter-born-non-zero case (increase() of the failure counter)
    must fail the unit tests: they would not catch anything otherwise."""
    broken = RULES.read_text().replace(
        "last_over_time(safehold_backup_last_status[1h]) == 0",
        'increase(safehold_job_failures_total{kind="backup"}[10m]) > 0',
    )
    assert broken != RULES.read_text()
    (tmp_path / "alert.rules.yml").write_text(broken)
    (tmp_path / "tests").mkdir()
    for test_file in RULE_TESTS:
        (tmp_path / "tests" / test_file.name).write_text(test_file.read_text())
    result = subprocess.run(
        [tool("promtool"), "test", "rules", *[path.name for path in RULE_TESTS]],
        cwd=tmp_path / "tests", capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "BackupJobFailed fires from the first scrape" in result.stdout + result.stderr


def test_every_required_alert_exists():
    assert {rule["alert"] for rule in alert_rules()} == set(ALERT_NAMES)


def test_every_alert_has_firing_and_silent_unit_tests():
    """For every alert name: an eval that expects it with labels and annotations, and one that expects none."""
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in RULE_TESTS:
        for case in load_yaml(test_file)["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    for alert in check["exp_alerts"]:
                        assert alert["exp_labels"]["alertname"] == check["alertname"]
                        assert alert["exp_labels"]["severity"], "severity must be asserted"
                        assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
                    firing.add(check["alertname"])
                else:
                    silent.add(check["alertname"])
    assert firing == set(ALERT_NAMES), f"no firing case for {set(ALERT_NAMES) - firing}"
    assert silent == set(ALERT_NAMES), f"no must-not-fire case for {set(ALERT_NAMES) - silent}"


def test_rules_read_only_metrics_safehold_exports():
    allowed = EXPORTED_METRICS | PROMETHEUS_METRICS
    for rule in alert_rules():
        queries = [rule["expr"]]
        for text in rule["annotations"].values():
            queries += template_queries(text)
        for query in queries:
            unknown = metric_names(query) - allowed
            assert not unknown, f"{rule['alert']} reads {unknown}, which safehold does not export: {query}"


def test_annotation_queries_are_found_and_parse():
    """The texts' own queries are real PromQL (else the texts would silently lose their numbers)."""
    from monitoring_support import promtool_parse

    queries = [query for rule in alert_rules() for text in rule["annotations"].values()
               for query in template_queries(text)]
    assert len(queries) >= 8
    result = promtool_parse(queries)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_severity_texts_and_an_existing_runbook(rule):
    assert rule["labels"]["severity"]
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    url = annotations["runbook_url"]
    assert url.endswith(f"/runbooks/{rule['alert']}.md"), url
    runbook = ROOT / "runbooks" / f"{rule['alert']}.md"
    assert runbook.is_file(), f"{url} points at {runbook}, which does not exist"
    assert runbook.read_text().startswith(f"# {rule['alert']}")


def test_per_target_alerts_take_severity_from_the_tier():
    for rule in alert_rules():
        if rule["alert"] in ("BackupStorageCapacityHigh", "SafeholdDown", "DRDrillFailed", "DRDrillOverdue",
                             "WorkerDown",
                             "SuspiciousChanges"):  # critical for every tier (possible ransomware)
            continue
        assert "$labels.tier" in rule["labels"]["severity"], rule["alert"]
