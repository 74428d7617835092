"""The /metrics collector: exactly the contract's names and labels, values computed from the catalog."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from safehold.catalog import Catalog
from safehold.config import load_config_text
from safehold.engine.context import Context
from safehold.server.metrics import create_registry

# The contract of docs/architecture.md (and /work/shared/DESIGN.md): the alert rules and dashboards use these.
PER_TARGET = {
    "safehold_backup_last_success_timestamp_seconds", "safehold_backup_last_attempt_timestamp_seconds",
    "safehold_backup_last_status", "safehold_backup_skipped_items", "safehold_backup_duration_seconds",
    "safehold_backup_bytes_read",
    "safehold_backup_bytes_added", "safehold_target_rpo_seconds", "safehold_target_rto_seconds",
    "safehold_restore_test_last_success_timestamp_seconds", "safehold_restore_test_last_status",
    "safehold_restore_test_last_duration_seconds", "safehold_restore_test_interval_seconds",
    "safehold_target_last_art_seconds",
    "safehold_snapshot_suspicious", "safehold_snapshot_suspicion_score",
}
#: Exported only for targets with ``restore_test:`` configured.
RESTORE_TEST = {name for name in PER_TARGET if name.startswith("safehold_restore_test_")}
CONTRACT = PER_TARGET | {
    "safehold_jobs_running", "safehold_job_failures", "safehold_repository_stored_bytes",
    "safehold_repository_capacity_bytes", "safehold_repository_snapshots", "safehold_build_info",
    "safehold_copy_last_success_timestamp_seconds", "safehold_copy_last_bytes_sent",
}

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def context(tmp_path, clock, monkeypatch):
    monkeypatch.setenv("SAFEHOLD_TEST_METRICS_PASSWORD", "metrics test password")
    config = load_config_text(textwrap.dedent("""\
        repository: {url: repo, password_env: SAFEHOLD_TEST_METRICS_PASSWORD}
        state_dir: state
        tiers: {1: {rpo: 15m, rto: 1h}}
        targets:
          - {name: web, tier: 1, source: {type: files, paths: [data]},
             restore_test: {every: 7d, health_check: {type: file_exists, path: index.html}}}
          - {name: disk, tier: 3, source: {type: image, path: disk.img}}
          - {name: db, tier: 1, source: {type: files, paths: [db]}, restore_test: {every: 1d}}
        """), tmp_path / "targets.yml")
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}", clock=clock)
    context = Context(config, _catalog=catalog)
    yield context
    catalog.close()


def scrape(context: Context) -> dict[str, list]:
    text = generate_latest(create_registry(context, repository_ttl=0)).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float:
    matching = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, samples)
    return matching[0]


def run_job(catalog: Catalog, clock: Clock, kind: str, target: str | None, seconds: float, status: str,
            **finish) -> int:
    job_id = catalog.start_job(kind, target)
    clock.now += dt.timedelta(seconds=seconds)
    catalog.finish_job(job_id, status, **finish)
    clock.now += dt.timedelta(seconds=1)
    return job_id


def test_an_empty_catalog_exports_the_contract_with_zero_timestamps(context: Context) -> None:
    families = scrape(context)
    # No repository yet: its three families are left out, everything else is there.
    assert set(families) == CONTRACT - {"safehold_repository_stored_bytes", "safehold_repository_capacity_bytes",
                                        "safehold_repository_snapshots"}
    for name in PER_TARGET:
        for sample in families[name]:
            assert set(sample.labels) - {"le"} == {"target", "tier", "source"}, sample
            assert "job" not in sample.labels
    samples = families["safehold_backup_last_success_timestamp_seconds"]
    assert value(samples, "safehold_backup_last_success_timestamp_seconds", target="web", tier="1",
                 source="files") == 0
    assert value(families["safehold_target_rpo_seconds"], "safehold_target_rpo_seconds", target="web") == 900
    assert value(families["safehold_target_rto_seconds"], "safehold_target_rto_seconds", target="disk") == 86400
    assert families["safehold_backup_last_status"] == []  # no finished backup: no status, not a failure
    assert families["safehold_backup_skipped_items"] == []
    assert value(families["safehold_jobs_running"], "safehold_jobs_running", kind="backup") == 0


def test_values_follow_the_catalog(context: Context, clock: Clock) -> None:
    catalog = context.catalog
    run_job(catalog, clock, "backup", "web", 3, "succeeded", bytes_read=1000, bytes_added=400)
    run_job(catalog, clock, "backup", "web", 90, "succeeded", bytes_read=500, bytes_added=100)
    success_time = clock.now - dt.timedelta(seconds=1)
    run_job(catalog, clock, "backup", "web", 2, "failed", bytes_read=10, error="source vanished")
    run_job(catalog, clock, "backup", "disk", 1, "failed")
    run_job(catalog, clock, "backup", "disk", 1, "interrupted")
    run_job(catalog, clock, "check", None, 1, "failed")
    run_job(catalog, clock, "restore-test", "web", 7, "succeeded", details={"art_seconds": 6.5, "passed": True})
    test_time = clock.now - dt.timedelta(seconds=1)
    running = catalog.start_job("backup", "disk")
    families = scrape(context)

    def get(name: str, **labels: str) -> float:
        family = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        return value(families[family], name, **labels)

    assert get("safehold_backup_last_success_timestamp_seconds", target="web") == success_time.timestamp()
    assert get("safehold_backup_last_status", target="web") == 0  # the newest finished one failed
    assert get("safehold_backup_last_status", target="disk") == 0  # interrupted counts as failed
    assert get("safehold_backup_bytes_read_total", target="web") == 1510
    assert get("safehold_backup_bytes_added_total", target="web") == 500
    # Histogram of succeeded backups only: 3 s and 90 s.
    assert get("safehold_backup_duration_seconds_count", target="web") == 2
    assert get("safehold_backup_duration_seconds_sum", target="web") == 93
    assert get("safehold_backup_duration_seconds_bucket", target="web", le="5.0") == 1
    assert get("safehold_backup_duration_seconds_bucket", target="web", le="120.0") == 2
    assert get("safehold_backup_duration_seconds_bucket", target="web", le="+Inf") == 2
    assert get("safehold_job_failures_total", target="web", kind="backup") == 1
    assert get("safehold_job_failures_total", target="disk", kind="backup") == 1  # interrupted is not "failed"
    assert get("safehold_job_failures_total", target="", kind="check") == 1
    assert get("safehold_jobs_running", kind="backup") == 1
    assert get("safehold_restore_test_last_status", target="web") == 1
    assert get("safehold_restore_test_last_duration_seconds", target="web") == 6.5
    assert get("safehold_target_last_art_seconds", target="web") == 6.5
    assert get("safehold_restore_test_last_success_timestamp_seconds", target="web") == test_time.timestamp()
    assert get("safehold_restore_test_last_success_timestamp_seconds", target="db") == 0  # configured, never run
    assert not [sample for sample in families["safehold_target_last_art_seconds"]
                if sample.labels["target"] != "web"]  # measured nowhere else
    assert not [sample for name in RESTORE_TEST for sample in families[name] if sample.labels["target"] == "disk"]

    catalog.finish_job(running, "succeeded")
    run_job(catalog, clock, "restore-test", "web", 2, "failed", details={"passed": False})
    families = scrape(context)
    assert get("safehold_backup_last_status", target="disk") == 1
    assert get("safehold_jobs_running", kind="backup") == 0
    assert get("safehold_restore_test_last_status", target="web") == 0
    # The last *passed* test keeps its time and ART, so RTOAtRisk and RestoreTestOverdue stay meaningful.
    assert get("safehold_restore_test_last_duration_seconds", target="web") == 6.5
    assert get("safehold_restore_test_last_success_timestamp_seconds", target="web") == test_time.timestamp()
    assert get("safehold_target_last_art_seconds", target="web") == 6.5
    # A drill step restores web later, in 40 s: the newest passing ART of either kind is exported.
    run_job(catalog, clock, "drill", None, 41, "succeeded", details={"drill": "d", "passed": True, "steps": [
        {"target": "web", "outcome": "passed", "art_seconds": 40.0, "rto_seconds": 3600.0}]})
    families = scrape(context)
    assert get("safehold_target_last_art_seconds", target="web") == 40.0
    assert get("safehold_restore_test_last_duration_seconds", target="web") == 6.5


def test_a_partial_backup_is_a_good_backup_with_its_skipped_items(context: Context, clock: Clock) -> None:
    """A partial backup wrote its snapshot: last status 1 and a last success (BackupJobFailed and
    RPOViolated stay quiet), its duration counts, and safehold_backup_skipped_items carries what it
    left out (BackupPartial). A later failure sets the count back to 0: a failed target wins."""
    catalog = context.catalog
    run_job(catalog, clock, "backup", "web", 4, "partial", bytes_read=100,
            details={"skipped": {"count": 3, "reasons": {"unreadable": 3}, "items": [], "truncated": True}})
    partial_time = clock.now - dt.timedelta(seconds=1)
    run_job(catalog, clock, "backup", "disk", 1, "succeeded")
    families = scrape(context)

    def get(name: str, **labels: str) -> float:
        family = name.removesuffix("_total").removesuffix("_count")
        return value(families[family], name, **labels)

    assert get("safehold_backup_last_status", target="web") == 1
    assert get("safehold_backup_skipped_items", target="web", tier="1", source="files") == 3
    assert get("safehold_backup_skipped_items", target="disk") == 0
    assert not [sample for sample in families["safehold_backup_skipped_items"] if sample.labels["target"] == "db"]
    assert get("safehold_backup_last_success_timestamp_seconds", target="web") == partial_time.timestamp()
    assert get("safehold_backup_duration_seconds_count", target="web") == 1
    assert not [sample for sample in families["safehold_job_failures"] if sample.labels["target"] == "web"]

    run_job(catalog, clock, "backup", "web", 2, "failed")
    families = scrape(context)
    assert get("safehold_backup_last_status", target="web") == 0
    assert get("safehold_backup_skipped_items", target="web") == 0
    assert get("safehold_backup_last_success_timestamp_seconds", target="web") == partial_time.timestamp()

    run_job(catalog, clock, "backup", "web", 2, "succeeded")
    families = scrape(context)
    assert get("safehold_backup_last_status", target="web") == 1
    assert get("safehold_backup_skipped_items", target="web") == 0


def test_repository_usage_is_read_from_the_object_listing(context: Context) -> None:
    from safehold.engine.maintenance import init_repository

    init_repository(context)
    families = scrape(context)
    assert set(families) == CONTRACT
    stored = value(families["safehold_repository_stored_bytes"], "safehold_repository_stored_bytes")
    capacity = value(families["safehold_repository_capacity_bytes"], "safehold_repository_capacity_bytes")
    assert 0 < stored < capacity
    assert value(families["safehold_repository_snapshots"], "safehold_repository_snapshots") == 0


def test_restore_test_series_only_for_targets_with_restore_tests(context: Context, clock: Clock) -> None:
    # 'disk' has no restore_test: even a restore test run by hand exports nothing for it, so
    # RestoreTestOverdue (which needs the interval series) never reports a target not meant to be tested.
    run_job(context.catalog, clock, "restore-test", "disk", 5, "succeeded",
            details={"art_seconds": 4.0, "passed": True})
    families = scrape(context)
    for name in RESTORE_TEST:
        assert {sample.labels["target"] for sample in families[name]} <= {"web", "db"}, name
        for sample in families[name]:
            assert set(sample.labels) == {"target", "tier", "source"}, sample
    # The interval is each target's restore_test.every, labelled like the other per-target series.
    interval = families["safehold_restore_test_interval_seconds"]
    assert value(interval, "safehold_restore_test_interval_seconds", target="web", tier="1",
                 source="files") == 7 * 86400
    assert value(interval, "safehold_restore_test_interval_seconds", target="db", tier="1", source="files") == 86400
    assert len(interval) == 2
    # Configured but never run: a 0 timestamp ("never passed"), no status, no duration.
    assert value(families["safehold_restore_test_last_success_timestamp_seconds"],
                 "safehold_restore_test_last_success_timestamp_seconds", target="db") == 0
    assert not [s for s in families["safehold_restore_test_last_status"] if s.labels["target"] == "db"]
    # Other per-target families still cover every target.
    assert {s.labels["target"] for s in families["safehold_target_rto_seconds"]} == {"web", "disk", "db"}


def test_ransomware_state_of_the_newest_backup_mark_or_scan(context: Context, clock: Clock) -> None:
    """safehold_snapshot_suspicious follows the newest job that recorded the target's ransomware
    state: a backup that found a suspicious snapshot sets it, a later mark clears it; a target
    never judged has no series (SuspiciousChanges cannot fire on a missing value)."""
    catalog = context.catalog
    suspicious = {"snapshot": "b" * 64, "verdict": "suspicious", "score": 6.5, "suspicious": True,
                  "since": "b" * 64, "latest_clean": "a" * 64}
    run_job(catalog, clock, "backup", "web", 2, "succeeded", details={"ransomware": suspicious})
    run_job(catalog, clock, "backup", "disk", 2, "succeeded",
            details={"ransomware": dict(suspicious, verdict="clean", score=0.2, suspicious=False, since=None)})
    families = scrape(context)
    assert value(families["safehold_snapshot_suspicious"], "safehold_snapshot_suspicious", target="web",
                 tier="1", source="files") == 1
    assert value(families["safehold_snapshot_suspicion_score"], "safehold_snapshot_suspicion_score",
                 target="web") == 6.5
    assert value(families["safehold_snapshot_suspicious"], "safehold_snapshot_suspicious", target="disk") == 0
    assert not [s for s in families["safehold_snapshot_suspicious"] if s.labels["target"] == "db"]
    # the operator marks it clean: the newest job with a state now says not suspicious
    run_job(catalog, clock, "mark", "web", 0, "succeeded",
            details={"ransomware": dict(suspicious, verdict="clean", suspicious=False, since=None)})
    families = scrape(context)
    assert value(families["safehold_snapshot_suspicious"], "safehold_snapshot_suspicious", target="web") == 0

