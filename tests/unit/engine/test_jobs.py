"""Queued jobs (engine.jobs): submit validates, cancel only touches queued jobs, run_job records
log lines, bytes, duration and error in the submitted row and never leaves it running."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_support import FakeClock, files_target, make_context

from safehold import errors
from safehold.catalog import JobNotFound
from safehold.engine.jobs import cancel_job, run_job, submit_job


@pytest.fixture
def context(tmp_path: Path, clock: FakeClock):
    targets = [files_target(tmp_path, "web", retention={"keep_last": 1}), files_target(tmp_path, "docs")]
    return make_context(tmp_path / "ws", targets, clock=clock)


@pytest.mark.parametrize(
    ("kind", "target", "params", "message"),
    [
        ("explode", "web", None, "unknown job kind 'explode'"),
        ("backup", None, None, "a backup job needs a target"),
        ("restore-test", None, None, "a restore-test job needs a target"),
        ("backup", "web", {"tagz": ["x"]}, "unknown parameter 'tagz' for a backup job; valid: tags"),
        ("restore", "web", {}, "needs params.destination"),
        ("restore", None, {"destination": "/tmp/x"}, "a restore of 'latest' needs a target"),
        ("check", None, {"read_data_percent": 150}, "between 0 and 100"),
        ("check", None, {"read_data_percent": True}, "wrong type"),
        ("forget", "web", {"prune": "yes"}, "wrong type"),
        ("maintenance", None, {"renew_within_days": -1}, "between 0 and 36500"),
        ("maintenance", None, {"renew_within_days": "2"}, "wrong type"),
        ("maintenance", None, {"days": 2}, "valid: renew_within_days"),
    ],
)
def test_submit_refuses_bad_requests(context, kind, target, params, message) -> None:
    with pytest.raises(errors.UsageError, match=message):
        submit_job(context, kind, target, params)
    assert context.catalog.list_jobs(status="queued") == []


def test_submit_refuses_an_unknown_target(context) -> None:
    with pytest.raises(errors.TargetNotFound) as caught:
        submit_job(context, "backup", "nope")
    assert "web, docs" in caught.value.hint


def test_submit_queues_with_params_and_trigger(context) -> None:
    job_id = submit_job(context, "check", None, {"read_data_percent": 10})
    job = context.catalog.get_job(job_id)
    assert (job.kind, job.target, job.status) == ("check", None, "queued")
    assert job.details == {"params": {"read_data_percent": 10}, "trigger": "api", "attempt": 1}


def test_cancel_only_a_queued_job(context) -> None:
    queued = submit_job(context, "backup", "docs")
    assert cancel_job(context, queued) is True
    assert context.catalog.get_job(queued).status == "cancelled"
    assert cancel_job(context, queued) is False
    with pytest.raises(errors.JobNotRunnable):
        run_job(context, queued)
    running = submit_job(context, "backup", "docs")
    run_job(context, running)
    assert cancel_job(context, running) is False
    assert context.catalog.get_job(running).status == "succeeded"
    with pytest.raises(JobNotFound):
        cancel_job(context, 9999)


def test_run_job_records_bytes_duration_and_log_and_applies_retention(context, clock: FakeClock) -> None:
    first = run_job(context, submit_job(context, "backup", "web"))
    clock.advance(minutes=5)
    second = run_job(context, submit_job(context, "backup", "web"))
    assert first.status == second.status == "succeeded"
    assert first.bytes_read == len("web\n") and first.bytes_added > 0 and first.snapshot_id
    assert second.duration_seconds is not None and second.duration_seconds >= 0
    log = [line.message for line in context.catalog.job_logs(second.id)]
    assert log[0] == "started (api, attempt 1)"
    assert any(line.startswith("snapshot ") for line in log)
    assert any("retention applied" in line and "forgot 1 snapshot(s)" in line for line in log)
    forget = context.catalog.list_jobs(kind="forget", limit=None)
    assert len(forget) == 2 and {job.status for job in forget} == {"succeeded"}
    from safehold.engine.browse import list_snapshots

    assert [row["id"] for row in list_snapshots(context, "web")] == [second.snapshot_id]


def test_failed_job_records_the_error_and_is_not_raised(context, tmp_path: Path) -> None:
    job_id = submit_job(context, "restore", "docs", {"destination": str(tmp_path / "out")})
    job = run_job(context, job_id)  # nothing backed up yet
    assert job.status == "failed" and job.error_type == "SnapshotNotFound"
    assert job.finished_at is not None
    with pytest.raises(errors.SnapshotNotFound):
        run_job(context, submit_job(context, "restore", "docs", {"destination": str(tmp_path / "out")}),
                raise_errors=True)


def test_job_of_a_target_removed_from_the_configuration_is_not_left_running(context, tmp_path: Path) -> None:
    job_id = submit_job(context, "backup", "docs")
    from safehold.config import load_config

    path = context.config.path
    path.write_text(path.read_text().replace('"name": "docs"', '"name": "docs-renamed"'))
    context.config = load_config(path)
    job = run_job(context, job_id)
    assert job.status == "failed" and job.error_type == "TargetNotFound"
    assert any(line.level == "error" for line in context.catalog.job_logs(job_id))


def test_run_restore_job_into_a_directory(context, tmp_path: Path) -> None:
    run_job(context, submit_job(context, "backup", "docs"))
    job = run_job(context, submit_job(context, "restore", "docs", {"destination": str(tmp_path / "out")}))
    assert job.status == "succeeded", job.error
    assert (tmp_path / "out" / "docs" / "hostname").read_text() == "docs\n"


def test_maintenance_job_runs_as_the_submitted_row_and_records_its_log(context) -> None:
    """A local repository has no Object Lock: the job succeeds saying so, in its own row
    (tests/aws/test_object_lock_jobs.py runs it against a locked S3 repository)."""
    job_id = submit_job(context, "maintenance", None, {"renew_within_days": 2}, trigger="scheduler")
    job = run_job(context, job_id)
    assert (job.id, job.kind, job.target, job.status) == (job_id, "maintenance", None, "succeeded"), job.error
    assert [line.message for line in context.catalog.job_logs(job_id)] == [
        "started (scheduler, attempt 1)", "the repository has no object_lock: nothing to extend"]
    assert job.details["params"] == {"renew_within_days": 2} and job.details["renew_within_s"] == 2 * 86400
    assert job.details["retention_enabled"] is False
    assert [row.id for row in context.catalog.list_jobs(kind="maintenance", limit=None)] == [job_id]


def test_an_attempt_whose_job_was_interrupted_meanwhile_commits_no_snapshot(context) -> None:
    """Fencing: the job is recorded 'interrupted' while its backup runs (as the queue executor does
    when the worker's heartbeat stops: a paused process); the attempt goes on, reaches its commit
    and stops there: no snapshot, the row stays interrupted, the repository stays consistent."""
    from safehold.repository.check import check

    job_id = submit_job(context, "backup", "web")
    taken: list[int] = []

    def reaped_meanwhile(event: dict) -> None:  # called while the backup reads its source
        if not taken:
            taken.append(job_id)
            assert context.catalog.interrupt_job(job_id, "worker 7 stopped sending heartbeats")

    context.progress = reaped_meanwhile
    record = run_job(context, job_id)
    assert taken and record.status == "interrupted" and record.snapshot_id is None
    assert "worker 7 stopped sending heartbeats" in record.error
    assert context.open_repository().list_snapshots() == []
    messages = [line.message for line in context.catalog.job_logs(job_id)]
    assert any("is no longer this attempt's to finish: it is interrupted" in message for message in messages)
    assert any("after the job was recorded interrupted; its end is not recorded" in message for message in messages)
    assert check(context.open_repository(), read_data_percent=100.0).ok  # its packs are harmless leftovers
