"""Restore tests of ebs targets in EC2 (moto server extended by moto_ebs): the ``attach`` and
``instance`` health checks, their cleanup after a failure and after a SIGKILLed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from ebs_support import REGION, Aws
from test_ebs_backup import BLOCK, PASSWORD, pattern

from safehold import errors

SANDBOX_FILTER = [{"Name": "tag-key", "Values": ["safehold:sandbox"]}]


def checked_context(tmp_path: Path, source: dict, check: dict):
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    target = {"name": "db-ebs", "tier": 1, "source": {"type": "ebs", "region": REGION, "copy_blocks": False, **source},
              "restore_test": {"health_check": check}}
    config = {"repository": {"url": str(tmp_path / "repo"), "password_env": "SAFEHOLD_EBS_TEST_PASSWORD"},
              "state_dir": str(tmp_path / "state"), "targets": [target]}
    (tmp_path / "targets.yml").write_text(yaml.safe_dump(config))
    os.environ["SAFEHOLD_EBS_TEST_PASSWORD"] = PASSWORD
    context = Context.load(tmp_path / "targets.yml", threads=2)
    init_repository(context)
    return context


def sandbox_resources(aws: Aws, region: str = REGION) -> dict[str, list[str]]:
    ec2 = aws.client("ec2", region)
    instances = [i["InstanceId"] for r in ec2.describe_instances(Filters=SANDBOX_FILTER)["Reservations"]
                 for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    return {"instances": instances,
            "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=SANDBOX_FILTER)["Volumes"]],
            "images": [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=SANDBOX_FILTER)["Images"]]}


NOTHING = {"instances": [], "volumes": [], "images": []}


def backed_up(aws: Aws, tmp_path: Path, check: dict, volumes: int = 1, **source):
    from safehold.engine.backup import backup_target

    ids = []
    for number in range(volumes):
        volume = aws.volume()
        aws.write(volume, number * BLOCK, pattern(300 + number))
        ids.append(volume)
    context = checked_context(tmp_path, {"volume_ids": ids, **source}, check)
    backup_target(context, "db-ebs")
    return context, ids


def test_attach_check_attaches_every_volume_in_the_instance_zone_and_removes_them(aws: Aws, tmp_path, fast_kdf):
    from safehold.engine.restore_test import run_restore_test

    instance = aws.instance(zone=REGION + "b")["InstanceId"]
    context, volumes = backed_up(aws, tmp_path, {"type": "attach", "instance": instance}, volumes=2)
    snapshots_before = aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
    result = run_restore_test(context, "db-ebs")
    assert result.passed and "2 volume(s) attached to " + instance in result.detail and 0 < result.art_seconds < 30
    job = context.catalog.get_job(result.job_id)
    made = job.details["ec2"]["volumes"]
    assert sorted(v["from_volume"] for v in made.values()) == sorted(volumes)
    assert sorted(v["device"] for v in made.values()) == ["/dev/sdf", "/dev/sdg"]
    assert job.details["ec2"]["availability_zone"] == REGION + "b"
    assert sorted(job.details["ec2"]["removed"]) == sorted(job.details["ec2"]["created"])
    assert sandbox_resources(aws) == NOTHING
    # The EBS snapshots are the backups: untouched.
    assert aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == snapshots_before
    assert [m["DeviceName"] for m in aws.client("ec2").describe_instances(InstanceIds=[instance])["Reservations"][0][
        "Instances"][0]["BlockDeviceMappings"]] == ["/dev/sda1"]


def test_instance_check_runs_an_instance_from_an_ami_of_the_snapshots(aws: Aws, tmp_path, fast_kdf):
    from safehold.engine.restore_test import run_restore_test

    context, volumes = backed_up(aws, tmp_path, {"type": "instance", "boot_mode": "uefi", "ena": True}, volumes=1)
    result = run_restore_test(context, "db-ebs")
    assert result.passed and "running" in result.detail, result.detail
    facts = context.catalog.get_job(result.job_id).details["ec2"]
    assert facts["devices"] == ["/dev/xvda"] and facts["root_volume"] == volumes[0]
    assert any(item.startswith(f"image {facts['image']}") for item in facts["removed"])
    assert any(item.startswith(f"instance {facts['instance']}") for item in facts["removed"])
    assert sandbox_resources(aws) == NOTHING
    state = aws.client("ec2").describe_instances(InstanceIds=[facts["instance"]])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"


def test_a_failed_instance_check_removes_its_ami(aws: Aws, tmp_path, fast_kdf):
    from safehold.engine.restore_test import run_restore_test

    check = {"type": "instance", "subnet": "subnet-0123456789abcdef0"}  # no such subnet: RunInstances fails
    context, _ = backed_up(aws, tmp_path, check)
    with pytest.raises(errors.RestoreTestFailed, match="InvalidSubnetID.NotFound"):
        run_restore_test(context, "db-ebs")
    job = [j for j in context.catalog.list_jobs() if j.kind == "restore-test"][-1]
    assert job.status == "failed" and any(item.startswith("image ami-") for item in job.details["ec2"]["removed"])
    assert sandbox_resources(aws) == NOTHING


KILLED_RUN = textwrap.dedent("""
    import sys, boto3
    from safehold.engine.ec2_check import owner_tag
    from safehold.platforms.aws.ec2 import Ec2Sandbox
    ec2 = boto3.client("ec2", region_name=sys.argv[1], endpoint_url=sys.argv[2])
    sandbox = Ec2Sandbox(ec2, sys.argv[1], owner_tag(41), label="db-ebs", poll=0.05)
    volume = sandbox.create_volume(sys.argv[3], sys.argv[1] + "a")
    sandbox.attach_volume(volume, sys.argv[4], "/dev/sdk")
    sandbox.register_image(sys.argv[3])
    print("made", flush=True)
    sys.stdin.read()
