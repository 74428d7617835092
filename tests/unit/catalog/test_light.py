"""catalog/light.py: jobs recorded with the standard library's sqlite3 must be the rows the
catalog itself records (read back through ``Catalog``), and the recorder must step aside (None)
for anything it does not handle: no file yet, another schema revision, PostgreSQL, in-memory."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.catalog import Catalog, JobNotFound
from safehold.catalog.light import SqliteJobs, sqlite_path

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")  # SQLAlchemy's SQLite DateTime text


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state' / 'catalog.db'}"
    Catalog.open(url).close()  # created and migrated by the catalog, as a first command does
    return url


def record(recorder, fail: bool = False) -> int:
    try:
        with recorder.job("copy", target="web", details={"destination": "dr", "nested": {"b": 1, "a": [1, 2]}}) as job:
            job.log("first line")
            job.log("careful", level="warning")
            job.update(bytes_added=1234)
            job.details.update({"bytes_sent": 1234, "destination": "dr-renamed"})
            if fail:
                raise ValueError("boom")
    except ValueError:
        pass
    return job.id


@pytest.mark.parametrize("fail", [False, True])
def test_a_job_recorded_lightly_reads_back_as_the_catalogs_own(url: str, fail: bool) -> None:
    with Catalog.open(url) as catalog:
        reference = record(catalog, fail)
    light = SqliteJobs.open(url)
    assert light is not None
    try:
        ours = record(light, fail)
    finally:
        light.close()
    with Catalog.open(url) as catalog:
        theirs, mine = catalog.get_job(reference), catalog.get_job(ours)
        assert mine.status == ("failed" if fail else "succeeded")
        for name in ("kind", "target", "status", "snapshot_id", "bytes_read", "bytes_added", "files", "error",
                     "error_type", "details"):
            assert getattr(mine, name) == getattr(theirs, name), name
        assert mine.started_at is not None and mine.finished_at >= mine.started_at >= theirs.finished_at
        assert [(log.level, log.message) for log in catalog.job_logs(ours)] == \
               [(log.level, log.message) for log in catalog.job_logs(reference)]
    # Stored as the catalog stores them: fixed-width UTC text (text order is time order) and the
    # same JSON encoding.
    with sqlite3.connect(sqlite_path(url)) as connection:
        rows = connection.execute("SELECT created_at, started_at, finished_at, details FROM jobs ORDER BY id").fetchall()
    assert all(STAMP.match(value) for row in rows for value in row[:3])
    assert rows[0][3] == rows[1][3]


def test_the_recorder_steps_aside_for_what_the_catalog_must_open(tmp_path: Path, url: str) -> None:
    assert SqliteJobs.open(f"sqlite:///{tmp_path / 'nothing-yet.db'}") is None  # the catalog creates it
    assert not (tmp_path / "nothing-yet.db").exists()
    assert SqliteJobs.open("sqlite:///:memory:") is None
    assert SqliteJobs.open("postgresql+psycopg://postgres@127.0.0.1:1/safehold") is None
    assert SqliteJobs.open(url + "?timeout=5") is None
    with sqlite3.connect(sqlite_path(url)) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0001'")  # behind: the catalog migrates
    assert SqliteJobs.open(url) is None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert SqliteJobs.open(f"sqlite:///{empty}") is None


def test_open_marks_jobs_of_dead_processes_interrupted_as_the_catalog_does(url: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with Catalog.open(url) as catalog:
        job_id = catalog.start_job("backup", "web")
    with sqlite3.connect(sqlite_path(url)) as connection:
        connection.execute("UPDATE jobs SET pid = ? WHERE id = ?", (process.pid, job_id))
    light = SqliteJobs.open(url)
    assert light is not None
    light.close()
    with Catalog.open(url, recover=False) as catalog:
        job = catalog.get_job(job_id)
    assert (job.status, job.error_type) == ("interrupted", "ProcessGone")
    assert f"process {process.pid}" in job.error


def test_unknown_job_and_bad_values_raise_like_the_catalog(url: str) -> None:
    light = SqliteJobs.open(url)
    assert light is not None
    try:
        with pytest.raises(JobNotFound):
            light.log(4242, "nobody")
        with pytest.raises(JobNotFound):
            light.update_job(4242, bytes_added=1)
        with pytest.raises(JobNotFound):
            light.finish_job(4242, "succeeded", details={"a": 1})
        with pytest.raises(ValueError):
            light.finish_job(light.start_job("copy"), "done")
        with pytest.raises(ValueError):
            light.start_job("")
    finally:
        light.close()


def test_a_fenced_attempt_ends_nothing_through_the_light_recorder_either(url: str) -> None:
    # A paused worker's attempt whose job was recorded 'interrupted' (and retried elsewhere)
    # must not turn it into a success when it comes back, whichever recorder it holds.
    light = SqliteJobs.open(url)
    assert light is not None
    try:
        with light.job("copy", target="web") as job:
            with Catalog.open(url, recover=False) as catalog:
                assert catalog.interrupt_job(job.id, "worker stopped sending heartbeats")
            job.details["bytes_sent"] = 1
        assert light.finish_job(job.id, "failed") is False
    finally:
        light.close()
    with Catalog.open(url, recover=False) as catalog:
        record = catalog.get_job(job.id)
        assert (record.status, record.error_type) == ("interrupted", "Interrupted")
        assert "bytes_sent" not in (record.details or {})
        assert "its end is not recorded" in catalog.job_logs(job.id)[-1].message


def context_on(tmp_path: Path, catalog_url: str | None = None):
    from safehold.config import load_config_text
    from safehold.engine.context import Context

    text = f"repository:\n  url: {tmp_path / 'repo'}\nstate_dir: {tmp_path / 'ctx-state'}\ntargets: []\n"
    if catalog_url:
        text += f"catalog: {{url: '{catalog_url}'}}\n"
    return Context(load_config_text(text, tmp_path / "targets.yml"))


def test_context_jobs_takes_the_light_recorder_only_for_a_current_sqlite_catalog(tmp_path: Path) -> None:
    first = context_on(tmp_path)
    try:
        assert isinstance(first.jobs, Catalog)  # no catalog yet: the catalog creates and migrates it
    finally:
        first.close()
    second = context_on(tmp_path)
    try:
        assert isinstance(second.jobs, SqliteJobs)
        with second.jobs.job("copy") as job:
            job.log("light")
        second.catalog  # opened now: from here on the catalog records
        assert isinstance(second.jobs, Catalog)
        assert second.catalog.get_job(job.id).status == "succeeded"
    finally:
        second.close()


@pytest.mark.skipif(not os.environ.get("SAFEHOLD_TEST_POSTGRES_URL"),
                    reason="set SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://... to run against PostgreSQL")
def test_context_jobs_on_postgresql_is_the_catalog(tmp_path: Path) -> None:
    """PostgreSQL catalogs always go through SQLAlchemy (in a database of this test's own)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(os.environ["SAFEHOLD_TEST_POSTGRES_URL"])
    name = f"safehold_light_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        for _ in range(2):  # created, then current: still the catalog
            context = context_on(tmp_path, url)
            try:
                assert isinstance(context.jobs, Catalog)
                with context.jobs.job("copy") as job:
                    pass
                assert context.catalog.get_job(job.id).status == "succeeded"
            finally:
                context.close()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_a_file_that_is_no_catalog_is_left_to_the_catalog(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a SQLite database" * 100)
    assert SqliteJobs.open(f"sqlite:///{junk}") is None


def test_progress_from_many_threads_is_recorded_as_by_the_catalog(url: str) -> None:
    """A backup's or a restore's progress arrives from its worker threads: the recorder serializes
    its transactions (two on one sqlite3 connection would nest: 'cannot start a transaction within
    a transaction'), and job_state reads what the fence reads."""
    from concurrent.futures import ThreadPoolExecutor

    light = SqliteJobs.open(url)
    assert light is not None
    try:
        job_id = light.start_job("backup", "web")

        def work(number: int) -> None:
            for step in range(25):
                light.update_job(job_id, bytes_read=number * 100 + step)
                light.log(job_id, f"thread {number} step {step}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, range(4)))
        assert light.job_state(job_id) == ("running", None)
        assert light.finish_job(job_id, "failed", error="boom", error_type="ValueError")
        assert light.job_state(job_id) == ("failed", "boom")
        with pytest.raises(JobNotFound):
            light.job_state(4242)
    finally:
        light.close()
    with Catalog.open(url) as catalog:
        assert len(catalog.job_logs(job_id)) == 100
        assert catalog.job_state(job_id) == ("failed", "boom")
