"""The AWS region-failure drill on the moto server (extended by moto_ebs): ebs targets come back in
the DR region from their DR-region copies (volumes attached to a DR instance, an AMI and an
instance), everything made there is removed, and the evidence report says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ebs_support import DR_REGION, REGION, Aws
from test_ebs_backup import BLOCK, PASSWORD, pattern
from test_ec2_checks import NOTHING, sandbox_resources

from safehold import errors


def region_context(aws: Aws, tmp_path: Path, dr_instance: str):
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    volumes = {}
    for name in ("db-ebs", "app-ebs", "logs-ebs"):
        volumes[name] = aws.volume()
        aws.write(volumes[name], BLOCK, pattern(len(name)))
    dr = [{"region": DR_REGION}]

    def target(name: str, copies: list) -> dict:
        return {"name": name, "tier": 1, "source": {"type": "ebs", "region": REGION, "volume_ids": [volumes[name]],
                                                    "copy_blocks": False, "dr_copies": copies}}

    config = {
        "repository": {"url": str(tmp_path / "repo"), "password_env": "SAFEHOLD_EBS_TEST_PASSWORD"},
        "state_dir": str(tmp_path / "state"),
        "targets": [target("db-ebs", dr), target("app-ebs", dr), target("logs-ebs", [])],
        "drills": [
            {"name": "region-lost", "scenario": "aws_region_failure",
             "restore_to": {"type": "aws", "region": DR_REGION, "instance": dr_instance},
             "steps": [{"target": "db-ebs", "check": {"type": "attach", "instance": "i-0123456789abcdef0"}},
                       {"target": "app-ebs", "after": ["db-ebs"],
                        "check": {"type": "instance", "boot_mode": "uefi"}}]},
            {"name": "region-lost-all", "scenario": "aws_region_failure",
             "restore_to": {"type": "aws", "region": DR_REGION, "instance": dr_instance},
             "steps": [{"target": "db-ebs", "check": {"type": "attach", "instance": "i-0123456789abcdef0"}},
                       {"target": "logs-ebs", "check": {"type": "instance"}}]},
        ]}
    (tmp_path / "targets.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    os.environ["SAFEHOLD_EBS_TEST_PASSWORD"] = PASSWORD
    context = Context.load(tmp_path / "targets.yml", threads=2)
    init_repository(context)
    return context


def test_the_region_failure_drill_comes_back_in_the_dr_region(aws: Aws, tmp_path: Path, fast_kdf):
    from safehold.engine.backup import backup_target
    from safehold.engine.drill import plan_drill, run_drill

    dr_instance = aws.instance(region=DR_REGION, zone=DR_REGION + "b")["InstanceId"]
    context = region_context(aws, tmp_path, dr_instance)
    for name in ("db-ebs", "app-ebs", "logs-ebs"):
        backup_target(context, name)

    # logs-ebs has no copy in the DR region: the plan says so, and the drill does not start.
    incomplete = plan_drill(context, "region-lost-all")
    assert incomplete.problems == [f"logs-ebs: no copy in {DR_REGION} (add it to dr_copies) of volume(s) "
                                   f"{context.config.target('logs-ebs').source.volume_ids[0]} in this restore point"]
    with pytest.raises(errors.DrillNotReady, match="no copy in us-west-2"):
        run_drill(context, "region-lost-all", report_dir=tmp_path / "never")
    shown = subprocess.run([sys.executable, "-m", "safehold.cli.main", "drill", "plan", "region-lost-all"],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, SAFEHOLD_CONFIG=str(tmp_path / "targets.yml")))
    assert shown.returncode == 81, shown.stderr
    assert f"db-ebs (ebs, tier 1)" in shown.stdout and f"brought up in EC2 {DR_REGION}" in shown.stdout
    assert f"missing: logs-ebs: no copy in {DR_REGION} (add it to dr_copies)" in shown.stdout

    plan = plan_drill(context, "region-lost")
    assert plan.problems == [] and [step.ec2_region for step in plan.steps] == [DR_REGION, DR_REGION]

    primary_before = sandbox_resources(aws, REGION)
    result = run_drill(context, "region-lost", report_dir=tmp_path / "report")
    assert result.passed, result.evidence["steps"]
    db, app = result.evidence["steps"]
    copies = {s["SnapshotId"] for s in aws.client("ec2", DR_REGION).describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    # db-ebs: a volume from its DR copy in the DR instance's zone, attached to the DR instance.
    assert db["ec2"]["region"] == DR_REGION and db["ec2"]["instance"] == dr_instance and dr_instance in db["check"]
    assert db["ec2"]["availability_zone"] == DR_REGION + "b"
    assert [v["snapshot"] in copies for v in db["ec2"]["volumes"].values()] == [True]
    # app-ebs: an AMI of its DR copy and an instance run from it in the DR region, after db-ebs.
    assert app["ec2"]["region"] == DR_REGION and app["ec2"]["state"] == "running"
    assert app["started"] >= db["ended"] and app["art_seconds"] >= db["art_seconds"]
    assert result.evidence["left_behind"] == []
    kinds = sorted(item["kind"] for item in result.evidence["removed"] if item["kind"].startswith("EC2"))
    assert kinds == ["EC2 image", "EC2 instance", "EC2 volume"]
    assert sandbox_resources(aws, DR_REGION) == NOTHING and sandbox_resources(aws, REGION) == primary_before
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["scenario"] == "aws_region_failure" and report["passed"]
    assert "EC2 instance" in (tmp_path / "report" / "report.md").read_text()
    context.close()
