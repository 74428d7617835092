"""EBS backups against the moto server (extended by moto_ebs): snapshot lifecycle and blocks into the repository."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml
from ebs_support import DR_REGION, REGION, Aws

from safehold import errors

BLOCK = 512 * 1024
PASSWORD = "ebs correct horse battery staple"


def make_context(tmp_path: Path, source: dict, retention: dict | None = None, fast_kdf=None, init: bool = True):
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    target: dict = {"name": "db-ebs", "tier": 1, "source": {"type": "ebs", "region": REGION, **source}}
    if retention:
        target["retention"] = retention
    config = {"repository": {"url": str(tmp_path / "repo"), "password_env": "SAFEHOLD_EBS_TEST_PASSWORD"},
              "state_dir": str(tmp_path / "state"), "targets": [target]}
    (tmp_path / "targets.yml").write_text(yaml.safe_dump(config))
    os.environ["SAFEHOLD_EBS_TEST_PASSWORD"] = PASSWORD
    context = Context.load(tmp_path / "targets.yml", threads=2)
    if init:
        init_repository(context)
    return context


def pattern(seed: int, length: int = BLOCK) -> bytes:
    """Incompressible-enough, distinct data per seed (so dedup cannot hide a re-read)."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:length])


def managed(aws: Aws, region: str = REGION) -> list[dict]:
    ec2 = aws.client("ec2", region)
    return ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:safehold:managed", "Values": ["true"]}])[
        "Snapshots"]


def tags(snapshot: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}


def test_selects_by_id_instance_and_tag_and_tags_every_snapshot(aws: Aws, tmp_path: Path, fast_kdf):
    from safehold.engine.backup import backup_target

    by_id = aws.volume()
    by_tag = aws.volume(tags={"backup": "gold"})
    aws.volume(tags={"backup": "silver"})  # not selected
    instance = aws.instance()
    attached = aws.volume()
    aws.client("ec2").attach_volume(VolumeId=attached, InstanceId=instance["InstanceId"], Device="/dev/sdg")
    for seed, volume in enumerate((by_id, by_tag, attached)):
        aws.write(volume, 0, pattern(seed))
    context = make_context(tmp_path, {"volume_ids": [by_id], "instance_ids": [instance["InstanceId"]],
                                      "tags": {"backup": "gold"}, "copy_blocks": False})
    result = backup_target(context, "db-ebs")
    snapshots = managed(aws)
    # moto's run_instances also attaches a root volume to the instance: it is selected too.
    root = [m["Ebs"]["VolumeId"] for m in aws.client("ec2").describe_instances(InstanceIds=[instance["InstanceId"]])[
        "Reservations"][0]["Instances"][0]["BlockDeviceMappings"] if m["Ebs"]["VolumeId"] != attached]
    assert {s["VolumeId"] for s in snapshots} == {by_id, by_tag, attached, *root}
    for snapshot in snapshots:
        assert tags(snapshot) | {"Name": ""} == {"safehold:managed": "true", "safehold:target": "db-ebs",
                                                 "safehold:tier": "1", "safehold:volume": snapshot["VolumeId"],
                                                 "Name": ""}
    # Recorded as a backup: a snapshot in the repository and a succeeded job, like any other source.
    assert result.kind == "image"
    job = context.catalog.get_job(result.job_id)
    assert job.status == "succeeded" and job.kind == "backup" and job.snapshot_id == result.snapshot_id
    with context.locked() as repository:
        stored = repository.find_snapshot(result.snapshot_id)
    assert set(stored.source["volumes"]) == {by_id, by_tag, attached, *root}


def test_no_matching_volume_is_a_source_error(aws: Aws, tmp_path: Path, fast_kdf):
    from safehold.engine.backup import backup_target

    aws.volume(tags={"backup": "silver"})
    context = make_context(tmp_path, {"tags": {"backup": "gold"}})
    with pytest.raises(errors.SourceError, match="no volume matches"):
        backup_target(context, "db-ebs")


def test_timeout_fails_and_deletes_what_it_created(aws: Aws, tmp_path: Path, fast_kdf):
    from safehold.engine.backup import backup_target

    volume = aws.volume()
    aws.configure(pending_seconds=3600)
    context = make_context(tmp_path, {"volume_ids": [volume], "wait_timeout": "2s"})
    with pytest.raises(errors.SourceError, match="not completed within 2s"):
        backup_target(context, "db-ebs")
    assert managed(aws) == []
    assert [job.status for job in context.catalog.list_jobs() if job.kind == "backup"] == ["failed"]


def test_waits_for_pending_snapshots(aws: Aws, tmp_path: Path, fast_kdf):
    from safehold.engine.backup import backup_target

    volume = aws.volume()
    aws.write(volume, 0, pattern(1))
    aws.configure(pending_seconds=1.5)
    context = make_context(tmp_path, {"volume_ids": [volume], "wait_timeout": "30s"})
    result = backup_target(context, "db-ebs")
    assert result.summary["bytes_read"] == BLOCK
    assert [s["State"] for s in managed(aws)] == ["completed"]


