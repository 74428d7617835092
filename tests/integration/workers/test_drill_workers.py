"""Drills on workers (issue 18): with ``scheduler.executor: procrastinate`` each drill step is a job
that real ``safehold worker`` processes run; the drill collects every step's record into its report.
And a worker that misses its heartbeats but keeps running (SIGSTOP) is fenced: the attempt that
comes back commits no second snapshot and the catalog shows one success.

Each test has its own PostgreSQL database (catalog and queue) and a file repository in tmp.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: the harness is beside us

from worker_harness import ADMIN_URL, PASSWORD, database_fixture, install_fixture  # noqa: E402

pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="needs SAFEHOLD_TEST_POSTGRES_URL (scripts/services.sh start)")
database = pytest.fixture(database_fixture)
install = pytest.fixture(install_fixture)


def _targets(tmp_path: Path, names: list[str], **extra) -> list[dict]:
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "payload").write_text(f"the data of {name}\n")
    return [{"name": name, "tier": 1, "source": {"type": "files", "paths": [name]}, **extra} for name in names]


def _add_drill(site, steps: list[dict], parallel: int = 1) -> None:
    drill = {"name": "site", "scenario": "on_prem_host_failure", "parallel": parallel, "steps": steps}
    with open(site.root / "targets.yml", "a") as file:
        file.write(f"drills:\n  - {json.dumps(drill)}\n")


def _init_and_back_up(site, monkeypatch, back_up: bool = True) -> None:
    """In this process (a CLI run costs seconds on a busy machine): the repository and a snapshot of
    every target, for the drill to restore."""
    from safehold.engine.backup import backup_targets
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    monkeypatch.chdir(site.root)
    context = Context.load(site.root / "targets.yml")
    try:
        init_repository(context)
        assert not back_up or not backup_targets(context, [target.name for target in context.config.targets]).failures
    finally:
        context.close()


def _start_workers(site, *arguments: list[str]) -> list:
    """One worker per argument list, started together once the queue's tables exist."""
    from safehold.scheduler.queue import apply_schema

    apply_schema(site.dsn)
    workers = [site.start("worker", *extra) for extra in arguments]
    site.wait_for_workers(len(workers))
    return workers


def _report(tmp_path: Path) -> dict:
    [path] = (tmp_path / "state" / "drills").glob("site-job*/report.json")
    return json.loads(path.read_text())


