"""The scheduler on a fake clock, running real jobs (backups, restore tests, prune) against a real
repository and SQLite catalog: jitter, the global and per-host limits, one job per target,
retries with backoff, overdue runs after downtime, and recovery of jobs left running."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from control_support import START, FakeClock, ManualExecutor, files_target, make_context

from safehold.engine.jobs import submit_job
from safehold.scheduler import Scheduler, ThreadExecutor

UTC = dt.UTC


def quiet(**settings):
    """Scheduler settings without maintenance jobs and with a jitter of at most one second."""
    return {"jitter": "1s", "prune_schedule": None, "check_schedule": None, **settings}


def scheduler_for(context, clock, executor, **options) -> Scheduler:
    return Scheduler(context, clock=clock, executor=executor, timezone=UTC, jitter=dt.timedelta(0), **options)


def statuses(context) -> Counter:
    return Counter(job.status for job in context.catalog.list_jobs(limit=None))


def test_jitter_spreads_a_hundred_targets_due_together(tmp_path: Path, clock: FakeClock,
                                                       executor: ManualExecutor) -> None:
    targets = [files_target(tmp_path, f"web-{index:03d}", schedule="0 * * * *") for index in range(100)]
    context = make_context(tmp_path / "ws", targets, quiet(jitter="5m", max_concurrent=100, max_per_host=100),
                           clock, init=False)
    clock.set(dt.datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC))
    for target in targets:  # the 10:00 slot is done
        context.catalog.finish_job(context.catalog.start_job("backup", target["name"]), "succeeded")
    scheduler = Scheduler(context, clock=clock, executor=executor, timezone=UTC)
    clock.set(dt.datetime(2026, 3, 2, 10, 59, 50, tzinfo=UTC))
    assert scheduler.tick().queued == []
    queued_at: dict[int, dt.datetime] = {}
    for _ in range(34):
        now = clock.advance(seconds=10)
        for job_id in scheduler.tick(now).queued:
            queued_at[job_id] = now
    # Every target ran once, within the five-minute jitter window after 11:00...
    assert len(queued_at) == 100
    slot = dt.datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    assert all(slot <= when <= slot + dt.timedelta(minutes=5, seconds=10) for when in queued_at.values())
    # ...spread over it: no ten-second step starts more than a tenth of them.
    per_step = Counter(queued_at.values())
    assert max(per_step.values()) <= 10, per_step
    assert len(per_step) >= 20


def test_global_limit_holds_and_queued_jobs_wait(tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    targets = [files_target(tmp_path, f"t{index}") for index in range(5)]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=2, max_per_host=5), clock)
    scheduler = scheduler_for(context, clock, executor)
    report = scheduler.tick()
    assert len(report.queued) == 5 and len(report.dispatched) == 2
    assert scheduler.tick(clock.advance(seconds=5)).dispatched == []
    finished = 0
    while executor.pending:
        running = [job for job in context.catalog.list_jobs(status="running", limit=None)]
        assert len(running) <= 2
        executor.run_next()
        finished += 1
        scheduler.tick(clock.advance(seconds=5))
        assert len(scheduler.running_jobs()) <= 2
    assert finished == 5
    assert statuses(context)["succeeded"] >= 6  # init + five backups (+ forget jobs when retention is set)
    assert not context.catalog.list_jobs(status=("queued", "running"), limit=None)


def test_per_host_limit(tmp_path: Path, clock: FakeClock, executor: ManualExecutor,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    targets = [files_target(tmp_path, name) for name in ("a1", "a2", "b1", "b2")]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=4, max_per_host=1), clock)
    scheduler = scheduler_for(context, clock, executor)
    # Local sources all read this host: one at a time.
    assert len(scheduler.tick().dispatched) == 1
    executor.run_all()
    # Remote sources (ssh, VMs: their 'host') count per host. Only local source types ship
    # in this release, so the mapping is given here; the rule under test is the limit.
    monkeypatch.setattr(scheduler, "_host", lambda name, hosts: None if name is None else f"host-{name[0]}")
    report = scheduler.tick(clock.advance(minutes=8))
    # a2, b1 and b2 are still queued; a1 is due again. One per host starts: a2 and b1.
    assert [context.catalog.get_job(job_id).target for job_id in report.queued] == ["a1"]
    assert [context.catalog.get_job(job_id).target for job_id in report.dispatched] == ["a2", "b1"]


def test_never_two_jobs_of_one_target(tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    targets = [files_target(tmp_path, "web", restore_test={"every": "1d"})]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=4, max_per_host=4), clock)
    scheduler = scheduler_for(context, clock, executor)
    first = submit_job(context, "backup", "web")
    second = submit_job(context, "restore-test", "web")
    report = scheduler.tick()
    assert report.queued == []  # the due backup is not queued beside the API's
    assert report.dispatched == [first]
    assert scheduler.tick(clock.advance(seconds=5)).dispatched == []
    executor.run_next()
    assert scheduler.tick(clock.advance(seconds=5)).dispatched == [second]
    executor.run_next()
    assert context.catalog.get_job(second).status == "succeeded"


def test_failed_backup_is_retried_with_backoff_then_waits_for_its_next_run(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    target = files_target(tmp_path, "web")
    context = make_context(tmp_path / "ws", [target], quiet(retries=2, retry_backoff="1m"), clock)
    (Path(target["source"]["paths"][0]) / "hostname").unlink()
    Path(target["source"]["paths"][0]).rmdir()  # the source is gone: every backup fails
    scheduler = scheduler_for(context, clock, executor)
    attempts: list[tuple[float, int]] = []

    def step(seconds: float) -> None:
        report = scheduler.tick(clock.advance(seconds=seconds))
        for job_id in report.queued:
            job = context.catalog.get_job(job_id)
            attempts.append(((clock.now - START).total_seconds(), job.details["attempt"]))
        executor.run_all()

    step(0)
    for _ in range(60 * 11 // 5):  # eleven minutes in five-second steps
        step(5)
    # attempt 1 at once, retry 1 a minute after it failed, retry 2 two minutes after that,
    # then nothing until the next regular run, half the tier-1 RPO (7.5 min) after the last attempt.
    assert attempts == [(0, 1), (60, 2), (180, 3), (630, 1)]
    failed = context.catalog.list_jobs(kind="backup", status="failed", limit=None)
    assert len(failed) == 4 and all(job.error_type == "SourceError" for job in failed)


def test_overdue_cron_target_runs_once_after_downtime(tmp_path: Path, clock: FakeClock,
                                                      executor: ManualExecutor) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web", schedule="0 * * * *")], quiet(), clock)
    clock.set(dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC))
    job_id = context.catalog.start_job("backup", "web")
    context.catalog.finish_job(job_id, "succeeded")
    # Down from 00:00 to 10:30: ten hourly slots missed.
    clock.set(dt.datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    scheduler = scheduler_for(context, clock, executor)
    queued = scheduler.tick().queued
    executor.run_all()
    for _ in range(29):
        queued += scheduler.tick(clock.advance(minutes=1)).queued
        executor.run_all()
    assert len(queued) == 1  # once, not once per missed slot
    assert clock.now == dt.datetime(2026, 3, 2, 10, 59, tzinfo=UTC)
    assert len(scheduler.tick(clock.advance(minutes=1)).queued) == 1  # the 11:00 slot


def test_restore_test_is_scheduled_after_the_first_backup(tmp_path: Path, clock: FakeClock,
                                                          executor: ManualExecutor) -> None:
    target = files_target(tmp_path, "web", restore_test={"every": "1d", "health_check": {
        "type": "file_exists", "path": "web/hostname"}})
    context = make_context(tmp_path / "ws", [target], quiet(), clock)
    scheduler = scheduler_for(context, clock, executor)
    kinds = []
    for _ in range(3):
        for job_id in scheduler.tick(clock.advance(seconds=5)).queued:
            kinds.append(context.catalog.get_job(job_id).kind)
        executor.run_all()
    assert kinds == ["backup", "restore-test"]
    test = context.catalog.list_jobs(kind="restore-test", limit=1)[0]
    assert test.status == "succeeded", test.error
    assert test.details["passed"] is True and test.details["rto_met"] is True
    assert 0 < test.details["art_seconds"] < 3600


def test_prune_and_check_run_on_their_schedule_and_prune_runs_alone(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    targets = [files_target(tmp_path, "web")]
    settings = quiet(prune_schedule="0 3 * * *", check_schedule="0 4 * * *", check_read_data_percent=100,
                     max_concurrent=4)
    context = make_context(tmp_path / "ws", targets, settings, clock)
    clock.set(dt.datetime(2026, 3, 2, 2, 59, tzinfo=UTC))
    scheduler = scheduler_for(context, clock, executor)
    # 02:59: the newest prune and check slots (the day before) never ran: both are overdue.
    first = scheduler.tick()
    kinds = {context.catalog.get_job(job_id).kind: job_id for job_id in first.queued}
    assert set(kinds) == {"backup", "prune", "check"}
    # The backup was queued first and runs; the prune waits for a quiet repository and
    # nothing is started past it.
    assert first.dispatched == [kinds["backup"]]
    executor.run_all()
    assert scheduler.tick(clock.advance(seconds=5)).dispatched == [kinds["prune"]]
    assert scheduler.tick(clock.advance(seconds=5)).dispatched == []  # the prune runs alone
    executor.run_all()
    assert scheduler.tick(clock.advance(seconds=5)).dispatched == [kinds["check"]]
    executor.run_all()
    check = context.catalog.get_job(kinds["check"])
    assert check.status == "succeeded" and check.details["read_data_percent"] == 100
    assert check.bytes_read > 0
    # 03:00 is the next prune slot.
    clock.set(dt.datetime(2026, 3, 2, 3, 0, tzinfo=UTC))
    assert [context.catalog.get_job(j).kind for j in scheduler.tick().queued] == ["prune"]


#: An S3 repository with Object Lock, as far as the scheduler sees it: it only queues here, and the
#: maintenance jobs themselves run against moto in tests/aws/test_object_lock_jobs.py.
LOCKED_REPOSITORY = {"url": "s3://backups/safehold", "region": "us-east-1",
                     "object_lock": {"mode": "COMPLIANCE", "days": 30}}


def finish_dispatched(context, executor: ManualExecutor) -> list[int]:
    """End every dispatched job as succeeded without running it (no S3 here); returns their ids."""
    finished = []
    while executor.pending:
        future, _, (job_id,) = executor.pending.pop(0)
        assert context.catalog.claim_job(job_id)
        context.catalog.finish_job(job_id, "succeeded")
        future.set_result(None)
        finished.append(job_id)
    return finished


def test_maintenance_is_queued_daily_beside_other_jobs_with_object_lock(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    context = make_context(tmp_path / "ws", [], quiet(), clock, init=False, repository=LOCKED_REPOSITORY)
    assert context.config.scheduler.maintenance_schedule == "30 2 * * *"  # the default
    clock.set(dt.datetime(2026, 3, 2, 2, 29, tzinfo=UTC))
    scheduler = scheduler_for(context, clock, executor)
    # Yesterday's 02:30 slot never ran: overdue, queued once, as a repository-wide job.
    first = scheduler.tick()
    [job_id] = first.queued
    job = context.catalog.get_job(job_id)
    assert (job.kind, job.target, job.details["trigger"]) == ("maintenance", None, "scheduler")
    assert first.dispatched == [job_id]
    assert scheduler.tick(clock.advance(seconds=30)).queued == []  # running: not queued twice
    finish_dispatched(context, executor)
    assert scheduler.tick(clock.advance(seconds=20)).queued == []  # 02:29:50: yesterday's slot is done
    # 02:30 is today's slot. It is no barrier: a check queued meanwhile starts in the same tick.
    check = submit_job(context, "check", None, {"read_data_percent": 1})
    report = scheduler.tick(clock.set(dt.datetime(2026, 3, 2, 2, 30, tzinfo=UTC)))
    [today] = report.queued
    assert context.catalog.get_job(today).kind == "maintenance"
    assert sorted(report.dispatched) == sorted([check, today])
    finish_dispatched(context, executor)
    # Then nothing until tomorrow's 02:30.
    assert scheduler.tick(clock.set(dt.datetime(2026, 3, 3, 2, 29, 59, tzinfo=UTC))).queued == []
    [tomorrow] = scheduler.tick(clock.set(dt.datetime(2026, 3, 3, 2, 30, tzinfo=UTC))).queued
    assert context.catalog.get_job(tomorrow).kind == "maintenance"


@pytest.mark.parametrize(
    ("repository", "schedule"),
    [(None, "30 2 * * *"), (LOCKED_REPOSITORY, None), ({"url": "s3://backups/safehold"}, "30 2 * * *")],
    ids=["local", "turned-off", "s3-without-object-lock"],
)
def test_maintenance_is_not_queued_without_object_lock_or_schedule(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor, repository, schedule) -> None:
    context = make_context(tmp_path / "ws", [], quiet(maintenance_schedule=schedule, check_schedule="0 4 * * *"),
                           clock, init=False, repository=repository)
    clock.set(dt.datetime(2026, 3, 2, 2, 29, tzinfo=UTC))
    scheduler = scheduler_for(context, clock, executor)
    queued = []
    for when in (dt.datetime(2026, 3, 2, 2, 29, tzinfo=UTC), dt.datetime(2026, 3, 3, 2, 31, tzinfo=UTC)):
        queued += scheduler.tick(clock.set(when)).queued
        finish_dispatched(context, executor)
    # The overdue check shows the scheduler did queue repository jobs, just no maintenance.
    assert [context.catalog.get_job(job_id).kind for job_id in queued] == ["check", "check"]


def test_alive_follows_the_background_loop(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ws", [], quiet(), init=False)
    scheduler = Scheduler(context, poll_interval=0.05)
    assert scheduler.alive is False  # not started
    scheduler.start()
    try:
        assert scheduler.alive is True
    finally:
        scheduler.stop(timeout=5)
    assert scheduler.alive is False


def test_restart_marks_a_job_left_running_by_a_dead_process_interrupted(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web")], quiet(), clock)
    job_id = submit_job(context, "backup", "web", trigger="scheduler")
    assert context.catalog.claim_job(job_id)
    dead = subprocess.Popen(["true"])
    dead.wait()
    context.catalog._update_job(job_id, {"pid": dead.pid})  # as if that process had claimed it, then died
    scheduler = scheduler_for(context, clock, executor)
    scheduler.recover()
    job = context.catalog.get_job(job_id)
    assert job.status == "interrupted" and job.error_type == "ProcessGone"
    # The target is free again and the interrupted run is retried after the backoff (default 1m).
    assert scheduler.tick().queued == []
    retry = scheduler.tick(clock.advance(minutes=1)).dispatched
    assert len(retry) == 1 and context.catalog.get_job(retry[0]).details["attempt"] == 2
    executor.run_all()
    assert context.catalog.get_job(retry[0]).status == "succeeded"


def test_stop_records_a_job_that_does_not_finish_as_interrupted_and_removes_its_sandbox(tmp_path: Path) -> None:
    marker = tmp_path / "check-started"
    target = files_target(tmp_path, "web", restore_test={"every": "1d", "health_check": {
        "type": "command", "run": f"touch {marker} && sleep 60"}})
    context = make_context(tmp_path / "ws", [target], quiet(), FakeClock(dt.datetime.now(UTC)))
    from safehold.catalog import Catalog

    context.close()
    context._catalog = Catalog.open(context.config.catalog_url)  # real time from here on
    submit_job(context, "backup", "web")
    scheduler = Scheduler(context, executor=ThreadExecutor(2), poll_interval=0.05, jitter=dt.timedelta(0))
    scheduler.start()
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, context.catalog.list_jobs()
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        interrupted = scheduler.stop(timeout=0.5)
    assert time.monotonic() - started < 10
    test = context.catalog.list_jobs(kind="restore-test", limit=1)[0]
    assert test.status == "interrupted" and interrupted == [test.id]
    assert not context.catalog.list_jobs(status="running", limit=None)
    sandboxes = Path(context.config.state_dir) / "restore-tests"
    assert list(sandboxes.iterdir()) == []
    leftover = subprocess.run(["pgrep", "-f", f"touch {marker}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the health check's processes outlived the stop"


def test_thread_executor_runs_calls_and_reports_errors() -> None:
    pool = ThreadExecutor(2)
    ok = pool.submit(lambda value: value * 2, 21)
    failing = pool.submit(lambda: 1 / 0)
    assert ok.result(timeout=5) == 42
    assert isinstance(failing.exception(timeout=5), ZeroDivisionError)
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_manual_executor_fake_runs_only_when_told() -> None:
    fake = ManualExecutor()
    calls = []
    future = fake.submit(calls.append, 1)
    assert calls == [] and not future.done()
    fake.run_next()
    assert calls == [1] and future.done() and future.result() is None


def test_stop_records_a_job_it_cannot_end_as_interrupted(tmp_path: Path) -> None:
    import threading

    from safehold.catalog import Catalog

    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web")], quiet(), init=False)
    context.close()
    context._catalog = Catalog.open(context.config.catalog_url)
    release = threading.Event()
    claimed = threading.Event()
    scheduler = Scheduler(context, executor=ThreadExecutor(1), poll_interval=0.05, jitter=dt.timedelta(0))

    def stuck(job_id: int) -> None:  # a job that ignores the stop, like a long backup
        context.catalog.claim_job(job_id)
        claimed.set()
        release.wait(30)

    scheduler._run = stuck  # type: ignore[method-assign]
    job_id = submit_job(context, "backup", "web")
    scheduler.start()
    try:
        assert claimed.wait(30)
        assert scheduler.stop(timeout=0.2) == [job_id]
    finally:
        release.set()
    job = context.catalog.get_job(job_id)
    assert job.status == "interrupted" and job.error_type == "Interrupted"
    assert "stopped before the job finished (waited 0.2s)" in job.error


def test_fair_share_keeps_a_slot_from_large_targets(tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    """Two targets whose backups take hours cannot hold both slots while the small ones wait."""
    targets = [files_target(tmp_path, name) for name in ("huge1", "huge2", "small1", "small2")]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=2, max_per_host=5, large_after="30m"),
                           clock)
    for name in ("huge1", "huge2"):  # their last backups took two hours
        job_id = context.catalog.start_job("backup", name)
        clock.advance(hours=2)
        context.catalog.finish_job(job_id, "succeeded")
    clock.advance(days=1)
    scheduler = scheduler_for(context, clock, executor)
    report = scheduler.tick()
    started = [context.catalog.get_job(job_id).target for job_id in report.dispatched]
    assert len(report.queued) == 4
    assert started == ["huge1", "small1"], started  # queued first, huge2 waits for its share
    # Once huge1 is done its share goes to huge2 (queued before small2): a share, not a ban.
    executor.run_next()
    assert context.catalog.latest_jobs("backup", "succeeded")["huge1"].finished_at == clock.now
    started = [context.catalog.get_job(job_id).target for job_id in scheduler.tick(clock.advance(seconds=5)).dispatched]
    assert started == ["huge2"], started


def test_fair_share_off(tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    targets = [files_target(tmp_path, name) for name in ("huge1", "huge2", "small1")]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=2, max_per_host=5, large_after=None), clock)
    for name in ("huge1", "huge2"):
        job_id = context.catalog.start_job("backup", name)
        clock.advance(hours=2)
        context.catalog.finish_job(job_id, "succeeded")
    clock.advance(days=1)
    report = scheduler_for(context, clock, executor).tick()
    assert [context.catalog.get_job(job_id).target for job_id in report.dispatched] == ["huge1", "huge2"]


def test_drill_steps_are_dispatched_by_their_drill_not_by_the_scheduler(tmp_path: Path, clock: FakeClock,
                                                                          executor: ManualExecutor) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path, "web")], quiet(max_concurrent=2), clock=clock,
                           init=False)
    drill = context.catalog.start_job("drill", None, {"drill": "site"})
    step = context.catalog.queue_job("drill-step", "web", {"params": {}, "drill_job": drill})
    scheduler = scheduler_for(context, clock, executor)
    report = scheduler.tick()
    assert step not in report.dispatched and context.catalog.get_job(step).status == "queued"
    # Its drill was killed before a worker took the step: cancelled, or the target's backups would wait forever.
    context.catalog.interrupt_job(drill, "killed")
    scheduler.tick()
    assert context.catalog.get_job(step).status == "cancelled"
    assert "its drill (job 1) ended before a worker took it" in context.catalog.get_job(step).error


def test_an_idle_tick_reads_only_the_catalogs_change_marker(tmp_path: Path, clock: FakeClock,
                                                           executor: ManualExecutor) -> None:
    """Scheduler overhead at scale: while nothing changed and nothing came due, a tick neither
    re-reads every target's jobs nor looks at the queue; a change or a due time ends the idling."""
    from sqlalchemy import event

    targets = [files_target(tmp_path, f"t{index:02d}") for index in range(20)] + [
        files_target(tmp_path, "cron", schedule="0 * * * *")]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=30, max_per_host=30), clock, init=False)
    for target in targets:
        context.catalog.finish_job(context.catalog.start_job("backup", target["name"]), "succeeded")
    scheduler = scheduler_for(context, clock, executor)
    assert scheduler.tick().queued == [] and scheduler.full_passes == 1
    statements: list[str] = []

    def record(connection, cursor, statement, *args) -> None:
        statements.append(statement)

    per_tick: list[list[str]] = []
    event.listen(context.catalog.engine, "before_cursor_execute", record)
    try:
        for _ in range(12):  # a minute of 5 s ticks, nothing due (the interval is half the RPO)
            statements.clear()
            assert scheduler.tick(clock.advance(seconds=5)).queued == []
            per_tick.append([statement.split()[0].upper() for statement in statements if statement != "BEGIN"])
    finally:
        event.remove(context.catalog.engine, "before_cursor_execute", record)
    assert scheduler.full_passes == 1 + 1  # the safety net: one full pass a minute (IDLE_RECHECK)
    # Every other tick: the change marker alone (the newest job, the oldest active one: none, the
    # snapshot cache), nothing written; a full pass reads more (every target's newest jobs, the queue).
    idle = [statements for statements in per_tick if len(statements) <= 3]
    assert len(idle) == 11 and all(statements == ["SELECT"] * 3 for statements in idle), per_tick
    assert max(len(statements) for statements in per_tick) > 3

    # A job queued by someone else (the API) is dispatched at the next tick.
    from safehold.engine.jobs import submit_job

    job_id = submit_job(context, "backup", "t03", {}, trigger="api")
    report = scheduler.tick(clock.advance(seconds=5))
    assert report.dispatched == [job_id] and report.queued == []
    executor.run_next()
    # And a due time ends the idling without any change: a target's next interval.
    passes = scheduler.full_passes
    due = [scheduler.tick(clock.advance(minutes=1)).queued for _ in range(8)]
    assert scheduler.full_passes > passes and any(due)


