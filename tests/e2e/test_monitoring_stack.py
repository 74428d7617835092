"""The monitoring stack end to end, for real: ``safehold serve`` (its /metrics computed from the
catalog), Debian's ``prometheus`` evaluating the shipped alert rules and Debian's
``prometheus-alertmanager`` with the shipped routing, all on loopback with second-long intervals.
Slack and PagerDuty are played by a webhook recorder and the mail relay by a small SMTP server
(tests/monitoring/stack_support.py): Alertmanager's own Slack and PagerDuty notifiers post to them.

The test breaks three things the way they break in production: a source disappears so a backup
fails, a target's RPO lapses, and the repository fills its filesystem past 85 %; then it fixes them
and expects every alert to resolve. Jobs are run with the CLI against the same catalog that the
server reads (the server runs with --no-scheduler so that only the test decides when a backup
happens; the scheduler has its own tests).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from e2e_support import CLI, make_workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))

from monitoring_support import (DRILL_METRICS, EXPORTED_METRICS, ROOT, WORKER_METRICS,  # noqa: E402
                                dashboard_queries, tool)
from stack_support import (  # noqa: E402
    HTTPRecorder,
    Process,
    SMTPRecorder,
    alertmanager,
    free_port,
    http_json,
    http_ok,
    localized_alertmanager_config,
    prometheus,
    wait_for,
)

TMPFS_SIZE = 64 * 1024 * 1024
FILL_BYTES = 56 * 1024 * 1024        # random, so neither deduplication nor zstd shrinks it
RPO_SECONDS = 30                     # tier 2 in this test: lapses while the test watches
ALERT_TIMEOUT = 150                  # the repository size is re-read at most once a minute


@pytest.fixture
def repository_filesystem(tmp_path: Path):
    """A 64 MiB tmpfs for the repository, so that filling it is quick and real."""
    mount_point = tmp_path / "store"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if "permission denied" in result.stderr.lower() or "must be superuser" in result.stderr.lower():
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); CI runs as root")
        raise AssertionError(f"mount failed: {result.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def slack_titles(http: HTTPRecorder) -> list[str]:
    return [message["attachments"][0]["title"] for message in http.received("/slack")]


def pagerduty_events(http: HTTPRecorder) -> list[tuple[str, str]]:
    return [(event["event_action"], event["payload"]["summary"]) for event in http.received("/pagerduty")]


def exported_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def test_backup_failure_rpo_lapse_and_full_repository_alert_and_resolve(tmp_path, repository_filesystem):
    workspace = make_workspace(tmp_path / "ws")
    for name in ("db", "web", "bulk"):
        (workspace.data / name).mkdir()
        (workspace.data / name / "README").write_text(f"{name} data\n")
    workspace.write_config(
        text=f"""\
        repository:
          url: {repository_filesystem / 'repo'}
          password_env: SAFEHOLD_PASSWORD
        state_dir: state
        tiers:
          1: {{rpo: 1h, rto: 1h}}
          2: {{rpo: {RPO_SECONDS}s, rto: 4h}}
          3: {{rpo: 24h, rto: 24h}}
        targets:
          - {{name: db, tier: 1, source: {{type: files, paths: [data/db]}}}}
          - {{name: web, tier: 2, source: {{type: files, paths: [data/web]}}, restore_test: {{every: 7d}}}}
          - {{name: bulk, tier: 3, source: {{type: files, paths: [data/bulk]}}, retention: {{keep_last: 1}}}}
        """
    )
    workspace.run("init")
    for name in ("db", "web", "bulk"):
        workspace.run("backup", "--target", name)
    workspace.run("restore-test", "--target", "web")   # so that every metric family has a series

    port = free_port()
    server = Process([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"],
                     tmp_path / "safehold-serve.log", env=workspace.environment(), cwd=workspace.root)
    try:
        wait_for(lambda: server.assert_running() or http_ok(f"http://127.0.0.1:{port}/healthz"), 60,
                 what="safehold serve")
        with HTTPRecorder() as http, SMTPRecorder() as smtp:
            config = localized_alertmanager_config(tmp_path / "am", http=http, smtp=smtp)
            with alertmanager(tmp_path / "am", config) as am_url, \
                    prometheus(tmp_path / "prom", scrape_target=f"127.0.0.1:{port}", alertmanager_url=am_url) as prom:
                run_scenario(workspace, http, smtp, am_url, prom, server, f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def start_server(workspace, port: int, log: Path) -> Process:
    server = Process([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"], log,
                     env=workspace.environment(), cwd=workspace.root)
    wait_for(lambda: server.assert_running() or http_ok(f"http://127.0.0.1:{port}/healthz"), 60, what="safehold serve")
    return server


# Lapses well after SafeholdDown fired: the outage starts ~15 s after the backup (once Prometheus
# has scraped it) and SafeholdDown needs a minute of failed scrapes.
DOWN_RPO_SECONDS = 150


def test_safehold_down_pages_once_and_silences_what_the_outage_causes(tmp_path):
    """The control plane stops: SafeholdDown pages; web's RPO lapses during the outage (its last
    value is kept and keeps ageing) but the inhibition keeps it quiet; when the control plane is
    back SafeholdDown resolves and the RPO violation, still true, is delivered."""
    workspace = make_workspace(tmp_path / "ws")
    (workspace.data / "web").mkdir()
    (workspace.data / "web" / "index.html").write_text("<h1>web</h1>\n")
    workspace.write_config(
        text=f"""\
        repository: {{url: repo, password_env: SAFEHOLD_PASSWORD}}
        state_dir: state
        tiers:
          2: {{rpo: {DOWN_RPO_SECONDS}s, rto: 4h}}
        targets:
          - {{name: web, tier: 2, source: {{type: files, paths: [data/web]}}}}
        """
    )
    workspace.run("init")
    workspace.run("backup", "--target", "web")                    # its RPO starts now
    backed_up_at = time.monotonic()
    port = free_port()
    server = start_server(workspace, port, tmp_path / "serve-1.log")
    try:
        with HTTPRecorder() as http, SMTPRecorder() as smtp:
            config = localized_alertmanager_config(tmp_path / "am", http=http, smtp=smtp)
            with alertmanager(tmp_path / "am", config) as am_url, \
                    prometheus(tmp_path / "prom", scrape_target=f"127.0.0.1:{port}", alertmanager_url=am_url) as prom:
                wait_for(lambda: query(prom, "safehold_backup_last_success_timestamp_seconds > 0"), 60,
                         what="Prometheus scraping safehold")
                server.stop()                                     # the outage begins
                down_at = time.monotonic()
                assert down_at - backed_up_at < DOWN_RPO_SECONDS - 75, "too slow to start: the RPO would lapse first"

                wait_for(lambda: ("trigger", "[FIRING:1] SafeholdDown") in pagerduty_events(http), 120, interval=1,
                         what=f"the SafeholdDown page (got {pagerduty_events(http)})")
                assert time.monotonic() - down_at >= 60, "SafeholdDown waits a minute of failed scrapes"
                # Slack is notified alongside PagerDuty, not necessarily before it
                wait_for(lambda: slack_titles(http), 20, what="the SafeholdDown message in Slack")
                assert slack_titles(http) == ["[FIRING:1] SafeholdDown"], "nothing else so far"

                def suppressed() -> dict | None:
                    for alert in http_json(f"{am_url}/api/v2/alerts"):
                        if alert["labels"]["alertname"] == "RPOViolated" and alert["status"]["state"] == "suppressed":
                            return alert
                    return None

                alert = wait_for(suppressed, 90, interval=1, what="RPOViolated for web, inhibited")
                assert alert["labels"]["target"] == "web" and alert["labels"]["severity"] == "warning"
                assert alert["status"]["inhibitedBy"]
                time.sleep(3)                                     # several group intervals
                assert not [title for title in slack_titles(http) if "RPOViolated" in title], slack_titles(http)

                server = start_server(workspace, port, tmp_path / "serve-2.log")   # the outage ends
                wait_for(lambda: ("resolve", "[RESOLVED] SafeholdDown") in pagerduty_events(http), 60, interval=1,
                         what=f"SafeholdDown resolved (got {pagerduty_events(http)})")
                wait_for(lambda: "[FIRING:1] web: RPOViolated" in slack_titles(http), 60, interval=1,
                         what=f"the RPO violation delivered after the outage (got {slack_titles(http)})")
                assert all("web" not in summary for _, summary in pagerduty_events(http)), "a tier-2 target never pages"
    finally:
        server.stop()


def query(prom: str, expression: str) -> list[dict]:
    return http_json(f"{prom}/api/v1/query?query={urllib.parse.quote(expression)}")["data"]["result"]


def run_scenario(workspace, http: HTTPRecorder, smtp: SMTPRecorder, am_url: str, prom: str, server: Process,
                 safehold_url: str) -> None:
    wait_for(lambda: query(prom, 'up{job="safehold"} == 1'), 60, what="Prometheus scraping safehold")
    workspace.run("backup", "--target", "web")     # its RPO starts now
    started = time.monotonic()
    time.sleep(3)                                  # a few evaluations
    assert not query(prom, 'ALERTS{alertstate="firing"}'), "nothing is wrong yet"

    # 1. a source disappears: db's next backup fails
    shutil.move(workspace.data / "db", workspace.data / "db-moved")
    workspace.run("backup", "--target", "db", ok=False)
    # now every family has a series: the names that the rules and dashboards were checked
    # against (tests/monitoring) are exactly what the server exports, and promtool likes them
    with urllib.request.urlopen(f"{safehold_url}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    check = subprocess.run([tool("promtool"), "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # No drills, no copies and no workers configured here: those families have no series.
    copies = {"safehold_copy_last_success_timestamp_seconds", "safehold_copy_last_bytes_sent"}
    assert exported_names(exposition) == EXPORTED_METRICS - DRILL_METRICS - WORKER_METRICS - copies
    # 2. the repository fills its filesystem past 85 %
    (workspace.data / "bulk" / "big.bin").write_bytes(random.Random(5).randbytes(FILL_BYTES))
    workspace.run("backup", "--target", "bulk")
    # 3. web's RPO (30 s) lapses on its own

    def fired() -> bool:
        titles = slack_titles(http)
        return all(any(title.startswith("[FIRING") and needle in title for title in titles)
                   for needle in ("db: BackupJobFailed", "web: RPOViolated", "BackupStorageCapacityHigh"))

    wait_for(lambda: server.assert_running() or fired(), ALERT_TIMEOUT, interval=1,
             what=f"the three alerts in Slack (got {slack_titles(http)})")
    fired_after = time.monotonic() - started

    # PagerDuty got the tier-1 failure only (warnings do not page)
    events = pagerduty_events(http)
    assert ("trigger", "[FIRING:1] db: BackupJobFailed") in events
    assert all("db" in summary for _, summary in events), events
    page = next(event for event in http.received("/pagerduty") if event["event_action"] == "trigger")
    assert page["payload"]["severity"] == "critical"
    assert page["payload"]["custom_details"]["target"] == "db"
    assert page["payload"]["custom_details"]["tier"] == "1"
    assert "runbooks/BackupJobFailed.md" in page["payload"]["custom_details"]["alerts"]
    # the exact labels, as Alertmanager holds them
    alerts = {item["labels"]["alertname"]: item["labels"] for item in http_json(f"{am_url}/api/v2/alerts")}
    instance = alerts["BackupJobFailed"]["instance"]
    assert alerts["BackupJobFailed"] == {"alertname": "BackupJobFailed", "severity": "critical", "target": "db",
                                         "tier": "1", "source": "files", "job": "safehold", "instance": instance}
    assert alerts["RPOViolated"] == {"alertname": "RPOViolated", "reason": "backup-too-old", "severity": "warning",
                                     "target": "web", "tier": "2", "source": "files", "job": "safehold",
                                     "instance": instance}
    assert alerts["BackupStorageCapacityHigh"] == {"alertname": "BackupStorageCapacityHigh", "severity": "warning",
                                                   "job": "safehold", "instance": instance}
    # the texts carry the numbers, humanized
    messages = {message["attachments"][0]["title"]: message["attachments"][0]["text"]
                for message in http.received("/slack")}
    capacity_text = next(text for title, text in messages.items() if "BackupStorageCapacityHigh" in title)
    assert "% full" in capacity_text and "MiB of its" in capacity_text, capacity_text
    rpo_text = next(text for title, text in messages.items() if "web: RPOViolated" in title)
    assert "recovery point objective is 30s" in rpo_text, rpo_text
    assert smtp.messages, "the e-mail digest"

    # every dashboard query runs against this Prometheus; nearly all have data after a minute. The
    # drill panels' families have series only for configured drills, and this control plane has
    # none (their values are tested in tests/unit/engine/test_drill.py, their rules by promtool):
    # those queries must run, and only they may come back empty.
    empty = []
    for name, expressions in dashboard_queries().items():
        for expression in expressions:
            response = http_json(f"{prom}/api/v1/query?query={urllib.parse.quote(expression)}")
            assert response["status"] == "success", (name, expression, response)
            if not response["data"]["result"] and not any(metric in expression for metric in DRILL_METRICS):
                empty.append(expression)
    assert empty == [], f"dashboard queries without data on a real safehold: {empty}"
    # db's failure counter began at 1 (its first failure): the overview still counts it
    overview = json.loads((ROOT / "dashboards" / "safehold-overview.json").read_text())
    (failed_24h,) = [panel["targets"][0]["expr"] for panel in overview["panels"]
                     if panel["title"] == "Failed jobs (24h)"]
    (result,) = http_json(f"{prom}/api/v1/query?query={urllib.parse.quote(failed_24h.replace('$target', '.+'))}")[
        "data"]["result"]
    assert float(result["value"][1]) == 1.0, result
    if os.environ.get("SAFEHOLD_RENDER_DASHBOARDS"):  # previews for docs/monitoring.md
        import importlib.util

        spec = importlib.util.spec_from_file_location("render", ROOT / "dashboards" / "render.py")
        render = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(render)
        render.render_all(prom, Path(os.environ["SAFEHOLD_RENDER_DASHBOARDS"]), time.monotonic() - started + 60)

    # fix everything: the source is back, fresh backups, the big file is forgotten and pruned
    shutil.move(workspace.data / "db-moved", workspace.data / "db")
    workspace.run("backup", "--target", "db")
    workspace.run("backup", "--target", "web")
    (workspace.data / "bulk" / "big.bin").unlink()
    workspace.run("backup", "--target", "bulk")
    workspace.run("forget", "--target", "bulk", "--prune")

    def resolved() -> bool:
        titles = slack_titles(http)
        return all(any(title.startswith("[RESOLVED]") and needle in title for title in titles)
                   for needle in ("db: BackupJobFailed", "web: RPOViolated", "BackupStorageCapacityHigh"))

    wait_for(lambda: server.assert_running() or resolved(), ALERT_TIMEOUT, interval=1,
             what=f"the three alerts resolved in Slack (got {slack_titles(http)})")
    assert ("resolve", "[RESOLVED] db: BackupJobFailed") in pagerduty_events(http)
    # what was delivered, for a look after the run (docs/monitoring.md quotes it)
    (workspace.root.parent / "deliveries.json").write_text(json.dumps(
        {"http": [{"path": delivery.path, "body": delivery.body} for delivery in http.deliveries],
         "smtp": smtp.messages}, indent=2))
    print(json.dumps({"fired_after_seconds": round(fired_after, 1),
                      "resolved_after_seconds": round(time.monotonic() - started - fired_after, 1)}))
