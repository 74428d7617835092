"""Catalog: migrations, job history, crash recovery, concurrency, snapshot cache.

Every test uses a real SQLite file in a temporary directory: the catalog is a
thin layer over the database, so faking the database would test nothing.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text, update
from sqlalchemy.exc import StatementError

from safehold.catalog import (
    HEAD_REVISION,
    Catalog,
    CatalogSchemaTooNew,
    JobNotFound,
    JobRecord,
    migrate,
)
from safehold.catalog.models import Base, Job
from safehold.catalog.processes import process_alive

UTC = dt.UTC


class FakeClock:
    """Advances one second per reading, so every recorded time is distinct.

    It starts at the real time: crash recovery compares job start times with
    process start times, so a clock set in the past would make this process
    look like a newer one that reused a pid.
    """

    def __init__(self) -> None:
        self.now = dt.datetime.now(UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture
def url(tmp_path: Path) -> str:
    # A directory that does not exist yet: open() must create it.
    return f"sqlite:///{tmp_path / 'state' / 'catalog.db'}"


@pytest.fixture
def catalog(url: str):
    with Catalog.open(url, clock=FakeClock()) as catalog:
        yield catalog


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- schema and migrations --------------------------------------------------


def test_open_creates_directory_and_schema(url: str, tmp_path: Path) -> None:
    with Catalog.open(url) as catalog:
        names = set(inspect(catalog.engine).get_table_names())
        assert {"jobs", "job_logs", "snapshots", "alembic_version"} <= names
        columns = {c["name"] for c in inspect(catalog.engine).get_columns("jobs")}
        assert {
            "id",
            "kind",
            "target",
            "status",
            "started_at",
            "finished_at",
            "snapshot_id",
            "bytes_read",
            "bytes_added",
            "files",
            "error",
            "error_type",
            "details",
            "pid",
            "hostname",
        } <= columns
        with catalog.engine.connect() as connection:
            assert migrate.current_revision(connection) == HEAD_REVISION
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "state" / "catalog.db").is_file()


def test_head_revision_constant_matches_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [HEAD_REVISION]


def test_reopen_does_not_run_migrations(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Catalog.open(url) as catalog:
        job_id = catalog.start_job("backup", "web-01")
        catalog.finish_job(job_id, "succeeded")

    def must_not_run(engine: object) -> bool:
        raise AssertionError("migrations ran against a catalog already at head")

    monkeypatch.setattr(migrate, "upgrade", must_not_run)
    for _ in range(2):
        with Catalog.open(url) as catalog:
            assert catalog.get_job(job_id).status == "succeeded"


def test_upgrade_is_idempotent_and_reversible(url: str) -> None:
    from alembic import command

    with Catalog.open(url) as catalog:
        assert migrate.upgrade(catalog.engine) is False  # already at head
        with catalog.engine.begin() as connection:
            command.downgrade(migrate.alembic_config(connection=connection), "base")
        assert set(inspect(catalog.engine).get_table_names()) <= {"alembic_version"}
        assert migrate.upgrade(catalog.engine) is True
        assert migrate.is_current(catalog.engine)


def test_orm_metadata_matches_migrations(catalog: Catalog) -> None:
    """What `alembic check` does: autogenerate against a migrated DB finds nothing."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with catalog.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_migrations_render_for_postgresql() -> None:
    """Offline SQL for PostgreSQL: proves the migrations use no SQLite-only constructs."""
    from alembic import command

    out = io.StringIO()
    config = migrate.alembic_config(url="postgresql://")
    config.output_buffer = out
    command.upgrade(config, "head", sql=True)
    sql = out.getvalue()
    assert "CREATE TABLE jobs" in sql
    assert "TIMESTAMP WITH TIME ZONE" in sql
    assert "SERIAL" in sql
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in sql


