"""A stateful fake Hyper-V host behind safehold's PowerShell seam (``safehold.platforms.hyperv.shell``).

No Hyper-V host (and no PowerShell) can run on this machine, so the driver is
tested against this fake. It answers each script of ``safehold.platforms.hyperv.scripts``
by name, refuses parameters the script's ``param()`` block does not declare,
and returns JSON shaped like the documented output the scripts select from:

- Get-VM / Get-VMHardDiskDrive / Get-VHD (Microsoft Learn, Hyper-V module):
  VM ``Id``, ``Name``, ``State``, ``Generation``, ``ProcessorCount``,
  ``MemoryStartup``; drive ``Id`` ("Microsoft:<vm>\\<controller>\\<n>\\<loc>\\D"),
  ``ControllerType`` (IDE/SCSI), ``ControllerNumber``, ``ControllerLocation``,
  ``Path``; VHD ``VhdFormat``, ``VhdType``, ``Size``, ``FileSize``,
  ``LogicalSectorSize``.
- Get-VMSnapshot: ``Id``, ``Name``, ``SnapshotType`` ("Recovery" for the
  checkpoints Msvm_VirtualSystemSnapshotService.CreateSnapshot makes with
  SnapshotType 32768), ``HardDrives`` (paths of the frozen VHDX files).
- Msvm_VirtualSystemSnapshotService.ConvertToReferencePoint: only recovery
  checkpoints convert; the checkpoint is deleted as a side effect.
- Msvm_VirtualSystemReferencePoint: ``InstanceID``, ``ReferencePointType``
  (2 = RCT), ``ConsistencyLevel`` (1 application, 2 crash),
  ``VirtualDiskIdentifiers`` (disk instance ids, ending in \\L),
  ``ResilientChangeTrackingIdentifiers``.
- Msvm_ImageManagementService.GetVirtualDiskChanges: ``ProcessedByteLength``
  (may be less than asked: callers loop), ``ChangedByteOffsets``,
  ``ChangedByteLengths``; ByteLength past the end of the disk is refused.
- Job failures come back as the scripts' ``Write-Error -Category`` records
  (error codes from the Msvm method return values: 32768 failed, 32769 access
  denied, 32773 invalid parameter, 32779 file not found).

What is real: every disk is a real VHDX file made and read by ``qemu-img``
(guest writes go through ``qemu-io``), a checkpoint freezes a copy of it, and
mounting converts that copy to raw with ``qemu-img convert``, so VHDX handling
is exercised for real. What is modelled, not measured: RCT reports exactly the
guest's writes since a reference point, rounded out to ``rct_granularity``
(4 KiB here; Hyper-V does not document its granularity); an RCT id stops being
valid when its reference point is destroyed or tracking is reset (the
conservative reading of the docs); an app-consistent checkpoint fails when the
guest has no working VSS integration (``vss=False``), with the error text
Hyper-V logs for that case; deleting a VM removes its checkpoints and mounts.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safehold.errors import HyperVSessionExpired
from safehold.platforms.hyperv.scripts import Script
from safehold.platforms.hyperv.shell import PowerShellFailed

MAX_PROCESSED = 256 * 1024 * 1024  # GetVirtualDiskChanges answers at most this much per call


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


@dataclass
class Drive:
    id: str
    controller_type: str
    controller_number: int
    controller_location: int
    path: str  # Windows path on the host
    size: int
    writes: list[tuple[int, int]] = field(default_factory=list)  # the guest's writes, in order
    tracking: str = field(default_factory=lambda: str(uuid.uuid4()))  # changes when RCT is reset


@dataclass
class VM:
    id: str
    name: str
    generation: int = 2
    processors: int = 2
    memory: int = 1 << 30
    state: str = "Running"
    vss: bool = True  # integration services "Backup (volume shadow copy)" working in the guest
    drives: list[Drive] = field(default_factory=list)


class FakeHyperVHost:
    """Implements ``safehold.platforms.hyperv.shell.PowerShell``. ``root`` holds the host's files: the
    Windows path C:\\X\\y.vhdx lives at root/C/X/y.vhdx."""

    def __init__(self, root: Path, rct_granularity: int = 4096) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.granularity = rct_granularity
        self.vms: dict[str, VM] = {}
        self.checkpoints: dict[str, dict] = {}
        self.reference_points: dict[str, dict] = {}
        self.rct_ids: dict[str, tuple[str, str, int, str]] = {}  # rct id -> (drive id, tracking, position, point)
        self.mounts: dict[int, dict] = {}
        self.calls: list[tuple[str, dict]] = []
        self.uploads: list[str] = []
        self.expired = False
        self.refuse_reads = False
        self.upload_limit: int | None = None  # uploads beyond this many fail (a full disk)
        self.closed = 0
        # (script name, nth call) -> action run just before that call is answered
        self.hooks: dict[tuple[str, int], Callable[[], None]] = {}
        self._next_disk = 1

    # -- the host's side: set up VMs and let their guests write -----------------------------
    def local(self, windows_path: str) -> Path:
        return self.root / windows_path.replace(":", "").replace("\\", "/").lstrip("/")

    def create_vm(self, name: str, disk_sizes: list[int], **options: Any) -> VM:
        vm = VM(id=str(uuid.uuid4()), name=name, **options)
        controller = str(uuid.uuid4()).upper()
        for location, size in enumerate(disk_sizes):
            path = f"C:\\Hyper-V\\{name}\\disk{location}.vhdx"
            self.local(path).parent.mkdir(parents=True, exist_ok=True)
            qemu_img("create", "-q", "-f", "vhdx", "-o", "subformat=dynamic", str(self.local(path)), str(size))
            vm.drives.append(Drive(f"Microsoft:{vm.id.upper()}\\{controller}\\0\\{location}\\D", "SCSI", 0,
                                   location, path, size))
        self.vms[vm.id] = vm
        return vm

    def vm(self, name: str) -> VM:
        return next(vm for vm in self.vms.values() if vm.name.lower() == name.lower())

    def guest_write(self, name: str, disk: int, offset: int, length: int, pattern: int) -> None:
        drive = self.vm(name).drives[disk]
        subprocess.run(["qemu-io", "-f", "vhdx", "-c", f"write -P {pattern} {offset} {length}",
                        str(self.local(drive.path))], check=True, capture_output=True)
        drive.writes.append((offset, length))

    def disk_bytes(self, path: str) -> bytes:
        """The virtual disk's contents (a real VHDX, read through qemu-img)."""
        raw = self.root / f"read-{uuid.uuid4()}.raw"
        try:
            qemu_img("convert", "-f", "vhdx", "-O", "raw", str(self.local(path)), str(raw))
            return raw.read_bytes()
        finally:
            raw.unlink(missing_ok=True)

    def delete_vm(self, name: str) -> None:
        """Remove-VM: the VM, its checkpoints and reference points go; mounted checkpoint disks
        are dismounted (their files merge away)."""
        vm = self.vm(name)
        del self.vms[vm.id]
        for key in [k for k, c in self.checkpoints.items() if c["vm"] == vm.id]:
            self._drop_checkpoint(key)
        for key in [k for k, p in self.reference_points.items() if p["vm"] == vm.id]:
            self._drop_reference_point(key)

    def reset_change_tracking(self, name: str) -> None:
        for drive in self.vm(name).drives:
            drive.tracking = str(uuid.uuid4())

    def expire_session(self) -> None:
        self.expired = True

    def at(self, script: str, nth: int, action: Callable[[], None]) -> None:
        """Run ``action`` just before answering the nth (1-based) call of ``script``."""
        self.hooks[(script, nth)] = action

    def count(self, script: str) -> int:
        return sum(1 for name, _ in self.calls if name == script)

    # -- the PowerShell seam ---------------------------------------------------------------
    def run(self, script: Script, **parameters: Any) -> Any:
        name = script.text.split("\n", 1)[0].removeprefix("# safehold:")
        declared = set(re.findall(r"\$(\w+)", re.search(r"param\((.*?)\)\n", script.text).group(1)))
        if set(parameters) - declared:
            raise AssertionError(f"{name}: parameters {sorted(set(parameters) - declared)} not in its param() block")
        if self.expired:
            raise HyperVSessionExpired(host="fake", detail="WinRMTransportError: Bad HTTP response returned from "
                                       "the server. Code: 401, Content: ''")
        self.calls.append((name, dict(parameters)))
        hook = self.hooks.pop((name, self.count(name)), None)
        if hook is not None:
            hook()
            if self.expired:
                return self.run(script, **parameters)
        result = getattr(self, "_" + name.replace("-", "_"))(**parameters)
        return json.loads(json.dumps(result))

    def upload(self, local_path: str, remote_path: str) -> None:
        if self.expired:
            raise HyperVSessionExpired(host="fake", detail="session expired")
        target = self.local(remote_path)
        if self.upload_limit is not None and len(self.uploads) >= self.upload_limit:
            raise PowerShellFailed("Failed to copy file: There is not enough space on the disk.", "WriteError")
        if not target.parent.is_dir():  # pypsrp's copy does not create folders
            raise PowerShellFailed(f"Could not find a part of the path '{remote_path}'.", "WriteError",
                                   "DirectoryNotFoundException")
        shutil.copyfile(local_path, target)
        self.uploads.append(remote_path)

    def reconnect(self) -> None:
        self.expired = False

    def close(self) -> None:
        self.closed += 1

    # -- script implementations --------------------------------------------------------------
    @staticmethod
    def _fail(message: str, category: str, error_id: str = "") -> PowerShellFailed:
        return PowerShellFailed(message, category, error_id)

    def _find(self, vm_id: str) -> VM:
        if vm_id not in self.vms:
            raise self._fail(f"no virtual machine with id {vm_id}", "ObjectNotFound", "safehold.vm-not-found")
        return self.vms[vm_id]

    def _describe_vm(self, Name: str) -> dict:
        matches = [vm for vm in self.vms.values() if vm.name.lower() == Name.lower()]
        if not matches:  # Get-VM reports a missing VM as InvalidArgument, not ObjectNotFound
            raise self._fail(f'Hyper-V was unable to find a virtual machine with name "{Name}".', "InvalidArgument",
                             "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM")
        vm = matches[0]
        return {"Id": vm.id, "Name": vm.name, "State": vm.state, "Generation": vm.generation,
                "ProcessorCount": vm.processors, "MemoryStartup": vm.memory,
                "Disks": [self._drive(d) | {"VhdFormat": "VHDX", "VhdType": "Dynamic", "Size": d.size,
                                            "FileSize": self.local(d.path).stat().st_size, "LogicalSectorSize": 512}
                          for d in vm.drives]}

    @staticmethod
    def _drive(drive: Drive, path: str | None = None) -> dict:
        return {"Id": drive.id, "ControllerType": drive.controller_type, "ControllerNumber": drive.controller_number,
                "ControllerLocation": drive.controller_location, "Path": path or drive.path}

    def _create_checkpoint(self, VMId: str, ConsistencyLevel: int, Name: str) -> dict:
        vm = self._find(VMId)
        if ConsistencyLevel == 1 and vm.state == "Running" and not vm.vss:
            raise self._fail(
                f"create-checkpoint failed: Could not create backup checkpoint for virtual machine '{vm.name}': "
                f"The operation failed. (0x80070490). (Virtual machine ID {vm.id.upper()}) (error 32768)",
                "InvalidOperation", "safehold.create-checkpoint.32768")
        snapshot_id = str(uuid.uuid4())
        frozen = []
        for drive in vm.drives:
            path = drive.path.removesuffix(".vhdx") + f"_{snapshot_id.upper()}.vhdx"
            shutil.copyfile(self.local(drive.path), self.local(path))
            frozen.append({"drive": drive.id, "path": path, "position": len(drive.writes)})
        self.checkpoints[snapshot_id] = {"vm": vm.id, "name": Name, "consistency": ConsistencyLevel, "disks": frozen}
        return {"Id": snapshot_id, "Name": Name, "SnapshotType": "Recovery", "ConsistencyLevel": ConsistencyLevel,
                "HardDrives": [self._drive(d, f["path"]) for d, f in zip(vm.drives, frozen)]}

    def _list_checkpoints(self, VMId: str) -> list:
        self._find(VMId)
        return [{"Id": key, "Name": c["name"], "SnapshotType": "Recovery", "CreationTime": "2026-01-01T00:00:00Z"}
                for key, c in self.checkpoints.items() if c["vm"] == VMId]

    def _drop_checkpoint(self, key: str) -> None:
        checkpoint = self.checkpoints.pop(key)
        for disk in checkpoint["disks"]:
            for number in [n for n, m in self.mounts.items() if m["path"] == disk["path"]]:
                self._unmount(number)
            self.local(disk["path"]).unlink(missing_ok=True)

    def _remove_checkpoint(self, VMId: str, SnapshotId: str) -> dict:
        if SnapshotId not in self.checkpoints:
            return {"Removed": False}
        self._drop_checkpoint(SnapshotId)
        return {"Removed": True}

    def _convert_to_reference_point(self, VMId: str, SnapshotId: str) -> dict:
        self._find(VMId)
        if SnapshotId not in self.checkpoints:
            raise self._fail(f"no checkpoint {SnapshotId}", "ObjectNotFound", "safehold.checkpoint-not-found")
        checkpoint = self.checkpoints[SnapshotId]
        drives = {d.id: d for d in self.vms[VMId].drives}
        point = f"Microsoft:{uuid.uuid4()}"
        disks, ids = [], []
        for disk in checkpoint["disks"]:
            drive = drives[disk["drive"]]
            rct_id = f"rctX:{drive.tracking}:{disk['position']:08x}"
            self.rct_ids[rct_id] = (drive.id, drive.tracking, disk["position"], point)
            disks.append(drive.id[:-1] + "L")
            ids.append(rct_id)
        self._drop_checkpoint(SnapshotId)
        self.reference_points[point] = {"vm": VMId, "consistency": checkpoint["consistency"], "rct": ids}
        return {"InstanceID": point, "ReferencePointType": 2, "ConsistencyLevel": checkpoint["consistency"],
                "VirtualDiskIdentifiers": disks, "ResilientChangeTrackingIdentifiers": ids}

    def _drop_reference_point(self, key: str) -> None:
        for rct_id in self.reference_points.pop(key)["rct"]:
            self.rct_ids.pop(rct_id, None)

    def _remove_reference_point(self, VMId: str, InstanceID: str) -> dict:
        if InstanceID not in self.reference_points:
            return {"Removed": False}
        self._drop_reference_point(InstanceID)
        return {"Removed": True}

    def _disk_changes(self, Path: str, LimitId: str, ByteOffset: int, ByteLength: int) -> dict:
        found = [(c, d) for c in self.checkpoints.values() for d in c["disks"] if d["path"] == Path]
        if not found:
            raise self._fail("disk-changes failed with return value 32779", "ObjectNotFound", "safehold.disk-changes.32779")
        checkpoint, disk = found[0]
        drive = next(d for d in self.vms[checkpoint["vm"]].drives if d.id == disk["drive"])
        known = self.rct_ids.get(LimitId)
        if known is None or known[0] != drive.id or known[1] != drive.tracking:
            raise self._fail("disk-changes failed: The specified resilient change tracking identifier is not valid "
                             "for this virtual hard disk. (error 32773)", "InvalidOperation", "safehold.disk-changes.32773")
        if ByteOffset + ByteLength > drive.size:
            raise self._fail("disk-changes failed with return value 32773", "InvalidArgument", "safehold.disk-changes.32773")
        processed = min(ByteLength, MAX_PROCESSED)
        start, end = ByteOffset, ByteOffset + processed
        blocks: set[int] = set()
        g = self.granularity
        for offset, length in drive.writes[known[2]:disk["position"]]:
            lo, hi = max(offset, start), min(offset + length, end)
            if lo < hi:
                blocks.update(range(lo // g, (hi - 1) // g + 1))
        offsets, lengths = [], []
        for block in sorted(blocks):
            if offsets and offsets[-1] + lengths[-1] == block * g:
                lengths[-1] += g
            else:
                offsets.append(block * g)
                lengths.append(g)
        lengths = [min(o + n, drive.size) - o for o, n in zip(offsets, lengths)]
        return {"ProcessedByteLength": processed, "ChangedByteOffsets": offsets, "ChangedByteLengths": lengths}

    def _mount_disk(self, Path: str) -> dict:
        if not self.local(Path).exists():
            raise self._fail(f"Mount-VHD : The system cannot find the file specified. '{Path}'", "ObjectNotFound",
                             "ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets.MountVhd")
        if any(m["path"] == Path for m in self.mounts.values()):
            raise self._fail(f"Mount-VHD : The process cannot access the file because it is being used by another "
                             f"process. '{Path}'", "ResourceBusy", "ResourceBusy,Microsoft.Vhd.PowerShell.Cmdlets.MountVhd")
        raw = self.root / f"mount-{self._next_disk}.raw"
        qemu_img("convert", "-f", "vhdx", "-O", "raw", str(self.local(Path)), str(raw))
        number, self._next_disk = self._next_disk, self._next_disk + 1
        self.mounts[number] = {"path": Path, "raw": raw}
        return {"Path": Path, "Number": number, "Size": raw.stat().st_size, "LogicalSectorSize": 512}

    def _read_disk(self, Number: int, Offset: int, Length: int) -> dict:
        if Number not in self.mounts:
            raise self._fail(f"No MSFT_Disk objects found with property 'Number' equal to '{Number}'.",
                             "ObjectNotFound", "CmdletizationQuery_NotFound_Number,Get-Disk")
        if self.refuse_reads:
            raise self._fail(f"Access to the path '\\\\.\\PhysicalDrive{Number}' is denied.", "PermissionDenied",
                             "UnauthorizedAccessException")
        if Offset % 512 or Length % 512:
            raise self._fail("Exception calling \"Read\": \"The parameter is incorrect.\"", "NotSpecified", "IOException")
        with open(self.mounts[Number]["raw"], "rb") as handle:
            handle.seek(Offset)
            data = handle.read(Length)
        return {"Offset": Offset, "Length": len(data), "Data": base64.b64encode(data).decode()}

    def _unmount(self, number: int) -> None:
        self.mounts.pop(number)["raw"].unlink(missing_ok=True)

    def _dismount_disk(self, Path: str) -> dict:
        numbers = [n for n, m in self.mounts.items() if m["path"] == Path]
        for number in numbers:
            self._unmount(number)
        return {"Dismounted": bool(numbers)}

    def _new_folder(self, Path: str) -> dict:
        self.local(Path).mkdir(parents=True, exist_ok=True)
        return {"Path": Path}

    def _remove_files(self, Paths: list) -> dict:
        removed = [path for path in Paths if self.local(path).exists()]
        for path in removed:
            local = self.local(path)
            if local.is_dir():  # Remove-Item without -Recurse: only an empty folder goes
                if any(local.iterdir()):
                    raise PowerShellFailed(f"The item at {path} has children", "InvalidOperation")
                local.rmdir()
            else:
                local.unlink()
        return {"Removed": removed}

    def _new_vm(self, Name: str, Path: str, Generation: int, MemoryStartupBytes: int, ProcessorCount: int,
                Disks: list) -> dict:
        if any(vm.name.lower() == Name.lower() for vm in self.vms.values()):
            raise self._fail(f"a virtual machine named {Name} exists", "ResourceExists", "safehold.vm-exists")
        vm = VM(id=str(uuid.uuid4()), name=Name, generation=Generation, processors=ProcessorCount,
                memory=MemoryStartupBytes, state="Off")
        controller = str(uuid.uuid4()).upper()
        for disk in Disks:
            local = self.local(disk["Path"])
            if not local.exists():
                raise self._fail(f"Add-VMHardDiskDrive : The system cannot find the file specified. '{disk['Path']}'",
                                 "ObjectNotFound", "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.AddVMHardDiskDrive")
            info = json.loads(qemu_img("info", "--output=json", str(local)))
            if info["format"] != "vhdx":
                raise self._fail(f"'{disk['Path']}' is not a virtual hard disk file", "InvalidArgument",
                                 "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.AddVMHardDiskDrive")
            vm.drives.append(Drive(f"Microsoft:{vm.id.upper()}\\{controller}\\{disk['ControllerNumber']}\\"
                                   f"{disk['ControllerLocation']}\\D", disk["ControllerType"], disk["ControllerNumber"],
                                   disk["ControllerLocation"], disk["Path"], info["virtual-size"]))
        self.vms[vm.id] = vm
        return {"Id": vm.id, "Name": vm.name, "State": vm.state}