def test_dr_copy_with_kms_and_retention_per_region_deletes_only_safehold_snapshots(aws: Aws, tmp_path: Path,
                                                                                   fast_kdf):
    from safehold.engine.backup import backup_target

    volume = aws.volume()
    aws.write(volume, 0, pattern(2))
    ec2 = aws.client("ec2")
    foreign = ec2.create_snapshot(VolumeId=volume, Description="made by someone else")["SnapshotId"]
    lookalike = ec2.create_snapshot(  # the target's tag without the marker: not ours either
        VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot",
                                             "Tags": [{"Key": "safehold:target", "Value": "db-ebs"}]}])["SnapshotId"]
    kms = aws.client("kms", DR_REGION).create_key()["KeyMetadata"]["KeyId"]
    context = make_context(tmp_path, {"volume_ids": [volume], "dr_copies": [{"region": DR_REGION, "kms_key_id": kms}],
                                      "copy_blocks": False}, retention={"keep_last": 2})
    results = [backup_target(context, "db-ebs") for _ in range(3)]
    source_side = managed(aws)
    dr_side = managed(aws, DR_REGION)
    assert len(source_side) == 2 and len(dr_side) == 2
    with context.locked() as repository:
        newest = repository.find_snapshot(results[-1].snapshot_id).source["volumes"][volume]
    assert newest["snapshot"] in {s["SnapshotId"] for s in source_side}
    assert newest["copies"][DR_REGION] in {s["SnapshotId"] for s in dr_side}
    for copy in dr_side:
        assert copy["Encrypted"] and copy["KmsKeyId"].endswith(kms)
        assert tags(copy)["safehold:source-region"] == REGION
    remaining = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert {foreign, lookalike} <= remaining