def test_catalog_newer_than_code_is_refused(url: str) -> None:
    Catalog.open(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(CatalogSchemaTooNew):
        Catalog.open(url)


def test_in_memory_catalog_works() -> None:
    with Catalog.open("sqlite://") as catalog:
        job_id = catalog.start_job("check")
        catalog.finish_job(job_id, "succeeded")
        assert catalog.get_job(job_id).status == "succeeded"


# --- job lifecycle ------------------------------------------------------------


def test_job_lifecycle(catalog: Catalog) -> None:
    job_id = catalog.start_job("backup", "web-01", details={"paths": ["/etc"]})
    running = catalog.get_job(job_id)
    assert isinstance(running, JobRecord)
    assert running.status == "running"
    assert running.pid == os.getpid()
    assert running.hostname == socket.gethostname()
    assert running.started_at is not None and running.started_at.tzinfo is not None
    assert running.finished_at is None and running.duration_seconds is None

    catalog.log(job_id, "opened source")
    catalog.log(job_id, "skipped /etc/shadow", level="warning")
    catalog.finish_job(
        job_id, "succeeded", snapshot_id="ab12", bytes_read=1000, bytes_added=10, files=3, details={"parent": "99"}
    )

    done = catalog.get_job(job_id)
    assert done.status == "succeeded" and done.finished
    assert (done.snapshot_id, done.bytes_read, done.bytes_added, done.files) == ("ab12", 1000, 10, 3)
    assert done.details == {"paths": ["/etc"], "parent": "99"}
    assert done.finished_at is not None and done.finished_at.utcoffset() == dt.timedelta(0)
    assert done.duration_seconds is not None and done.duration_seconds > 0
    assert done.error is None and done.error_type is None

    logs = catalog.job_logs(job_id)
    assert [(line.level, line.message) for line in logs] == [
        ("info", "opened source"),
        ("warning", "skipped /etc/shadow"),
    ]
    assert logs[0].time < logs[1].time
    assert all(line.job_id == job_id for line in logs)


def test_job_records_are_frozen_plain_values(catalog: Catalog) -> None:
    record = catalog.get_job(catalog.start_job("init"))
    with pytest.raises(AttributeError):
        record.status = "failed"  # type: ignore[misc]


def test_failed_job_records_error(catalog: Catalog) -> None:
    job_id = catalog.start_job("restore", "db")
    catalog.finish_job(job_id, "failed", error="disk full", error_type="StorageFull")
    job = catalog.get_job(job_id)
    assert (job.status, job.error, job.error_type) == ("failed", "disk full", "StorageFull")


def test_invalid_values_are_refused(catalog: Catalog) -> None:
    job_id = catalog.start_job("backup")
    with pytest.raises(ValueError, match="status"):
        catalog.finish_job(job_id, "done")
    with pytest.raises(ValueError, match="level"):
        catalog.log(job_id, "x", level="loud")
    with pytest.raises(ValueError):
        catalog.start_job("")


def test_unknown_job_raises_job_not_found(catalog: Catalog) -> None:
    with pytest.raises(JobNotFound) as raised:
        catalog.get_job(404)
    assert raised.value.exit_code == 34
    with pytest.raises(JobNotFound):
        catalog.finish_job(404, "succeeded")
    with pytest.raises(JobNotFound):
        catalog.finish_job(404, "succeeded", details={"x": 1})
    with pytest.raises(JobNotFound):
        catalog.log(404, "orphan line")


def test_times_are_stored_as_utc(url: str) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2025, 6, 1, 14, 0, tzinfo=plus_two)
    with Catalog.open(url, clock=lambda: moment) as catalog:
        job = catalog.get_job(catalog.start_job("backup"))
    assert job.started_at == moment
    assert job.started_at is not None and job.started_at.tzinfo == UTC and job.started_at.hour == 12


def test_naive_times_are_refused(url: str) -> None:
    with (
        Catalog.open(url, clock=lambda: dt.datetime(2025, 1, 1)) as catalog,
        pytest.raises(StatementError, match="timezone-aware"),
    ):
        catalog.start_job("backup")


