"""The domain an EBS snapshot becomes on-premise (no saved XML): disk order and the description."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from safehold import errors
from safehold.restore.base import SnapshotInfo
from safehold.restore.libvirt import LibvirtDestination, ebs_disk_order, minimal_domain_xml
from safehold.restore.options import LibvirtOptions


def test_the_root_device_boots_then_the_others_by_device():
    volumes = {"vol-01": {"attached": {"device": "/dev/sdg"}}, "vol-02": {"attached": {"device": "/dev/xvdf"}},
               "vol-03": {"attached": {"device": "/dev/sda1"}}, "vol-00": {}, "vol-04": {"attached": "hostile"}}
    wanted = sorted(volumes)
    assert ebs_disk_order(volumes, wanted, None) == ["vol-03", "vol-02", "vol-01", "vol-00", "vol-04"]
    assert ebs_disk_order(volumes, wanted, "vol-00")[0] == "vol-00"
    assert ebs_disk_order("not a dict", ["vol-b", "vol-a"], None) == ["vol-a", "vol-b"]


def test_minimal_domain_escapes_names_and_paths():
    xml = minimal_domain_xml("web'<01>", [("vda", "/srv/a'<b>.qcow2", "qcow2"), ("vdb", "/srv/c.raw", "raw")],
                             vcpus=4, memory_mib=512, network="lan", firmware="efi", domain_type="qemu")
    root = ET.fromstring(xml)
    assert root.findtext("name") == "web'<01>" and root.get("type") == "qemu"
    assert root.find("os").get("firmware") == "efi" and root.findtext("vcpu") == "4"
    disks = [(d.find("target").get("dev"), d.find("source").get("file"), d.find("boot") is not None)
             for d in root.iterfind("devices/disk")]
    assert disks == [("vda", "/srv/a'<b>.qcow2", True), ("vdb", "/srv/c.raw", False)]
    assert root.find("devices/interface/source").get("network") == "lan"
    assert root.find("devices/interface/mac") is None and root.find("uuid") is None


def _plan(source: dict, **options):
    destination = LibvirtDestination(LibvirtOptions(kind="libvirt", images_dir="/nonexistent/x", **options))
    snapshot = SnapshotInfo(id="ab" * 32, short_id="abababab", target="t", kind="images", source=source)
    items = [{"path": b"vol-1", "type": "image"}, {"path": b"vol-2", "type": "image"}]
    return destination, destination.plan(snapshot, items)


def test_options_for_a_minimal_domain_are_refused_for_a_saved_description():
    with pytest.raises(errors.UsageError, match="--vcpus.*has its own domain description"):
        _plan({"domain_xml": "<domain/>"}, vcpus=2)


def test_an_ebs_snapshot_without_blocks_or_a_foreign_snapshot_is_refused():
    with pytest.raises(errors.UsageError, match="copy_blocks: false"):
        _plan({"volumes": {"vol-1": {}}, "blocks_copied": False})
    with pytest.raises(errors.UsageError, match="not of a libvirt domain, nor of an EBS target"):
        _plan({"path": "/x"})
    with pytest.raises(errors.PathNotInSnapshot):
        _plan({"volumes": {"vol-1": {}, "vol-2": {}}, "blocks_copied": True}, boot_disk="vol-9")
    destination, plan = _plan({"volumes": {"vol-1": {}, "vol-2": {}}, "blocks_copied": True}, boot_disk="vol-2")
    assert [item["path"] for item in plan] == [b"vol-2", b"vol-1"]
    assert destination.devices == {"vol-2": "vda", "vol-1": "vdb"}
