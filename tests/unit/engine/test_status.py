"""Target status (engine.status): age of the last good backup against the tier's RPO and the
last restore test's ART against the RTO, from the catalog."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from control_support import FakeClock, files_target, make_context

from safehold.engine.jobs import run_job, submit_job
from safehold.engine.status import target_statuses


def test_status_follows_backups_failures_and_restore_tests(tmp_path: Path, clock: FakeClock) -> None:
    targets = [files_target(tmp_path, "web", tier=1, restore_test={"health_check": {
                   "type": "file_exists", "path": "web/hostname"}}),
               files_target(tmp_path, "docs", tier=3)]
    context = make_context(tmp_path / "ws", targets, clock=clock)
    never = {entry.name: entry for entry in target_statuses(context, clock.now)}
    assert never["web"].last_success is None and never["web"].compliant is False
    assert never["web"].age_seconds is None and never["web"].last_status is None
    assert (never["web"].rpo_seconds, never["web"].rto_seconds) == (900, 3600)
    assert (never["docs"].tier, never["docs"].source_type, never["docs"].rpo_seconds) == (3, "files", 86400)

    backed_up = clock.now
    run_job(context, submit_job(context, "backup", "web"))
    run_job(context, submit_job(context, "restore-test", "web"))
    clock.advance(minutes=10)
    web = target_statuses(context, clock.now)[0]
    assert web.last_success == backed_up and web.age_seconds == 600 and web.compliant
    assert web.last_status == "succeeded"
    assert web.last_restore_test is not None and web.last_restore_test.passed and web.last_restore_test.rto_met
    assert web.last_restore_test.art_seconds is not None and web.last_restore_test.rto_seconds == 3600

    # A failed backup later: the last good one ages past the RPO.
    clock.advance(minutes=6)
    Path(targets[0]["source"]["paths"][0], "hostname").unlink()
    Path(targets[0]["source"]["paths"][0]).rmdir()
    run_job(context, submit_job(context, "backup", "web"))
    web = target_statuses(context, clock.now)[0]
    assert web.last_status == "failed" and web.last_attempt == clock.now
    assert web.age_seconds == 960 and not web.compliant
    data = web.as_dict()
    json.dumps(data)  # JSON-able as the API and --json print it
    assert set(data) == {"name", "tier", "source_type", "rpo_seconds", "rto_seconds", "last_success",
                         "last_attempt", "last_status", "age_seconds", "compliant", "last_restore_test"}
    assert set(data["last_restore_test"]) == {"time", "passed", "art_seconds", "rto_seconds", "rto_met"}
    assert data["last_success"] == backed_up.isoformat()


def test_cached_snapshots_count_as_good_backups(tmp_path: Path, clock: FakeClock) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web")], clock=clock)
    taken = clock.now - dt.timedelta(minutes=3)
    context.catalog.replace_snapshots("repo", [{"id": "a" * 64, "time": taken, "target": "web"}])
    web = target_statuses(context, clock.now)[0]
    assert web.last_success == taken and web.compliant and web.last_status is None
