"""Restores to an EC2 instance against the moto server (extended by moto_ebs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ebs_support import DR_REGION, REGION, Aws
from test_ebs_backup import BLOCK, make_context, pattern

from safehold import errors

ROOT = Path(__file__).resolve().parents[3]


def backed_up_volume(aws: Aws, tmp_path: Path, copy_blocks: bool = False, dr: bool = False, blocks: int = 6):
    from safehold.engine.backup import backup_target

    volume = aws.volume()
    for index in range(blocks):
        aws.write(volume, index * 3 * BLOCK, pattern(100 + index))
    source: dict = {"volume_ids": [volume], "copy_blocks": copy_blocks}
    if dr:
        source["dr_copies"] = [{"region": DR_REGION}]
    context = make_context(tmp_path, source)
    result = backup_target(context, "db-ebs")
    with context.locked() as repository:
        token = repository.find_snapshot(result.snapshot_id).source["volumes"][volume]
    return context, volume, token, result


def restore_ebs(context, snapshot_ref: str, instance_id: str, **options):
    """An instance restore through the one restore job; the destination's result as its dataclass."""
    from safehold.engine.restore import restore_snapshot
    from safehold.restore.ebs import EbsRestoreResult

    outcome = restore_snapshot(context, snapshot_ref, {"kind": "ebs", "instance": instance_id, **options})
    return EbsRestoreResult(**outcome.details)


def attachment(aws: Aws, volume_id: str, region: str = REGION) -> dict:
    volume = aws.client("ec2", region).describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return {"zone": volume["AvailabilityZone"], "state": volume["State"],
            "attachments": [(a["InstanceId"], a["Device"]) for a in volume["Attachments"]]}


def test_restore_from_ebs_snapshot_in_the_instance_zone(aws: Aws, tmp_path: Path, fast_kdf):
    context, volume, token, _ = backed_up_volume(aws, tmp_path)
    instance = aws.instance(zone=REGION + "b")
    result = restore_ebs(context, token["snapshot"], instance["InstanceId"], device="/dev/sdf")
    assert result.availability_zone == REGION + "b" and not result.from_copy
    assert attachment(aws, result.volume_id) == {"zone": REGION + "b", "state": "in-use",
                                                 "attachments": [(instance["InstanceId"], "/dev/sdf")]}
    assert aws.volume_blocks(result.volume_id) == aws.volume_blocks(volume)
    restores = [job for job in context.catalog.list_jobs() if job.kind == "restore"]
    assert [job.status for job in restores] == ["succeeded"]


def test_default_device_is_the_first_free_one_and_a_used_one_is_refused(aws: Aws, tmp_path: Path, fast_kdf):
    context, _volume, token, _ = backed_up_volume(aws, tmp_path)
    instance = aws.instance()
    first = restore_ebs(context, token["snapshot"], instance["InstanceId"])
    assert first.device == "/dev/sdf"
    second = restore_ebs(context, token["snapshot"], instance["InstanceId"])
    assert second.device == "/dev/sdg"
    volumes_before = len(aws.client("ec2").describe_volumes()["Volumes"])
    with pytest.raises(errors.EbsDeviceInUse, match="/dev/sdf is already in use") as caught:
        restore_ebs(context, token["snapshot"], instance["InstanceId"], device="/dev/sdf")
    assert caught.value.exit_code == 46 and "/dev/sdh" in caught.value.hint
    assert len(aws.client("ec2").describe_volumes()["Volumes"]) == volumes_before  # nothing left behind


def test_pending_snapshot_is_a_clear_error(aws: Aws, tmp_path: Path, fast_kdf):
    context, volume, _token, _ = backed_up_volume(aws, tmp_path)
    aws.configure(pending_seconds=3600)
    pending = aws.client("ec2").create_snapshot(VolumeId=volume)["SnapshotId"]
    instance = aws.instance()
    with pytest.raises(errors.EbsSnapshotPending, match=f"{pending} in {REGION} is still pending") as caught:
        restore_ebs(context, pending, instance["InstanceId"])
    assert caught.value.exit_code == 45


def test_instance_in_another_region_uses_the_dr_copy(aws: Aws, tmp_path: Path, fast_kdf):
    context, volume, token, _ = backed_up_volume(aws, tmp_path, dr=True)
    instance = aws.instance(region=DR_REGION)
    result = restore_ebs(context, token["snapshot"], instance["InstanceId"], region=REGION)
    assert result.from_copy and result.region == DR_REGION
    assert result.snapshot_id == token["copies"][DR_REGION]
    assert attachment(aws, result.volume_id, DR_REGION)["attachments"] == [(instance["InstanceId"], "/dev/sdf")]
    assert aws.volume_blocks(result.volume_id) == aws.volume_blocks(volume)


