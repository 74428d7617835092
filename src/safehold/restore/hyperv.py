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
from typing import Any, Callable

from ..errors import DestinationError
from ..platforms.hyperv import scripts
from ..platforms.hyperv.shell import PowerShell, PowerShellFailed
from ..text import printable
from .options import HypervOptions
from .base import BlobReader, Progress, RestoreReport, SnapshotInfo
from .directory import valid_name
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


def _refuse_existing(shell: PowerShell, name: str, destination: str) -> None:
    try:
        shell.run(scripts.DESCRIBE_VM, Name=name)
    except PowerShellFailed as exc:
        if exc.category not in ("ObjectNotFound", "InvalidArgument"):
            raise DestinationError(destination=destination, detail=exc.message) from exc
    else:
        raise DestinationError(destination=destination, detail="a virtual machine with this name exists; "
                               "choose a new name (restores never overwrite a VM)")


def _upload_disks(reader: BlobReader, items: list[dict], source: dict, shell: PowerShell,
                  result: HyperVRestoreResult, *, name: str, disks_folder: str, scratch: str | Path | None,
                  threads: int | None, on_progress: Callable[[int], None] | None) -> list[dict]:
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
    return disks


def _new_vm(shell: PowerShell, source: dict, result: HyperVRestoreResult, *, name: str, folder: str,
            disks: list[dict]) -> None:
    destination = f"{name} on {source.get('host', 'the host')}"
    vm = source.get("vm", {})
    try:
        created = shell.run(scripts.NEW_VM, Name=name, Path=folder, Generation=int(vm.get("Generation", 2)),
                            MemoryStartupBytes=int(vm.get("MemoryStartup", 1 << 30)),
                            ProcessorCount=int(vm.get("ProcessorCount", 1)), Disks=disks)
    except PowerShellFailed as exc:
        raise DestinationError(destination=destination, detail=exc.message) from exc
    result.vm_id = created["Id"]


class HypervDestination:
    """A new VM on the Hyper-V host of the snapshot's target: ``write`` converts and uploads the
    disks, ``commit`` creates the VM with them attached, ``rollback`` removes uploaded disks.
    ``connect(target name)`` is the engine's: the PowerShell session of that target's host."""

    def __init__(self, options: HypervOptions, *, connect: Callable[[str], PowerShell],
                 threads: int | None = None) -> None:
        self.options = options
        self.connect = connect
        self.threads = threads
        self.shell: PowerShell | None = None
        self.result = HyperVRestoreResult(name=options.name)
        self.report = RestoreReport()
        self.source: dict = {}
        self.disks: list[dict] = []
        self.made_folders: list[str] = []  # created by write (the VM's folder is named after the new VM)

    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Any:
        self.source = snapshot.source
        for item in items:
            if not valid_name(item["path"]):  # from the snapshot: one name inside the scratch folder
                raise DestinationError(destination=self._where(), detail=f"disk name {printable(item['path'])} "
                                       "in the snapshot is not a single file name")
        self.shell = self.connect(snapshot.target)
        _refuse_existing(self.shell, self.options.name, self._where())
        return items

    def _where(self) -> str:
        return f"{self.options.name} on {self.source.get('host', 'the host')}"

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        assert self.shell is not None
        folder = self.options.host_path.rstrip("\\")
        self.made_folders = [f"{folder}\\{self.options.name}\\Virtual Hard Disks", f"{folder}\\{self.options.name}"]
        self.disks = _upload_disks(reader, plan, self.source, self.shell, self.result, name=self.options.name,
                                   disks_folder=f"{folder}\\{self.options.name}\\Virtual Hard Disks",
                                   scratch=self.options.scratch, threads=self.threads,
                                   on_progress=lambda done: progress(done, self.options.name))
        self.report.files, self.report.bytes_written = len(self.result.disks), self.result.bytes_written
        return self.report

    def commit(self) -> None:
        assert self.shell is not None
        _new_vm(self.shell, self.source, self.result, name=self.options.name,
                folder=self.options.host_path.rstrip("\\"), disks=self.disks)
        self.report.details = self.result.as_dict()
        self.report.log.append(f"created VM {self.options.name} ({self.result.vm_id}) with "
                               f"{len(self.result.disks)} disk(s)")
        self._close()

    def rollback(self) -> None:
        try:
            if self.shell is not None and self.made_folders and not self.result.vm_id:
                # The uploaded disks, then the (now empty) folders write made for them, deepest first.
                try:
                    self.shell.run(scripts.REMOVE_FILES, Paths=[*self.result.disks, *self.made_folders])
                except PowerShellFailed:
                    pass  # the restore's own error is the one to report
            self.made_folders = []
            self.result.disks = []
        finally:
            self._close()

    def _close(self) -> None:
        shell, self.shell = self.shell, None
        if shell is not None:
            shell.close()