def _moment(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_a_drill_restores_its_steps_in_parallel_on_two_workers(install, tmp_path: Path, monkeypatch) -> None:
    names = ["t0", "t1", "t2"]
    site = install(_targets(tmp_path, names, restore_test={"every": "7d"}), init=False)
    # Each check takes a second and a half, so steps that run at once are seen to overlap.
    check = {"type": "command", "run": "sleep 1.5; find . -name payload -type f | grep -q ."}
    _add_drill(site, [{"target": name, "check": check} for name in names], parallel=3)
    _init_and_back_up(site, monkeypatch)
    first, second = _start_workers(site, [], [])

    run = site.run("drill", "run", "site", "--json")
    evidence = json.loads(run.stdout)
    report = _report(tmp_path)
    assert evidence["passed"] and report["passed"], run.stdout
    steps = {step["target"]: step for step in report["steps"]}
    assert set(steps) == set(names)
    # Every step ran in a worker process, not in the drill's own.
    pids = {step["worker"]["pid"] for step in steps.values()}
    assert pids == {first.pid, second.pid}
    for step in steps.values():
        assert step["outcome"] == "passed" and step["rto_met"] and step["attempt"] == 1
        assert step["art_seconds"] >= 1.5 and step["started"] and step["ended"]
        assert step["removed"] == step["created"]  # the sandbox folders on the workers' host are gone
    # Steps on the two workers overlapped in time.
    spans = sorted((_moment(step["started"]), _moment(step["ended"]), step["worker"]["pid"]) for step in steps.values())
    assert any(a_end > b_start and a_pid != b_pid
               for index, (_, a_end, a_pid) in enumerate(spans) for b_start, _, b_pid in spans[index + 1:])
    # The catalog holds one drill-step job per step, each run by a worker; the drill job passed.
    jobs = site.jobs()
    step_jobs = [job for job in jobs if job["kind"] == "drill-step"]
    assert sorted(job["target"] for job in step_jobs) == names
    assert {job["status"] for job in step_jobs} == {"succeeded"} and {job["pid"] for job in step_jobs} == pids
    assert [job["status"] for job in jobs if job["kind"] == "drill"] == ["succeeded"]
    assert "## Steps" in (Path(evidence["report_dir"]) / "report.md").read_text()

    # Scheduled restore tests go to the workers too (as catalog jobs through the queue executor).
    once = site.run("scheduler", "run", "--once")
    tests = [job for job in site.jobs() if job["kind"] == "restore-test"]
    assert sorted(job["target"] for job in tests) == names, once.stdout + once.stderr
    assert {job["status"] for job in tests} == {"succeeded"} and {job["pid"] for job in tests} <= pids


def test_a_worker_killed_during_a_drill_step_is_retried_on_another(install, tmp_path: Path, monkeypatch) -> None:
    site = install(_targets(tmp_path, ["db", "web"]), {"retries": 1}, init=False)
    slow = {"type": "command", "run": "sleep 3; find . -name payload -type f | grep -q ."}
    _add_drill(site, [{"target": "db", "check": slow}, {"target": "web", "after": ["db"]}])
    _init_and_back_up(site, monkeypatch)
    workers = _start_workers(site, [], [])
    drill = site.start("drill", "run", "site", "--json")
    running = site.wait_for(lambda: [job for job in site.jobs() if job["kind"] == "drill-step"
                                     and job["status"] == "running"], 60, "the first step")
    [victim] = [worker for worker in workers if worker.pid == running[0]["pid"]]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert drill.wait(timeout=90) == 0, site.logs()
    report = _report(tmp_path)
    db, web = report["steps"]
    survivor = next(worker for worker in workers if worker is not victim)
    assert report["passed"] and db["outcome"] == web["outcome"] == "passed"
    assert db["attempt"] == 2 and db["worker"]["pid"] == survivor.pid
    assert "heartbeat" in db["earlier_attempts"][0] and f"job {running[0]['id']}" in db["earlier_attempts"][0]
    assert _moment(web["started"]) >= _moment(db["ended"])  # 'after' held across the retry
    attempts = [job for job in site.jobs() if job["kind"] == "drill-step" and job["target"] == "db"]
    assert [job["status"] for job in attempts] == ["interrupted", "succeeded"]
    assert not [job for job in site.jobs() if job["status"] in ("running", "queued")]


def test_a_drill_job_on_a_worker_whose_step_loses_its_worker_fails_naming_the_step(install, tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """The drill as a queued job (the API's or the scheduler's kind) runs on one worker and its step on
    another; the step's worker is killed and no retry is left: the drill fails, naming the step."""
    site = install(_targets(tmp_path, ["db"]), {"retries": 0, "placement": {"db": "label:kvm1"}}, init=False)
    _add_drill(site, [{"target": "db", "check": {"type": "command", "run": "sleep 10"}}])
    _init_and_back_up(site, monkeypatch)
    # The first takes the default queue (where the drill job goes), the second only label:kvm1.
    drills, doomed = _start_workers(site, [], ["--queues", "none", "--host-label", "kvm1"])
    from safehold.engine.context import Context
    from safehold.engine.jobs import submit_job

    context = Context.load(tmp_path / "targets.yml")
    drill_job = submit_job(context, "drill", None, {"drill": "site"}, trigger="api")
    context.close()
    site.start("scheduler", "run", "--poll", "0.5")
    step = site.wait_for(lambda: [job for job in site.jobs() if job["kind"] == "drill-step"
                                  and job["status"] == "running"], 60, "the step")[0]
    assert step["pid"] == doomed.pid
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    ended = site.wait_for(lambda: [job for job in site.jobs() if job["id"] == drill_job
                                   and job["status"] not in ("queued", "running")], 60, "the drill's end")[0]
    assert ended["status"] == "failed" and ended["pid"] == drills.pid
    assert "drill site failed: db error (drill site, step db: job " in ended["error"]
    assert "heartbeat" in ended["error"]
    [record] = _report(tmp_path)["steps"]
    assert record["outcome"] == "error" and record["attempt"] == 1
    assert "DrillStepLost: drill site, step db:" in record["detail"] and "heartbeat" in record["detail"]
    assert "no retry left (scheduler.retries: 0)" in record["detail"]
    assert [job["status"] for job in site.jobs() if job["kind"] == "drill-step"] == ["interrupted"]


def test_a_step_no_worker_takes_fails_the_drill_naming_it(install, tmp_path: Path, monkeypatch) -> None:
    """Never a hang: the wait is bounded by the step's RTO plus a grace (2 x worker_timeout: 6 s here)."""
    site = install(_targets(tmp_path, ["db"]), {"placement": {"db": "label:nowhere"}}, init=False)
    _add_drill(site, [{"target": "db", "rto": "1s"}])
    _init_and_back_up(site, monkeypatch)
    from safehold.scheduler.queue import apply_schema

    apply_schema(site.dsn)  # the queue exists, but no worker takes queue label:nowhere
    begun = time.monotonic()
    run = site.run("drill", "run", "site", "--json", ok=False)
    assert run.returncode == 82, run.stdout + run.stderr  # DrillFailed
    assert "step db: no worker of queue 'label:nowhere' took job" in run.stderr, run.stderr
    assert time.monotonic() - begun < 60
    [step] = _report(tmp_path)["steps"]
    assert step["outcome"] == "error" and "DrillStepLost" in step["detail"]
    assert "step db" in step["detail"] and "label:nowhere" in step["detail"]
    [job] = [job for job in site.jobs() if job["kind"] == "drill-step"]
    assert job["status"] == "cancelled"  # and its queue job too: no worker runs it later
    import psycopg

    with psycopg.connect(site.dsn) as connection:
        assert connection.execute("SELECT status FROM procrastinate_jobs").fetchall() == [("cancelled",)]


def test_a_paused_worker_that_comes_back_commits_no_second_snapshot(install, tmp_path: Path, monkeypatch) -> None:
    """SIGSTOP a worker mid-backup until its job is retried and done elsewhere, then SIGCONT."""
    marker = tmp_path / "first-attempt"
    (tmp_path / "payload").write_bytes(b"paused " * 200_000)
    # The first attempt waits 3 s before it sends its data (its worker is paused meanwhile); the retry does not.
    run = f"if [ ! -e {marker} ]; then touch {marker}; sleep 3; fi; cat {tmp_path / 'payload'}"
    site = install([{"name": "slow", "tier": 1, "source": {"type": "command", "run": run, "name": "slow.out"}}],
                   {"retries": 1}, init=False)
    _init_and_back_up(site, monkeypatch, back_up=False)
    workers = _start_workers(site, [], [])
    site.start("scheduler", "run", "--poll", "0.5")
    running = site.wait_for(lambda: [job for job in site.jobs() if job["kind"] == "backup"
                                     and job["status"] == "running" and marker.exists()], 60, "the first attempt")
    [paused] = [worker for worker in workers if worker.pid == running[0]["pid"]]
    paused.send_signal(signal.SIGSTOP)
    try:
        site.wait_for(lambda: [job for job in site.jobs() if job["kind"] == "backup" and job["status"] == "succeeded"],
                      60, "the retry on the other worker")
    finally:
        paused.send_signal(signal.SIGCONT)
    # The paused attempt comes back, finishes reading its source and reaches its commit: fenced.
    site.wait_for(lambda: f"(job_id={running[0]['id']}) ended with status" in site.logs(), 30,
                  "the paused attempt to end")
    attempts = [job for job in site.jobs() if job["kind"] == "backup"]
    assert [job["status"] for job in attempts] == ["interrupted", "succeeded"], attempts
    assert attempts[0]["pid"] == paused.pid and attempts[1]["pid"] != paused.pid
    assert "heartbeat" in attempts[0]["error"]
    from safehold.engine.context import Context
    from safehold.repository.check import check

    context = Context.load(site.root / "targets.yml")
    try:
        repository = context.open_repository()
        assert [snapshot.id for snapshot in repository.list_snapshots()] == [_job_snapshot(site, attempts[1]["id"])]
        assert check(repository, read_data_percent=100.0).ok  # the fenced attempt's packs are harmless
    finally:
        context.close()
    assert f"job {running[0]['id']} is no longer this attempt's to finish: it is interrupted" in site.logs()


def _job_snapshot(site, job_id: int) -> str:
    import psycopg

    with psycopg.connect(site.dsn) as connection:
        return connection.execute("SELECT snapshot_id FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]
