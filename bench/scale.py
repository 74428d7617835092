"""Scale-out: one round of backups of many small targets, run by 1, 2 and 4 ``safehold worker`` processes.

    eval "$(bash scripts/services.sh start)"     # SAFEHOLD_TEST_POSTGRES_URL
    python bench/scale.py [--targets 100] [--workers 1,2,4] [--thread] [--json FILE]
    python bench/scale.py --api 500,1000 [--jobs 100000] [--json FILE]
    python bench/scale.py --scheduler-overhead idle,steady [--overhead-targets 1000] [--minutes 3]

For each worker count: a fresh PostgreSQL database (catalog and queue in one), a fresh file
repository, ``--targets`` targets of small file trees (1 to 20 files of 1-64 KiB, sizes varying
by target), W workers (``--concurrency 1`` each) and one ``safehold scheduler run --once`` with
``executor: procrastinate`` and ``max_concurrent``/``max_per_host`` = W. Measured: the wall time of
the round (from the scheduler's start to its exit, every target backed up), jobs per second, and
the scheduler's own CPU time (user+sys of its process). ``--thread`` adds the embedded baseline
(thread executor, same limits, no workers). Every database and directory made is removed.

``--api N,...``: the control plane's read side at scale instead of a round. For each N and each
catalog (SQLite, PostgreSQL): N targets, ``--jobs`` finished jobs spread over them and 30 days
(backups mostly, some failed, restore tests, checks, prunes), a cached snapshot per target, one
empty repository; then ``GET /metrics`` and ``GET /api/v1/targets`` in-process (FastAPI's test
client, so no network or TLS is measured), the median and worst of ``--repeat`` requests after one
warm-up (and the CPU of this process meanwhile, ``*_cpu_ms_median``), and the SELECTs each made; ``*_changed_ms_median``: the same requests when one job was recorded
just before each (what a scrape costs when the catalog changed since the last one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

CLI = [sys.executable, "-m", "safehold.cli.main"]


def libpq(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def make_trees(root: Path, count: int) -> list[dict]:
    generator = random.Random(18)
    targets = []
    for index in range(count):
        folder = root / "data" / f"t{index:04d}"
        folder.mkdir(parents=True)
        for number in range(generator.randint(1, 20)):
            (folder / f"f{number}").write_bytes(generator.randbytes(generator.randint(1, 64) * 1024))
        targets.append({"name": f"t{index:04d}", "tier": 1,
                        "source": {"type": "files", "paths": [f"data/t{index:04d}"]}})
    return targets


def one_round(root: Path, admin: str, targets: list[dict], workers: int, executor: str) -> dict:
    name = f"sh_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    dsn = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", admin, count=1)
    work = root / f"{executor}-{workers}"
    work.mkdir()
    (work / "data").symlink_to(root / "data")
    settings = {"executor": executor, "max_concurrent": workers, "max_per_host": workers, "jitter": "1s",
                "prune_schedule": None, "check_schedule": None}
    lines = ["repository: {url: repo, password_env: SAFEHOLD_PASSWORD}", "state_dir: state",
             f"catalog: {{url: {json.dumps(dsn.replace('postgresql://', 'postgresql+psycopg://', 1))}}}",
             f"scheduler: {json.dumps(settings)}", "tiers:", "  1: {rpo: 15m, rto: 1h}", "targets:"]
    lines += [f"  - {json.dumps(target)}" for target in targets]
    (work / "targets.yml").write_text("\n".join(lines) + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SAFEHOLD_")}
    env.update(SAFEHOLD_CONFIG=str(work / "targets.yml"), SAFEHOLD_PASSWORD="bench", SAFEHOLD_QUEUE_DSN=dsn)
    processes: list[subprocess.Popen] = []
    try:
        subprocess.run([*CLI, "init"], cwd=work, env=env, check=True, capture_output=True)
        if executor == "procrastinate":
            from safehold.scheduler.queue import apply_schema

            apply_schema(dsn)
            for _ in range(workers):
                processes.append(subprocess.Popen([*CLI, "worker"], cwd=work, env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with psycopg.connect(dsn) as connection:
                    seen = connection.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0]
                if seen >= workers:
                    break
                time.sleep(0.2)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.run([*CLI, "scheduler", "run", "--once"], cwd=work, env=env, capture_output=True,
                              text=True)
        elapsed = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert proc.returncode == 0, proc.stderr
        with psycopg.connect(dsn) as connection:
            statuses = dict(connection.execute(
                "SELECT status, count(*) FROM jobs WHERE kind = 'backup' GROUP BY status").fetchall())
        assert statuses == {"succeeded": len(targets)}, statuses
        scheduler_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"executor": executor, "workers": workers, "targets": len(targets), "seconds": round(elapsed, 2),
                "jobs_per_second": round(len(targets) / elapsed, 2),
                "scheduler_cpu_seconds": round(scheduler_cpu, 2)}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def api_latency(root: Path, admin: str, targets: int, jobs: int, catalog: str, repeat: int) -> dict:
    """Latency of /metrics and /api/v1/targets with ``targets`` targets and ``jobs`` jobs."""
    import datetime as dt
    import statistics

    from fastapi.testclient import TestClient
    from sqlalchemy import event, insert

    from safehold.catalog.models import Job, Snapshot
    from safehold.catalog.tokens import TokenStore
    from safehold.engine.context import Context
    from safehold.server.app import create_app

    work = root / f"api-{catalog}-{targets}"
    work.mkdir()
    database = None
    if catalog == "postgresql":
        database = f"sh_api_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        url = re.sub(r"/[^/?]*(\?|$)", f"/{database}\\1", admin, count=1).replace("postgresql://",
                                                                              "postgresql+psycopg://", 1)
    else:
        url = f"sqlite:///{work}/catalog.db"
    names = [f"t{index:04d}" for index in range(targets)]
    lines = ["repository:", "  url: repo", "  password_env: SAFEHOLD_PASSWORD", "state_dir: state",
             f"catalog: {{url: {json.dumps(url)}}}", "tiers:", "  1: {rpo: 15m, rto: 1h}", "targets:"]
    entries = [{"name": name, "tier": 1, "source": {"type": "files", "paths": ["data"]},
                "restore_test": {"every": "7d"}} for name in names]
    lines += [f"  - {json.dumps(entry)}" for entry in entries]
    (work / "targets.yml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "SAFEHOLD_CONFIG": str(work / "targets.yml"), "SAFEHOLD_PASSWORD": "scale"}
    subprocess.run([*CLI, "init"], cwd=work, env=env, check=True, capture_output=True)
    os.environ["SAFEHOLD_PASSWORD"] = "scale"
    previous = os.getcwd()
    os.chdir(work)
    context = Context.load(work / "targets.yml")
    try:
        generator = random.Random(targets)
        now = dt.datetime.now(dt.timezone.utc)
        rows = []
        started = time.perf_counter()
        for number in range(jobs):
            created = now - dt.timedelta(days=30) * (1 - number / jobs)
            kind = generator.choices(["backup", "restore-test", "check", "prune"], [90, 6, 2, 2])[0]
            status = "failed" if generator.random() < 0.03 else "succeeded"
            rows.append({"kind": kind, "target": None if kind in ("check", "prune") else generator.choice(names),
                         "status": status, "created_at": created, "started_at": created,
                         "finished_at": created + dt.timedelta(seconds=generator.randint(1, 600)),
                         "snapshot_id": uuid.uuid4().hex * 2 if kind == "backup" and status == "succeeded" else None,
                         "bytes_read": generator.randint(0, 1 << 30), "bytes_added": generator.randint(0, 1 << 24),
                         "files": generator.randint(1, 10000), "error": "boom" if status == "failed" else None,
                         "details": {"art_seconds": 12.5, "passed": True} if kind == "restore-test" else None})
            if len(rows) == 5000:
                with context.catalog.engine.begin() as connection:
                    connection.execute(insert(Job), rows)
                rows = []
        if rows:
            with context.catalog.engine.begin() as connection:
                connection.execute(insert(Job), rows)
        context.catalog.replace_snapshots("repo", [{"id": uuid.uuid4().hex * 2, "time": now, "target": name}
                                                   for name in names])
        fill_seconds = time.perf_counter() - started
        _, token = TokenStore(context.catalog).create("bench", "viewer")
        selects: list[str] = []
        slowest: dict[str, float] = {}  # statement -> seconds, the worst seen

        def record(connection, cursor, statement, *args) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                selects.append(statement)
            connection.info["bench_started"] = time.perf_counter()

        def recorded(connection, cursor, statement, *args) -> None:
            took = time.perf_counter() - connection.info.pop("bench_started", time.perf_counter())
            slowest[statement] = max(slowest.get(statement, 0.0), took)

        if os.environ.get("SAFEHOLD_BENCH_PROFILE"):  # the Python side of both, in this thread
            import cProfile
            import pstats

            from prometheus_client import generate_latest

            from safehold.engine.status import target_statuses
            from safehold.server.metrics import create_registry

            registry = create_registry(context)
            generate_latest(registry)
            profile = cProfile.Profile()
            profile.runcall(lambda: (generate_latest(registry), target_statuses(context)))
            pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        result = {"mode": "api", "catalog": catalog, "targets": targets, "jobs": jobs,
                  "fill_seconds": round(fill_seconds, 1)}
        with TestClient(create_app(context)) as client:
            for label, path, headers in (("metrics", "/metrics", {}),
                                         ("targets", "/api/v1/targets", {"Authorization": f"Bearer {token}"})):
                answer = client.get(path, headers=headers)  # warm-up: caches, the repository listing
                assert answer.status_code == 200, answer.text[:500]
                times, cpu_times = [], []
                for _ in range(repeat):
                    selects.clear()
                    slowest.clear()
                    event.listen(context.catalog.engine, "before_cursor_execute", record)
                    event.listen(context.catalog.engine, "after_cursor_execute", recorded)
                    begun, begun_cpu = time.perf_counter(), time.process_time()
                    client.get(path, headers=headers)
                    times.append((time.perf_counter() - begun) * 1000)
                    cpu_times.append((time.process_time() - begun_cpu) * 1000)
                    event.remove(context.catalog.engine, "before_cursor_execute", record)
                    event.remove(context.catalog.engine, "after_cursor_execute", recorded)
                result[f"{label}_ms_median"] = round(statistics.median(times), 1)
                result[f"{label}_ms_max"] = round(max(times), 1)
                result[f"{label}_selects"] = len(selects)
                result[f"{label}_sql_ms"] = round(sum(slowest.values()) * 1000, 1)  # the last request's
                result[f"{label}_cpu_ms_median"] = round(statistics.median(cpu_times), 1)
                result[f"{label}_changed_ms_median"], result[f"{label}_changed_cpu_ms_median"] = changed_latency(
                    client, context, path, headers, names, repeat)
                if os.environ.get("SAFEHOLD_BENCH_SQL"):  # where the catalog's time goes
                    for statement, took in sorted(slowest.items(), key=lambda item: -item[1])[:4]:
                        print(f"{label} {took * 1000:8.1f} ms  {' '.join(statement.split())[:400]}", file=sys.stderr)
        return result
    finally:
        context.close()
        os.chdir(previous)
        if database:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def changed_latency(client, context, path: str, headers: dict, names: list[str], repeat: int) -> float:
    """Median ms of ``path`` when the catalog changed since the previous request: one backup job of
    a target recorded (started and finished) before each request, as a busy control plane sees."""
    import statistics

    times, cpu = [], []
    for number in range(repeat):
        catalog = context.catalog
        catalog.finish_job(catalog.start_job("backup", names[number % len(names)]), "succeeded")
        begun, begun_cpu = time.perf_counter(), time.process_time()
        assert client.get(path, headers=headers).status_code == 200
        times.append((time.perf_counter() - begun) * 1000)
        cpu.append((time.process_time() - begun_cpu) * 1000)
    return round(statistics.median(times), 1), round(statistics.median(cpu), 1)


def scheduler_overhead(root: Path, admin: str, targets: int, jobs: int, minutes: float, scenario: str) -> dict:
    """CPU of ``safehold scheduler run`` itself with ``targets`` targets on a 15-minute RPO.

    A fresh PostgreSQL database (catalog and queue), ``jobs`` old finished jobs (30 days of history)
    and one recent good backup per target; ``executor: procrastinate`` and no worker, so no job runs
    and what is measured is the scheduler alone: its ticks (every 5 s), queuing what comes due and
    handing it to the queue. Scenario "idle": every target was backed up at the start, so nothing
    comes due during the run (a target is due every half RPO, 7.5 min). Scenario "steady": the
    last backups are spread over the last 7.5 minutes, so targets come due all the time
    (``targets`` / 450 s, 2.2 a second at 1,000), as in a steady state, and a stand-in for the
    workers marks every queued job succeeded within a second (an UPDATE of the catalog; the
    scheduler sees jobs start and end as with real workers, without their CPU). The CPU (user+sys from
    /proc) is counted from 30 s after the start (imports, the lease, the first pass) for
    ``minutes`` minutes."""
    import datetime as dt
    import signal

    from sqlalchemy import insert

    from safehold.catalog.models import Job
    from safehold.catalog.store import Catalog

    name = f"sh_sched_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    dsn = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", admin, count=1)
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    work = root / f"scheduler-{scenario}-{targets}"
    (work / "data").mkdir(parents=True)
    names = [f"t{index:04d}" for index in range(targets)]
    settings = {"executor": "procrastinate", "max_concurrent": 4, "max_per_host": 4, "jitter": "1m",
                "prune_schedule": None, "check_schedule": None}
    lines = ["repository: {url: repo, password_env: SAFEHOLD_PASSWORD}", "state_dir: state",
             f"catalog: {{url: {json.dumps(url)}}}", f"scheduler: {json.dumps(settings)}", "tiers:",
             "  1: {rpo: 15m, rto: 1h}", "targets:"]
    lines += [f"  - {json.dumps({'name': target, 'tier': 1, 'source': {'type': 'files', 'paths': ['data']}})}"
              for target in names]
    (work / "targets.yml").write_text("\n".join(lines) + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SAFEHOLD_")}
    env.update(SAFEHOLD_CONFIG=str(work / "targets.yml"), SAFEHOLD_PASSWORD="bench", SAFEHOLD_QUEUE_DSN=dsn)
    process = None
    try:
        subprocess.run([*CLI, "init"], cwd=work, env=env, check=True, capture_output=True)
        generator = random.Random(targets)
        now = dt.datetime.now(dt.timezone.utc)
        with Catalog.open(url) as catalog:
            rows = []
            for number in range(jobs):
                created = now - dt.timedelta(days=30) * (1 - number / jobs) - dt.timedelta(hours=1)
                rows.append({"kind": "backup", "target": generator.choice(names), "status": "succeeded",
                             "created_at": created, "started_at": created, "finished_at": created,
                             "bytes_read": 0, "bytes_added": 0, "files": 0})
            for target in names:
                ago = 0.0 if scenario == "idle" else generator.uniform(0, 450)
                created = now - dt.timedelta(seconds=ago)
                rows.append({"kind": "backup", "target": target, "status": "succeeded", "created_at": created,
                             "started_at": created, "finished_at": created, "bytes_read": 0, "bytes_added": 0,
                             "files": 0, "details": {"trigger": "scheduler"}})
            for start in range(0, len(rows), 5000):
                with catalog.engine.begin() as connection:
                    connection.execute(insert(Job), rows[start:start + 5000])
        process = subprocess.Popen([*CLI, "scheduler", "run"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)

        def cpu() -> float:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        time.sleep(30)
        if process.poll() is not None:
            raise RuntimeError(f"the scheduler exited ({process.returncode})")
        with Catalog.open(url) as catalog:
            newest_before = max((job.id for job in catalog.list_jobs(limit=1)), default=0)
        cpu_start, wall_start = cpu(), time.monotonic()
        finished = 0
        with psycopg.connect(dsn, autocommit=True) as connection:
            while time.monotonic() - wall_start < minutes * 60:
                time.sleep(1)
                if scenario == "steady":  # stand-in workers: every queued job ends within a second
                    finished += connection.execute(
                        "UPDATE jobs SET status = 'succeeded', started_at = now(), finished_at = now() "
                        "WHERE status IN ('queued', 'running')").rowcount
        cpu_seconds, wall = cpu() - cpu_start, time.monotonic() - wall_start
        with Catalog.open(url) as catalog:
            queued = max((job.id for job in catalog.list_jobs(limit=1)), default=0) - newest_before
        return {"mode": "scheduler-overhead", "scenario": scenario, "targets": targets, "jobs": jobs,
                "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu_seconds, 2),
                "cpu_seconds_per_minute": round(cpu_seconds / wall * 60, 3),
                "percent_of_one_core": round(100 * cpu_seconds / wall, 2), "jobs_queued": queued,
                "jobs_finished_by_stand_in": finished,
                "load_average": os.getloadavg()[0]}
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--thread", action="store_true", help="also the embedded thread executor")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--api", help="target counts (e.g. 500,1000): measure /metrics and /api/v1/targets instead")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the catalog for --api")
    parser.add_argument("--catalogs", default="sqlite,postgresql", help="catalogs for --api")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scheduler-overhead", metavar="SCENARIOS",
                        help="idle,steady: measure the CPU of 'scheduler run' itself instead (no workers)")
    parser.add_argument("--overhead-targets", type=int, default=1000, help="targets for --scheduler-overhead")
    parser.add_argument("--overhead-jobs", type=int, default=100_000, help="old jobs for --scheduler-overhead")
    parser.add_argument("--minutes", type=float, default=3.0, help="measured minutes for --scheduler-overhead")
    options = parser.parse_args()
    admin = libpq(os.environ.get("SAFEHOLD_TEST_POSTGRES_URL", ""))
    if not admin:
        sys.exit("set SAFEHOLD_TEST_POSTGRES_URL (eval \"$(bash scripts/services.sh start)\")")
    root = Path(tempfile.mkdtemp(prefix="safehold-scale-"))
    results = []
    try:
        if options.api:
            for count in [int(part) for part in options.api.split(",")]:
                for catalog in options.catalogs.split(","):
                    result = api_latency(root, admin, count, options.jobs, catalog, options.repeat)
                    print(json.dumps(result), flush=True)
                    results.append(result)
        for scenario in (options.scheduler_overhead.split(",") if options.scheduler_overhead else []):
            result = scheduler_overhead(root, admin, options.overhead_targets, options.overhead_jobs,
                                        options.minutes, scenario)
            print(json.dumps(result), flush=True)
            results.append(result)
        rounds = not (options.api or options.scheduler_overhead)
        targets = make_trees(root, options.targets) if rounds else []
        for workers in ([] if not rounds else [int(part) for part in options.workers.split(",")]):
            for executor in (["thread"] if options.thread else []) + ["procrastinate"]:
                result = one_round(root, admin, targets, workers, executor)
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if options.json:
        options.json.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                                            "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
