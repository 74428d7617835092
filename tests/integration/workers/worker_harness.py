"""The worker suite's harness: a PostgreSQL database per test, ``targets.yml``, and the CLI run in
subprocesses (``Install``). Shared by the files of tests/integration/workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("procrastinate")

ADMIN_URL = os.environ.get("SAFEHOLD_TEST_POSTGRES_URL", "")
PASSWORD = "workers correct horse battery staple"
CLI = [sys.executable, "-m", "safehold.cli.main"]


def _libpq(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def _create_database() -> tuple[str, str]:
    name = f"sh_workers_{uuid.uuid4().hex[:12]}"
    admin = _libpq(ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name, re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", admin, count=1)


def _drop_database(name: str) -> None:
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_fixture() -> Iterator[str]:
    """A database of its own (libpq DSN), dropped at the end."""
    name, dsn = _create_database()
    try:
        yield dsn
    finally:
        _drop_database(name)


class Install:
    """targets.yml, a repository, and the processes started on them (killed at the end)."""

    def __init__(self, root: Path, dsn: str, targets: list[dict], scheduler: dict,
                 catalog_dsn: str | None = None, repository: dict | None = None) -> None:
        self.root, self.dsn = root, dsn
        self.processes: list[subprocess.Popen] = []
        settings = {"executor": "procrastinate", "jitter": "1s", "worker_timeout": "3s", "retries": 2,
                    "retry_backoff": "1s", "prune_schedule": None, "check_schedule": None, **scheduler}
        repository = repository or {"url": "repo"}
        lines = ["repository:", *(f"  {key}: {json.dumps(value)}" for key, value in repository.items()),
                 "  password_env: SAFEHOLD_PASSWORD", "state_dir: state",
                 f"catalog: {{url: {json.dumps((catalog_dsn or dsn).replace('postgresql://', 'postgresql+psycopg://', 1))}}}",
                 f"scheduler: {json.dumps(settings)}",
                 "tiers:", "  1: {rpo: 15m, rto: 1h}", "targets:" + ("" if targets else " []")]
        lines += [f"  - {json.dumps(target)}" for target in targets]
        (root / "targets.yml").write_text("\n".join(lines) + "\n")
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("SAFEHOLD_")}
        self.env.update(SAFEHOLD_CONFIG=str(root / "targets.yml"), SAFEHOLD_PASSWORD=PASSWORD,
                        SAFEHOLD_QUEUE_DSN=dsn, COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*CLI, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=120)
        if ok:
            assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.root / f"{args[0]}-{len(self.processes)}.log", "w")
        process = subprocess.Popen([*CLI, *args], cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()}" for path in sorted(self.root.glob("*.log")))

    def jobs(self) -> list[dict]:
        with psycopg.connect(self.dsn) as connection:
            rows = connection.execute("SELECT id, kind, target, status, pid, error, details FROM jobs ORDER BY id")
            return [dict(zip(("id", "kind", "target", "status", "pid", "error", "details"), row)) for row in rows]

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\njobs: {self.jobs()}\n{self.logs()}")

    def wait_for_workers(self, count: int) -> list[dict]:
        """Polled in-process (each CLI run costs seconds on a busy machine); the CLI is checked once per test."""
        from safehold.config.scheduler import SchedulerConfig
        from safehold.errors import QueueUnreachable
        from safehold.scheduler.queue import list_workers

        settings = SchedulerConfig(worker_timeout="3s")

        def listed() -> list[dict] | None:
            try:
                found = [entry.as_dict() for entry in list_workers(settings, self.dsn)]
            except QueueUnreachable:  # the first worker has not created the queue's tables yet
                return None
            described = [worker for worker in found if worker["alive"] and worker["hostname"]]
            return described if len(described) >= count else None
        return self.wait_for(listed, 30, f"{count} worker(s)")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def install_fixture(tmp_path: Path, database: str):
    made: list[Install] = []

    def make(targets: list[dict], scheduler: dict | None = None, init: bool = True,
             catalog_dsn: str | None = None, repository: dict | None = None) -> Install:
        created = Install(tmp_path, database, targets, scheduler or {}, catalog_dsn, repository)
        made.append(created)
        if init:
            created.run("init")
        return created

    yield make
    for created in made:
        created.stop()
