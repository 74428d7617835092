"""The harness itself: each gap of moto 5.2's EBS support, shown in plain moto, and closed by moto_ebs.

If a moto upgrade fixes a gap, its ``test_plain_moto_*`` test fails: then the
harness's patch for it can go (and docs/testing.md be updated).
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError
from ebs_support import DR_REGION, REGION, Aws

BLOCK = 512 * 1024


def digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put(ebs, snapshot_id: str, index: int, data: bytes, checksum: str | None = None, length: int | None = None):
    return ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data,
                                  DataLength=len(data) if length is None else length,
                                  Checksum=checksum or digest(data), ChecksumAlgorithm="SHA256")


# --- plain moto: the gaps exist ---------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_moto():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield Aws(f"http://{host}:{port}")
    server.stop()


def test_plain_moto_has_the_documented_gaps(plain_moto: Aws):
    ebs = plain_moto.client("ebs")
    started = ebs.start_snapshot(VolumeSize=1)
    assert started["BlockSize"] == 512  # AWS: 524288
    put(ebs, started["SnapshotId"], 0, b"a" * 512, checksum=digest(b"wrong"))  # AWS: ValidationException
    ebs.complete_snapshot(SnapshotId=started["SnapshotId"], ChangedBlocksCount=7)  # AWS: count mismatch refused
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=started["SnapshotId"])["SnapshotId"]
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=0)
    assert ebs.list_snapshot_blocks(SnapshotId=child)["Blocks"] == []  # AWS: the parent's block 0 is there
    ec2 = plain_moto.client("ec2")
    volume = ec2.create_volume(Size=1, AvailabilityZone=REGION + "a")["VolumeId"]
    made_by_ec2 = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[made_by_ec2])["Snapshots"][0]["State"] == "completed"  # at once
    with pytest.raises(ClientError):  # AWS: an (empty) block list; moto: HTTP 500
        ebs.list_snapshot_blocks(SnapshotId=made_by_ec2)
    image = ec2.register_image(Name="plain", RootDeviceName="/dev/xvda", Architecture="arm64", BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": made_by_ec2}}])["ImageId"]
    kept = ec2.describe_images(ImageIds=[image])["Images"][0]
    # AWS: arm64, root /dev/xvda from made_by_ec2; moto keeps the name only (and makes a snapshot of its own).
    assert kept.get("Architecture") != "arm64" and kept["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] != made_by_ec2


# --- the harness: AWS's documented behaviour --------------------------------------------------


def test_ec2_snapshots_hold_the_volume_blocks_and_copies_and_volumes_carry_them(aws: Aws):
    volume = aws.volume()
    aws.write(volume, 3 * BLOCK + 10, b"x" * 100)
    ec2 = aws.client("ec2")
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    listed = aws.client("ebs").list_snapshot_blocks(SnapshotId=snapshot)
    assert listed["BlockSize"] == BLOCK and [b["BlockIndex"] for b in listed["Blocks"]] == [3]
    block = aws.client("ebs").get_snapshot_block(SnapshotId=snapshot, BlockIndex=3,
                                                 BlockToken=listed["Blocks"][0]["BlockToken"])
    data = block["BlockData"].read()
    assert len(data) == block["DataLength"] == BLOCK
    assert data[10:110] == b"x" * 100 and data[:10] == bytes(10)
    assert block["Checksum"] == digest(data) and block["ChecksumAlgorithm"] == "SHA256"
    copy = aws.client("ec2", DR_REGION).copy_snapshot(SourceSnapshotId=snapshot, SourceRegion=REGION)["SnapshotId"]
    restored = aws.client("ec2", DR_REGION).create_volume(SnapshotId=copy, AvailabilityZone=DR_REGION + "b")
    assert aws.volume_blocks(restored["VolumeId"]) == aws.volume_blocks(volume)


def test_amis_from_snapshots_keep_their_mappings_and_instances_get_volumes_from_them(aws: Aws):
    volume = aws.volume()
    aws.write(volume, BLOCK, b"root" * 100)
    ec2 = aws.client("ec2")
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    with pytest.raises(ClientError, match="InvalidSnapshot.NotFound"):
        ec2.register_image(Name="bad", RootDeviceName="/dev/xvda", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}])
    with pytest.raises(ClientError, match="InvalidBlockDeviceMapping"):
        ec2.register_image(Name="no-root", RootDeviceName="/dev/sda1", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}}])
    image = ec2.register_image(Name="from-snapshot", RootDeviceName="/dev/xvda", Architecture="arm64", BootMode="uefi",
                               EnaSupport=True, VirtualizationType="hvm", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}},
                                   {"DeviceName": "/dev/sdb", "Ebs": {"SnapshotId": snapshot, "VolumeSize": 2}}])["ImageId"]
    kept = ec2.describe_images(ImageIds=[image])["Images"][0]
    assert (kept["Architecture"], kept["BootMode"], kept["EnaSupport"], kept["RootDeviceName"]) == \
        ("arm64", "uefi", True, "/dev/xvda")
    assert [(m["DeviceName"], m["Ebs"]["SnapshotId"], m["Ebs"]["VolumeSize"]) for m in kept["BlockDeviceMappings"]] == \
        [("/dev/xvda", snapshot, 1), ("/dev/sdb", snapshot, 2)]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
    mapped = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}
    assert sorted(mapped) == ["/dev/sdb", "/dev/xvda"]
    assert aws.volume_blocks(mapped["/dev/xvda"]) == aws.volume_blocks(volume)


def test_paging_with_max_results_next_token_and_starting_index(aws: Aws):
    volume = aws.volume()
    for index in range(250):
        aws.write(volume, index * BLOCK, b"%d" % index)
    snapshot = aws.client("ec2").create_snapshot(VolumeId=volume)["SnapshotId"]
    ebs = aws.client("ebs")
    first = ebs.list_snapshot_blocks(SnapshotId=snapshot, MaxResults=100)
    assert [b["BlockIndex"] for b in first["Blocks"]] == list(range(100)) and first["NextToken"]
    second = ebs.list_snapshot_blocks(SnapshotId=snapshot, MaxResults=100, NextToken=first["NextToken"])
    third = ebs.list_snapshot_blocks(SnapshotId=snapshot, MaxResults=100, NextToken=second["NextToken"])
    assert [b["BlockIndex"] for b in second["Blocks"] + third["Blocks"]] == list(range(100, 250))
    assert "NextToken" not in third
    later = ebs.list_snapshot_blocks(SnapshotId=snapshot, StartingBlockIndex=240)
    assert [b["BlockIndex"] for b in later["Blocks"]] == list(range(240, 250))


def test_list_changed_blocks_compares_block_versions(aws: Aws):
    volume = aws.volume()
    for index in (0, 1, 2):
        aws.write(volume, index * BLOCK, b"old")
    ec2 = aws.client("ec2")
    first = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    aws.write(volume, 1 * BLOCK, b"new")
    aws.write(volume, 2 * BLOCK, b"old")  # rewritten with the same bytes: a new version, as on AWS
    aws.write(volume, 7 * BLOCK, b"added")
    second = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    changed = aws.client("ebs").list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)
    rows = {b["BlockIndex"]: b for b in changed["ChangedBlocks"]}
    assert sorted(rows) == [1, 2, 7] and changed["BlockSize"] == BLOCK
    assert "FirstBlockToken" not in rows[7] and rows[7]["SecondBlockToken"]
    assert rows[1]["FirstBlockToken"] != rows[1]["SecondBlockToken"]
    assert aws.client("ebs").list_changed_blocks(FirstSnapshotId=second, SecondSnapshotId=second)[
        "ChangedBlocks"] == []


def test_direct_writes_check_checksum_length_count_and_honour_the_parent(aws: Aws):
    ebs = aws.client("ebs")
    parent = ebs.start_snapshot(VolumeSize=1)
    assert parent["BlockSize"] == BLOCK and parent["Status"] == "pending"
    data = b"p" * BLOCK
    with pytest.raises(ClientError, match="checksum"):
        put(ebs, parent["SnapshotId"], 0, data, checksum=digest(b"other"))
    with pytest.raises(ClientError, match="DataLength"):
        put(ebs, parent["SnapshotId"], 0, b"short")
    put(ebs, parent["SnapshotId"], 0, data)
    with pytest.raises(ClientError, match="not in the completed state"):
        ebs.list_snapshot_blocks(SnapshotId=parent["SnapshotId"])
    with pytest.raises(ClientError, match="ChangedBlocksCount"):
        ebs.complete_snapshot(SnapshotId=parent["SnapshotId"], ChangedBlocksCount=2)
    ebs.complete_snapshot(SnapshotId=parent["SnapshotId"], ChangedBlocksCount=1)
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent["SnapshotId"])
    put(ebs, child["SnapshotId"], 5, b"c" * BLOCK)
    ebs.complete_snapshot(SnapshotId=child["SnapshotId"], ChangedBlocksCount=1)
    assert [b["BlockIndex"] for b in ebs.list_snapshot_blocks(SnapshotId=child["SnapshotId"])["Blocks"]] == [0, 5]
    changed = ebs.list_changed_blocks(FirstSnapshotId=parent["SnapshotId"], SecondSnapshotId=child["SnapshotId"])
    assert [b["BlockIndex"] for b in changed["ChangedBlocks"]] == [5]


def test_block_token_is_required_and_corruption_shows_as_a_checksum_mismatch(aws: Aws):
    volume = aws.volume()
    aws.write(volume, 0, b"data")
    snapshot = aws.client("ec2").create_snapshot(VolumeId=volume)["SnapshotId"]
    ebs = aws.client("ebs")
    token = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"][0]["BlockToken"]
    with pytest.raises(ClientError, match="block token"):
        ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=0, BlockToken="bm90LWEtdG9rZW4=")
    aws.call("/_harness/corrupt", {"snapshot_id": snapshot, "block_index": 0})
    block = ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=0, BlockToken=token)
    assert block["Checksum"] != digest(block["BlockData"].read())


def test_pending_snapshots_and_attach_rules(aws: Aws):
    volume = aws.volume()
    ec2 = aws.client("ec2")
    aws.configure(pending_seconds=0.5)
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["State"] == "pending"
    with pytest.raises(ClientError, match="IncorrectState"):
        ec2.create_volume(SnapshotId=snapshot, AvailabilityZone=REGION + "a")
    import time

    time.sleep(0.6)
    assert ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["State"] == "completed"
    instance = aws.instance()["InstanceId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")
    other = aws.volume()
    with pytest.raises(ClientError, match="already in use"):
        ec2.attach_volume(VolumeId=other, InstanceId=instance, Device="/dev/sdf")
    elsewhere = aws.volume(zone=REGION + "c")
    with pytest.raises(ClientError, match="ZoneMismatch"):
        ec2.attach_volume(VolumeId=elsewhere, InstanceId=instance, Device="/dev/sdg")
