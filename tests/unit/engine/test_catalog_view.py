"""The read side kept up to date incrementally (engine.catalog_view, StatusCache, MetricsExposition)
gives exactly what a from-scratch computation gives, after any sequence of catalog changes, and a
change costs a few small queries whatever the size of the catalog.

SQLite always; PostgreSQL with SAFEHOLD_TEST_POSTGRES_URL (a database of its own per test, dropped after).
"""

from __future__ import annotations

import datetime as dt
import random
import textwrap
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from sqlalchemy import event, text

from safehold.catalog import Catalog
from safehold.catalog.store import JobRecord
from safehold.config import load_config_text
from safehold.engine.context import Context
from safehold.engine.status import StatusCache, target_statuses
from safehold.server.metrics import MetricsExposition, create_registry

UTC = dt.UTC
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path, new_pg_database) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    return new_pg_database("sh_view")


def config_for(tmp_path: Path, names: list[str]):
    """Targets ``names`` (every other one with restore tests, tiers 1 and 3), a copy and a drill."""
    lines = ["repository: {url: repo, password_env: SAFEHOLD_TEST_VIEW_PASSWORD}", "state_dir: state",
             "tiers: {1: {rpo: 15m, rto: 1h}}", "copies:", "  - {name: offsite, repository: {url: offsite}}",
             "targets:"]
    for index, name in enumerate(names):
        test = ", restore_test: {every: 7d}" if index % 2 == 0 else ""
        lines.append(f"  - {{name: {name}, tier: {1 if index % 3 else 3}, source: {{type: files, paths: [d]}}{test}}}")
    lines += ["drills:", f"  - {{name: site-lost, scenario: on_prem_host_failure, steps: [{{target: {names[0]}}}]}}"]
    return load_config_text("\n".join(lines) + "\n", tmp_path / "targets.yml")


