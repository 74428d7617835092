"""The ransomware drill on the immutable S3 repository (moto, Object Lock): the newest snapshot
is encrypted data, so the drill restores the newest snapshot taken before the attack ('before:'),
proves it clean with a checksum, and measures the RPO from the moment of the attack."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

import moto_support
from safehold import errors
from safehold.catalog import Catalog
from safehold.config import load_config
from safehold.engine.context import Context

CLEAN = b"orders 2026-12-06: 1200 rows\n"


def ransomware_context(root: Path, moto, bucket: str, before: str | None) -> Context:
    (root / "password").write_text("drill correct horse\n")
    repository = {"url": f"s3://{bucket}/safehold", "endpoint_url": moto.url, "region": moto_support.REGION,
                  "object_lock": {"mode": "GOVERNANCE", "days": 1}, "password_file": "password"}
    target = {"name": "docs", "tier": 3, "source": {"type": "files", "paths": ["data"]}}
    drill = {"name": "bad-day", "scenario": "data_corruption",
             "steps": [{"target": "docs", "check": {"type": "checksum", "path": "data/orders.csv",
                                                    "sha256": hashlib.sha256(CLEAN).hexdigest()}}]}
    if before:
        drill["before"] = before
    path = root / "targets.yml"
    path.write_text(yaml.safe_dump({"repository": repository, "state_dir": "state", "targets": [target],
                                    "drills": [drill]}))
    config = load_config(path)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    return Context(config, _catalog=Catalog.open(config.catalog_url))


def test_the_ransomware_drill_restores_the_newest_clean_snapshot(moto, lock_bucket, aws_env, tmp_path: Path) -> None:
    from safehold.engine.backup import backup_target
    from safehold.engine.drill import plan_drill, run_drill
    from safehold.engine.maintenance import init_repository

    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "orders.csv").write_bytes(CLEAN)
    context = ransomware_context(root, moto, lock_bucket, None)
    init_repository(context)
    clean = backup_target(context, "docs").snapshot_id
    time.sleep(0.01)
    attack = datetime.now(timezone.utc)
    (root / "data" / "orders.csv").write_bytes(bytes(range(256)) * 4)  # encrypted in place
    encrypted = backup_target(context, "docs").snapshot_id

    # Without 'before' the drill restores the encrypted newest snapshot, and the check says so.
    with pytest.raises(errors.DrillFailed, match="docs failed"):
        run_drill(context, "bad-day", report_dir=tmp_path / "latest")
    context.close()

    context = ransomware_context(root, moto, lock_bucket, attack.isoformat())
    plan = plan_drill(context, "bad-day")
    assert plan.steps[0].snapshot_id == clean != encrypted and plan.reference_time == attack.isoformat()
    result = run_drill(context, "bad-day", report_dir=tmp_path / "report")
    step = result.evidence["steps"][0]
    assert result.passed and step["snapshot_id"] == clean and "expected SHA-256" in step["detail"]
    assert 0 < step["rpo_seconds"] < 60 and result.evidence["before"] == attack.isoformat()
    assert result.evidence["left_behind"] == []
    context.close()
