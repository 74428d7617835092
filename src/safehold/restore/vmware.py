"""Restore VM disks to vSphere: as a new VM, or onto a disk of an existing (powered-off) VM.

The data goes up through the datastore HTTP file access: one ``PUT`` of each
disk's flat file, streamed from the repository in order (holes as zeros, since
the datastore has no ranged writes), every chunk verified on the way. A new VM
is created first with thin disks of the saved sizes on one SCSI controller, and
its CPU count, memory and guest type from the snapshot; if anything fails after
it exists, it is destroyed again, so a failed restore leaves nothing behind.
A damaged chunk stops the restore: a VM disk with a gap is not a restore.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..concurrency import ordered_map
from ..errors import DestinationError, PathNotInSnapshot, UsageError
from ..items import HOLE
from ..platforms.vmware.datastore import DatastoreHTTPError, flat_path, parse_path, upload
from ..platforms.vmware.inventory import all_vms, datacenter_path
from ..platforms.vmware.session import Session
from .base import BlobReader, Progress, RestoreReport, SnapshotInfo
from .options import VmwareOptions


@dataclass
class VmRestoreResult:
    vm: str
    created: bool
    disks: list[dict] = field(default_factory=list)
    bytes_written: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def disk_stream(reader: BlobReader, item: dict, total: int, threads: int) -> Iterator[bytes]:
    """The disk's bytes in order, ``total`` of them (zeros past the saved size)."""
    size, chunk_size, chunks = item["size"], item["chunk_size"], item["chunks"]
    count = len(chunks) // 32

    def load(index: int) -> bytes:
        blob_id = chunks[index * 32 : (index + 1) * 32]
        length = min(chunk_size, size - index * chunk_size)
        return bytes(length) if blob_id == HOLE else reader.read_blob(blob_id)

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="safehold-vm-restore") as pool:
        yield from ordered_map(pool, load, range(count), max(1, threads) * 4)
    padding = total - size
    while padding > 0:
        piece = min(padding, 4 * 1024 * 1024)
        yield bytes(piece)
        padding -= piece


def _put_disk(session: Session, reader: BlobReader, item: dict, datacenter: str, file_name: str, capacity: int,
              threads: int, on_progress: Callable[[int], None]) -> int:
    datastore, path = parse_path(file_name)
    try:
        return upload(session, datacenter, datastore, flat_path(path), capacity,
                      disk_stream(reader, item, capacity, threads), on_progress)
    except DatastoreHTTPError as exc:
        raise DestinationError(destination=file_name, detail=str(exc)) from None


def _disks(session: Session, vm: Any) -> list[Any]:
    from pyVmomi import vim

    devices = session.get(vm, "config.hardware.device") or []
    return [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]


def _capacity(disk: Any) -> int:
    return disk.capacityInBytes or (disk.capacityInKB or 0) * 1024


def find_vm(session: Session, name: str) -> Any:
    matches = [vm for vm, props in all_vms(session) if props.get("name") == name]
    if len(matches) != 1:
        detail = "no such VM" if not matches else f"{len(matches)} VMs have this name"
        raise DestinationError(destination=f"VM {name}", detail=detail)
    return matches[0]


def restore_onto_disk(session: Session, reader: BlobReader, item: dict, vm_name: str, disk_label: str | None,
                      *, threads: int = 4, on_progress: Callable[[int], None] | None = None) -> VmRestoreResult:
    """Overwrite one disk of an existing, powered-off VM without snapshots with ``item``."""
    vm, disk, capacity = disk_to_overwrite(session, item, vm_name, disk_label)
    written = _put_disk(session, reader, item, datacenter_path(session, vm), disk.backing.fileName, capacity, threads,
                        on_progress or (lambda done: None))
    result = VmRestoreResult(vm=vm_name, created=False, bytes_written=written)
    result.disks.append({"label": disk.deviceInfo.label, "file": disk.backing.fileName, "size": capacity})
    return result


