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
from ..errors import DestinationError
from ..items import HOLE
from ..platforms.vmware.datastore import DatastoreHTTPError, flat_path, parse_path, upload
from ..platforms.vmware.inventory import all_vms, datacenter_path
from ..platforms.vmware.session import Session
from .directory import BlobReader


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
    written = _put_disk(session, reader, item, datacenter_path(session, vm), disk.backing.fileName, capacity, threads,
                        on_progress or (lambda done: None))
    result = VmRestoreResult(vm=vm_name, created=False, bytes_written=written)
    result.disks.append({"label": disk.deviceInfo.label, "file": disk.backing.fileName, "size": capacity})
    return result


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


def restore_new_vm(session: Session, reader: BlobReader, items: list[dict], name: str, *, datacenter: str | None = None,
                   folder: str | None = None, resource_pool: str | None = None, datastore: str | None = None,
                   power_on: bool = False, threads: int = 4,
                   on_progress: Callable[[int], None] | None = None) -> VmRestoreResult:
    """Create VM ``name`` with one thin disk per item (in order), upload the data, optionally power it on."""
    from pyVmomi import vim

    on_progress = on_progress or (lambda done: None)
    if any(props.get("name") == name for _vm, props in all_vms(session)):
        raise DestinationError(destination=f"VM {name}", detail="a VM with this name exists; choose another --new-vm name")
    dc, target_folder, pool, store = _placement(session, datacenter, folder, resource_pool, datastore)
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