def test_a_pass_after_a_change_reads_only_the_jobs_that_changed(tmp_path: Path, clock: FakeClock,
                                                                executor: ManualExecutor,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """In a steady state at scale the catalog changes every tick; a pass then updates each target's
    newest jobs from the changed rows instead of reading every target's again, and ends up with
    what a full reading gives."""
    from safehold.catalog.store import GOOD_BACKUP_STATUSES

    targets = [files_target(tmp_path, f"t{index}") for index in range(6)]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=1, max_per_host=1), clock, init=False)
    catalog = context.catalog
    for target in targets[:4]:
        catalog.finish_job(catalog.start_job("backup", target["name"]), "succeeded")
    running = catalog.start_job("backup", "t4")  # another process's backup, under way
    scheduler = scheduler_for(context, clock, executor)
    scheduler.tick()  # queues t5 (never backed up) and dispatches it
    full_reading = catalog.latest_jobs
    monkeypatch.setattr(catalog, "latest_jobs", lambda *a, **k: pytest.fail("read every target's jobs"))

    catalog.finish_job(running, "failed")  # left the tail: a status seen only as gone from it
    executor.run_next()  # t5's backup ran and succeeded
    catalog.finish_job(catalog.start_job("restore-test", "t0"), "succeeded")
    catalog.finish_job(catalog.start_job("backup", "t1"), "partial")
    scheduler.tick(clock.advance(seconds=5))
    assert scheduler._latest.marker is not None and scheduler._latest.full_reads == 1
    last_backups, good_backups, last_tests = (scheduler._latest[name] for name in ("backup", "good", "restore-test"))
    monkeypatch.setattr(catalog, "latest_jobs", full_reading)

    def ids(found: dict) -> dict:
        return {target: (job.id, job.status) for target, job in found.items()}

    assert ids(last_backups) == ids(catalog.latest_jobs("backup"))
    assert ids(good_backups) == ids(catalog.latest_jobs("backup", status=GOOD_BACKUP_STATUSES))
    assert ids(last_tests) == ids(catalog.latest_jobs("restore-test"))
    assert last_backups["t4"].status == "failed" and good_backups["t1"].status == "partial"
    assert last_backups["t5"].status not in ("queued", "running")  # queued, dispatched and run between two ticks


