"""``safehold restore SNAPSHOT --to-ec2``: a libvirt VM snapshot of the bootable test guest
(tests/support/guest.py: its ext4 disk, plus a data disk) launched as an EC2 instance on the moto
server (extended by moto_ebs): every disk an EBS snapshot written through the EBS direct APIs, the
boot disk the AMI's root device, the other a block-device mapping, the instance running with
volumes holding the disks' blocks; the warning about a disk EC2 cannot boot; everything removed.
Then the on-premise host-failure drill into an AWS region does the same and removes it all."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ebs_support import REGION, Aws

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
import guest  # noqa: E402

BLOCK = 512 * 1024
PASSWORD = "ec2 restore correct horse"


def block_digests(path: Path) -> dict[int, str]:
    """SHA-256 of each 512 KiB block of a raw image that holds data (what moto_ebs reports of a volume)."""
    found = {}
    with open(path, "rb") as image:
        for index, block in enumerate(iter(lambda: image.read(BLOCK), b"")):
            if block.strip(b"\0"):
                found[index] = hashlib.sha256(block.ljust(BLOCK, b"\0")).hexdigest()
    return found


@pytest.fixture
def guest_domain(tmp_path: Path):
    """The bootable test guest as a shut-off libvirt domain with a second (data) disk."""
    libvirt = pytest.importorskip("libvirt")
    uri = os.environ.get("SAFEHOLD_TEST_LIBVIRT_URI")
    if not uri:
        pytest.skip("needs the test services' libvirtd (eval \"$(bash scripts/services.sh start)\")")
    name = f"safehold-test-ec2-{uuid.uuid4().hex[:8]}"
    made = guest.make_guest(tmp_path / "guest", name, f"launched in EC2 {name}", image_format="raw")
    data = tmp_path / "guest" / "data.raw"
    with open(data, "wb") as disk:
        disk.truncate(4 * 1024 * 1024)
        disk.seek(BLOCK * 3 + 100)
        disk.write(b"application data " * 1000)
    xml = made.domain_xml(name).replace("    <serial", f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{data}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <serial""", 1)
    connection = libvirt.open(uri)
    domain = connection.defineXML(xml)
    try:
        yield uri, name, made.disk, data
    finally:
        try:
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass
        connection.close()


def test_a_libvirt_guest_snapshot_is_launched_in_ec2(aws: Aws, guest_domain, tmp_path: Path, fast_kdf):
    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.engine.restore import restore_snapshot

    uri, name, boot_disk, data_disk = guest_domain
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "targets.yml").write_text(json.dumps({
        "repository": {"url": str(folder / "repo"), "password_env": "SAFEHOLD_EC2_TEST_PASSWORD"},
        "state_dir": str(folder / "state"),
        "targets": [{"name": "vm", "tier": 2, "source": {"type": "libvirt", "domain": name, "uri": uri}}],
        "drills": [{"name": "site-lost", "scenario": "on_prem_host_failure",
                    "restore_to": {"type": "aws", "region": REGION},
                    "steps": [{"target": "vm", "check": {"type": "instance", "instance_type": "t3.small"}}]}]}))
    os.environ["SAFEHOLD_EC2_TEST_PASSWORD"] = PASSWORD
    context = Context.load(folder / "targets.yml", threads=2)
    init_repository(context)
    snapshot = backup_target(context, "vm").snapshot_id
    ec2 = aws.client("ec2")
    before = (ec2.describe_images(Owners=["self"])["Images"], ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])

    # --dry-run (the real CLI) prints the plan and the warning, and makes nothing.
    env = dict(os.environ, SAFEHOLD_CONFIG=str(folder / "targets.yml"))
    shown = subprocess.run([sys.executable, "-m", "safehold.cli.main", "restore", snapshot, "--to-ec2", "--region",
                            REGION, "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "vda: 16777216 bytes -> EBS snapshot -> /dev/xvda (root)" in shown.stdout
    assert "vdb: 4194304 bytes -> EBS snapshot -> /dev/sdb" in shown.stdout and "AMI x86_64" in shown.stdout
    assert (ec2.describe_images(Owners=["self"])["Images"], ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) \
        == before

    outcome = restore_snapshot(context, snapshot, {"kind": "ec2", "region": REGION, "instance_type": "t3.small"})
    result = outcome.details
    assert result["state"] == "running" and result["disks"] == {"vda": "/dev/xvda", "vdb": "/dev/sdb"}
    assert any("no partition table (an ext2/3/4 file system fills the whole disk)" in w for w in outcome.warnings)
    image = ec2.describe_images(ImageIds=[result["image_id"]])["Images"][0]
    assert (image["RootDeviceName"], image["Architecture"], image["EnaSupport"]) == ("/dev/xvda", "x86_64", True)
    assert [(m["DeviceName"], m["Ebs"]["SnapshotId"]) for m in image["BlockDeviceMappings"]] == \
        [("/dev/xvda", result["snapshots"]["vda"]), ("/dev/sdb", result["snapshots"]["vdb"])]
    instance = ec2.describe_instances(InstanceIds=[result["instance_id"]])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    assert instance["InstanceType"] == "t3.small" and tags["safehold:restored-from"] == "vm"
    assert "safehold:sandbox" not in tags  # kept: never taken for a leftover by a later run
    # Only the blocks holding data were written, and each volume holds its disk's blocks.
    assert aws.volume_blocks(result["devices"]["/dev/xvda"]) == block_digests(boot_disk)
    assert aws.volume_blocks(result["devices"]["/dev/sdb"]) == block_digests(data_disk) and \
        len(block_digests(data_disk)) == 1

    # Removed after: the instance (its volumes go with it), the AMI, the EBS snapshots.
    ec2.terminate_instances(InstanceIds=[result["instance_id"]])
    ec2.deregister_image(ImageId=result["image_id"])
    for snapshot_id in result["snapshots"].values():
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    left = [{"Name": "tag-key", "Values": ["safehold:restored-from", "safehold:sandbox"]}]
    assert ec2.describe_volumes(Filters=left)["Volumes"] == []
    assert (ec2.describe_images(Owners=["self"])["Images"], ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) \
        == before

    # The on-premise site is lost: a drill brings the VM up in EC2 the same way, then removes it all.
    from safehold.engine.drill import run_drill

    drilled = run_drill(context, "site-lost", report_dir=tmp_path / "report")
    step = drilled.evidence["steps"][0]
    assert drilled.passed and step["ec2"]["disks"] == {"vda": "/dev/xvda", "vdb": "/dev/sdb"}, step
    assert sorted(item["kind"] for item in step["removed"] if item["kind"].startswith("EC2")) == \
        ["EC2 image", "EC2 instance", "EC2 snapshot", "EC2 snapshot"]
    assert drilled.evidence["left_behind"] == [] and ec2.describe_volumes(Filters=left)["Volumes"] == []
    assert (ec2.describe_images(Owners=["self"])["Images"], ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]) \
        == before
    context.close()
