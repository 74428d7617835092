"""Catalog methods the job queue adds: newest job per target, cancel and interrupt guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.catalog import Catalog, JobNotFound


@pytest.fixture
def catalog(tmp_path: Path):
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as opened:
        yield opened


def test_latest_jobs_per_target(catalog: Catalog) -> None:
    ids = {}
    for target, status in (("a", "succeeded"), ("a", "failed"), ("b", "succeeded"), (None, "succeeded")):
        job_id = catalog.start_job("backup" if target else "prune", target)
        catalog.finish_job(job_id, status)
        ids.setdefault(target, []).append(job_id)
    catalog.start_job("restore-test", "a")
    newest = catalog.latest_jobs("backup")
    assert {target: job.id for target, job in newest.items()} == {"a": ids["a"][1], "b": ids["b"][0]}
    good = catalog.latest_jobs("backup", status="succeeded")
    assert good["a"].id == ids["a"][0]
    assert catalog.latest_jobs("prune")[None].id == ids[None][0]
    assert catalog.latest_jobs("check") == {}


def test_latest_snapshot_times_per_target_over_every_repository(catalog: Catalog) -> None:
    import datetime as dt

    base = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    catalog.replace_snapshots("repo-a", [{"id": "a1", "target": "web", "time": base},
                                         {"id": "a2", "target": "web", "time": base + dt.timedelta(hours=2)},
                                         {"id": "a3", "target": None, "time": base}])
    # Another repository's newer snapshot of web counts; its time arrives in another zone.
    newer = (base + dt.timedelta(hours=3)).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    catalog.replace_snapshots("repo-b", [{"id": "b1", "target": "web", "time": newer},
                                         {"id": "b2", "target": "db", "time": base - dt.timedelta(days=400)}])
    assert catalog.latest_snapshot_times() == {"web": base + dt.timedelta(hours=3), None: base,
                                               "db": base - dt.timedelta(days=400)}
    assert catalog.latest_snapshot_times()["web"].tzinfo is not None


def test_cancel_and_interrupt_only_touch_the_right_status(catalog: Catalog) -> None:
    queued = catalog.queue_job("backup", "a")
    running = catalog.start_job("backup", "b")
    assert catalog.interrupt_job(queued, "stop") is False
    assert catalog.cancel_job(running) is False
    assert catalog.cancel_job(queued) is True and catalog.get_job(queued).status == "cancelled"
    assert catalog.interrupt_job(running, "stopping") is True
    job = catalog.get_job(running)
    assert (job.status, job.error, job.error_type) == ("interrupted", "stopping", "Interrupted")
    assert job.finished_at is not None
    with pytest.raises(JobNotFound):
        catalog.cancel_job(12345)


def test_a_job_ended_by_another_process_keeps_its_end(catalog: Catalog) -> None:
    """Fencing, the catalog's half: a job recorded interrupted (its worker stopped sending
    heartbeats) stays so when the paused attempt finishes; the late end is logged, not recorded."""
    job_id = catalog.start_job("backup", "web")
    assert catalog.interrupt_job(job_id, "worker 3 stopped sending heartbeats")
    assert catalog.finish_job(job_id, "succeeded", snapshot_id="ab12", details={"x": 1}) is False
    job = catalog.get_job(job_id)
    assert (job.status, job.snapshot_id, job.error) == ("interrupted", None, "worker 3 stopped sending heartbeats")
    with catalog.job("backup", "web", job_id=job_id):
        pass  # the paused attempt's own end
    assert catalog.get_job(job_id).status == "interrupted"
    assert "its end is not recorded" in catalog.job_logs(job_id)[-1].message
    running = catalog.start_job("backup", "web")
    assert catalog.finish_job(running, "succeeded") is True
    with pytest.raises(JobNotFound):
        catalog.finish_job(404, "succeeded")
