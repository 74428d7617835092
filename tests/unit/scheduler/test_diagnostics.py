"""The worker's opt-in measurements (SAFEHOLD_WORKER_PROFILE / SAFEHOLD_WORKER_SQL_TIMES) used by bench/scale.py."""

from __future__ import annotations

import json
import pstats
import threading
from pathlib import Path

from sqlalchemy import create_engine, text

from safehold.scheduler.diagnostics import PROFILE_ENV, SQL_TIMES_ENV, WorkerDiagnostics, statement_group


def test_statements_are_grouped_by_verb_and_table() -> None:
    assert statement_group('UPDATE jobs SET status=%(status)s WHERE jobs.id = %(id)s') == "UPDATE jobs"
    assert statement_group("INSERT INTO job_logs (job_id, message) VALUES (1, 'x')") == "INSERT job_logs"
    assert statement_group("SELECT jobs.id, jobs.kind FROM jobs WHERE jobs.id = 1") == "SELECT jobs"
    assert statement_group('SELECT count(*) FROM "public".snapshots') == "SELECT snapshots"
    assert statement_group("SELECT 1") == "SELECT"
    assert statement_group("") == "?"


def test_nothing_is_measured_or_written_unless_asked(tmp_path: Path) -> None:
    diagnostics = WorkerDiagnostics(environ={})
    assert not diagnostics.enabled
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    diagnostics.attach(engine)
    diagnostics.start_profile()
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE jobs (id INTEGER)"))
    diagnostics.write()
    assert list(tmp_path.iterdir()) == [tmp_path / "c.db"]


def test_catalog_statements_are_timed_and_every_thread_is_profiled(tmp_path: Path) -> None:
    times, profile = tmp_path / "sql.json", tmp_path / "worker.prof"
    diagnostics = WorkerDiagnostics(environ={SQL_TIMES_ENV: str(times), PROFILE_ENV: str(profile)})
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    diagnostics.attach(engine)
    diagnostics.start_profile()
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE jobs (id INTEGER, status TEXT)"))
            connection.execute(text("INSERT INTO jobs (id, status) VALUES (1, 'queued')"))

        def job_in_a_thread() -> None:  # jobs run in threads the worker starts later
            with engine.begin() as connection:
                connection.execute(text("UPDATE jobs SET status = 'running' WHERE id = 1"))
            sum(number * number for number in range(20000))
        thread = threading.Thread(target=job_in_a_thread)
        thread.start()
        thread.join()
    finally:
        diagnostics.write()
    recorded = json.loads(times.read_text())
    assert len(recorded["INSERT jobs"]) == 1 and len(recorded["UPDATE jobs"]) == 1
    assert all(value >= 0 for value in recorded["UPDATE jobs"])
    functions = {key[2] for key in pstats.Stats(str(profile)).stats}
    assert "job_in_a_thread" in functions  # a thread started after the profile began
