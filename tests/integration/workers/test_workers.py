"""Scale-out on procrastinate with real ``safehold worker`` processes on loopback.

Each test makes its own PostgreSQL database (catalog and queue in one, as a small install would),
a file repository in tmp, and runs the CLI in subprocesses: ``worker``, ``scheduler run``,
``workers``, ``check``, ``restore``. Nothing machine-wide is looked at: the workers only see their
own database.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: the harness is beside us

from worker_harness import ADMIN_URL, _create_database, _drop_database, database_fixture, install_fixture, psycopg  # noqa: E402,F401

pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="needs SAFEHOLD_TEST_POSTGRES_URL (scripts/services.sh start)")
database = pytest.fixture(database_fixture)
install = pytest.fixture(install_fixture)


def test_jobs_run_on_the_workers_their_queue_places_them_on(install, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "file").write_text("on any worker\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "file").write_text("only where label kvm1 is\n")
    site = install([{"name": "a", "tier": 1, "source": {"type": "files", "paths": ["a"]}},
                    {"name": "kvm1-b", "tier": 1, "source": {"type": "files", "paths": ["b"]}}],
                   {"placement": {"kvm1-*": "label:kvm1"}})
    anywhere = site.start("worker", "--apply-schema", "--concurrency", "2")
    site.wait_for_workers(1)  # the schema is in place before the second worker starts
    labelled = site.start("worker", "--queues", "other", "--host-label", "kvm1")
    # Workers of another queue database on the same server, with the same worker ids (each database
    # numbers its own from 1): pg_stat_activity lists every database's sessions, so the list must
    # read only its own database's.
    impostors = [psycopg.connect(re.sub(r"^postgresql\+\w+://", "postgresql://", ADMIN_URL), autocommit=True)
                 for _ in range(2)]
    try:
        for worker_id, impostor in enumerate(impostors, 1):
            impostor.execute("SELECT set_config('application_name', %s, false)",
                             (f"safehold-worker {worker_id} elsewhere 4{worker_id} impostor other",))
        workers = site.wait_for_workers(2)
        assert all(worker["hostname"] != "elsewhere" for worker in workers), workers
    finally:
        for impostor in impostors:
            impostor.close()
    by_pid = {worker["pid"]: worker for worker in workers}
    assert by_pid[labelled.pid]["labels"] == ["kvm1"]
    assert by_pid[labelled.pid]["queues"] == ["other", "label:kvm1"]
    assert by_pid[anywhere.pid]["queues"] == ["default"]

    once = site.run("scheduler", "run", "--once")
    assert "queued 2 job(s), ran 2" in once.stdout, once.stdout + once.stderr
    jobs = {job["target"]: job for job in site.jobs() if job["kind"] == "backup"}
    assert {target: job["status"] for target, job in jobs.items()} == {"a": "succeeded", "kvm1-b": "succeeded"}
    assert jobs["a"]["pid"] == anywhere.pid  # the job ran in the worker process, not in the scheduler
    assert jobs["kvm1-b"]["pid"] == labelled.pid
    listed = json.loads(site.run("workers", "--json").stdout)["workers"]
    assert {(worker["pid"], tuple(worker["labels"]), worker["alive"]) for worker in listed} == \
        {(anywhere.pid, (), True), (labelled.pid, ("kvm1",), True)}

    # The same list from the API, and as metrics.
    from fastapi.testclient import TestClient

    from safehold.catalog.tokens import TokenStore
    from safehold.engine.context import Context
    from safehold.server.app import create_app

    monkeypatch.setenv("SAFEHOLD_QUEUE_DSN", site.dsn)
    context = Context.load(tmp_path / "targets.yml")
    _, token = TokenStore(context.catalog).create("t", "viewer")
    with TestClient(create_app(context)) as client:
        answer = client.get("/api/v1/workers", headers={"Authorization": f"Bearer {token}"})
        metrics = client.get("/metrics").text
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["executor"] == "procrastinate"
    assert sorted(worker["pid"] for worker in body["workers"]) == sorted([anywhere.pid, labelled.pid])
    up = [line for line in metrics.splitlines() if line.startswith("safehold_worker_up{")]
    assert len(up) == 2 and all(line.endswith(" 1.0") for line in up), up


def test_a_worker_killed_mid_backup_is_detected_and_another_worker_finishes_the_job(install, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "kept.txt").write_text("an earlier snapshot must stay restorable\n")
    marker, child = tmp_path / "first-attempt", tmp_path / "child.pid"
    # The first attempt streams some data, then hangs until its worker is killed; the next one completes.
    run = (f"if [ ! -e {marker} ]; then touch {marker}; echo $$ > {child}; yes first | head -c 3000000; "
           f"exec sleep 120; fi; yes slow | head -c 2000000")
    site = install([{"name": "docs", "tier": 1, "source": {"type": "files", "paths": ["docs"]}},
                    {"name": "slow", "tier": 1, "source": {"type": "command", "run": run, "name": "slow.out"}}])
    site.run("backup", "--target", "docs")  # the earlier snapshot, before any worker runs
    doomed = site.start("worker", "--apply-schema")
    site.wait_for_workers(1)
    site.start("scheduler", "run", "--poll", "0.5")
    running = site.wait_for(lambda: [job for job in site.jobs() if job["target"] == "slow"
                                     and job["status"] == "running" and child.exists()], 60, "the first attempt")
    assert running[0]["pid"] == doomed.pid
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    try:
        # Found by its stale heartbeat alone (a worker started on this host would also find the dead
        # pid when it opens the catalog: the heartbeat is what covers a host that vanished).
        site.wait_for(lambda: [job for job in site.jobs() if job["id"] == running[0]["id"]
                               and job["status"] == "interrupted"], 30, "the heartbeat timeout")
        rescuer = site.start("worker")
        finished = site.wait_for(lambda: [job for job in site.jobs() if job["target"] == "slow"
                                          and job["kind"] == "backup" and job["status"] == "succeeded"],
                                 60, "the retry on the second worker")
    finally:
        try:
            os.kill(int(child.read_text()), signal.SIGKILL)  # the hung command outlives its worker
        except (OSError, ValueError):
            pass
    attempts = [job for job in site.jobs() if job["target"] == "slow" and job["kind"] == "backup"]
    assert [job["status"] for job in attempts] == ["interrupted", "succeeded"], attempts
    assert "heartbeat" in attempts[0]["error"]
    assert attempts[1]["pid"] == rescuer.pid and json.loads(attempts[1]["details"])["attempt"] == 2
    assert finished
    assert not [job for job in site.jobs() if job["status"] == "running"]
    site.stop()
    site.run("check", "--read-data")
    out = tmp_path / "restored"
    site.run("restore", "latest:docs", "--to", str(out))
    assert [path.read_text() for path in out.rglob("kept.txt")] == ["an earlier snapshot must stay restorable\n"]


def test_without_a_dsn_the_worker_says_what_to_set(install) -> None:
    site = install([], init=False)
    site.env.pop("SAFEHOLD_QUEUE_DSN")
    proc = site.run("worker", ok=False)
    assert proc.returncode == 96, proc.stderr
    assert "SAFEHOLD_QUEUE_DSN is unset" in proc.stderr and "Traceback" not in proc.stderr


def test_a_worker_that_loses_the_catalog_stops_taking_work(install) -> None:
    name, catalog = _create_database()
    try:
        site = install([], init=False, catalog_dsn=catalog)
        worker = site.start("worker", "--apply-schema")
        site.wait_for_workers(1)
        _drop_database(name)  # the catalog is gone; the queue (another database) still answers
        assert worker.wait(timeout=60) == 98, site.logs()
        assert "did not answer for 3s" in site.logs()
    finally:
        _drop_database(name)


def test_one_queued_job_per_target_and_the_future_follows_the_catalog(install, tmp_path: Path, monkeypatch) -> None:
    from safehold import errors
    from safehold.engine.context import Context
    from safehold.engine.jobs import cancel_job, submit_job
    from safehold.scheduler.queue import ProcrastinateExecutor, apply_schema

    site = install([{"name": "kvm01-web", "tier": 1, "source": {"type": "files", "paths": ["."]}}],
                   {"placement": {"kvm01-*": "label:kvm01"}}, init=False)
    assert apply_schema(site.dsn) and not apply_schema(site.dsn)  # once only
    monkeypatch.setenv("SAFEHOLD_QUEUE_DSN", site.dsn)
    context = Context.load(tmp_path / "targets.yml")
    executor = ProcrastinateExecutor(context)
    try:
        first = submit_job(context, "backup", "kvm01-web", trigger="scheduler")
        second = submit_job(context, "backup", "kvm01-web", trigger="scheduler")
        future = executor.submit_job(first, "backup", "kvm01-web")
        # Handed over again (a scheduler restarted): no second copy, the same Future.
        assert executor.submit_job(first, "backup", "kvm01-web") is future
        with pytest.raises(errors.JobNotRunnable, match="target:kvm01-web"):
            executor.submit_job(second, "backup", "kvm01-web")
        with psycopg.connect(site.dsn) as connection:
            rows = connection.execute("SELECT queue_name, lock, queueing_lock, args FROM procrastinate_jobs").fetchall()
        assert rows == [("label:kvm01", "target:kvm01-web", "target:kvm01-web", {"job_id": first})]
        assert not future.done()
        assert cancel_job(context, first)  # a final catalog row completes the scheduler's Future
        assert future.result(timeout=10).status == "cancelled"
    finally:
        executor.shutdown()