def test_queue_and_claim(catalog: Catalog) -> None:
    job_id = catalog.queue_job("prune", "repo")
    queued = catalog.get_job(job_id)
    assert queued.status == "queued" and queued.started_at is None and queued.pid is None
    assert catalog.claim_job(job_id) is True
    assert catalog.claim_job(job_id) is False
    claimed = catalog.get_job(job_id)
    assert claimed.status == "running" and claimed.pid == os.getpid() and claimed.started_at is not None
    with pytest.raises(JobNotFound):
        catalog.claim_job(404)


# --- the job() context manager -----------------------------------------------


def test_job_context_success(catalog: Catalog) -> None:
    with catalog.job("backup", "web-01") as job:
        job.log("reading")
        job.update(bytes_read=10, files=1)
        job.update(bytes_read=20, bytes_added=5, files=2, snapshot_id="cafe")
        assert catalog.get_job(job.id).snapshot_id == "cafe"  # written at once
        job.details["parent"] = "beef"
    record = catalog.get_job(job.id)
    assert record.status == "succeeded"
    assert (record.bytes_read, record.bytes_added, record.files, record.snapshot_id) == (20, 5, 2, "cafe")
    assert record.details == {"parent": "beef"}
    assert [line.message for line in catalog.job_logs(job.id)] == ["reading"]


def test_job_context_progress_is_visible_while_running(catalog: Catalog) -> None:
    with catalog.job("backup") as job:
        job.flush_interval = 0
        job.update(bytes_read=123, files=4)
        running = catalog.get_job(job.id)
        assert (running.status, running.bytes_read, running.files) == ("running", 123, 4)


def test_job_context_progress_is_throttled(catalog: Catalog) -> None:
    with catalog.job("backup") as job:
        job.flush_interval = 3600
        job.update(files=1)  # the first update is written
        job.update(files=2)  # this one waits for the interval or the end
        assert catalog.get_job(job.id).files == 1
    assert catalog.get_job(job.id).files == 2


def test_job_context_failure(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="boom"), catalog.job("check", "repo") as job:
        job.update(files=7)
        raise ValueError("boom")
    record = catalog.get_job(job.id)
    assert (record.status, record.error, record.error_type, record.files) == ("failed", "boom", "ValueError", 7)
    assert record.finished_at is not None


def test_job_context_failure_without_message_keeps_type(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError), catalog.job("check") as job:
        raise RuntimeError
    record = catalog.get_job(job.id)
    assert record.error_type == "RuntimeError" and record.error


def test_job_context_interrupt(catalog: Catalog) -> None:
    with pytest.raises(KeyboardInterrupt), catalog.job("backup", "web-01") as job:
        raise KeyboardInterrupt
    record = catalog.get_job(job.id)
    assert record.status == "interrupted" and record.error_type == "KeyboardInterrupt"


def test_job_context_cancelled(catalog: Catalog) -> None:
    import asyncio

    with pytest.raises(asyncio.CancelledError), catalog.job("restore-test") as job:
        raise asyncio.CancelledError
    assert catalog.get_job(job.id).status == "cancelled"


