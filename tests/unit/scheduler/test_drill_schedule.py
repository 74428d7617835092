"""Drills with ``every:`` are queued by the scheduler once their targets have data, one at a time,
and again after their interval."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from control_support import FakeClock, ManualExecutor, files_target, write_config

from safehold.scheduler import Scheduler


def test_a_drill_with_every_runs_after_the_first_backups_and_again_after_its_interval(
        tmp_path: Path, clock: FakeClock, executor: ManualExecutor) -> None:
    from safehold.catalog import Catalog
    from safehold.config import load_config
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    root = tmp_path / "ws"
    root.mkdir()
    targets = [files_target(root, "db", tier=1), files_target(root, "web", tier=1)]
    path = write_config(root, targets, {"jitter": "1s", "prune_schedule": None, "check_schedule": None,
                                        "max_concurrent": 4})
    drills = [{"name": "site-lost", "scenario": "on_prem_host_failure", "every": "1d",
               "steps": [{"target": "db"}, {"target": "web", "after": ["db"]}]},
              {"name": "on-demand", "scenario": "data_corruption", "steps": [{"target": "db"}]}]
    with path.open("a") as file:
        file.write("drills:\n" + "".join(f"  - {json.dumps(drill)}\n" for drill in drills))
    config = load_config(path)
    context = Context(config)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context._catalog = Catalog.open(config.catalog_url, clock=clock)
    init_repository(context)
    scheduler = Scheduler(context, clock=clock, executor=executor, timezone=dt.UTC, jitter=dt.timedelta(0))

    def kinds_queued() -> list[str]:
        queued = scheduler.tick(clock.advance(seconds=5)).queued
        executor.run_all()
        return [context.catalog.get_job(job_id).kind for job_id in queued]

    assert kinds_queued() == ["backup", "backup"]
    assert kinds_queued() == []  # the drill waits until every one of its targets has data
    assert kinds_queued() == ["drill"]
    assert kinds_queued() == []
    drill = context.catalog.list_jobs(kind="drill")[0]
    assert drill.status == "succeeded", drill.error
    assert drill.details["drill"] == "site-lost" and drill.details["trigger"] == "scheduler"
    clock.advance(hours=23)
    assert "drill" not in kinds_queued()
    clock.advance(hours=1, seconds=5)
    assert "drill" in kinds_queued()
    assert [job.details["drill"] for job in context.catalog.list_jobs(kind="drill")] == ["site-lost", "site-lost"]