def disk_to_overwrite(session: Session, item: dict, vm_name: str, disk_label: str | None) -> tuple[Any, Any, int]:
    """(VM, disk, its capacity) that ``item`` may overwrite; refuses a powered-on VM, one with
    snapshots, an unknown disk or one smaller than the backup. Changes nothing."""
    vm = find_vm(session, vm_name)
    state = session.properties([vm], ["runtime.powerState", "snapshot"])[0]
    where = f"VM {vm_name}"
    if str(state.get("runtime.powerState")) != "poweredOff":
        raise DestinationError(destination=where, detail="it is powered on; power it off before restoring onto its disk")
    if state.get("snapshot") is not None and state["snapshot"].rootSnapshotList:
        raise DestinationError(destination=where, detail="it has snapshots; its flat disk is not its current state "
                               "(delete the snapshots, or restore as a new VM)")
    disks = _disks(session, vm)
    wanted = disk_label or item.get("metadata", {}).get("label")
    chosen = [d for d in disks if d.deviceInfo and d.deviceInfo.label == wanted] if wanted else []
    if not chosen and disk_label is None and len(disks) == 1:
        chosen = disks
    if not chosen:
        labels = ", ".join(d.deviceInfo.label for d in disks if d.deviceInfo) or "none"
        raise DestinationError(destination=where, detail=f"no disk {wanted!r} (its disks: {labels}); pick one with --disk")
    disk = chosen[0]
    capacity = _capacity(disk)
    if capacity < item["size"]:
        raise DestinationError(destination=f"{where} {disk.deviceInfo.label}",
                               detail=f"the disk holds {capacity} bytes, the backup {item['size']}: grow it first")
    return vm, disk, capacity


def _placement(session: Session, datacenter: str | None, folder: str | None, resource_pool: str | None,
               datastore: str | None) -> tuple[Any, Any, Any, str]:
    from pyVmomi import vim

    index = session.content.searchIndex
    if datacenter:
        dc = index.FindByInventoryPath(datacenter)
        if not isinstance(dc, vim.Datacenter):
            raise DestinationError(destination=f"datacenter {datacenter}", detail="no such datacenter")
    else:
        view = session.content.viewManager.CreateContainerView(session.content.rootFolder, [vim.Datacenter], True)
        try:
            dcs = list(view.view)
        finally:
            view.DestroyView()
        if not dcs:
            raise DestinationError(destination="vSphere", detail="no datacenter")
        dc = dcs[0]
    target_folder = index.FindByInventoryPath(folder) if folder else session.get(dc, "vmFolder")
    if not isinstance(target_folder, vim.Folder):
        raise DestinationError(destination=f"folder {folder}", detail="no such VM folder")
    if resource_pool:
        pool = index.FindByInventoryPath(resource_pool)
        if not isinstance(pool, vim.ResourcePool):
            raise DestinationError(destination=f"resource pool {resource_pool}", detail="no such resource pool")
    else:
        view = session.content.viewManager.CreateContainerView(session.get(dc, "hostFolder"), [vim.ComputeResource], True)
        try:
            computes = list(view.view)
        finally:
            view.DestroyView()
        if not computes:
            raise DestinationError(destination="vSphere", detail="no host or cluster to run the VM")
        pool = session.get(computes[0], "resourcePool")
    stores = session.get(dc, "datastore") or []
    props = session.properties(stores, ["name", "summary.freeSpace", "summary.accessible"]) if stores else []
    names = [p["name"] for p in props if p.get("summary.accessible", True)]
    if datastore:
        if datastore not in names:
            raise DestinationError(destination=f"datastore {datastore}", detail=f"not found; datastores: {', '.join(names)}")
        chosen = datastore
    else:
        usable = [p for p in props if p.get("summary.accessible", True)]
        if not usable:
            raise DestinationError(destination="vSphere", detail="no accessible datastore")
        chosen = max(usable, key=lambda p: p.get("summary.freeSpace") or 0)["name"]
    return dc, target_folder, pool, chosen


