"""The scheduler queues a configured copy with a schedule once per slot for each covered target."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from control_support import FakeClock, ManualExecutor, files_target

from safehold.catalog import Catalog
from safehold.config import load_config
from safehold.engine.context import Context
from safehold.engine.jobs import run_job, submit_job
from safehold.engine.maintenance import init_repository
from safehold.repository import Repository
from safehold.repository.backends import open_backend
from safehold.scheduler import Scheduler

UTC = dt.UTC
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


@pytest.fixture
def context(tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OFFSITE_PASSWORD", "offsite")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "password").write_text("pw\n")
    targets = [files_target(tmp_path, "web", tier=3), files_target(tmp_path, "docs", tier=3)]
    copies = [{"name": "offsite", "schedule": "0 2 * * *", "targets": ["web"],
               "repository": {"url": str(tmp_path / "offsite"), "password_env": "OFFSITE_PASSWORD"}}]
    lines = ['repository: {"url": "repo", "password_file": "password"}', "state_dir: state",
             'scheduler: {"jitter": "1s", "prune_schedule": null, "check_schedule": null}', "targets:"]
    lines += [f"  - {json.dumps(target)}" for target in targets] + [f"copies: {json.dumps(copies)}"]
    (root / "targets.yml").write_text("\n".join(lines) + "\n")
    config = load_config(root / "targets.yml")
    context = Context(config)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context._catalog = Catalog.open(config.catalog_url, clock=clock)
    init_repository(context)
    Repository.init(open_backend(str(tmp_path / "offsite")), b"offsite", FAST_KDF,
                    params_from=context.open_repository(load_index=False))
    yield context
    context.close()


def test_a_scheduled_copy_runs_once_per_slot(context: Context, clock: FakeClock, executor: ManualExecutor):
    clock.set(dt.datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    for target in ("web", "docs"):  # backed up now: not due again for a day (tier 3)
        run_job(context, submit_job(context, "backup", target))
    scheduler = Scheduler(context, clock=clock, executor=executor, timezone=UTC, jitter=dt.timedelta(0))
    # 01:00:05: yesterday's 02:00 slot never ran, so the copy of web (not docs) is overdue.
    first = scheduler.tick(clock.advance(seconds=5))
    jobs = [context.catalog.get_job(job_id) for job_id in first.queued]
    assert [(job.kind, job.target, job.details["params"]) for job in jobs] == [("copy", "web", {"to": "offsite"})]
    executor.run_all()
    copy = context.catalog.get_job(jobs[0].id)
    assert copy.status == "succeeded" and copy.details["snapshots_copied"] == 1
    assert scheduler.tick(clock.advance(seconds=1800)).queued == []
    # 02:00: the next slot; the destination already holds the snapshot, so nothing is sent.
    clock.set(dt.datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    [again] = scheduler.tick().queued
    executor.run_all()
    record = context.catalog.get_job(again)
    assert record.kind == "copy" and record.details["snapshots_skipped"] == 1 and record.details["blobs_sent"] == 0
