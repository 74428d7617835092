"""The libvirt driver's pure parts: reading domain XML, writing backup/checkpoint XML, turning NBD
block status into extents, and the XML of a restored domain. The real libvirtd runs in
tests/integration/libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from safehold.restore.libvirt import new_domain_xml
from safehold.platforms.libvirt.connection import DomainDisk, domain_disks, guest_agent_connected
from safehold.platforms.libvirt.nbd import allocated, dirty
from safehold.sources.libvirt import backup_xml, checkpoint_xml, exports

DOMAIN = """<domain type='kvm'>
  <name>web</name><uuid>6f1b9a0e-0000-4000-8000-000000000001</uuid>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/images/web.qcow2'/><backingStore/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/web-data'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/install.iso'/><target dev='sda' bus='sata'/></disk>
    <interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/></interface>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>
  </devices>
</domain>"""


def test_domain_disks_leave_out_cdroms():
    assert domain_disks(DOMAIN) == [DomainDisk("vda", "/images/web.qcow2", "qcow2"),
                                    DomainDisk("vdb", "/dev/vg0/web-data", "raw")]


def test_guest_agent_state_comes_from_the_channel():
    assert guest_agent_connected(DOMAIN)
    assert not guest_agent_connected(DOMAIN.replace("state='connected'", "state='disconnected'"))
    assert not guest_agent_connected("<domain><devices/></domain>")


def test_backup_xml_is_incremental_only_for_disks_with_a_base():
    disks = domain_disks(DOMAIN)
    root = ET.fromstring(backup_xml("/run/s/nbd.sock", "/run/s", disks, {"vda": "safehold-1"}))
    assert root.get("mode") == "pull"
    assert root.find("server").attrib == {"transport": "unix", "socket": "/run/s/nbd.sock"}
    modes = {d.get("name"): (d.get("backupmode"), d.get("incremental")) for d in root.iterfind("disks/disk")}
    assert modes == {"vda": ("incremental", "safehold-1"), "vdb": ("full", None)}
    assert root.find("disks/disk/scratch").get("file") == "/run/s/scratch-vda.qcow2"


def test_checkpoint_tracks_only_backed_up_qcow2_disks():
    disks = domain_disks(DOMAIN)
    root = ET.fromstring(checkpoint_xml("safehold-2", disks[:1], disks))
    assert root.findtext("name") == "safehold-2"
    assert {d.get("name"): d.get("checkpoint") for d in root.iterfind("disks/disk")} == {"vda": "bitmap", "vdb": "no"}


def test_exports_read_the_running_jobs_names():
    job = """<domainbackup mode='pull'><disks>
      <disk name='vda' backup='yes' exportname='vda' exportbitmap='backup-vda'/>
      <disk name='vdb' backup='yes' exportname='vdb'/><disk name='vdc' backup='no'/></disks></domainbackup>"""
    assert exports(job) == {"vda": ("vda", "backup-vda"), "vdb": ("vdb", None)}


def test_block_status_flags_become_merged_extents():
    # base:allocation: 0 data, 1 hole, 2 zero, 3 hole+zero; a hole that does not read as zeros is read.
    status = [(0, 10, 0), (10, 5, 1), (15, 5, 2), (20, 5, 3), (25, 5, 0)]
    assert allocated(status) == [(0, 15), (25, 5)]
    assert dirty([(0, 10, 0), (10, 5, 1), (15, 5, 1), (20, 5, 0), (25, 5, 1)]) == [(10, 10), (25, 5)]


def test_restored_domain_gets_a_new_identity_and_only_restored_disks():
    xml = new_domain_xml(DOMAIN, "web-restored", {"vda": ("/restore/web-restored-vda.raw", "raw")})
    root = ET.fromstring(xml)
    assert root.findtext("name") == "web-restored"
    assert root.find("uuid") is None and root.find("devices/interface/mac") is None
    disks = root.findall("devices/disk")
    assert [d.get("device") for d in disks] == ["disk", "cdrom"]  # vdb (not restored) is not shared
    assert disks[0].find("source").attrib == {"file": "/restore/web-restored-vda.raw"}
    assert disks[0].find("driver").get("type") == "raw" and disks[0].find("backingStore") is None


def test_planned_reads_follow_the_archivers_rule():
    from safehold.sources.libvirt import planned_reads

    size, chunk = 10 * 100, 100  # ten chunks
    # Full backup: every allocated chunk, in order; a partial last chunk keeps its length.
    assert planned_reads(size - 50, chunk, [(0, 150), (900, 10)], None) == [(0, 100), (100, 100), (900, 50)]
    # Incremental: changed chunks (a write straddling two chunks counts twice) that are allocated.
    assert planned_reads(size, chunk, [(0, 1000)], [(150, 100), (700, 1)]) == [(100, 100), (200, 100), (700, 100)]
    assert planned_reads(size, chunk, [(0, 100)], [(500, 10)]) == []  # changed into a hole: nothing to read
    assert planned_reads(size, chunk, None, []) == []