def test_instance_in_another_region_without_a_copy_is_a_clear_error(aws: Aws, tmp_path: Path, fast_kdf):
    context, _volume, token, _ = backed_up_volume(aws, tmp_path)
    instance = aws.instance(region="eu-west-1")
    with pytest.raises(errors.EbsInstanceInOtherRegion, match="is in eu-west-1, not in us-east-1") as caught:
        restore_ebs(context, token["snapshot"], instance["InstanceId"], region=REGION)
    assert caught.value.exit_code == 47 and "dr_copies" in caught.value.hint


def test_restore_from_the_repository_when_the_ebs_snapshots_are_gone(aws: Aws, tmp_path: Path, fast_kdf):
    """3-2-1: the account's snapshots are lost; the repository's copy becomes a volume in the DR region."""
    context, volume, token, result = backed_up_volume(aws, tmp_path, copy_blocks=True)
    expected = aws.volume_blocks(volume)
    aws.client("ec2").delete_snapshot(SnapshotId=token["snapshot"])
    instance = aws.instance(region=DR_REGION)
    aws.stats(reset=True)
    restored = restore_ebs(context, result.snapshot_id[:10], instance["InstanceId"], region=DR_REGION,
                           device="/dev/sdk")
    assert aws.stats()["put_snapshot_block"] == len(expected) == restored.blocks_written
    assert restored.region == DR_REGION and restored.device == "/dev/sdk"
    assert restored.source_snapshot_id == result.snapshot_id
    assert aws.volume_blocks(restored.volume_id) == expected
    made = aws.client("ebs", DR_REGION).list_snapshot_blocks(SnapshotId=restored.snapshot_id)
    assert made["BlockSize"] == BLOCK and len(made["Blocks"]) == len(expected)


def test_a_written_snapshot_that_never_completes_is_deleted(aws: Aws, tmp_path: Path, fast_kdf):
    """The EBS snapshot written from the repository stays pending past the timeout: the restore fails
    with the clear error and leaves neither that snapshot nor a volume behind (it used to leak)."""
    context, volume, token, result = backed_up_volume(aws, tmp_path, copy_blocks=True)
    instance = aws.instance()
    ec2 = aws.client("ec2")
    aws.configure(pending_seconds=3600)
    with pytest.raises(errors.EbsSnapshotPending, match="is still pending"):
        restore_ebs(context, result.snapshot_id, instance["InstanceId"], timeout=1)
    made = ec2.describe_snapshots(Filters=[{"Name": "tag:safehold:repository-snapshot",
                                            "Values": [result.snapshot_id]}])["Snapshots"]
    assert made == []
    restored = ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["safehold:restored-from"]}])["Volumes"]
    assert restored == []


def test_image_blocks_assemble_any_chunk_size(memory_repository):
    """A 1 MiB-chunk image (e.g. from an image source) maps onto 512 KiB EBS blocks; holes are skipped."""
    from safehold.items import HOLE
    from safehold.repository.pack import BlobType
    from safehold.restore.ebs import image_blocks

    chunk = 1024 * 1024
    first, last = pattern(1, chunk), b"z" * (300 * 1024)
    ids = [memory_repository.save_blob(BlobType.DATA, first)[0], HOLE, memory_repository.save_blob(BlobType.DATA,
                                                                                                   last)[0]]
    memory_repository.flush()
    item = {"size": 2 * chunk + len(last), "chunk_size": chunk, "chunks": b"".join(ids)}
    blocks = dict(image_blocks(memory_repository, item))
    assert sorted(blocks) == [0, 1, 4]
    assert blocks[0]() == first[:BLOCK] and blocks[1]() == first[BLOCK:]
    assert blocks[4]() == last


