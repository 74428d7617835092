"""The shipped Alertmanager configuration: amtool accepts it, every routing decision of
routes.test.yml holds (`amtool config routes test --verify.receivers`), and no secret is inline."""

from __future__ import annotations

import subprocess

import pytest
from monitoring_support import ALERT_NAMES, ALERTMANAGER, ROUTE_CASES, alert_rules, load_yaml, tool

CASES = load_yaml(ROUTE_CASES)


def route_test(labels: dict[str, str], receivers: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
         f"--verify.receivers={','.join(receivers)}", *[f"{key}={value}" for key, value in labels.items()]],
        capture_output=True, text=True, timeout=60,
    )


def test_amtool_check_config_passes():
    result = subprocess.run([tool("amtool"), "check-config", str(ALERTMANAGER)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "1 templates" in result.stdout  # the notification texts were found and parsed


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_routing_decision(case):
    result = route_test(case["labels"], case["receivers"])
    assert result.returncode == 0, f"{case['name']}: {result.stdout}{result.stderr}"
    assert result.stdout.strip() == ",".join(case["receivers"])


def test_a_wrong_routing_expectation_fails():
    """amtool's verification bites: a tier-2 warning must not page."""
    result = route_test({"alertname": "BackupJobFailed", "severity": "warning", "tier": "2", "target": "web"},
                        ["pagerduty", "slack", "email-digest"])
    assert result.returncode == 1


def test_route_cases_cover_every_alert_and_receiver():
    config = load_yaml(ALERTMANAGER)
    assert {case["labels"]["alertname"] for case in CASES} >= set(ALERT_NAMES)
    reached = {receiver for case in CASES for receiver in case["receivers"]}
    assert reached == {receiver["name"] for receiver in config["receivers"]}
    # every severity the rules can produce is routed somewhere deliberate
    severities = {case["labels"].get("severity") for case in CASES}
    assert {"critical", "warning", "info"} <= severities
    rule_severities = " ".join(rule["labels"]["severity"] for rule in alert_rules())
    for severity in ("critical", "warning", "info"):
        assert severity in rule_severities


def test_secrets_come_from_files_only():
    config = load_yaml(ALERTMANAGER)
    text = ALERTMANAGER.read_text()
    for inline in ("slack_api_url:", "api_url:", "routing_key:", "service_key:", "smtp_auth_password:",
                   "auth_password:"):
        assert f" {inline}" not in text and f"\n{inline}" not in text, f"inline secret {inline}"
    assert config["global"]["slack_api_url_file"].startswith("/run/secrets/")
    assert config["global"]["smtp_auth_password_file"].startswith("/run/secrets/")
    pagerduty = next(r for r in config["receivers"] if r["name"] == "pagerduty")["pagerduty_configs"][0]
    assert pagerduty["routing_key_file"].startswith("/run/secrets/")


def test_safehold_down_inhibits_per_target_alerts_of_its_scrape_job():
    (rule,) = load_yaml(ALERTMANAGER)["inhibit_rules"]
    assert rule["source_matchers"] == ['alertname="SafeholdDown"']
    assert rule["target_matchers"] == ['target=~".+"']
    assert rule["equal"] == ["job"]
    assert load_yaml(ALERTMANAGER)["route"]["group_by"] == ["target"]