def test_job_context_keeps_the_jobs_exception_when_recording_fails(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("catalog disk gone")

    with pytest.raises(ValueError, match="the real error"), catalog.job("backup") as job:
        monkeypatch.setattr(catalog, "finish_job", broken)
        raise ValueError("the real error")
    assert "could not record the end of job" in capsys.readouterr().err
    assert job.id


# --- listing ----------------------------------------------------------------


def test_list_jobs_filters_and_newest_first(catalog: Catalog) -> None:
    ids = {}
    for name, kind, target, status in [
        ("a", "backup", "web", "succeeded"),
        ("b", "backup", "db", "failed"),
        ("c", "check", None, "succeeded"),
        ("d", "backup", "web", "failed"),
        ("e", "restore", "web", None),
    ]:
        ids[name] = catalog.start_job(kind, target)
        if status:
            catalog.finish_job(ids[name], status)

    def names(records: list[JobRecord]) -> list[str]:
        by_id = {v: k for k, v in ids.items()}
        return [by_id[r.id] for r in records]

    assert names(catalog.list_jobs()) == ["e", "d", "c", "b", "a"]
    assert names(catalog.list_jobs(target="web")) == ["e", "d", "a"]
    assert names(catalog.list_jobs(kind="backup")) == ["d", "b", "a"]
    assert names(catalog.list_jobs(status="failed")) == ["d", "b"]
    assert names(catalog.list_jobs(status=["running", "failed"])) == ["e", "d", "b"]
    assert names(catalog.list_jobs(target="web", kind="backup", status="succeeded")) == ["a"]
    assert names(catalog.list_jobs(limit=2)) == ["e", "d"]
    assert names(catalog.list_jobs(limit=None)) == ["e", "d", "c", "b", "a"]
    assert catalog.list_jobs(target="nobody") == []
    started = [r.started_at for r in catalog.list_jobs()]
    assert started == sorted(started, reverse=True)


# --- crash recovery -----------------------------------------------------------


def _set_job(catalog: Catalog, job_id: int, **values: object) -> None:
    with catalog.engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(**values))


def test_mark_interrupted_only_touches_dead_processes_on_this_host(catalog: Catalog) -> None:
    dead = dead_pid()
    crashed = catalog.start_job("backup", "web-01")
    _set_job(catalog, crashed, pid=dead)
    alive = catalog.start_job("backup", "db")  # this process: alive
    elsewhere = catalog.start_job("backup", "files")
    _set_job(catalog, elsewhere, pid=dead, hostname="another-worker")
    finished = catalog.start_job("check")
    _set_job(catalog, finished, pid=dead)
    catalog.finish_job(finished, "succeeded")

    assert catalog.mark_interrupted() == 1
    record = catalog.get_job(crashed)
    assert record.status == "interrupted" and record.finished_at is not None
    assert str(dead) in (record.error or "")
    assert catalog.get_job(alive).status == "running"
    assert catalog.get_job(elsewhere).status == "running"
    assert catalog.get_job(finished).status == "succeeded"
    assert catalog.mark_interrupted() == 0


def test_open_marks_jobs_of_dead_processes_interrupted(url: str) -> None:
    with Catalog.open(url) as catalog:
        job_id = catalog.start_job("backup", "web-01")
        _set_job(catalog, job_id, pid=dead_pid())
    with Catalog.open(url) as catalog:
        assert catalog.get_job(job_id).status == "interrupted"


