"""A drill's steps in one process against the same steps on ``safehold worker`` processes (issue 18).

    eval "$(bash scripts/services.sh start)"     # SAFEHOLD_TEST_POSTGRES_URL
    python bench/drill_workers.py [--steps 4] [--size-mib 8] [--check-seconds 1] [--parallel 1,4]
                                  [--workers 2] [--rounds 3] [--json FILE]

One PostgreSQL database (catalog and queue), one file repository, ``--steps`` targets of
``--size-mib`` MiB each (incompressible, one snapshot each) and one drill over them whose steps
each run a command check of ``--check-seconds`` (a health check's own time). The same drill, with
the same ``parallel``, runs as ``safehold drill run --json`` with ``executor: thread`` (every step
in the drill's process) and with ``executor: procrastinate`` (each step a job on one of
``--workers`` workers, ``--concurrency 1`` each, started once), alternating which goes first in
each round. Measured per run: the drill's wall time (its report's ``duration_seconds``), the
largest step ART, the sum of step ARTs, and the CPU seconds (user+sys) of the drill process; the
workers' CPU over all rounds. Medians over ``--rounds``. Everything made is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

CLI = [sys.executable, "-m", "safehold.cli.main"]
PASSWORD = "drill workers bench"


def libpq(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def write_config(root: Path, name: str, dsn: str, executor: str, steps: int, parallel: int,
                 check_seconds: float) -> Path:
    scheduler = {"executor": executor, "worker_timeout": "10s", "retries": 1, "prune_schedule": None,
                 "check_schedule": None}
    check = {"type": "command", "run": f"sleep {check_seconds}; test -n \"$(ls -A)\""}
    drill = {"name": "bench", "scenario": "on_prem_host_failure", "parallel": parallel,
             "steps": [{"target": f"t{index}", "check": check} for index in range(steps)]}
    lines = ["repository: {url: repo, password_env: SAFEHOLD_PASSWORD}", "state_dir: state",
             f"catalog: {{url: {json.dumps(dsn.replace('postgresql://', 'postgresql+psycopg://', 1))}}}",
             f"scheduler: {json.dumps(scheduler)}", "tiers:", "  1: {rpo: 1d, rto: 1h}", "targets:"]
    lines += [f"  - {json.dumps({'name': f't{index}', 'tier': 1, 'source': {'type': 'files', 'paths': [f'data/t{index}']}})}"
              for index in range(steps)]
    lines += ["drills:", f"  - {json.dumps(drill)}"]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_drill(env: dict) -> dict:
    before = children_cpu()
    done = run(env, "drill", "run", "bench", "--json")
    cpu = children_cpu() - before
    if done.returncode != 0:
        raise SystemExit(f"drill failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    evidence = json.loads(done.stdout)
    arts = [step["art_seconds"] for step in evidence["steps"]]
    return {"wall_seconds": evidence["duration_seconds"], "max_art_seconds": max(arts),
            "sum_art_seconds": round(sum(arts), 3), "drill_cpu_seconds": round(cpu, 3),
            "worker_pids": sorted({step.get("worker", {}).get("pid") for step in evidence["steps"]} - {None})}


def median(runs: list[dict], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=8)
    parser.add_argument("--check-seconds", type=float, default=1.0)
    parser.add_argument("--parallel", default="1,4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    if options.json:
        options.json = options.json.resolve()  # the run changes directory
    admin = libpq(os.environ["SAFEHOLD_TEST_POSTGRES_URL"])
    database = f"sh_drillbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    dsn = re.sub(r"/[^/?]*(\?|$)", f"/{database}\\1", admin, count=1)
    root = Path(tempfile.mkdtemp(prefix="sh-drillbench-"))
    workers: list[subprocess.Popen] = []
    results: dict = {"options": {key: str(value) for key, value in vars(options).items()},
                     "load_before": os.getloadavg(), "cases": {}}
    try:
        for index in range(options.steps):
            folder = root / "data" / f"t{index}"
            folder.mkdir(parents=True)
            for number in range(8):
                (folder / f"f{number}").write_bytes(os.urandom(options.size_mib * 1024 * 1024 // 8))
        base = {key: value for key, value in os.environ.items() if not key.startswith("SAFEHOLD_")}
        base.update(SAFEHOLD_PASSWORD=PASSWORD, SAFEHOLD_QUEUE_DSN=dsn, PYTHONUNBUFFERED="1")
        os.chdir(root)
        for parallel in [int(value) for value in options.parallel.split(",")]:
            thread = dict(base, SAFEHOLD_CONFIG=str(write_config(root, f"thread-{parallel}.yml", dsn, "thread",
                                                                  options.steps, parallel, options.check_seconds)))
            queue = dict(base, SAFEHOLD_CONFIG=str(write_config(root, f"queue-{parallel}.yml", dsn, "procrastinate",
                                                                 options.steps, parallel, options.check_seconds)))
            if not workers:
                for step in (("init",), ("backup", "--all")):
                    done = run(thread, *step)
                    assert done.returncode == 0, done.stderr
                workers = [subprocess.Popen([*CLI, "worker", "--apply-schema"], env=queue, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)]
                time.sleep(5)
                workers += [subprocess.Popen([*CLI, "worker"], env=queue, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL) for _ in range(options.workers - 1)]
                time.sleep(5)
                one_drill(queue)  # unmeasured: warms the workers and the page cache
            runs: dict[str, list[dict]] = {"in-process": [], "workers": []}
            for number in range(options.rounds):
                order = [("in-process", thread), ("workers", queue)]
                for name, env in (order if number % 2 == 0 else order[::-1]):
                    measured = one_drill(env)
                    measured["load"] = round(os.getloadavg()[0], 2)
                    runs[name].append(measured)
            results["cases"][f"parallel {parallel}"] = {
                name: {"runs": case, **{key: median(case, key) for key in
                                        ("wall_seconds", "max_art_seconds", "sum_art_seconds", "drill_cpu_seconds")}}
                for name, case in runs.items()}
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        # Reaped above: their CPU is in RUSAGE_CHILDREN now (with the drills'); reported for the whole run.
        results["children_cpu_seconds_total"] = round(children_cpu(), 3)
        results["load_after"] = os.getloadavg()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        os.chdir("/")
        shutil.rmtree(root, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    text = json.dumps(results, indent=2)
    if options.json:
        options.json.write_text(text + "\n")
    for case, by_mode in results["cases"].items():
        for mode, figures in by_mode.items():
            print(f"{case:11} {mode:10} wall {figures['wall_seconds']:6.2f}s  max ART {figures['max_art_seconds']:6.2f}s"
                  f"  sum ART {figures['sum_art_seconds']:6.2f}s  drill CPU {figures['drill_cpu_seconds']:5.2f}s")
    print(f"load {results['load_before'][0]:.2f} before, {results['load_after'][0]:.2f} after")


if __name__ == "__main__":
    main()
