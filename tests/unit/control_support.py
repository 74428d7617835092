"""Helpers for the control-plane unit tests: a fake clock, a manual executor and a real
workspace (local repository, SQLite catalog on the fake clock, files to back up).

``FakeClock`` and ``ManualExecutor`` are the two fakes of this suite (listed in
docs/testing.md): the clock, because waiting hours for cron slots is not a test;
the executor, because the limits are only observable while jobs are still
running, so the test decides when each dispatched job runs. The jobs they run
are real: real backups into a real repository, recorded in a real catalog.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UTC = dt.UTC
START = dt.datetime(2026, 3, 2, 10, 30, tzinfo=UTC)  # a Monday


class FakeClock:
    """A clock that only moves when told; shared by the scheduler and the catalog."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now

    def set(self, when: dt.datetime) -> dt.datetime:
        self.now = when
        return when


@dataclass
class ManualExecutor:
    """Holds submitted calls until the test runs them (in the test's thread)."""

    pending: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = field(default_factory=list)
    shut_down: bool = False

    def submit(self, function: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        self.pending.append((future, function, args))
        return future

    def run_next(self) -> Any:
        future, function, args = self.pending.pop(0)
        try:
            result = function(*args)
        except BaseException as error:
            future.set_exception(error)
            return error
        future.set_result(result)
        return result

    def run_all(self) -> list[Any]:
        results = []
        while self.pending:
            results.append(self.run_next())
        return results

    def shutdown(self, wait: bool = True) -> None:
        self.shut_down = True


def write_config(root: Path, targets: list[dict], scheduler: dict | None = None,
                 repository: dict | None = None) -> Path:
    """targets.yml in ``root``; ``repository`` replaces the local repository ``repo`` (its
    password_file is added)."""
    (root / "password").write_text("pw\n")
    repository = {"url": "repo", **(repository or {}), "password_file": "password"}
    lines = [f"repository: {json.dumps(repository)}", "state_dir: state"]
    if scheduler is not None:
        lines.append(f"scheduler: {json.dumps(scheduler)}")
    lines.append("targets:" if targets else "targets: []")
    lines += [f"  - {json.dumps(target)}" for target in targets]
    path = root / "targets.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def files_target(root: Path, name: str, tier: int = 1, **extra: Any) -> dict:
    data = root / "data" / name
    data.mkdir(parents=True, exist_ok=True)
    (data / "hostname").write_text(f"{name}\n")
    return {"name": name, "tier": tier, "source": {"type": "files", "paths": [str(data)]}, **extra}


def make_context(root: Path, targets: list[dict], scheduler: dict | None = None,
                 clock: FakeClock | None = None, init: bool = True, repository: dict | None = None):
    """A Context on a fresh workspace; its catalog runs on ``clock``."""
    from safehold.catalog import Catalog
    from safehold.config import load_config
    from safehold.engine.context import Context

    root.mkdir(parents=True, exist_ok=True)
    config = load_config(write_config(root, targets, scheduler, repository))
    context = Context(config)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context._catalog = Catalog.open(config.catalog_url, clock=clock or FakeClock())
    if init:
        from safehold.engine.maintenance import init_repository

        init_repository(context)
    return context


FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def files_workspace(tmp_path: Path, names: list[str] | tuple[str, ...]) -> Path:
    """targets.yml with one small files target per name (a file ``a`` each), a password file and an
    initialised local repository (a cheap KDF) beside it; returns the config's path."""
    from safehold.repository import Repository
    from safehold.repository.backends import open_backend

    (tmp_path / "password").write_text("pw\n")
    (tmp_path / "password").chmod(0o600)
    targets = []
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "a").write_bytes(name.encode() * 1000)
        targets.append(f'  - {{"name": "{name}", "tier": 1, "source": {{"type": "files", '
                       f'"paths": ["{tmp_path / name}"]}}}}\n')
    config = tmp_path / "targets.yml"
    config.write_text('repository: {"url": "repo", "password_file": "password"}\nstate_dir: state\n'
                      "targets:\n" + "".join(targets))
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    return config