def make(tmp_path: Path, url: str, names: list[str], clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Context:
    monkeypatch.setenv("SAFEHOLD_TEST_VIEW_PASSWORD", "view test password")
    return Context(config_for(tmp_path, names), _catalog=Catalog.open(url, clock=clock))


def step(context: Context, clock: Clock, generator: random.Random, names: list[str]) -> str:
    """One random change of the catalog, as the engine makes them; returns what it did."""
    catalog = context.catalog
    clock.now += dt.timedelta(minutes=generator.randint(1, 30))
    target = generator.choice(names + ["gone"])  # 'gone': a target no longer configured
    active = catalog.list_jobs(status=("queued", "running"), limit=None)
    action = generator.choice(["queue", "start", "finish", "finish", "test", "drill", "copy", "verdict",
                               "snapshots", "prune"])
    if action == "queue":
        catalog.queue_job(generator.choice(["backup", "restore-test"]), target)
    elif action == "start":
        catalog.start_job(generator.choice(["backup", "backup", "copy"]), target)
    elif action == "finish" and active:
        job = generator.choice(active)
        status = generator.choice(["succeeded", "partial", "failed", "interrupted", "cancelled"])
        details = {"skipped": {"count": generator.randint(1, 9)}} if status == "partial" else None
        if job.kind == "restore-test":
            status = generator.choice(["succeeded", "failed", "interrupted"])
            details = {"art_seconds": generator.uniform(10, 5000), "passed": status == "succeeded",
                       "rto_seconds": generator.choice([3600, 86400])}
        elif job.kind == "copy":
            details = {"destination": generator.choice(["offsite", ""]), "bytes_sent": generator.randint(0, 99)}
        elif job.kind == "backup" and status == "succeeded" and generator.random() < 0.3:
            details = {"ransomware": {"suspicious": generator.random() < 0.5, "score": generator.random() * 2}}
        catalog.finish_job(job.id, status, bytes_read=generator.randint(0, 10**6),
                           bytes_added=generator.randint(0, 10**4), details=details)
    elif action == "test":
        status = generator.choice(["succeeded", "failed"])
        catalog.finish_job(catalog.start_job("restore-test", target), status, details={
            "art_seconds": generator.uniform(10, 5000), "passed": status == "succeeded"})
    elif action == "drill":
        steps = [{"target": name, "outcome": generator.choice(["passed", "failed", "skipped"]),
                  "art_seconds": generator.uniform(1, 4000), "rto_seconds": 3600.0}
                 for name in generator.sample(names, 2)]
        passed = generator.random() < 0.5
        catalog.finish_job(catalog.start_job("drill", None), "succeeded" if passed else "failed",
                           details={"drill": "site-lost", "passed": passed, "steps": steps, "duration_seconds": 9})
    elif action == "copy":
        catalog.finish_job(catalog.start_job("copy", target), "succeeded",
                           details={"destination": "offsite", "bytes_sent": generator.randint(0, 10**6)})
    elif action == "verdict":
        catalog.finish_job(catalog.start_job(generator.choice(["mark", "scan"]), target), "succeeded",
                           details={"ransomware": {"suspicious": generator.random() < 0.5, "score": 0.5}})
    elif action == "snapshots":
        catalog.replace_snapshots("repo", [{"id": f"s-{name}-{generator.random()}", "target": name,
                                            "time": clock.now - dt.timedelta(minutes=generator.randint(0, 90))}
                                           for name in generator.sample(names, 3)])
    elif action == "prune":
        catalog.finish_job(catalog.start_job("prune"), generator.choice(["succeeded", "failed"]))
    return action


@pytest.mark.parametrize(("catalog_url", "seed"), [("sqlite", 1), ("sqlite", 2), ("postgresql", 1)],
                         indirect=["catalog_url"])  # one sequence on PostgreSQL: its dialect, not more seeds
def test_incremental_statuses_and_metrics_equal_a_from_scratch_computation(
        tmp_path: Path, catalog_url: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A random sequence of queued, running, finished and failed jobs, restore tests, drills, copies,
    verdicts, snapshot cache changes and configuration changes (a target added, one removed): after
    each, the cached statuses and /metrics text equal target_statuses and a fresh registry's."""
    clock = Clock()
    names = [f"t{index}" for index in range(6)]
    context = make(tmp_path, catalog_url, names, clock, monkeypatch)
    generator = random.Random(seed)
    cache = StatusCache(context, max_age=10**9)
    exposition = MetricsExposition(context, statuses=cache, repository_ttl=10**9)
    config_changes = 0
    try:
        actions = set()
        for number in range(50):
            if number in (20, 35):  # targets.yml edited: a target added, then one removed
                names = names + ["t-new"] if number == 20 else [name for name in names if name != "t2"]
                context.config = config_for(tmp_path, names)
                config_changes += 1
            actions.add(step(context, clock, generator, names))
            if generator.random() < 0.25:
                actions.add(step(context, clock, generator, names))  # two changes between two reads
            now = clock.now + dt.timedelta(minutes=generator.randint(0, 20))
            expected = [status.as_dict() for status in target_statuses(context, now)]
            assert [status.as_dict() for status in cache.statuses(now)] == expected, (number, actions)
            assert cache.as_dicts(now) == expected, number
            fresh = generate_latest(create_registry(context, repository_ttl=10**9))
            assert exposition.render() == fresh, number
        # Followed, not read again: everything was read once at the start and once per configuration change.
        assert cache.view.epoch == 1 + config_changes and exposition._split
        assert {"queue", "start", "finish", "test", "drill", "copy", "verdict", "snapshots"} <= actions
    finally:
        context.catalog.close()


def fill(catalog: Catalog, clock: Clock, names: list[str], jobs: int) -> None:
    generator = random.Random(jobs)
    for _ in range(jobs):
        clock.now += dt.timedelta(seconds=30)
        name = generator.choice(names)
        kind = generator.choice(["backup", "backup", "restore-test"])
        status = generator.choice(["succeeded", "succeeded", "failed"])
        catalog.finish_job(catalog.start_job(kind, name), status,
                           details={"art_seconds": 60.0, "passed": status == "succeeded"}
                           if kind == "restore-test" else None)


def test_a_change_reads_a_few_rows_whatever_the_number_of_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After one backup finished, a status read and a scrape run the same few statements and build
    the same few job records with 60 jobs in the catalog as with 600; the from-scratch computation
    built one record per target and selection, and the ART history's restore tests."""
    built = {"records": 0}
    original = JobRecord.from_row.__func__  # type: ignore[attr-defined]

    def counting(cls, row):
        built["records"] += 1
        return original(cls, row)

    names = [f"t{index}" for index in range(10)]
    costs, redone = {}, {}
    for jobs in (60, 600):
        clock = Clock()
        context = make(tmp_path / str(jobs), f"sqlite:///{tmp_path}/catalog-{jobs}.db", names, clock, monkeypatch)
        fill(context.catalog, clock, names, jobs)
        cache = StatusCache(context)
        exposition = MetricsExposition(context, statuses=cache, repository_ttl=10**9)
        exposition.render()
        cache.statuses()
        context.catalog.finish_job(context.catalog.start_job("backup", "t3"), "succeeded")
        statements: list[str] = []

        def record(connection, cursor, statement, *args) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append(" ".join(statement.split()))

        monkeypatch.setattr(JobRecord, "from_row", classmethod(counting))
        built["records"] = 0
        event.listen(context.catalog.engine, "before_cursor_execute", record)
        text = exposition.render()
        statuses = cache.statuses(clock.now)
        event.remove(context.catalog.engine, "before_cursor_execute", record)
        monkeypatch.undo()
        costs[jobs] = (len(statements), built["records"])
        redone[jobs] = (getattr(exposition, "rendered_targets", None), getattr(cache, "recomputed_targets", None))
        assert text == generate_latest(create_registry(context, repository_ttl=10**9))
        assert [status.as_dict() for status in statuses] == [status.as_dict()
                                                             for status in target_statuses(context, clock.now)]
        context.catalog.close()
    assert costs[60] == costs[600], costs
    # The change marker (3 statements), the changed jobs (1: the one job built), the running jobs' count,
    # the backup totals' tail (the one job), and the marker again for the status read (3).
    statements_count, records = costs[600]
    assert records == 1 and statements_count <= 9, costs
    assert redone == {60: (1, 1), 600: (1, 1)}  # the one target rendered and computed again


def test_deleted_jobs_are_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A newest id that went back (jobs deleted, another catalog) cannot be followed: everything is read again."""
    from safehold.catalog.models import Job

    clock = Clock()
    names = ["t0", "t1"]
    context = make(tmp_path, f"sqlite:///{tmp_path}/catalog.db", names, clock, monkeypatch)
    fill(context.catalog, clock, names, 20)
    cache = StatusCache(context)
    cache.statuses(clock.now)
    with context.catalog.engine.begin() as connection:
        newest = connection.execute(text("SELECT max(id) FROM jobs")).scalar()
        connection.execute(Job.__table__.delete().where(Job.id >= newest - 3))
    assert [status.as_dict() for status in cache.statuses(clock.now)] == [
        status.as_dict() for status in target_statuses(context, clock.now)]
    assert cache.view.epoch == 2
    context.catalog.close()


@pytest.mark.parametrize("where", ["in a request", "in the background"])
def test_the_safety_net_repairs_what_changed_behind_the_marker_and_renders_only_that(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A finished job rewritten in the database (the marker cannot see it) stays as followed until
    ``max_age`` passes; then everything is read again, and only the target that differed is computed
    and rendered again. (The backup totals count each finished backup once, as before: not part of
    the net, so the job's status and times are left alone here.)"""
    clock = Clock()
    names = [f"t{index}" for index in range(5)]
    context = make(tmp_path, f"sqlite:///{tmp_path}/catalog.db", names, clock, monkeypatch)
    fill(context.catalog, clock, names, 40)
    ticks = [0.0]
    cache = StatusCache(context, max_age=60, clock=lambda: ticks[0])
    exposition = MetricsExposition(context, statuses=cache, repository_ttl=10**9)
    exposition.render()
    newest = next(job for job in context.catalog.latest_jobs("backup").values() if job.status == "succeeded")
    with context.catalog.engine.begin() as connection:
        connection.execute(text("UPDATE jobs SET details = :details WHERE id = :id"),
                           {"id": newest.id, "details": '{"ransomware": {"suspicious": true, "score": 1.5}}'})
    assert exposition.render() != generate_latest(create_registry(context, repository_ttl=10**9))  # not seen yet
    if where == "in the background":  # safehold serve's thread: the read outside the lock, requests never
        cache.background = True
        ticks[0] = 61.0
        assert exposition.render() != generate_latest(create_registry(context, repository_ttl=10**9))
        context.catalog.finish_job(context.catalog.start_job("check"), "succeeded")  # followed meanwhile too
        assert cache.verify() == 1
    ticks[0] = 61.0
    assert exposition.render() == generate_latest(create_registry(context, repository_ttl=10**9))
    assert [status.as_dict() for status in cache.statuses(clock.now)] == [
        status.as_dict() for status in target_statuses(context, clock.now)]
    assert cache.differed == 1 and cache.recomputed_targets == 1 and exposition.rendered_targets == 1
    assert cache.view.epoch == 1
    context.catalog.close()
