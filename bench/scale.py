"""Scale-out: one round of backups of many small targets, run by 1, 2 and 4 ``safehold worker`` processes.

    eval "$(bash scripts/services.sh start)"     # SAFEHOLD_TEST_POSTGRES_URL
    python bench/scale.py [--targets 100] [--workers 1,2,4] [--thread] [--json FILE]
    python bench/scale.py --api 500,1000 [--jobs 100000] [--json FILE]
    python bench/scale.py --scheduler-overhead idle,steady [--overhead-targets 1000] [--minutes 3]
    python bench/scale.py --repository s3 --targets 500 [--large 5] [--change] [--kill-every 30]

For each worker count: a fresh PostgreSQL database (catalog and queue in one), a fresh file
repository, ``--targets`` targets of small file trees (1 to 20 files of 1-64 KiB, sizes varying
by target), W workers (``--concurrency 1`` each) and one ``safehold scheduler run --once`` with
``executor: procrastinate`` and ``max_concurrent``/``max_per_host`` = W. Measured: the wall time of
the round (from the scheduler's start to its exit, every target backed up), jobs per second, and
the scheduler's own CPU time (user+sys of its process). ``--thread`` adds the embedded baseline
(thread executor, same limits, no workers). Every database and directory made is removed.

``--repository s3`` (issue 18's measurement): the same rounds on an S3 repository (a moto server of
its own per row, on loopback) and a PostgreSQL catalog, with ``--large`` of the targets 48-100 MiB
(4 MiB files); per row: the round's wall time, jobs/s, the scheduler's CPU (and per 1,000
targets), CPU seconds of the workers, the moto server and PostgreSQL's server processes of the
row's database (from /proc), the whole machine's busy CPU (the other tenants too), queue latency
(procrastinate's ``deferred`` to ``started`` events), the workers' catalog statement latency
(``SAFEHOLD_WORKER_SQL_TIMES``), and a ``scheduler run --once`` that finds nothing due.
``--change`` adds a second round after rewriting each target's share of files (0-100 %, 10 % of
the large ones) and moving the catalog a day back (the tier's 24h RPO makes every target due again);
``--change-at W`` limits it to one worker count; one worker of the ``--profile-at`` row profiles
its round 2 (``SAFEHOLD_WORKER_PROFILE``, every thread on CPU clocks; it slows that worker).
``--thread`` adds the thread executor (``max_concurrent`` 2) as a reference row.
``--kill-every S`` adds a worker-kill campaign (``--only-kill``: only it): a round of every target on
``--kill-workers`` workers in which, every S seconds, a worker running a backup is SIGKILLed (at
most ``--kills``, one per target) and a new one started; then ``check --read-data``, every target
restored (``restore --all``) and compared byte for byte, no job left running or queued.

    python bench/scale.py --repository s3 --targets 100 --large 1 --workers 1,2,4 --thread --change --change-at 2
    python bench/scale.py --repository s3 --targets 500 --large 5 --only-kill --kill-every 30 --kills 15

``--api N,...``: the control plane's read side at scale instead of a round. For each N and each
catalog (SQLite, PostgreSQL): N targets, ``--jobs`` finished jobs spread over them and 30 days
(backups mostly, some failed, restore tests, checks, prunes), a cached snapshot per target, one
empty repository; then ``GET /metrics`` and ``GET /api/v1/targets`` in-process (FastAPI's test
client, so no network or TLS is measured), the median and worst of ``--repeat`` requests after one
warm-up (and the CPU of this process meanwhile, ``*_cpu_ms_median``), and the SELECTs each made; ``*_changed_ms_median``: the same requests when one job was recorded
just before each (what a scrape costs when the catalog changed since the last one);
``*_first_ms``/``*_first_cpu_ms``: the warm-up request (everything read and rendered);
``safety_net_ms``/``_cpu_ms``: the 5-minute safety net (a thread of ``safehold serve``) and
``metrics_after_safety_net_ms`` the scrape after it. A PostgreSQL
catalog is ANALYZEd after it is filled, as autovacuum would.
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
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

from safehold.scheduler.diagnostics import PROFILE_ENV, SQL_TIMES_ENV

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
    from sqlalchemy import event, insert, text

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
        if catalog == "postgresql":
            # Statistics, as autovacuum gives a long-lived catalog: without them the planner answers the
            # change marker's "oldest active job" by walking the primary key (13-20 ms at 100,000 jobs)
            # instead of ix_jobs_status (0.3-0.6 ms).
            with context.catalog.engine.connect() as connection:
                connection.execute(text("ANALYZE"))
                connection.commit()
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
                begun, begun_cpu = time.perf_counter(), time.process_time()
                answer = client.get(path, headers=headers)  # warm-up: caches, the repository listing
                assert answer.status_code == 200, answer.text[:500]
                # The first request reads and renders everything (as the safety net does every 5 minutes).
                result[f"{label}_first_ms"] = round((time.perf_counter() - begun) * 1000, 1)
                result[f"{label}_first_cpu_ms"] = round((time.process_time() - begun_cpu) * 1000, 1)
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
                if os.environ.get("SAFEHOLD_BENCH_PROFILE"):  # what serves a request after a change
                    profile_changed(context, label, names)
        (result["safety_net_ms"], result["safety_net_cpu_ms"],
         result["metrics_after_safety_net_ms"]) = safety_net_cost(context)
        return result
    finally:
        context.close()
        os.chdir(previous)
        if database:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# --- a round on S3 with workers, its second round with changes, and a worker-kill campaign ---------

AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1"}
MOTO = ("import signal, sys\nfrom moto.server import ThreadedMotoServer\n"
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start()\n"
        "print('PORT', s.get_host_and_port()[1], flush=True)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nsys.stdin.read(); s.stop()\n")
CHANGE_RATES = (0.0, 0.0, 0.05, 0.1, 0.25, 0.5, 1.0)  # share of a small target's files rewritten in round 2
TICKS = os.sysconf("SC_CLK_TCK")


def start_moto() -> tuple[subprocess.Popen, int]:
    """A moto server of its own on loopback (in-memory S3), one per row so its memory and CPU are the row's."""
    process = subprocess.Popen([sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env={**os.environ, **AWS_ENV})
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"moto did not start: {line!r}")
    port = int(line.split()[1])
    request = urllib.request.Request(f"http://127.0.0.1:{port}/scale", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200, answer.status
    return process, port


def stop_moto(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """user+sys of a live process (0 if it is gone), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine spent (all tenants), from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICKS  # all but idle and iowait


def make_workload(folder: Path, count: int, large: int, seed: int) -> tuple[list[dict], dict[str, dict]]:
    """``count`` targets: small trees (1-20 files of 1-64 KiB), ``large`` of them 50-100 MiB (4 MiB files).

    Every target gets a change rate for round 2 (the share of its files rewritten). The same seed
    gives the same bytes, so every row backs up the same data."""
    generator = random.Random(seed)
    targets, plan = [], {}
    big = set(generator.sample(range(count), min(large, count)))
    for index in range(count):
        name = f"t{index:04d}"
        tree = folder / "data" / name
        tree.mkdir(parents=True)
        if index in big:
            sizes = [4 << 20] * generator.randint(12, 25)  # 48-100 MiB
            rate = 0.1
        else:
            sizes = [generator.randint(1, 64) * 1024 for _ in range(generator.randint(1, 20))]
            rate = generator.choice(CHANGE_RATES)
        for number, size in enumerate(sizes):
            (tree / f"f{number}").write_bytes(generator.randbytes(size))
        targets.append({"name": name, "tier": 1, "source": {"type": "files", "paths": [f"data/{name}"]}})
        plan[name] = {"files": len(sizes), "bytes": sum(sizes), "change_rate": rate, "large": index in big}
    return targets, plan


def apply_changes(folder: Path, plan: dict[str, dict], seed: int) -> dict:
    """Rewrite each target's share of files (new files, new inodes: what an application's save does)."""
    generator = random.Random(seed)
    changed_files = changed_bytes = 0
    for name, entry in plan.items():
        if not entry["change_rate"]:
            continue
        tree = folder / "data" / name
        files = sorted(tree.iterdir())
        for path in generator.sample(files, max(1, round(len(files) * entry["change_rate"]))):
            size = path.stat().st_size
            fresh = path.with_name(path.name + ".new")
            fresh.write_bytes(generator.randbytes(size))
            fresh.replace(path)
            changed_files += 1
            changed_bytes += size
    return {"changed_files": changed_files, "changed_mib": round(changed_bytes / 2**20, 1)}


def percentiles(values: list[float], scale: float = 1000.0) -> dict:
    """p50/p99/max (ms by default) of ``values``."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * scale, 1)
    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * scale, 1)}


