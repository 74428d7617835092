"""Backups and restores recorded through the light recorder (catalog/light.py: sqlite3, no
SQLAlchemy) when the SQLite catalog is current: the rows must be the ones the catalog records
itself for the same job (read back through ``Catalog``), and the fence before a backup's commit
must hold with either recorder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from control_support import files_target, write_config

from safehold import errors
from safehold.catalog import Catalog
from safehold.catalog.light import SqliteJobs
from safehold.config import load_config
from safehold.engine.backup import backup_target
from safehold.engine.context import Context
from safehold.engine.restore import restore_snapshot

COLUMNS = ("kind", "target", "status", "bytes_read", "bytes_added", "files", "error", "error_type")


@pytest.fixture
def config(tmp_path: Path):
    """A workspace whose catalog exists (created and migrated) and whose repository holds one full
    backup of 'web', both made through the catalog as a first command does."""
    target = files_target(tmp_path, "web")
    (tmp_path / "data" / "web" / "notes.txt").write_text("some text\n" * 500)
    config = load_config(write_config(tmp_path, [target]))
    from safehold.engine.maintenance import init_repository

    context = Context(config)
    try:
        init_repository(context)
        backup_target(context, "web")
    finally:
        context.close()
    return config


def catalog_context(config) -> Context:
    context = Context(config)
    context.catalog  # opened first: the catalog records this context's jobs
    return context


def normalized(text: object, snapshots: dict[str, str]) -> object:
    """``text`` (a log line or details) with snapshot ids (whole or short) and paths of the run
    replaced by names, so two runs of the same job compare equal."""
    value = repr(text)
    for snapshot, name in snapshots.items():
        value = value.replace(snapshot, name).replace(snapshot[:8], name)
    return re.sub(r"/[^'\"]*/out-\w+", "OUT", value)


def job_row(config, job_id: int, snapshots: dict[str, str]) -> tuple:
    with Catalog.open(config.catalog_url, recover=False) as catalog:
        job = catalog.get_job(job_id)
        logs = [(line.level, normalized(line.message, snapshots)) for line in catalog.job_logs(job_id)]
    assert job.started_at is not None and job.finished_at >= job.started_at
    assert job.pid is not None and job.hostname
    return (tuple(getattr(job, name) for name in COLUMNS), job.snapshot_id in snapshots,
            normalized(job.details, snapshots), logs)


def test_a_backup_recorded_lightly_is_the_row_the_catalog_records(config) -> None:
    """The same nothing-changed backup, once through the catalog and once through sqlite3: the same
    columns, details (tier, source, the target's ransomware state) and log lines."""
    reference = catalog_context(config)
    try:
        theirs = backup_target(reference, "web")
    finally:
        reference.close()
    light = Context(config)
    try:
        assert isinstance(light.jobs, SqliteJobs)  # the catalog is current: the light recorder
        ours = backup_target(light, "web")
        assert light._catalog is None  # nothing opened the catalog (SQLAlchemy) on the way
    finally:
        light.close()
    assert ours.parent_id == theirs.snapshot_id and ours.summary["files"] == theirs.summary["files"]
    parents = {theirs.parent_id: "PARENT"}
    expected = job_row(config, theirs.job_id, {**parents, theirs.snapshot_id: "SNAPSHOT"})
    found = job_row(config, ours.job_id, {theirs.snapshot_id: "PARENT", ours.snapshot_id: "SNAPSHOT"})
    assert found == expected
    assert found[0][:3] == ("backup", "web", "succeeded") and found[1]


def test_a_light_backup_fenced_before_its_commit_writes_no_snapshot(config) -> None:
    """The job is recorded 'interrupted' by another process while the backup reads its source (a
    worker reaped for missed heartbeats); the attempt recorded through sqlite3 reaches its commit and
    stops there (JobFenced): no snapshot, and the row stays interrupted."""
    context = Context(config)
    taken: list[int] = []

    def reaped_meanwhile(event: dict) -> None:
        if taken:
            return
        with Catalog.open(config.catalog_url, recover=False) as catalog:
            [running] = catalog.list_jobs(status="running")
            taken.append(running.id)
            assert catalog.interrupt_job(running.id, "worker 7 stopped sending heartbeats")

    context.progress = reaped_meanwhile
    (Path(config.targets[0].source.paths[0]) / "new.txt").write_text("changed\n")
    try:
        before = [s.id for s in context.open_repository(load_index=False).list_snapshots()]
        assert isinstance(context.jobs, SqliteJobs)
        with pytest.raises(errors.JobFenced):
            backup_target(context, "web")
        assert [s.id for s in context.open_repository(load_index=False).list_snapshots()] == before
        assert context._catalog is None
    finally:
        context.close()
    with Catalog.open(config.catalog_url, recover=False) as catalog:
        record = catalog.get_job(taken[0])
        messages = [line.message for line in catalog.job_logs(taken[0])]
    assert (record.status, record.snapshot_id) == ("interrupted", None)
    assert "worker 7 stopped sending heartbeats" in record.error
    assert any("after the job was recorded interrupted; its end is not recorded" in line for line in messages)


@pytest.mark.parametrize("includes", [[], ["notes.txt"]], ids=["whole", "one-file"])
def test_a_restore_recorded_lightly_is_the_row_the_catalog_records(config, tmp_path: Path, includes) -> None:
    """'latest' without a target: the restore learns the target from the snapshot and writes it
    into the row through the recorder that holds the job."""
    snapshots = {}
    rows = []
    for name, make in (("out-theirs", catalog_context), ("out-ours", Context)):
        context = make(config)
        try:
            wanted = [f"web/{path}" for path in includes]  # as the snapshot names it: below the source's folder
            outcome = restore_snapshot(context, "latest", str(tmp_path / name), includes=wanted)
            assert isinstance(context._catalog, Catalog) == (name == "out-theirs")
        finally:
            context.close()
        snapshots[outcome.snapshot_id] = "SNAPSHOT"
        rows.append(outcome.job_id)
    assert [path.name for path in (tmp_path / "out-ours").rglob("*.txt")] == ["notes.txt"]
    expected, found = (job_row(config, job_id, snapshots) for job_id in rows)
    assert found == expected
    assert found[0][:3] == ("restore", "web", "succeeded") and found[1]
    assert found[0][5] == (1 if includes else 2)


def test_restore_all_records_each_target_lightly_from_its_two_threads(tmp_path: Path) -> None:
    """'restore --all' restores two targets side by side, each its own job: both threads record
    through the one sqlite3 recorder (its transactions serialized), and no catalog is opened."""
    from safehold.engine.maintenance import init_repository
    from safehold.engine.restore import restore_targets

    targets = [files_target(tmp_path, name) for name in ("web", "docs", "mail")]
    config = load_config(write_config(tmp_path, targets))
    context = Context(config)
    try:
        init_repository(context)
        for target in targets:
            backup_target(context, target["name"])
    finally:
        context.close()
    context = Context(config)
    try:
        run = restore_targets(context, str(tmp_path / "every"), ["web", "docs", "mail"], concurrent=2)
        assert isinstance(context.jobs, SqliteJobs) and context._catalog is None
    finally:
        context.close()
    assert not run.failures and sorted(outcome.target for outcome in run.results) == ["docs", "mail", "web"]
    with Catalog.open(config.catalog_url, recover=False) as catalog:
        for outcome in run.results:
            job = catalog.get_job(outcome.job_id)
            assert (job.kind, job.target, job.status, job.files) == ("restore", outcome.target, "succeeded", 1)
    assert (tmp_path / "every" / "mail" / "mail" / "hostname").read_text() == "mail\n"
