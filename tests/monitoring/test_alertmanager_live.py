"""The shipped Alertmanager configuration in Debian's real prometheus-alertmanager: alerts reach
the receivers routing promises, through the real Slack, PagerDuty and e-mail notifiers (pointed at
loopback recorders, see stack_support), grouped by target, with secrets read from files, and
SafeholdDown inhibits the per-target alerts of its scrape job."""

from __future__ import annotations

import pytest
from stack_support import (
    HTTPRecorder,
    SMTPRecorder,
    alertmanager,
    http_json,
    localized_alertmanager_config,
    post_alerts,
    wait_for,
)


def alert(name: str, severity: str, target: str | None = None, tier: str | None = None) -> dict:
    labels = {"alertname": name, "severity": severity, "job": "safehold", "instance": "127.0.0.1:8080"}
    if target:
        labels.update(target=target, tier=tier or "1")
    return {"labels": labels, "annotations": {"summary": f"{name} on {target or 'safehold'}",
                                              "description": "details", "runbook_url": f"runbooks/{name}.md"}}


@pytest.fixture
def stack(tmp_path):
    with HTTPRecorder() as http, SMTPRecorder() as smtp:
        config = localized_alertmanager_config(tmp_path, http=http, smtp=smtp)
        with alertmanager(tmp_path, config) as url:
            yield url, http, smtp


def targets_in(bodies: list[dict], key) -> set[str]:
    return {key(body) for body in bodies}


def test_alerts_reach_the_receivers_of_their_severity(stack):
    url, http, smtp = stack
    post_alerts(url, [
        alert("BackupJobFailed", "critical", "db", "1"),
        alert("RPOViolated", "warning", "web", "2"),
        alert("RPOViolated", "info", "docs", "3"),
    ])
    pages = wait_for(lambda: http.received("/pagerduty"), 20, what="a PagerDuty event")
    slack = wait_for(lambda: len(http.received("/slack")) >= 2 and http.received("/slack"), 20,
                     what="two Slack messages")
    digest = wait_for(lambda: smtp.messages, 20, what="the e-mail digest")

    # PagerDuty: only the tier-1 critical alert, with the file-based routing key
    assert [page["payload"]["summary"] for page in pages] == ["[FIRING:1] db: BackupJobFailed"]
    assert pages[0]["routing_key"] == "test-routing-key"
    assert pages[0]["event_action"] == "trigger"
    assert pages[0]["payload"]["severity"] == "critical"
    # Slack (URL from its secret file): one message per target, tier 1 and 2, not tier 3
    titles = sorted(message["attachments"][0]["title"] for message in slack)
    assert titles == ["[FIRING:1] db: BackupJobFailed", "[FIRING:1] web: RPOViolated"]
    assert all(message["channel"] == "#backups" for message in slack)
    # the digest: one e-mail holding all three targets
    assert len(smtp.messages) == 1
    (message,) = digest
    assert message["to"] == ["<backup-team@example.org>"]
    assert "[safehold] [FIRING:3]" in message["data"]
    for target in ("db", "web", "docs"):
        assert f"on {target}" in message["data"]


def test_safehold_down_inhibits_the_per_target_alerts_it_causes(stack):
    url, http, _ = stack
    post_alerts(url, [alert("SafeholdDown", "critical")])
    wait_for(lambda: http.received("/pagerduty"), 20, what="the SafeholdDown page")
    post_alerts(url, [alert("RPOViolated", "critical", "db", "1"), alert("SafeholdDown", "critical")])

    def states() -> dict[str, dict]:
        return {item["labels"]["alertname"]: item["status"] for item in http_json(f"{url}/api/v2/alerts")}

    status = wait_for(lambda: (s := states()).get("RPOViolated") and s["RPOViolated"]["state"] == "suppressed" and s,
                      10, what="RPOViolated suppressed")
    assert status["RPOViolated"]["inhibitedBy"], status
    assert status["SafeholdDown"]["state"] == "active"
    # the suppressed alert is never paged or posted
    import time

    time.sleep(3)  # several group intervals (1s) for a notification that must not come
    summaries = [page["payload"]["summary"] for page in http.received("/pagerduty")]
    assert summaries == ["[FIRING:1] SafeholdDown"], summaries
    assert all("db" not in message["attachments"][0]["title"] for message in http.received("/slack"))
