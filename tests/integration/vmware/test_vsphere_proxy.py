"""The test harness's CBT proxy in front of vcsim answers like vSphere: snapshot disks carry change
ids, QueryChangedDiskAreas reports changes between them and refuses what vSphere refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

VM = "DC0_H0_VM1"
MiB = 1024 * 1024


def test_change_ids_and_changed_areas_through_the_proxy(lab) -> None:
    from pyVmomi import vim

    from safehold.platforms.vmware.session import Session

    lab.resize_disk(VM, 2 * MiB)
    lab.write(VM, MiB, b"x" * 10)
    session = Session(lab.server, lab.USER, lab.PASSWORD, ca_file=str(lab.ca_file))
    try:
        vm = session.content.searchIndex.FindByInventoryPath(f"DC0/vm/{VM}")

        def snapshot_disk(snapshot):
            devices = session.get(snapshot, "config.hardware.device")
            return next(d for d in devices if isinstance(d, vim.vm.device.VirtualDisk))

        first = session.wait(vm.CreateSnapshot_Task("one", "", False, False))
        disk = snapshot_disk(first)
        assert disk.backing.changeId and disk.backing.changeId == lab.proxy.snapshot_change_ids[first._moId][disk.key]
        with pytest.raises(vim.fault.FileFault):  # CBT is off on this VM
            vm.QueryChangedDiskAreas(snapshot=first, deviceKey=disk.key, startOffset=0, changeId="*")
        session.wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))
        info = vm.QueryChangedDiskAreas(snapshot=first, deviceKey=disk.key, startOffset=0, changeId="*")
        assert [(a.start, a.length) for a in info.changedArea] == [(MiB, 64 * 1024)]
        assert (info.startOffset, info.length) == (0, 2 * MiB)

        lab.write(VM, 0, b"y")
        second = session.wait(vm.CreateSnapshot_Task("two", "", False, False))
        later = snapshot_disk(second).backing.changeId
        assert later != disk.backing.changeId
        # The first snapshot's change id is unchanged: each snapshot keeps its own.
        assert snapshot_disk(first).backing.changeId == disk.backing.changeId
        info = vm.QueryChangedDiskAreas(snapshot=second, deviceKey=disk.key, startOffset=0,
                                        changeId=disk.backing.changeId)
        assert [(a.start, a.length) for a in info.changedArea] == [(0, 64 * 1024)]
        with pytest.raises(vmodl_invalid_argument()):
            vm.QueryChangedDiskAreas(snapshot=second, deviceKey=disk.key, startOffset=0, changeId="52 00/999")
    finally:
        session.logout()


def vmodl_invalid_argument():
    from pyVmomi import vmodl

    return vmodl.fault.InvalidArgument