def run_cli(aws: Aws, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **aws.environment(), "SAFEHOLD_EBS_TEST_PASSWORD": "ebs correct horse battery staple"}
    # cwd elsewhere: a command that ignored --config would find no configs/targets.yml and fail loudly.
    return subprocess.run([sys.executable, "-m", "safehold.cli.main", "--config", str(tmp_path / "targets.yml"),
                           *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_cli_and_seed_script_restore_to_an_instance(aws: Aws, tmp_path: Path, fast_kdf):
    context, volume, token, _ = backed_up_volume(aws, tmp_path)
    instance = aws.instance()["InstanceId"]
    done = run_cli(aws, tmp_path, "restore", "--snapshot-id", token["snapshot"], "--destination-instance", instance,
                   "--device", "/dev/sdf", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["device"] == "/dev/sdf" and result["instance_id"] == instance
    assert aws.volume_blocks(result["volume_id"]) == aws.volume_blocks(volume)

    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_restore.py"), "--config",
                              str(tmp_path / "targets.yml"), "--snapshot-id", token["snapshot"],
                              "--destination-instance", instance, "--device", "/dev/sdf"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env={**os.environ, **aws.environment(),
                                  "SAFEHOLD_EBS_TEST_PASSWORD": "ebs correct horse battery staple"})
    assert refused.returncode == 46
    assert "device /dev/sdf is already in use" in refused.stderr and "hint" in refused.stderr

    listed = run_cli(aws, tmp_path, "ebs", "snapshots", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["snapshot_id"] for row in json.loads(listed.stdout)] == [token["snapshot"]]


def test_cli_backup_then_restore_latest_from_the_repository(aws: Aws, tmp_path: Path, fast_kdf):
    volume = aws.volume()
    for index in range(3):
        aws.write(volume, index * 7 * BLOCK, pattern(300 + index))
    make_context(tmp_path, {"volume_ids": [volume]})
    backup = run_cli(aws, tmp_path, "backup", "--target", "db-ebs", "--json")
    assert backup.returncode == 0, backup.stderr
    summary = json.loads(backup.stdout)["results"][0]["summary"]
    assert summary["bytes_read"] == 3 * BLOCK
    instance = aws.instance(region=DR_REGION)["InstanceId"]
    done = run_cli(aws, tmp_path, "restore", "latest:db-ebs", "--destination-instance", instance,
                   "--region", DR_REGION)
    assert done.returncode == 0, done.stderr
    assert f"attached to {instance} as /dev/sdf in {DR_REGION}a" in done.stdout
    volumes = aws.client("ec2", DR_REGION).describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance]}])["Volumes"]
    restored = [v["VolumeId"] for v in volumes if v["Attachments"][0]["Device"] == "/dev/sdf"]
    assert len(restored) == 1 and aws.volume_blocks(restored[0]) == aws.volume_blocks(volume)


def _with_restore_test(tmp_path: Path, check: dict):
    import yaml

    from safehold.engine.context import Context

    path = tmp_path / "targets.yml"
    config = yaml.safe_load(path.read_text())
    config["targets"][0]["restore_test"] = {"every": "7d", "health_check": check}
    path.write_text(yaml.safe_dump(config))
    return Context.load(path, threads=2)


def test_restore_test_of_an_ebs_target_checks_the_volume_image(aws: Aws, tmp_path: Path, fast_kdf):
    """copy_blocks: the volume's image comes out of the repository into the sandbox, no AWS call made."""
    import hashlib

    from safehold.engine.restore_test import run_restore_test

    context, volume, _token, _result = backed_up_volume(aws, tmp_path, copy_blocks=True, blocks=3)
    context.close()
    digest = hashlib.sha256()
    for index in range(3):
        digest.update(pattern(100 + index))
        digest.update(bytes(2 * BLOCK))
    size = 1 << 30
    remaining = size - 9 * BLOCK
    zeros = bytes(1 << 20)
    while remaining:
        piece = min(remaining, len(zeros))
        digest.update(zeros[:piece])
        remaining -= piece
    context = _with_restore_test(tmp_path, {"type": "checksum", "path": volume, "sha256": digest.hexdigest()})
    try:
        aws.stats(reset=True)
        result = run_restore_test(context, "db-ebs")
        assert result.passed and result.files == 1, result
        assert not any(aws.stats().values()), "a restore test of the repository's copy calls no AWS API"
    finally:
        context.close()


def test_restore_test_of_an_ebs_target_without_copied_blocks_names_the_way(aws: Aws, tmp_path: Path, fast_kdf):
    from safehold.engine.restore_test import run_restore_test

    context, _volume, _token, _result = backed_up_volume(aws, tmp_path, copy_blocks=False)
    context.close()
    context = _with_restore_test(tmp_path, {"type": "command", "run": "true"})
    try:
        with pytest.raises(errors.UsageError, match="copy_blocks: false.*--destination-instance"):
            run_restore_test(context, "db-ebs")
        assert not list((Path(context.config.state_dir) / "restore-tests").iterdir())
    finally:
        context.close()
