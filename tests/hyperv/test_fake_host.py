"""The fake Hyper-V host answers like the documented interfaces it stands for (see its docstring)."""

from __future__ import annotations

import base64

import pytest
from fake_hyperv import MAX_PROCESSED, FakeHyperVHost

from safehold.platforms.hyperv import scripts
from safehold.platforms.hyperv.shell import PowerShell, PowerShellFailed

MiB = 1024 * 1024


def test_fake_satisfies_the_seam(host: FakeHyperVHost) -> None:
    def accepts(shell: PowerShell) -> PowerShell:
        return shell

    assert accepts(host) is host
    for name in ("run", "upload", "reconnect", "close"):
        assert callable(getattr(host, name))


def test_every_script_has_an_answer_and_declares_its_parameters(host: FakeHyperVHost) -> None:
    for script in scripts.ALL:
        assert script.text.startswith(f"# safehold:{script.name}\nparam(")
        assert hasattr(host, "_" + script.name.replace("-", "_")), script.name
    with pytest.raises(AssertionError, match="not in its param"):
        host.run(scripts.DESCRIBE_VM, Name="x", Force=True)


def test_describe_follows_get_vm_output(host: FakeHyperVHost) -> None:
    vm = host.create_vm("db", [32 * MiB])
    answer = host.run(scripts.DESCRIBE_VM, Name="DB")  # Get-VM names are case-insensitive
    assert answer["Id"] == vm.id and answer["State"] == "Running"
    (disk,) = answer["Disks"]
    assert disk["VhdFormat"] == "VHDX" and disk["Size"] == 32 * MiB and disk["Id"].endswith("\\D")
    with pytest.raises(PowerShellFailed) as missing:
        host.run(scripts.DESCRIBE_VM, Name="nope")
    assert missing.value.category == "InvalidArgument" and "GetVM" in missing.value.error_id


def test_checkpoint_freezes_the_disk_and_rct_reports_only_later_writes(host: FakeHyperVHost) -> None:
    vm = host.create_vm("app", [512 * MiB])
    host.guest_write("app", 0, 0, 64 * 1024, 0x11)
    first = host.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=1, Name="one")
    assert first["SnapshotType"] == "Recovery"
    host.guest_write("app", 0, 1 * MiB, 4096, 0x22)  # after the checkpoint: not in it
    point = host.run(scripts.CONVERT_TO_REFERENCE_POINT, VMId=vm.id, SnapshotId=first["Id"])
    assert point["ReferencePointType"] == 2 and point["VirtualDiskIdentifiers"][0].endswith("\\L")
    assert host.checkpoints == {}  # converting merges the checkpoint away
    host.guest_write("app", 0, 300 * MiB + 100, 10, 0x33)
    second = host.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=2, Name="two")
    path = second["HardDrives"][0]["Path"]
    rct = point["ResilientChangeTrackingIdentifiers"][0]
    answer = host.run(scripts.DISK_CHANGES, Path=path, LimitId=rct, ByteOffset=0, ByteLength=512 * MiB)
    assert answer["ProcessedByteLength"] == MAX_PROCESSED  # less than asked: callers must loop
    assert answer["ChangedByteOffsets"] == [1 * MiB] and answer["ChangedByteLengths"] == [4096]
    rest = host.run(scripts.DISK_CHANGES, Path=path, LimitId=rct, ByteOffset=MAX_PROCESSED,
                    ByteLength=512 * MiB - MAX_PROCESSED)
    assert rest["ChangedByteOffsets"] == [300 * MiB] and rest["ChangedByteLengths"] == [4096]
    with pytest.raises(PowerShellFailed) as past_end:
        host.run(scripts.DISK_CHANGES, Path=path, LimitId=rct, ByteOffset=4096, ByteLength=512 * MiB)
    assert past_end.value.category == "InvalidArgument"
    host.run(scripts.REMOVE_REFERENCE_POINT, VMId=vm.id, InstanceID=point["InstanceID"])
    with pytest.raises(PowerShellFailed, match="not valid"):
        host.run(scripts.DISK_CHANGES, Path=path, LimitId=rct, ByteOffset=0, ByteLength=MiB)


def test_mounted_checkpoint_reads_the_virtual_disk_through_qemu_img(host: FakeHyperVHost) -> None:
    vm = host.create_vm("files", [16 * MiB])
    host.guest_write("files", 0, 8 * MiB, 8192, 0xAB)
    checkpoint = host.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=1, Name="c")
    path = checkpoint["HardDrives"][0]["Path"]
    host.guest_write("files", 0, 8 * MiB, 8192, 0xCD)  # the live disk moves on
    number = host.run(scripts.MOUNT_DISK, Path=path)["Number"]
    with pytest.raises(PowerShellFailed) as busy:
        host.run(scripts.MOUNT_DISK, Path=path)
    assert busy.value.category == "ResourceBusy"
    data = base64.b64decode(host.run(scripts.READ_DISK, Number=number, Offset=8 * MiB - 512, Length=1024)["Data"])
    assert data == bytes(512) + b"\xab" * 512
    with pytest.raises(PowerShellFailed, match="parameter is incorrect"):
        host.run(scripts.READ_DISK, Number=number, Offset=100, Length=512)  # a disk device reads whole sectors
    assert host.run(scripts.DISMOUNT_DISK, Path=path) == {"Dismounted": True}
    with pytest.raises(PowerShellFailed) as gone:
        host.run(scripts.READ_DISK, Number=number, Offset=0, Length=512)
    assert gone.value.category == "ObjectNotFound"


def test_production_checkpoint_needs_working_vss(host: FakeHyperVHost) -> None:
    vm = host.create_vm("legacy", [MiB], vss=False)
    with pytest.raises(PowerShellFailed, match="Could not create backup checkpoint") as failed:
        host.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=1, Name="c")
    assert failed.value.category == "InvalidOperation"
    assert host.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=2, Name="c")["Name"] == "c"


def test_expired_session_refuses_until_reconnected(host: FakeHyperVHost) -> None:
    from safehold.errors import HyperVSessionExpired

    host.create_vm("vm", [MiB])
    host.expire_session()
    with pytest.raises(HyperVSessionExpired):
        host.run(scripts.DESCRIBE_VM, Name="vm")
    host.reconnect()
    assert host.run(scripts.DESCRIBE_VM, Name="vm")["Name"] == "vm"


def test_new_vm_takes_only_real_vhdx_files(host: FakeHyperVHost, tmp_path) -> None:
    raw = tmp_path / "not.vhdx"
    raw.write_bytes(bytes(MiB))
    with pytest.raises(PowerShellFailed, match="Could not find a part of the path"):
        host.upload(str(raw), "C:\\VMs\\x\\not.vhdx")  # like pypsrp's copy: the folder must exist
    host.run(scripts.NEW_FOLDER, Path="C:\\VMs\\x")
    host.upload(str(raw), "C:\\VMs\\x\\not.vhdx")
    disk = {"Path": "C:\\VMs\\x\\not.vhdx", "ControllerType": "SCSI", "ControllerNumber": 0, "ControllerLocation": 0}
    with pytest.raises(PowerShellFailed, match="not a virtual hard disk"):
        host.run(scripts.NEW_VM, Name="x", Path="C:\\VMs", Generation=2, MemoryStartupBytes=MiB, ProcessorCount=1,
                 Disks=[disk])
