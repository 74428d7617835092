"""Scale-out: one round of backups of many small targets, run by 1, 2 and 4 ``safehold worker`` processes.

    eval "$(bash scripts/services.sh start)"     # SAFEHOLD_TEST_POSTGRES_URL
    python bench/scale.py [--targets 100] [--workers 1,2,4] [--thread] [--json FILE]

For each worker count: a fresh PostgreSQL database (catalog and queue in one), a fresh file
repository, ``--targets`` targets of small file trees (1 to 20 files of 1-64 KiB, sizes varying
by target), W workers (``--concurrency 1`` each) and one ``safehold scheduler run --once`` with
``executor: procrastinate`` and ``max_concurrent``/``max_per_host`` = W. Measured: the wall time of
the round (from the scheduler's start to its exit, every target backed up), jobs per second, and
the scheduler's own CPU time (user+sys of its process). ``--thread`` adds the embedded baseline
(thread executor, same limits, no workers). Every database and directory made is removed.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--thread", action="store_true", help="also the embedded thread executor")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    admin = libpq(os.environ.get("SAFEHOLD_TEST_POSTGRES_URL", ""))
    if not admin:
        sys.exit("set SAFEHOLD_TEST_POSTGRES_URL (eval \"$(bash scripts/services.sh start)\")")
    root = Path(tempfile.mkdtemp(prefix="safehold-scale-"))
    results = []
    try:
        targets = make_trees(root, options.targets)
        for workers in [int(part) for part in options.workers.split(",")]:
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