def _run_one(executor: ManualExecutor, index: int) -> None:
    """Run the ``index``-th held call (not necessarily the first), as a worker finishing it would."""
    future, function, args = executor.pending.pop(index)
    future.set_result(function(*args))


def _wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_freed_slot_is_filled_before_the_other_jobs_end_in_a_one_shot_run(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    """``scheduler run --once``: when one of two running jobs ends, the third starts at once; it
    used to wait until every dispatched job had ended (a long backup held the other slot idle)."""
    import threading

    targets = [files_target(tmp_path, name) for name in ("a", "b", "c")]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=2, max_per_host=5), clock)
    scheduler = scheduler_for(context, clock, executor)
    run = threading.Thread(target=scheduler.run_until_idle, kwargs={"timeout": 30}, daemon=True)
    run.start()
    _wait_for(lambda: len(executor.pending) == 2, 30, "two jobs dispatched")
    _run_one(executor, 1)  # the second ends; the first (a long backup, say) still runs
    _wait_for(lambda: len(executor.pending) == 2, 10, "the third job waited for the first to end too")
    while run.is_alive() or executor.pending:
        if executor.pending:
            executor.run_next()
        else:
            run.join(0.05)
    assert statuses(context)["succeeded"] >= 4  # init + three backups


def test_the_background_loop_ticks_when_a_job_ends_not_at_its_next_poll(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    """``safehold serve``: a job's end wakes the loop, so a freed slot is filled in milliseconds,
    not ``poll_interval`` (5 s by default) later: with short jobs that poll capped throughput
    at max_concurrent jobs per poll."""
    targets = [files_target(tmp_path, name) for name in ("a", "b", "c")]
    context = make_context(tmp_path / "ws", targets, quiet(max_concurrent=2, max_per_host=5), clock)
    scheduler = scheduler_for(context, clock, executor, poll_interval=60)
    scheduler.start()
    try:
        _wait_for(lambda: len(executor.pending) == 2, 30, "two jobs dispatched")
        _run_one(executor, 0)
        _wait_for(lambda: len(executor.pending) == 2, 10, "the freed slot waited for the next poll")
        executor.run_all()
    finally:
        scheduler.stop(timeout=5)
    assert statuses(context)["succeeded"] >= 4
