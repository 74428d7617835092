"""Restore a Hyper-V snapshot as a new virtual machine on a Hyper-V host.

Each disk is restored to a sparse raw file here, converted to a dynamic VHDX
with ``qemu-img`` (Debian's qemu-utils), uploaded to the host through the
PowerShell seam, and attached to a new VM (New-VM -NoVHD, Add-VMHardDiskDrive)
at its original controller slot, with the generation, processor count and
startup memory saved in the snapshot. An existing VM is never touched: a name
already in use is refused before anything is uploaded.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import DestinationError
from ..platforms.hyperv import scripts
from ..platforms.hyperv.shell import PowerShell, PowerShellFailed
from ..text import printable
from .directory import BlobReader, valid_name
from .image import restore_image


@dataclass
class HyperVRestoreResult:
    vm_id: str = ""
    name: str = ""
    disks: list[str] = field(default_factory=list)
    bytes_written: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def raw_to_vhdx(raw: Path, vhdx: Path) -> None:
    """Convert with qemu-img; a dynamic VHDX keeps the raw file's holes unallocated."""
    if shutil.which("qemu-img") is None:
        raise DestinationError(destination=str(vhdx), detail="qemu-img is not installed (Debian: qemu-utils)")
    done = subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic",
                           str(raw), str(vhdx)], capture_output=True, text=True)
    if done.returncode != 0:
        raise DestinationError(destination=str(vhdx), detail=f"qemu-img convert failed: {done.stderr.strip()}")


def restore_vm(reader: BlobReader, items: list[dict], source: dict, shell: PowerShell, *, name: str,
               host_path: str, scratch: str | Path | None = None, threads: int | None = None,
               on_progress: Callable[[int], None] | None = None) -> HyperVRestoreResult:
    """Create VM ``name`` under ``host_path`` (a folder on the host) from a snapshot's image
    ``items`` and its ``source`` token. Raises DestinationError when the name is taken, a disk is
    damaged in the repository, or the host refuses."""
    destination = f"{name} on {source.get('host', 'the host')}"
    try:
        shell.run(scripts.DESCRIBE_VM, Name=name)
    except PowerShellFailed as exc:
        if exc.category not in ("ObjectNotFound", "InvalidArgument"):
            raise DestinationError(destination=destination, detail=exc.message) from exc
    else:
        raise DestinationError(destination=destination, detail="a virtual machine with this name exists; "
                               "choose a new name (restores never overwrite a VM)")
    result = HyperVRestoreResult(name=name)
    folder = host_path.rstrip("\\")
    disks_folder = f"{folder}\\{name}\\Virtual Hard Disks"
    try:
        _create_vm(reader, items, source, shell, result, name=name, folder=folder, disks_folder=disks_folder,
                   scratch=scratch, threads=threads, on_progress=on_progress)
    except BaseException:
        # Nothing half-made stays on the host: the disks uploaded so far go again.
        if result.disks and not result.vm_id:
            try:
                shell.run(scripts.REMOVE_FILES, Paths=result.disks)
            except Exception:  # noqa: BLE001 - the restore's own error is the one to report
                pass
        raise
    return result


def _create_vm(reader: BlobReader, items: list[dict], source: dict, shell: PowerShell, result: HyperVRestoreResult,
               *, name: str, folder: str, disks_folder: str, scratch: str | Path | None, threads: int | None,
               on_progress: Callable[[int], None] | None) -> None:
    destination = f"{name} on {source.get('host', 'the host')}"
    disks = []
    try:
        shell.run(scripts.NEW_FOLDER, Path=disks_folder)
    except PowerShellFailed as exc:
        raise DestinationError(destination=destination, detail=exc.message) from exc
    with tempfile.TemporaryDirectory(prefix="safehold-hyperv-", dir=scratch) as work:
        for item in items:
            if not valid_name(item["path"]):  # from the snapshot: one name inside the scratch folder
                raise DestinationError(destination=destination, detail=f"disk name {printable(item['path'])} "
                                       "in the snapshot is not a single file name")
            disk = item["path"].decode()
            raw, vhdx = Path(work) / f"{disk}.raw", Path(work) / f"{disk}.vhdx"
            restored = restore_image(reader, item, raw, threads=threads, on_progress=on_progress)
            if restored.damaged_ranges:
                raise DestinationError(destination=destination, detail=f"disk {disk} has damaged data in the "
                                       f"repository ({len(restored.damaged_ranges)} range(s)); run 'safehold check'")
            result.bytes_written += restored.bytes_written
            raw_to_vhdx(raw, vhdx)
            raw.unlink()
            remote = f"{disks_folder}\\{disk}.vhdx"
            try:
                shell.upload(str(vhdx), remote)
            except PowerShellFailed as exc:
                raise DestinationError(destination=destination, detail=exc.message) from exc
            vhdx.unlink()
            controller = item.get("metadata", {}).get("controller") or {
                "ControllerType": "SCSI", "ControllerNumber": 0, "ControllerLocation": len(disks)}
            disks.append({"Path": remote, **controller})
            result.disks.append(remote)
    vm = source.get("vm", {})
    try:
        created = shell.run(scripts.NEW_VM, Name=name, Path=folder, Generation=int(vm.get("Generation", 2)),
                            MemoryStartupBytes=int(vm.get("MemoryStartup", 1 << 30)),
                            ProcessorCount=int(vm.get("ProcessorCount", 1)), Disks=disks)
    except PowerShellFailed as exc:
        raise DestinationError(destination=destination, detail=exc.message) from exc
    result.vm_id = created["Id"]