def test_blocks_full_then_incremental_read_only_what_changed(aws: Aws, tmp_path: Path, fast_kdf):
    """The measurement the issue asks for: an incremental pull costs what changed."""
    from safehold.engine.backup import backup_target

    volume = aws.volume(size_gib=1)
    for index in range(0, 64):  # 32 MiB of data in a 1 GiB volume
        aws.write(volume, index * BLOCK, pattern(index))
    context = make_context(tmp_path, {"volume_ids": [volume], "threads": 4})
    aws.stats(reset=True)
    full = backup_target(context, "db-ebs")
    full_stats = aws.stats(reset=True)
    assert full.summary["bytes_read"] == 64 * BLOCK
    assert full_stats["get_snapshot_block"] == 64
    assert full.summary["holes"] == 2048 - 64  # unlisted blocks are never read

    # Change 3 blocks (one of them twice) and add one: 4 blocks changed.
    aws.write(volume, 5 * BLOCK, pattern(1005))
    aws.write(volume, 6 * BLOCK + 100, b"x" * 1000)
    aws.write(volume, 40 * BLOCK, pattern(1040))
    aws.write(volume, 40 * BLOCK, pattern(2040))
    aws.write(volume, 900 * BLOCK, pattern(1900))
    incremental = backup_target(context, "db-ebs")
    stats = aws.stats(reset=True)
    summary = incremental.summary
    assert stats["get_snapshot_block"] == 4 and stats["list_changed_blocks"] == 1
    assert summary["bytes_read"] == 4 * BLOCK
    assert summary["chunks_reused_unread"] == 2048 - 4
    assert summary["blobs_added"] == 4 + 1  # four new chunks and the snapshot's tree
    assert summary["plain_bytes_added"] < 4 * BLOCK + 128 * 1024  # the four chunks and the tree (2048 ids)
    with context.locked() as repository:
        snapshot = repository.find_snapshot(incremental.snapshot_id)
        assert snapshot.source["incremental"] == "ebs-changed-blocks"
        assert snapshot.source["volumes"][volume]["changed_from"] == \
            repository.find_snapshot(full.snapshot_id).source["volumes"][volume]["snapshot"]
        # The stored image is exactly the volume: compare block digests.
        item = next(repository.read_tree(snapshot))
        stored = {}
        for index in range(item["size"] // BLOCK):
            blob = item["chunks"][index * 32 : (index + 1) * 32]
            if blob != bytes(32):
                stored[index] = hashlib.sha256(repository.read_blob(blob)).hexdigest()
    assert stored == aws.volume_blocks(volume)
    print(f"\nEBS 1 GiB volume, 64 blocks of data: full read {full.summary['bytes_read']} B, added "
          f"{full.summary['bytes_added']} B; incremental with 4 changed blocks read {summary['bytes_read']} B, "
          f"added {summary['bytes_added']} B ({summary['blobs_added']} blobs), GetSnapshotBlock calls "
          f"{stats['get_snapshot_block']}")


def test_parent_ebs_snapshot_gone_falls_back_to_a_full_read(aws: Aws, tmp_path: Path, fast_kdf):
    from safehold.engine.backup import backup_target

    volume = aws.volume()
    for index in range(4):
        aws.write(volume, index * BLOCK, pattern(index))
    context = make_context(tmp_path, {"volume_ids": [volume]})
    first = backup_target(context, "db-ebs")
    with context.locked() as repository:
        parent = repository.find_snapshot(first.snapshot_id).source["volumes"][volume]["snapshot"]
    aws.client("ec2").delete_snapshot(SnapshotId=parent)
    aws.write(volume, 0, pattern(99))
    second = backup_target(context, "db-ebs")
    assert second.summary["bytes_read"] == 4 * BLOCK  # everything listed, read again
    assert second.summary["blobs_added"] == 1 + 1  # but only the changed block is new in the repository


def test_damaged_block_fails_the_backup_and_leaves_no_snapshot(aws: Aws, tmp_path: Path, fast_kdf,
                                                               monkeypatch: pytest.MonkeyPatch):
    from safehold.engine.backup import backup_target

    volume = aws.volume()
    aws.write(volume, 0, pattern(7))
    aws.write(volume, BLOCK, pattern(8))
    context = make_context(tmp_path, {"volume_ids": [volume]})
    from safehold.platforms import aws as aws_helpers

    real_client = aws_helpers.client

    def patched(service, region, endpoint_url=None, max_pool=16):
        client = real_client(service, region, endpoint_url, max_pool)
        if service == "ec2":
            inner = client.create_snapshot

            def wrapper(**arguments):
                response = inner(**arguments)
                aws.call("/_harness/corrupt", {"snapshot_id": response["SnapshotId"], "block_index": 1})
                return response

            client.create_snapshot = wrapper
        return client

    # The harness serves block 1 of the backup's snapshot with data that does not match its checksum.
    monkeypatch.setattr(aws_helpers, "client", patched)
    with pytest.raises(errors.SourceError, match="block 1 failed its SHA-256 check"):
        backup_target(context, "db-ebs")
    assert managed(aws) == []
    with context.locked() as repository:
        assert repository.list_snapshots("db-ebs") == []


def test_block_reader_serves_spanning_and_out_of_order_reads(aws: Aws):
    from safehold.platforms.aws.ebs_direct import SnapshotBlockReader, list_blocks

    volume = aws.volume()
    for index in (0, 1, 2, 9):
        aws.write(volume, index * BLOCK, pattern(index))
    snapshot = aws.client("ec2").create_snapshot(VolumeId=volume)["SnapshotId"]
    ebs = aws.client("ebs")
    size, block_size, tokens = list_blocks(ebs, snapshot, page_size=100)
    assert (size, block_size, sorted(tokens)) == (1024**3, BLOCK, [0, 1, 2, 9])
    reader = SnapshotBlockReader(ebs, snapshot, tokens, block_size, threads=2)
    try:
        assert reader.read_at(9 * BLOCK + 5, 10) == pattern(9)[5:15]  # ahead of the read-ahead
        assert reader.read_at(BLOCK - 3, 6) == pattern(0)[-3:] + pattern(1)[:3]  # spans two blocks
        assert reader.read_at(2 * BLOCK, 2 * BLOCK) == pattern(2) + bytes(BLOCK)  # block 3 holds nothing
        assert reader.read_at(0, 4) == pattern(0)[:4]  # again, after it was consumed
    finally:
        reader.close()
    assert reader.blocks_read == 5  # block 0 twice; blocks without a token are never fetched


def test_block_listings_follow_every_page(aws: Aws):
    from safehold.platforms.aws.ebs_direct import list_blocks, list_changed_blocks

    volume = aws.volume()
    for index in range(0, 500, 2):  # 250 blocks: three pages of 100
        aws.write(volume, index * BLOCK, b"%d" % index)
    ec2 = aws.client("ec2")
    first = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    for index in range(1, 500, 2):  # 250 new blocks in between
        aws.write(volume, index * BLOCK, b"new")
    second = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    ebs = aws.client("ebs")
    aws.stats(reset=True)
    _size, _block, tokens = list_blocks(ebs, second, page_size=100)
    _size, _block, changed = list_changed_blocks(ebs, first, second, page_size=100)
    assert sorted(tokens) == list(range(500))
    assert sorted(changed) == list(range(1, 500, 2)) and all(changed.values())
    stats = aws.stats()
    assert stats["list_snapshot_blocks"] == 5 and stats["list_changed_blocks"] == 3


def test_restore_all_skips_a_target_whose_blocks_stay_in_ebs(aws: Aws, tmp_path: Path, fast_kdf):
    """`restore --all` brings back what the repository holds; an EBS target without copy_blocks
    holds nothing there, so it is reported as skipped with the way to restore it, not failed."""
    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_targets

    volume = aws.volume()
    aws.write(volume, 0, pattern(3))
    context = make_context(tmp_path, {"volume_ids": [volume], "copy_blocks": False})
    backup_target(context, "db-ebs")
    run = restore_targets(context, str(tmp_path / "estate"), ["db-ebs"])
    assert run.results == [] and run.failures == {}
    assert "copy_blocks: false" in run.skipped["db-ebs"] and "--destination-instance" in run.skipped["db-ebs"]