class Site:
    """One row's world: a database (catalog and queue), a bucket on a moto server, targets.yml, processes."""

    def __init__(self, root: Path, admin: str, targets: list[dict], executor: str, workers: int,
                 scheduler: dict | None = None) -> None:
        self.root, self.admin, self.executor = root, admin, executor
        self.database = f"sh_scale_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"')
        self.dsn = re.sub(r"/[^/?]*(\?|$)", f"/{self.database}\\1", admin, count=1)
        self.moto, self.port = start_moto()
        self.workers: list[subprocess.Popen] = []
        self.others: list[subprocess.Popen] = []
        settings = {"executor": executor, "max_concurrent": workers, "max_per_host": workers, "jitter": "1s",
                    "prune_schedule": None, "check_schedule": None, **(scheduler or {})}
        repository = {"url": "s3://scale/repo", "endpoint_url": f"http://127.0.0.1:{self.port}",
                      "region": "us-east-1", "password_env": "SAFEHOLD_PASSWORD"}
        lines = [f"repository: {json.dumps(repository)}", "state_dir: state",
                 f"catalog: {{url: {json.dumps(self.dsn.replace('postgresql://', 'postgresql+psycopg://', 1))}}}",
                 # A day's RPO: a round longer than half the RPO would make its first targets due again.
             f"scheduler: {json.dumps(settings)}", "tiers:", "  1: {rpo: 24h, rto: 1h}", "targets:"]
        lines += [f"  - {json.dumps(target)}" for target in targets]
        (root / "targets.yml").write_text("\n".join(lines) + "\n")
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("SAFEHOLD_")}
        self.env.update(AWS_ENV, SAFEHOLD_CONFIG=str(root / "targets.yml"), SAFEHOLD_PASSWORD="bench",
                        SAFEHOLD_QUEUE_DSN=self.dsn)
        self.run("init")
        if executor == "procrastinate":
            from safehold.scheduler.queue import apply_schema

            apply_schema(self.dsn)

    def run(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        proc = subprocess.run([*CLI, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"safehold {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start_worker(self, extra_env: dict | None = None) -> subprocess.Popen:
        number = len(self.workers)
        env = {**self.env, SQL_TIMES_ENV: str(self.root / f"worker-{number}-sql.json"), **(extra_env or {})}
        log = open(self.root / f"worker-{number}.log", "w")
        process = subprocess.Popen([*CLI, "worker"], cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(process)
        return process

    def wait_for_workers(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(self.dsn) as connection:
                # Alive ones only: killed workers stay listed until they are pruned.
                seen = connection.execute(
                    "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - interval '5 seconds'"
                ).fetchone()[0]
            if seen >= count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{count} workers did not register in {timeout:g}s")

    def query(self, statement: str, *args) -> list[tuple]:
        with psycopg.connect(self.dsn) as connection:
            cursor = connection.execute(statement, args)
            return cursor.fetchall() if cursor.description else []

    def backend_pids(self) -> list[int]:
        """PostgreSQL's server processes serving this database (the workers' and the scheduler's connections)."""
        with psycopg.connect(self.admin) as connection:
            rows = connection.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                      (self.database,)).fetchall()
        return [row[0] for row in rows]

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.terminate()
        for process in self.workers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for process in self.others:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.stop_workers()
        stop_moto(self.moto)
        with psycopg.connect(self.admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def age_catalog(self) -> None:
        """Time passes: every job so far moves a day back, so each target's RPO makes it due again."""
        self.query("UPDATE jobs SET created_at = created_at - interval '25 hours', "
                   "started_at = started_at - interval '25 hours', finished_at = finished_at - interval '25 hours'")


class CpuWatch:
    """CPU seconds of the round's processes between ``start`` and ``stop`` (from /proc).

    PostgreSQL's server processes of the database are looked at every second (a connection that
    closes takes its counters with it: the last look is what is counted)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.seen: dict[int, float] = {}
        self.done = threading.Event()

    def _look(self) -> None:
        while not self.done.wait(1.0):
            try:
                self.seen.update({pid: cpu_seconds(pid) or self.seen.get(pid, 0.0) for pid in self.site.backend_pids()})
            except psycopg.Error:
                pass

    def sample(self) -> dict:
        site = self.site
        return {"workers": {process.pid: cpu_seconds(process.pid) for process in site.workers},
                "moto": cpu_seconds(site.moto.pid),
                "postgres": {pid: cpu_seconds(pid) for pid in site.backend_pids()},
                "machine": machine_busy_seconds(), "wall": time.monotonic()}

    def start(self) -> None:
        self.begun = self.sample()
        self.looking = threading.Thread(target=self._look, daemon=True)
        self.looking.start()

    def stop(self) -> dict:
        # Read while the processes are alive: a worker that ends takes its counters with it.
        self.done.set()
        self.looking.join()
        end, begun = self.sample(), self.begun
        end["postgres"] = {**self.seen, **{pid: value for pid, value in end["postgres"].items() if value}}
        wall = end["wall"] - begun["wall"]
        figures = {"workers_cpu": sum(value - begun["workers"].get(pid, 0.0) for pid, value in end["workers"].items()),
                   "moto_cpu": end["moto"] - begun["moto"],
                   "postgres_cpu": sum(value - begun["postgres"].get(pid, 0.0) for pid, value in end["postgres"].items()),
                   "machine_cpu": end["machine"] - begun["machine"]}
        result = {key: round(value, 1) for key, value in figures.items()}
        result["machine_cores_busy"] = round(figures["machine_cpu"] / wall, 2) if wall else None
        return result


def measured_round(site: Site, targets: int, label: str) -> dict:
    """One ``scheduler run --once``: every due target backed up once; wall, CPU per process, latencies."""
    first_job = site.query("SELECT coalesce(max(id), 0) FROM jobs")[0][0]
    first_queued = 0
    if site.executor == "procrastinate":
        first_queued = site.query("SELECT coalesce(max(id), 0) FROM procrastinate_jobs")[0][0]
    watch = CpuWatch(site)
    load = os.getloadavg()[0]
    watch.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = site.run("scheduler", "run", "--once")
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = watch.stop()
    scheduler_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    statuses = dict(site.query("SELECT status, count(*) FROM jobs WHERE kind = 'backup' AND id > %s GROUP BY status",
                               first_job))
    assert statuses == {"succeeded": targets}, (statuses, proc.stdout[-2000:], proc.stderr[-2000:])
    read, added, files = site.query("SELECT sum(bytes_read)::float, sum(bytes_added)::float, sum(files)::float FROM jobs "
                                    "WHERE kind = 'backup' AND id > %s", first_job)[0]
    durations = [row[0] for row in site.query("SELECT extract(epoch FROM finished_at - started_at)::float FROM jobs "
                                              "WHERE kind = 'backup' AND id > %s", first_job)]
    result = {"round": label, "seconds": round(elapsed, 1), "jobs_per_second": round(targets / elapsed, 2),
              "load_average_1m_at_start": round(load, 1), "load_average_1m_at_end": round(os.getloadavg()[0], 1),
              "scheduler_cpu": round(scheduler_cpu, 1),
              "scheduler_cpu_per_1000_targets": round(scheduler_cpu * 1000 / targets, 1),
              **cpu, "mib_read": round((read or 0) / 2**20, 1), "mib_added": round((added or 0) / 2**20, 1),
              "files": int(files or 0), "job_seconds": percentiles(durations, scale=1.0)}
    if site.executor == "procrastinate":
        # Enqueue to a worker's start, from procrastinate's own event log (the database's clock).
        waits = [row[0] for row in site.query(
            "SELECT extract(epoch FROM s.at - d.at)::float FROM procrastinate_events d "
            "JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'started' "
            "WHERE d.type = 'deferred' AND d.job_id > %s", first_queued)]
        result["queue_latency_ms"] = percentiles(waits)
    return result


def idle_pass(site: Site, targets: int) -> dict:
    """A ``scheduler run --once`` that finds nothing due: the scheduler's fixed cost (start, imports, one pass)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    site.run("scheduler", "run", "--once")
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": round(elapsed, 1),
            "scheduler_cpu": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2)}


def sql_times(site: Site) -> dict:
    """The workers' catalog statements (SAFEHOLD_WORKER_SQL_TIMES), p50/p99 per kind of statement."""
    merged: dict[str, list[float]] = {}
    for path in site.root.glob("worker-*-sql.json"):
        for group, values in json.loads(path.read_text()).items():
            merged.setdefault(group, []).extend(values)
    writes = [value for group, values in merged.items() if group.split()[0] in ("INSERT", "UPDATE")
              and group.split()[-1] in ("jobs", "job_logs") for value in values]
    result = {"job_row_writes_ms": percentiles(writes)}
    for group in sorted(merged, key=lambda key: -len(merged[key]))[:8]:
        result[group] = percentiles(merged[group])
    return result


PROFILE_GROUPS = (  # (name, test on a function's file and name); a group's time is counted where safehold's
    # own code enters it (so a library calling back into itself through the standard library counts once)
    ("S3 client (boto3, botocore, urllib3)",
     lambda path, name: "/botocore/" in path or "/boto3/" in path or "/urllib3/" in path or "/s3transfer/" in path
     or path.endswith("backends/s3.py")),
    ("catalog (SQLAlchemy, psycopg)",
     lambda path, name: "/safehold/catalog/" in path or "/sqlalchemy/" in path or "/psycopg/" in path),
    ("compression (zstd)", lambda path, name: "zstd" in name.lower() or "/zstandard/" in path),
    ("encryption (AEAD)", lambda path, name: "aesgcm" in name.lower() or "chacha" in name.lower()
     or "/cryptography/" in path),
    ("chunk ids (BLAKE3)", lambda path, name: "blake3" in name.lower()),
    ("chunking (FastCDC)", lambda path, name: "fastcdc" in name.lower() or "/fastcdc/" in path),
    ("source walk and reads", lambda path, name: "/safehold/sources/" in path),
)


def profile_split(path: Path) -> dict:
    """Where the profiled worker's CPU went (SAFEHOLD_WORKER_PROFILE: every thread, CPU clocks).

    Job work is ``run_job`` plus the chunk threads (``Archiver._store``); each group is the time
    spent inside it where safehold's own code (outside the group) called it, as a share of the
    worker's whole CPU; the rest is repository and engine logic, the queue's loop, heartbeats."""
    import pstats

    stats = pstats.Stats(str(path)).stats

    def group_of(key) -> str | None:
        for name, test in PROFILE_GROUPS:
            if test(key[0], key[2]):
                return name
        return None

    def ours(key) -> bool:
        return "/safehold/" in key[0]
    total = sum(entry[2] for entry in stats.values())
    job = sum(entry[3] for key, entry in stats.items()
              if (key[2] == "run_job" and key[0].endswith("engine/jobs.py"))
              or (key[2] == "_store" and key[0].endswith("repository/archiver.py")))
    split: dict[str, float] = {}
    for key, (_, _, _, _, callers) in stats.items():
        group = group_of(key)
        if group is None:
            continue
        for caller, caller_entry in callers.items():
            if ours(caller) and group_of(caller) != group:
                split[group] = split.get(group, 0.0) + caller_entry[3]

    def share(value: float) -> str:
        return f"{100 * value / total:.0f} %" if total else "-"
    # Shares of the worker's whole CPU: S3 calls also run outside run_job (the lock's heartbeat thread).
    result = {"worker_cpu_seconds": round(total, 1), "job_cpu_seconds": round(job, 1)}
    for name, _ in PROFILE_GROUPS:
        result[name] = share(split.get(name, 0.0))
    result["repository logic, engine, queue loop, the rest"] = share(total - sum(split.values()))
    calls = {}  # the S3 and catalog entry points, by CPU (what to look at first)
    for key, (_, _, _, cumulative, callers) in stats.items():
        if key[0].endswith(("backends/s3.py", "catalog/store.py")) and any(ours(caller) and group_of(caller) != group_of(key)
                                                                          for caller in callers):
            calls[f"{key[0].rsplit('/', 1)[-1]}:{key[2]}"] = round(cumulative, 2)
    result["top_entry_points_cpu_seconds"] = dict(sorted(calls.items(), key=lambda item: -item[1])[:8])
    return result


def s3_row(root: Path, admin: str, options, executor: str, workers: int, profile: bool) -> dict:
    """A fresh world; round 1 (every target's first backup), then round 2 after changes (``--change``)."""
    folder = root / f"{executor}-{workers}"
    folder.mkdir()
    targets, plan = make_workload(folder, options.targets, options.large, seed=18)
    site = Site(folder, admin, targets, executor, workers)
    row = {"executor": executor, "workers": workers, "targets": len(targets),
           "large_targets": sum(1 for entry in plan.values() if entry["large"]),
           "data_mib": round(sum(entry["bytes"] for entry in plan.values()) / 2**20, 1)}
    try:
        if executor == "procrastinate":
            for _ in range(workers):
                site.start_worker()
            site.wait_for_workers(workers)
        row["first"] = measured_round(site, len(targets), "first")
        print(json.dumps({**{key: row[key] for key in ("executor", "workers")}, **row["first"]}), flush=True)
        if options.change and options.change_at in (0, workers):
            if profile and site.workers:  # a worker that profiles its jobs, for round 2 (it slows that worker)
                site.workers[0].terminate()
                site.workers[0].wait(60)
                site.start_worker({PROFILE_ENV: str(folder / "worker.prof")})
                site.wait_for_workers(workers)
            row["changes"] = apply_changes(folder, plan, seed=19)
            site.age_catalog()
            row["second"] = measured_round(site, len(targets), "second")
            print(json.dumps({**{key: row[key] for key in ("executor", "workers")}, **row["second"]}), flush=True)
        row["idle_pass"] = idle_pass(site, len(targets))
        site.stop_workers()
        if executor == "procrastinate":
            row["catalog_statements"] = sql_times(site)
        if (folder / "worker.prof").exists():
            row["profile"] = profile_split(folder / "worker.prof")
            if options.keep_profile:
                shutil.copy(folder / "worker.prof", options.keep_profile)
        return row
    finally:
        site.close()
        shutil.rmtree(folder, ignore_errors=True)


def same_tree(source: Path, restored: Path) -> bool:
    """Every file of ``source`` is in ``restored`` (somewhere below it, under the same relative path), byte for byte."""
    found = [path for path in restored.rglob(source.name) if path.is_dir()]
    if len(found) != 1:
        return False
    wanted = sorted(path.relative_to(source) for path in source.rglob("*") if path.is_file())
    got = sorted(path.relative_to(found[0]) for path in found[0].rglob("*") if path.is_file())
    return wanted == got and all((source / name).read_bytes() == (found[0] / name).read_bytes() for name in wanted)


def kill_campaign(root: Path, admin: str, options) -> dict:
    """A round of every target on ``--kill-workers`` workers; every ``--kill-every`` seconds one worker that
    runs a backup is SIGKILLed and a new one started. Then: every target has a good snapshot (restored and
    compared byte for byte: all targets, or a sample), ``check --read-data``, nothing running or queued."""
    folder = root / "kill"
    folder.mkdir()
    targets, plan = make_workload(folder, options.targets, options.large, seed=18)
    count = options.kill_workers
    site = Site(folder, admin, targets, "procrastinate", count,
                {"retries": 5, "retry_backoff": "1s", "worker_timeout": options.worker_timeout})
    generator = random.Random(int(time.time()))
    try:
        for _ in range(count):
            site.start_worker()
        site.wait_for_workers(count)
        load = os.getloadavg()[0]
        watch = CpuWatch(site)
        watch.start()
        started = time.monotonic()
        scheduler = subprocess.Popen([*CLI, "scheduler", "run", "--poll", "0.5"], cwd=folder, env=site.env,
                                     stdout=open(folder / "scheduler.log", "w"), stderr=subprocess.STDOUT)
        site.others.append(scheduler)
        kills, last_kill = [], time.monotonic()
        names = {target["name"] for target in targets}
        deadline = started + options.kill_timeout
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the campaign did not finish in {options.kill_timeout}s")
            if scheduler.poll() is not None:
                raise RuntimeError(f"the scheduler ended: {(folder / 'scheduler.log').read_text()[-2000:]}")
            rows = site.query("SELECT target, status, pid, kind FROM jobs")
            good = {target for target, status, _, kind in rows if kind == "backup" and status == "succeeded"}
            active = [row for row in rows if row[1] in ("running", "queued")]
            if good == names and not active:
                break
            if time.monotonic() - last_kill >= options.kill_every:
                alive = {process.pid: process for process in site.workers if process.poll() is None}
                # One kill per target at most: the campaign tests recovery, not a target killed forever.
                victims = [row for row in active if row[1] == "running" and row[2] in alive
                           and row[0] not in {kill["target"] for kill in kills}]
                victims = victims if len(kills) < options.kills else []
                if victims:
                    target, _, pid, _ = generator.choice(victims)
                    alive[pid].send_signal(signal.SIGKILL)
                    alive[pid].wait()
                    kills.append({"at_seconds": round(time.monotonic() - started, 1), "target": target,
                                  "large": plan[target]["large"]})
                    last_kill = time.monotonic()
                    site.start_worker()  # the host comes back, or another takes its place
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        cpu = watch.stop()
        scheduler.terminate()
        scheduler.wait(60)
        site.stop_workers()
        jobs = site.query("SELECT target, status FROM jobs WHERE kind = 'backup'")
        statuses: dict[str, int] = {}
        for _, status in jobs:
            statuses[status] = statuses.get(status, 0) + 1
        stuck = site.query("SELECT count(*) FROM jobs WHERE status IN ('running', 'queued')")[0][0]
        queue_left = site.query("SELECT status, count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
                                "GROUP BY status")
        checked = time.monotonic()
        site.run("check", "--read-data", timeout=3600)
        check_seconds = time.monotonic() - checked
        # Restore: every target (restore --all, one process), or a sample that holds every killed target.
        restored_dir = folder / "restored"
        begun = time.monotonic()
        if options.verify == "all":
            site.run("restore", "--all", "--to", str(restored_dir), timeout=3600)
            sample = sorted(names)
        else:
            sample = sorted({kill["target"] for kill in kills} | set(generator.sample(sorted(names), 10)))
            for name in sample:
                site.run("restore", f"latest:{name}", "--to", str(restored_dir / name))
        restore_seconds = time.monotonic() - begun
        mismatched = [name for name in sample if not same_tree(folder / "data" / name, restored_dir / name)]
        result = {"mode": "kill-campaign", "targets": len(targets), "workers": count,
                  "kill_every_seconds": options.kill_every, "worker_timeout": options.worker_timeout,
                  "seconds": round(elapsed, 1), "load_average_1m_at_start": round(load, 1),
                  "load_average_1m_at_end": round(os.getloadavg()[0], 1), **cpu,
                  "kills": len(kills), "killed_large_targets": sum(1 for kill in kills if kill["large"]),
                  "backup_jobs": len(jobs), "retries": len(jobs) - len(targets), "statuses": statuses,
                  "stuck_jobs": stuck, "queue_left": dict(queue_left),
                  "check_read_data": "clean", "check_seconds": round(check_seconds, 1),
                  "restored_targets": len(sample), "restore_seconds": round(restore_seconds, 1),
                  "restore_mismatches": mismatched, "kill_log": kills}
        assert not stuck and not queue_left and not mismatched, result
        assert statuses.get("interrupted", 0) >= 1 or not kills, result
        return result
    finally:
        site.close()
        shutil.rmtree(folder, ignore_errors=True)


def safety_net_cost(context) -> tuple[float | None, float | None, float | None]:
    """The read side's 5-minute safety net as ``safehold serve`` runs it (StatusCache.verify in a
    thread of its own: everything read again and compared with what was followed; nothing differs
    here), on the server's own objects: its wall and CPU ms, and the wall ms of the scrape after it."""
    from safehold.engine.status import StatusCache
    from safehold.server.metrics import MetricsExposition

    cache = StatusCache(context)
    exposition = MetricsExposition(context, statuses=cache)
    if not hasattr(cache, "verify"):  # an older safehold (bench run against it): no such net
        return None, None, None
    cache.background = True
    exposition.render()
    begun, begun_cpu = time.perf_counter(), time.process_time()
    assert cache.verify() == 0
    wall, cpu = (time.perf_counter() - begun) * 1000, (time.process_time() - begun_cpu) * 1000
    begun = time.perf_counter()
    exposition.render()
    return round(wall, 1), round(cpu, 1), round((time.perf_counter() - begun) * 1000, 1)


def profile_changed(context, label: str, names: list[str]) -> None:
    """A profile of what serves /metrics (label 'metrics') or the targets API ('targets') after one
    backup job was recorded: the server's own objects, called in this thread (the test client runs
    the app in another thread, which cProfile does not see)."""
    import cProfile
    import pstats

    from safehold.engine.status import StatusCache
    from safehold.server.metrics import MetricsExposition

    cache = StatusCache(context)
    exposition = MetricsExposition(context, statuses=cache)
    serve = exposition.render if label == "metrics" else lambda: [status.as_dict() for status in cache.statuses()]
    profile = cProfile.Profile()
    profile.runcall(serve)
    print(f"--- {label} the first time (everything read and rendered)", file=sys.stderr)
    pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    catalog = context.catalog
    catalog.finish_job(catalog.start_job("backup", names[0]), "succeeded")
    profile = cProfile.Profile()
    profile.runcall(serve)
    print(f"--- {label} after a change", file=sys.stderr)
    pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(25)


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
    # The round on S3 (issue 18's 500-target measurement) and the worker-kill campaign.
    parser.add_argument("--repository", choices=("file", "s3"), default="file",
                        help="s3: the round on a moto S3 repository with --large big targets, --change, profile")
    parser.add_argument("--large", type=int, default=5, help="with s3: targets of 48-100 MiB among --targets")
    parser.add_argument("--change", action="store_true", help="with s3: a second round after changes")
    parser.add_argument("--change-at", type=int, default=0,
                        help="with --change: the second round only in the rows of this worker count (0: all)")
    parser.add_argument("--profile-at", type=int, default=2,
                        help="with s3 and --change: profile one worker's jobs in round 2 of this worker count (0: none)")
    parser.add_argument("--keep-profile", type=Path, help="copy that worker's profile (pstats) here")
    parser.add_argument("--kill-every", type=float, default=0.0,
                        help="also a worker-kill campaign (S3): SIGKILL a worker running a backup every S seconds")
    parser.add_argument("--kill-workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=20, help="at most this many kills (one per target)")
    parser.add_argument("--worker-timeout", default="5s", help="scheduler.worker_timeout in the kill campaign")
    parser.add_argument("--kill-timeout", type=float, default=1200)
    parser.add_argument("--verify", choices=("all", "sample"), default="all",
                        help="kill campaign: restore every target, or the killed ones and 10 more")
    parser.add_argument("--only-kill", action="store_true", help="only the kill campaign")
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
        if options.scheduler_overhead:
            options.workers = ""
        if options.repository == "s3" and not options.api and not options.scheduler_overhead:
            for workers in ([] if options.only_kill else [int(part) for part in options.workers.split(",")]):
                for executor in (["thread"] if options.thread and workers == 2 else []) + ["procrastinate"]:
                    result = s3_row(root, admin, options, executor, workers,
                                    profile=executor == "procrastinate" and workers == options.profile_at)
                    print(json.dumps(result), flush=True)
                    results.append(result)
            if options.kill_every:
                result = kill_campaign(root, admin, options)
                print(json.dumps(result), flush=True)
                results.append(result)
            options.workers = ""
        targets = make_trees(root, options.targets) if not options.api and options.workers else []
        for workers in ([] if options.api or not options.workers else [int(part) for part in options.workers.split(",")]):
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