def test_job_left_running_by_a_killed_process(url: str) -> None:
    Catalog.open(url).close()
    script = textwrap.dedent(
        f"""
        import os, signal
        from safehold.catalog import Catalog
        catalog = Catalog.open({url!r})
        with catalog.job("backup", "web-01") as job:
            print(job.id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    job_id = int(result.stdout.split()[0])
    with Catalog.open(url) as catalog:
        record = catalog.get_job(job_id)
    assert record.status == "interrupted" and record.error_type == "ProcessGone"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see process start times")
def test_reused_pid_counts_as_dead() -> None:
    # This process started long after 2020, so a job "started" then with this
    # pid was run by a different process that has since gone (e.g. before a reboot).
    assert process_alive(os.getpid(), dt.datetime(2020, 1, 1, tzinfo=UTC)) is False
    assert process_alive(os.getpid(), dt.datetime.now(UTC)) is True
    assert process_alive(dead_pid()) is False


# --- concurrency ----------------------------------------------------------------


WRITER = textwrap.dedent(
    """
    import sys
    from safehold.catalog import Catalog

    url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    catalog = Catalog.open(url)
    for number in range(count):
        with catalog.job("backup", name) as job:
            job.log(f"{name} {number} started")
            job.update(bytes_read=number, files=number)
            job.log(f"{name} {number} done")
        catalog.list_jobs(target=name, limit=5)
    catalog.close()
    """
)


def test_processes_record_jobs_concurrently(url: str) -> None:
    """Several processes open a brand-new catalog (racing the migration) and write at once."""
    writers, count = 3, 25
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, f"writer-{n}", str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(writers)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr

    with Catalog.open(url) as catalog:
        jobs = catalog.list_jobs(limit=None)
        assert len(jobs) == writers * count
        assert {job.status for job in jobs} == {"succeeded"}
        for n in range(writers):
            mine = catalog.list_jobs(target=f"writer-{n}", limit=None)
            assert len(mine) == count
            assert [job.files for job in mine] == list(range(count - 1, -1, -1))
            assert all(len(catalog.job_logs(job.id)) == 2 for job in mine)


# --- snapshot cache ---------------------------------------------------------------


def _snapshot(snapshot_id: str, hour: int, target: str = "web-01", **extra: object) -> dict[str, object]:
    return {
        "id": snapshot_id,
        "time": dt.datetime(2025, 3, 1, hour, tzinfo=UTC),
        "target": target,
        "kind": "files",
        "hostname": "web-01.internal",
        "size": 100 * hour,
        "files": hour,
        "added_bytes": hour,
        "tags": ["daily"],
        **extra,
    }


def test_snapshot_cache_replace_and_list(catalog: Catalog) -> None:
    assert (
        catalog.replace_snapshots(
            "repo-a",
            [
                _snapshot("s1", 1),
                _snapshot("s3", 3, parent="s2"),
                _snapshot("s2", 2, parent="s1"),
                _snapshot("d1", 4, "db"),
            ],
        )
        == 4
    )
    catalog.replace_snapshots("repo-b", [_snapshot("s1", 1)])  # a 3-2-1 copy: same id, other repository

    listed = catalog.list_snapshots(repository_id="repo-a")
    assert [s.id for s in listed] == ["d1", "s3", "s2", "s1"]
    newest = listed[1]
    assert (newest.parent, newest.size, newest.files, newest.tags) == ("s2", 300, 3, ["daily"])
    assert newest.time == dt.datetime(2025, 3, 1, 3, tzinfo=UTC)
    assert [s.id for s in catalog.list_snapshots(repository_id="repo-a", target="web-01", limit=2)] == ["s3", "s2"]
    assert sorted(s.repository_id for s in catalog.list_snapshots(target="web-01") if s.id == "s1") == [
        "repo-a",
        "repo-b",
    ]
    assert catalog.list_snapshots(kind="image") == []

    # Replacing rebuilds one repository's cache and leaves the others alone.
    catalog.replace_snapshots("repo-a", [_snapshot("s4", 5, tags=None)])
    assert [s.id for s in catalog.list_snapshots(repository_id="repo-a")] == ["s4"]
    assert catalog.list_snapshots(repository_id="repo-a")[0].tags is None
    assert [s.id for s in catalog.list_snapshots(repository_id="repo-b")] == ["s1"]
    catalog.replace_snapshots("repo-a", [])
    assert catalog.list_snapshots(repository_id="repo-a") == []


def test_snapshot_times_and_unknown_fields(catalog: Catalog) -> None:
    catalog.replace_snapshots(
        "repo",
        [
            {"id": "iso", "time": "2025-03-01T10:00:00Z", "tree": "ignored"},
            {"id": "epoch", "time": 1_740_830_400},  # 2025-03-01T12:00:00Z
        ],
    )
    by_id = {s.id: s for s in catalog.list_snapshots()}
    assert by_id["iso"].time == dt.datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert by_id["epoch"].time == dt.datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert (by_id["iso"].size, by_id["iso"].target, by_id["iso"].tags) == (0, None, None)


def test_snapshot_cache_refuses_bad_input(catalog: Catalog) -> None:
    catalog.replace_snapshots("repo", [_snapshot("keep", 1)])
    with pytest.raises(ValueError, match="'id'"):
        catalog.replace_snapshots("repo", [{"time": "2025-03-01T10:00:00Z"}])
    with pytest.raises(ValueError, match="timezone"):
        catalog.replace_snapshots("repo", [{"id": "x", "time": "2025-03-01T10:00:00"}])
    # A refused replacement leaves the cache as it was.
    assert [s.id for s in catalog.list_snapshots()] == ["keep"]


def test_catalog_is_usable_from_threads(catalog: Catalog) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(n: int) -> int:
        with catalog.job("check", f"t{n}") as job:
            job.log("hi")
        return job.id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(work, range(20)))
    assert len(set(ids)) == 20
    assert all(catalog.get_job(i).status == "succeeded" for i in ids)


def test_close_twice_is_harmless(url: str) -> None:
    catalog = Catalog.open(url)
    catalog.close()
    catalog.close()


# --- PostgreSQL (opt-in) ------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("SAFEHOLD_TEST_POSTGRES_URL"),
    reason="set SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://... to run against PostgreSQL",
)
def test_postgresql_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same catalog on PostgreSQL: migrations, no drift, lifecycle, concurrent writers."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    pg_url = os.environ["SAFEHOLD_TEST_POSTGRES_URL"]
    engine = create_engine(pg_url)
    with engine.begin() as connection:  # start from an empty database
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()

    # Racing writers also race the first migration (advisory lock).
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, pg_url, f"pg-{n}", "10"], stderr=subprocess.PIPE, text=True)
        for n in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr

    with Catalog.open(pg_url) as catalog:
        with catalog.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        jobs = catalog.list_jobs(limit=None)
        assert len(jobs) == 30 and {job.status for job in jobs} == {"succeeded"}

        with pytest.raises(ValueError), catalog.job("backup", "pg", details={"a": 1}) as job:
            job.update(bytes_read=5, snapshot_id="cafe")
            raise ValueError("boom")
        record = catalog.get_job(job.id)
        assert (record.status, record.error_type, record.snapshot_id, record.details) == (
            "failed",
            "ValueError",
            "cafe",
            {"a": 1},
        )
        assert record.started_at is not None and record.started_at.tzinfo is not None

        crashed = catalog.start_job("backup", "pg")
        _set_job(catalog, crashed, pid=dead_pid())
        assert catalog.mark_interrupted() == 1

        catalog.replace_snapshots("repo", [_snapshot("s1", 1), _snapshot("s2", 2)])
        assert [s.id for s in catalog.list_snapshots(repository_id="repo")] == ["s2", "s1"]
        assert catalog.latest_snapshot_times() == {"web-01": dt.datetime(2025, 3, 1, 2, tzinfo=UTC)}
        assert catalog.latest_jobs("backup", status="failed")["pg"].id == job.id

    monkeypatch.setattr(migrate, "upgrade", lambda engine: pytest.fail("migrated a current catalog"))
    Catalog.open(pg_url).close()


def test_finished_jobs_names_only_those_that_ended(catalog: Catalog) -> None:
    queued = catalog.queue_job("backup", "a")
    running = catalog.start_job("backup", "b")
    succeeded = catalog.start_job("backup", "c")
    catalog.finish_job(succeeded, "succeeded")
    cancelled = catalog.queue_job("backup", "d")
    assert catalog.cancel_job(cancelled)
    failed = catalog.start_job("backup", "e")
    catalog.finish_job(failed, "failed", error="boom")
    found = catalog.finished_jobs([queued, running, succeeded, cancelled, failed, 10_000])
    assert sorted((job.id, job.status) for job in found) == [
        (succeeded, "succeeded"), (cancelled, "cancelled"), (failed, "failed")]
    assert catalog.finished_jobs([]) == []
