"""From EBS back to on-premise: an EBS target backed up with ``copy_blocks`` (its blocks in the
repository) on the moto server, restored as a libvirt domain on the test services' libvirtd (and as
image files), every disk compared with the volume block by block."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ebs_support import Aws
from test_ebs_backup import BLOCK, make_context, pattern

from safehold import errors


def sparse_block_digests(path: Path) -> dict[int, str]:
    """SHA-256 of each 512 KiB block of a raw image that holds data, reading only its data extents
    (what moto_ebs reports of a volume: together with the size, the image byte for byte)."""
    found = {}
    with open(path, "rb") as image:
        size = os.fstat(image.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(image.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but holes from here
                break
            end = os.lseek(image.fileno(), start, os.SEEK_HOLE)
            for index in range(start // BLOCK, (end - 1) // BLOCK + 1):
                image.seek(index * BLOCK)
                block = image.read(BLOCK)
                if block.strip(b"\0"):
                    found[index] = hashlib.sha256(block.ljust(BLOCK, b"\0")).hexdigest()
            offset = max(end, ((end - 1) // BLOCK + 1) * BLOCK)
    return found


@pytest.fixture
def libvirt_uri():
    pytest.importorskip("libvirt")
    uri = os.environ.get("SAFEHOLD_TEST_LIBVIRT_URI")
    if not uri:
        pytest.skip("needs the test services' libvirtd (eval \"$(bash scripts/services.sh start)\")")
    return uri


def test_an_ebs_snapshot_comes_back_as_a_libvirt_domain(aws: Aws, libvirt_uri: str, tmp_path: Path, fast_kdf):
    import libvirt

    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot

    instance = aws.instance()["InstanceId"]
    ec2 = aws.client("ec2")
    # Two volumes of one instance: the root (attached as /dev/xvda) becomes vda whatever the ids' order.
    boot, data = aws.volume(), aws.volume()
    for index in (0, 1, 7):
        aws.write(boot, index * BLOCK, pattern(10 + index))
    aws.write(data, 3 * BLOCK + 100, pattern(50, 2 * BLOCK))
    ec2.attach_volume(VolumeId=data, InstanceId=instance, Device="/dev/sdf")
    ec2.attach_volume(VolumeId=boot, InstanceId=instance, Device="/dev/xvda")
    expected = {boot: aws.volume_blocks(boot), data: aws.volume_blocks(data)}
    assert len(expected[boot]) == 3 and len(expected[data]) == 3

    context = make_context(tmp_path, {"volume_ids": sorted([boot, data]), "copy_blocks": True})
    snapshot_id = backup_target(context, "db-ebs").snapshot_id

    # Image restores of the same snapshot: one file per volume in a folder.
    images = tmp_path / "images"
    outcome = restore_snapshot(context, snapshot_id, str(images))
    assert outcome.to == "image" and sorted(os.listdir(images)) == sorted([boot, data])
    for volume in (boot, data):
        assert (images / volume).stat().st_size == 1 << 30
        assert sparse_block_digests(images / volume) == expected[volume]

    name = f"safehold-test-from-ebs-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "vm"
    connection = libvirt.open(libvirt_uri)
    try:
        aws.stats(reset=True)
        outcome = restore_snapshot(context, snapshot_id[:10], {
            "kind": "libvirt", "images_dir": str(folder), "define": name, "uri": libvirt_uri, "vcpus": 1,
            "memory_mib": 64, "domain_type": "qemu"})
        assert not any(aws.stats().values()), "the blocks come from the repository, not from AWS"
        assert outcome.details["devices"] == {boot: "vda", data: "vdb"}
        domain = connection.lookupByName(name)
        root = ET.fromstring(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert root.get("type") == "qemu" and root.findtext("vcpu") == "1"
        assert int(root.findtext("memory")) == 64 * 1024  # KiB
        disks = {disk.find("target").get("dev"): (disk.find("source").get("file"), disk.find("target").get("bus"),
                                                  disk.find("driver").get("type"))
                 for disk in root.iterfind("devices/disk")}
        assert disks == {"vda": (str(folder / f"{name}-{boot}.qcow2"), "virtio", "qcow2"),
                         "vdb": (str(folder / f"{name}-{data}.qcow2"), "virtio", "qcow2")}
        for device, volume in (("vda", boot), ("vdb", data)):
            raw = tmp_path / f"{device}.raw"
            subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", disks[device][0], str(raw)],
                           check=True)
            assert raw.stat().st_size == 1 << 30
            assert sparse_block_digests(raw) == expected[volume], device
        domain.create()  # QEMU takes the definition (no OS on these disks: it only has to start)
        try:
            assert domain.isActive()
        finally:
            domain.destroy()

        # A name that is taken, or options a libvirt snapshot's own XML already answers, are refused.
        with pytest.raises(errors.DestinationError, match="a domain of that name exists already"):
            restore_snapshot(context, snapshot_id, {"kind": "libvirt", "images_dir": str(tmp_path / "again"),
                                                    "define": name, "uri": libvirt_uri})
        assert not (tmp_path / "again").exists()
    finally:
        try:
            connection.lookupByName(name).undefine()
        except libvirt.libvirtError:
            pass
        connection.close()
        context.close()