def check_new_vm(session: Session, name: str, datacenter: str | None, folder: str | None,
                 resource_pool: str | None, datastore: str | None) -> tuple[Any, Any, Any, str]:
    """Refuse a VM name in use; find where the new VM goes. Changes nothing."""
    if any(props.get("name") == name for _vm, props in all_vms(session)):
        raise DestinationError(destination=f"VM {name}", detail="a VM with this name exists; choose another --new-vm name")
    return _placement(session, datacenter, folder, resource_pool, datastore)


def restore_new_vm(session: Session, reader: BlobReader, items: list[dict], name: str, *, datacenter: str | None = None,
                   folder: str | None = None, resource_pool: str | None = None, datastore: str | None = None,
                   power_on: bool = False, threads: int = 4,
                   on_progress: Callable[[int], None] | None = None) -> VmRestoreResult:
    """Create VM ``name`` with one thin disk per item (in order), upload the data, optionally power it on."""
    from pyVmomi import vim

    on_progress = on_progress or (lambda done: None)
    dc, target_folder, pool, store = check_new_vm(session, name, datacenter, folder, resource_pool, datastore)
    saved = (items[0].get("metadata") or {}).get("vm") or {}
    controller = vim.vm.device.VirtualDeviceSpec(
        operation="add", device=vim.vm.device.ParaVirtualSCSIController(key=-100, busNumber=0, sharedBus="noSharing"))
    changes = [controller]
    units = [u for u in range(16) if u != 7]  # unit 7 is the controller's own
    if len(items) > len(units):
        raise DestinationError(destination=f"VM {name}", detail=f"{len(items)} disks; one controller takes 15")
    for number, item in enumerate(items):
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent", thinProvisioned=True,
                                                                fileName=f"[{store}]")
        disk = vim.vm.device.VirtualDisk(key=-(number + 1), controllerKey=-100, unitNumber=units[number],
                                         capacityInKB=(item["size"] + 1023) // 1024, backing=backing)
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    config = vim.vm.ConfigSpec(name=name, guestId=saved.get("guest_id") or "otherGuest64",
                               numCPUs=saved.get("num_cpus") or 1, memoryMB=saved.get("memory_mb") or 512,
                               files=vim.vm.FileInfo(vmPathName=f"[{store}]"), deviceChange=changes)
    if saved.get("firmware"):
        config.firmware = saved["firmware"]
    try:
        vm = session.wait(target_folder.CreateVM_Task(config=config, pool=pool))
    except Exception as exc:
        raise DestinationError(destination=f"VM {name}", detail=f"creating it failed: {getattr(exc, 'msg', exc)}") from None
    result = VmRestoreResult(vm=name, created=True)
    try:
        disks = sorted(_disks(session, vm), key=lambda d: (d.controllerKey, d.unitNumber))
        if len(disks) != len(items):
            raise DestinationError(destination=f"VM {name}", detail=f"created with {len(disks)} disks, expected {len(items)}")
        dc_path = datacenter_path(session, vm)
        done = 0
        for item, disk in zip(items, disks):
            capacity = _capacity(disk)
            written = _put_disk(session, reader, item, dc_path, disk.backing.fileName, capacity, threads,
                                lambda sent: on_progress(done + sent))
            done += written
            result.disks.append({"label": disk.deviceInfo.label if disk.deviceInfo else str(disk.key),
                                 "file": disk.backing.fileName, "size": capacity,
                                 "from": os.fsdecode(item["path"])})
        result.bytes_written = done
        if power_on:
            session.wait(vm.PowerOnVM_Task())
    except BaseException:
        # A half-restored VM is worse than none: it could be mistaken for the restore.
        try:
            if str(session.get(vm, "runtime.powerState")) == "poweredOn":
                session.wait(vm.PowerOffVM_Task())
            session.wait(vm.Destroy_Task())
        except Exception:
            pass
        raise
    return result


class VmwareDestination:
    """One VM of a vmware snapshot: as a new VM (``new_vm``; powered on by ``commit`` when asked,
    destroyed by ``rollback``) or onto a disk of an existing, powered-off VM (``vm``).
    ``connect(target name)`` is the engine's: the vCenter session of the snapshot's target."""

    def __init__(self, options: VmwareOptions, *, connect: Callable[[str], Session], threads: int | None = None) -> None:
        if (options.new_vm is None) == (options.vm is None):
            raise UsageError("give exactly one of --new-vm NAME (create a VM) or --vm NAME (overwrite its disk)")
        self.options = options
        self.connect = connect
        self.threads = threads or os.cpu_count() or 1
        self.session: Session | None = None
        self.created: Any = None  # the new VM, until commit
        self.report = RestoreReport()

    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Any:
        options = self.options
        items = [item for item in items if item.get("type") == "image"]
        vms = sorted({(item.get("metadata") or {}).get("vm", {}).get("name", "") for item in items})
        if options.source_vm is None and len(vms) > 1:
            raise UsageError(f"snapshot {snapshot.short_id} holds VMs {', '.join(vms)}: pick one with --source-vm")
        chosen = options.source_vm or (vms[0] if vms else "")
        items = [item for item in items if (item.get("metadata") or {}).get("vm", {}).get("name", "") == chosen]
        if not items:
            raise PathNotInSnapshot(path=f"VM {chosen}", snapshot=snapshot.short_id)
        self.session = self.connect(snapshot.target)
        if options.new_vm is not None:
            check_new_vm(self.session, options.new_vm, options.datacenter, options.folder, options.resource_pool,
                         options.datastore)
            return chosen, items
        item = items[0]
        if options.disk is None and len(items) > 1:
            labels = ", ".join(i["metadata"].get("label", "?") for i in items)
            raise UsageError(f"VM {chosen} had disks {labels}: pick the one to restore with --disk")
        if options.disk is not None:
            item = next((i for i in items if i["metadata"].get("label") == options.disk), None) or items[0]
        disk_to_overwrite(self.session, item, options.vm, options.disk)
        return chosen, [item]

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        chosen, items = plan
        options, session = self.options, self.session
        assert session is not None
        self.report.log.append(f"restoring {len(items)} disk(s) of VM {chosen}")
        if options.new_vm is not None:
            result = restore_new_vm(session, reader, items, options.new_vm, datacenter=options.datacenter,
                                    folder=options.folder, resource_pool=options.resource_pool,
                                    datastore=options.datastore, threads=self.threads,
                                    on_progress=lambda done: progress(done, chosen))
            self.created = find_vm(session, options.new_vm)
        else:
            result = restore_onto_disk(session, reader, items[0], options.vm, options.disk, threads=self.threads,
                                       on_progress=lambda done: progress(done, chosen))
        self.result = result
        self.report.files, self.report.bytes_written = len(result.disks), result.bytes_written
        self.report.details = result.as_dict()
        return self.report

    def commit(self) -> None:
        try:
            if self.created is not None and self.options.power_on:
                self.session.wait(self.created.PowerOnVM_Task())
            self.created = None
            self.report.log.append(f"restored to VM {self.result.vm} ({'new' if self.result.created else 'existing'}): "
                                   f"{len(self.result.disks)} disk(s), {self.result.bytes_written} bytes")
        finally:
            if self.created is None:
                self._logout()

    def rollback(self) -> None:
        vm, self.created = self.created, None
        try:
            if vm is not None:  # a half-restored VM could be mistaken for the restore
                if str(self.session.get(vm, "runtime.powerState")) == "poweredOn":
                    self.session.wait(vm.PowerOffVM_Task())
                self.session.wait(vm.Destroy_Task())
        finally:
            self._logout()

    def _logout(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.logout()