""")


def test_the_next_run_removes_what_a_killed_run_left(aws: Aws, tmp_path, fast_kdf):
    from safehold.engine.restore_test import run_restore_test

    instance = aws.instance()["InstanceId"]
    context, _ = backed_up(aws, tmp_path, {"type": "attach", "instance": instance})
    snapshot = aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"][0]["SnapshotId"]
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, REGION, aws.endpoint, snapshot, instance],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert run.stdout.readline().strip() == "made"
        alive = sandbox_resources(aws)
        assert len(alive["volumes"]) == 1 and len(alive["images"]) == 1
        # A run that is still alive owns its resources: they are not touched.
        from safehold.engine.ec2_check import remove_leftovers

        assert remove_leftovers(aws.client("ec2"), REGION) == []
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    result = run_restore_test(context, "db-ebs")
    assert result.passed
    job = context.catalog.get_job(result.job_id)
    removed = job.details["ec2"]["leftovers_removed"]
    assert sorted(item.split()[0] for item in removed) == ["image", "volume"]
    assert sandbox_resources(aws) == NOTHING


def test_ec2_checks_need_an_ebs_target(tmp_path: Path):
    from safehold.config import load_config

    config = {"repository": {"url": str(tmp_path / "repo")},
              "targets": [{"name": "docs", "source": {"type": "files", "paths": ["/srv"]},
                           "restore_test": {"health_check": {"type": "attach", "instance": "i-0123456789abcdef0"}}},
                          {"name": "db", "source": {"type": "ebs", "region": REGION,
                                                    "volume_ids": ["vol-0123456789abcdef0", "vol-0123456789abcdef1"]},
                           "restore_test": {"health_check": {"type": "instance"}}},
                          {"name": "db2", "source": {"type": "ebs", "region": REGION, "volume_ids": ["vol-0123456789abcdef0"]},
                           "restore_test": {"health_check": {"type": "attach", "instance": "i-12"}}}]}
    path = tmp_path / "targets.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "type 'attach' brings EBS snapshots up in EC2, so it needs an ebs target" in text
    assert "has 2 volumes; an instance check needs root_volume" in text
    assert "'i-12' is not an EC2 instance id" in text
    assert f"{path}:" in text
