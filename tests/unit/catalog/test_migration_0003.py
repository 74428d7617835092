"""Migration 0003 (jobs (target, kind, id)) on a populated 0002 catalog, and latest_jobs on both databases.

SQLite always; PostgreSQL with SAFEHOLD_TEST_POSTGRES_URL (a database of its own per test, dropped after).
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, insert, text

from safehold.catalog import migrate
from safehold.catalog.models import Base, Job
from safehold.catalog.store import STATUSES, Catalog

UTC = dt.UTC


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path, new_pg_database) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    return new_pg_database("sh_mig")


def job_rows(count: int, seed: int = 3) -> list[dict]:
    generator = random.Random(seed)
    start = dt.datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for number in range(count):
        kind = generator.choice(["backup", "backup", "restore-test", "check"])
        target = None if kind == "check" else generator.choice(["a", "b", "c", "d-only-backups"])
        if kind == "restore-test" and target == "d-only-backups":
            kind = "backup"
        when = start + dt.timedelta(minutes=number)
        rows.append({"kind": kind, "target": target, "status": generator.choice(STATUSES), "created_at": when,
                     "started_at": when, "finished_at": when, "bytes_read": 0, "bytes_added": 0, "files": 0})
    return rows


def reference_latest(rows: list[dict], ids: list[int], kind: str, statuses: tuple[str, ...] | None) -> dict:
    newest: dict = {}
    for row, job_id in zip(rows, ids):
        if row["kind"] == kind and (statuses is None or row["status"] in statuses):
            newest[row["target"]] = max(newest.get(row["target"], 0), job_id)
    return newest


def fill(catalog: Catalog, rows: list[dict]) -> list[int]:
    with catalog.engine.begin() as connection:
        connection.execute(insert(Job), rows)
        return list(connection.execute(text("SELECT id FROM jobs ORDER BY id")).scalars())


def test_a_populated_0002_catalog_is_migrated_by_the_normal_open_path(empty_url: str) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(empty_url)
    with engine.begin() as connection:  # a catalog as 0002 left it, with jobs in it
        command.upgrade(migrate.alembic_config(connection=connection), "0002")
    rows = job_rows(400)
    with engine.begin() as connection:
        connection.execute(insert(Job), rows)
        before = connection.execute(text("SELECT count(*) FROM jobs")).scalar()
    assert {index["name"] for index in inspect(engine).get_indexes("jobs")} == {"ix_jobs_target_kind",
                                                                               "ix_jobs_status"}
    engine.dispose()

    with Catalog.open(empty_url) as catalog:  # what every command and the server do
        indexes = {index["name"]: index["column_names"] for index in inspect(catalog.engine).get_indexes("jobs")}
        assert indexes == {"ix_jobs_target_kind_id": ["target", "kind", "id"], "ix_jobs_status": ["status"]}
        with catalog.engine.connect() as connection:
            assert migrate.current_revision(connection) == "0003" == migrate.HEAD_REVISION
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        ids = [job.id for job in sorted(catalog.list_jobs(limit=None), key=lambda job: job.id)]
        assert len(ids) == before == 400
        for kind in ("backup", "restore-test", "check"):
            expected = reference_latest(rows, ids, kind, ("succeeded", "partial"))
            assert {target: job.id for target, job in catalog.latest_jobs(kind, ("succeeded", "partial")).items()} \
                == expected


@pytest.mark.parametrize("statuses", [None, ("succeeded",), ("succeeded", "partial", "failed", "interrupted"),
                                      ("cancelled",)])
def test_latest_jobs_is_the_newest_row_of_each_target(empty_url: str, statuses: tuple[str, ...] | None) -> None:
    """The skip scan (SQLite) and the recursive walk with LATERAL probes (PostgreSQL) answer like a
    plain reading of every row: targets with no job of the kind, repository-wide jobs (no target)."""
    rows = job_rows(600, seed=len(statuses or ()))
    with Catalog.open(empty_url) as catalog:
        ids = fill(catalog, rows)
        for kind in ("backup", "restore-test", "check", "never-ran"):
            got = catalog.latest_jobs(kind, statuses)
            assert {target: job.id for target, job in got.items()} == reference_latest(rows, ids, kind, statuses)
            assert all(job.kind == kind and job.target == target for target, job in got.items())
        assert "d-only-backups" not in catalog.latest_jobs("restore-test")


def test_the_change_marker_moves_with_every_change_a_status_can_see(empty_url: str) -> None:
    with Catalog.open(empty_url) as catalog:
        markers = [catalog.change_marker()]

        def changed() -> bool:
            markers.append(catalog.change_marker())
            return markers[-1] != markers[-2]

        queued = catalog.queue_job("backup", "a")
        assert changed()
        assert not changed()  # nothing happened
        running = catalog.start_job("backup", "b")
        assert changed()
        catalog.update_job(running, bytes_read=10)  # progress is not a change of state
        assert not changed()
        assert catalog.claim_job(queued) and changed()  # queued -> running: same ids, another status
        catalog.finish_job(running, "succeeded")
        assert changed()
        restore = catalog.start_job("restore")
        assert changed()
        catalog.update_job(restore, target="a")  # a restore learns its target
        assert changed()
        catalog.finish_job(queued, "failed")
        catalog.finish_job(restore, "succeeded")
        assert changed()
        catalog.replace_snapshots("repo", [{"id": "s1", "time": dt.datetime(2026, 12, 1, tzinfo=UTC), "target": "a"}])
        assert changed()
        assert not changed()


def test_a_long_tail_of_jobs_is_summed_and_still_changes_the_marker(empty_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A job left running forever (its host gone) must not make every marker read every later job."""
    from safehold.catalog import store

    monkeypatch.setattr(store, "MARKER_TAIL_ROWS", 3)
    with Catalog.open(empty_url) as catalog:
        catalog.start_job("backup", "lost-host")  # never finished
        jobs = [catalog.queue_job("backup", f"t{index}") for index in range(5)]
        marker = catalog.change_marker()
        assert marker[1][0] == "sums"
        for job_id in jobs:
            assert catalog.claim_job(job_id)
            moved = catalog.change_marker()
            assert moved != marker
            marker = moved
            catalog.finish_job(job_id, "succeeded")
            moved = catalog.change_marker()
            assert moved != marker and catalog.jobs_changed_between(marker, moved) is None
            marker = moved
        restore = catalog.start_job("restore")
        marker = catalog.change_marker()
        catalog.update_job(restore, target="t1")
        assert catalog.change_marker() != marker
