"""Object Lock maintenance as a queued job (``engine.jobs``), as the scheduler and the API run it:
against a locked S3 repository (moto), it extends the retention of what the kept snapshot needs
and records its log lines and report in the row that was submitted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

import moto_support
from safehold.catalog import Catalog
from safehold.config import load_config
from safehold.engine.context import Context
from safehold.engine.jobs import run_job, submit_job


def locked_context(root: Path, moto, bucket: str, days: int) -> Context:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "file.txt").write_text("locked\n")
    (root / "password").write_text("jobs correct horse\n")
    repository = {"url": f"s3://{bucket}/safehold", "endpoint_url": moto.url, "region": moto_support.REGION,
                  "object_lock": {"mode": "GOVERNANCE", "days": days}, "password_file": "password"}
    target = {"name": "docs", "tier": 3, "source": {"type": "files", "paths": ["data"]}, "retention": {"keep_last": 1}}
    path = root / "targets.yml"
    path.write_text(yaml.safe_dump({"repository": repository, "state_dir": "state", "targets": [target]}))
    config = load_config(path)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    return Context(config, _catalog=Catalog.open(config.catalog_url))


def test_queued_maintenance_extends_retention_and_logs_into_its_own_row(moto, lock_bucket, s3, aws_env,
                                                                        tmp_path: Path) -> None:
    from safehold.engine.maintenance import init_repository

    context = locked_context(tmp_path / "ws", moto, lock_bucket, days=1)
    init_repository(context)
    backup = run_job(context, submit_job(context, "backup", "docs"))
    assert backup.status == "succeeded", backup.error
    # The lock period is raised to 3 days: everything locked for 1 day now ends within the
    # default renewal window (half of 3 days), so maintenance extends all of it.
    longer = locked_context(tmp_path / "ws", moto, lock_bucket, days=3)
    before = datetime.now(timezone.utc)
    job_id = submit_job(longer, "maintenance", trigger="scheduler")
    job = run_job(longer, job_id)
    assert (job.id, job.status) == (job_id, "succeeded"), job.error
    log = [line.message for line in longer.catalog.job_logs(job_id)]
    assert log[0] == "started (scheduler, attempt 1)"
    assert len(log) == 2 and log[1].startswith("checked ") and "of 1 kept snapshot(s)" in log[1], log
    extended = sum(job.details["objects_extended"].values())
    assert extended == job.details["objects_checked"] >= 3 and f"extended {extended} to " in log[1]
    assert [row.id for row in longer.catalog.list_jobs(kind="maintenance", limit=None)] == [job_id]
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=lock_bucket, Prefix="safehold/data/")["Contents"]]
    for key in keys:
        until = s3.head_object(Bucket=lock_bucket, Key=key)["ObjectLockRetainUntilDate"]
        assert until >= before + timedelta(days=3) - timedelta(minutes=1), (key, until)
    # Idempotent: run again at once, it extends nothing.
    again = run_job(longer, submit_job(longer, "maintenance", trigger="api"))
    assert again.status == "succeeded" and sum(again.details["objects_extended"].values()) == 0
    context.close()
    longer.close()
