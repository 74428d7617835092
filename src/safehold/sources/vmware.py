"""VMware vSphere source: VM disks through snapshots, CBT and datastore HTTP (pyVmomi, no VDDK).

For each selected VM (``inventory``): enable changed-block tracking when it is
off (that run is a full backup and says so), remove ``safehold-`` snapshots a
killed run left behind, create a snapshot (quiesced by VMware Tools when they
run, else crash-consistent with a warning), ask ``QueryChangedDiskAreas`` for
each disk's changed areas since the change id stored in the previous safehold
snapshot (``*``, the allocated areas, for the first), and read them from the
snapshot's flat base disk with HTTP Range requests (``datastore``). The
snapshot is removed when the view closes, on success and on every error; an
expired session is renewed for that. The new change ids go into the token, so
a failed run leaves the previous snapshot as the parent of the next one.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import time
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import SafeholdError, VSphereBackupFailed, VSphereSnapshotLeft
from ..items import DiskItem, Extent, View
from ..platforms.vmware.datastore import DatastoreHTTPError, DatastoreReader, flat_path, parse_path
from ..platforms.vmware.inventory import Selection, datacenter_path, select_vms
from ..platforms.vmware.session import Session, is_not_authenticated, read_password

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "safehold-"


class VmwareSource:
    """Driver for ``type: vmware`` targets (see ``safehold.config.models.VmwareSource``)."""

    def __init__(self, server: str, user: str, password_env: str = "SAFEHOLD_VSPHERE_PASSWORD",
                 password_file: str | None = None, insecure: bool = False, ca_file: str | None = None,
                 vms: list[str] | None = None, folder: str | None = None, tags: list[str] | None = None,
                 quiesce: bool = True, chunk_size: int = 512 * 1024) -> None:
        self.server = server
        self.user = user
        self.password_env = password_env
        self.password_file = password_file
        self.insecure = insecure
        self.ca_file = ca_file
        self.selection = Selection(list(vms or []), folder, list(tags or []))
        self.quiesce = quiesce
        self.chunk_size = chunk_size

    def connect(self) -> tuple[Session, str]:
        password = read_password(self.server, self.password_env, self.password_file)
        return Session(self.server, self.user, password, insecure=self.insecure, ca_file=self.ca_file), password

    def list_vms(self) -> list[dict[str, Any]]:
        """The VMs this target selects (for 'safehold vmware vms')."""
        session, password = self.connect()
        try:
            try:
                selected = select_vms(session, self.selection, password)
            except SafeholdError:
                raise
            except Exception as exc:
                raise _failure(f"selection on {self.server}", exc, "listing VMs") from exc
            props = session.properties([vm for vm, _ in selected],
                                       ["runtime.powerState", "config.changeTrackingEnabled", "guest.toolsRunningStatus"])
            return [{"name": p.get("name"), "id": vm._moId, "instance_uuid": p.get("config.instanceUuid"),
                     "power_state": str(q.get("runtime.powerState")), "cbt": bool(q.get("config.changeTrackingEnabled")),
                     "tools": q.get("guest.toolsRunningStatus")} for (vm, p), q in zip(selected, props)]
        finally:
            session.logout()

    @contextmanager
    def open(self, parent_token: dict | None = None, changed: list[Extent] | None = None) -> Iterator[View]:
        if changed is not None:
            from ..errors import UsageError

            raise UsageError("changed extents come from vSphere's change tracking for vmware targets; "
                             "they cannot be given by hand")
        session, password = self.connect()
        backup = _Backup(session, self, parent_token or {})
        try:
            try:
                for vm, props in select_vms(session, self.selection, password):
                    backup.add_vm(vm, props)
            except SafeholdError:
                raise
            except Exception as exc:  # a dropped connection or fault while preparing: still one clear error
                current = backup.vm_names[-1] if backup.vm_names else f"selection on {self.server}"
                raise _failure(current, exc, "preparing the backup") from exc
            yield View(kind="image", paths=[f"vsphere://{self.server}/{name}" for name in backup.vm_names],
                       disks=backup.disks, incremental="cbt", token=backup.token(), warnings=backup.warnings)
        except BaseException as exc:
            problems = backup.cleanup()
            for vm, label, detail in problems:
                log.error("snapshot %s of VM %s could not be removed: %s", label, vm, detail)
            if isinstance(exc, VSphereBackupFailed):
                raise VSphereBackupFailed(vm=exc.fields["vm"], detail=f"{exc.fields['detail']}; {backup.cleanup_summary(problems)}") from exc
            raise
        else:
            problems = backup.cleanup()
            if problems:
                vm, snapshot, detail = problems[0]
                raise VSphereSnapshotLeft(vm=vm, snapshot=snapshot, detail=detail)
        finally:
            session.logout()


class _Backup:
    """The state of one backup run: snapshots made (to remove), disks found, warnings, new token."""

    def __init__(self, session: Session, source: VmwareSource, parent_token: dict) -> None:
        self.session = session
        self.source = source
        self.parent_vms: dict = parent_token.get("vms", {}) if parent_token.get("server") == source.server else {}
        self.snapshots: list[tuple[str, Any, Any, str]] = []  # (vm name, vm, snapshot object, snapshot name)
        self.disks: list[DiskItem] = []
        self.warnings: list[str] = []
        self.vm_tokens: dict[str, dict] = {}
        self.vm_names: list[str] = []

    def token(self) -> dict:
        return {"server": self.source.server, "vms": self.vm_tokens}

    # -- one VM --------------------------------------------------------------------
    def add_vm(self, vm: Any, props: dict[str, Any]) -> None:
        from pyVmomi import vim

        session = self.session
        name = props["name"]
        self.vm_names.append(name)
        try:
            info = session.properties([vm], ["config.changeTrackingEnabled", "guest.toolsRunningStatus",
                                             "runtime.powerState", "snapshot", "config.hardware.numCPU",
                                             "config.hardware.memoryMB", "config.guestId", "config.firmware"])[0]
        except Exception as exc:
            raise _failure(name, exc) from None
        uuid = props.get("config.instanceUuid") or vm._moId
        parent = self.parent_vms.get(uuid, {})
        self._remove_leftovers(vm, name, info.get("snapshot"))
        if not info.get("config.changeTrackingEnabled"):
            spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
            try:
                session.wait(vm.ReconfigVM_Task(spec))
            except Exception as exc:
                raise _failure(name, exc, "enabling changed-block tracking") from None
            self.warnings.append(f"VM {name}: changed-block tracking was off; safehold enabled it, "
                                 "so this backup is full and the next ones are incremental")
            parent = {}
        snapshot = self._create_snapshot(vm, name, info)
        try:
            devices = session.get(snapshot, "config.hardware.device") or []
        except Exception as exc:
            raise _failure(name, exc, "reading the snapshot's disks") from None
        datacenter = datacenter_path(session, vm)
        vm_config = {"name": name, "instance_uuid": uuid, "num_cpus": info.get("config.hardware.numCPU"),
                     "memory_mb": info.get("config.hardware.memoryMB"), "guest_id": info.get("config.guestId"),
                     "firmware": info.get("config.firmware")}
        disk_tokens: dict[str, dict] = {}
        for device in devices:
            if isinstance(device, vim.vm.device.VirtualDisk):
                item = self._disk(vm, name, snapshot, device, datacenter, parent.get("disks", {}), vm_config)
                if item is not None:
                    self.disks.append(item)
                    disk_tokens[str(device.key)] = {k: item.metadata[k] for k in (
                        "change_id", "file", "size", "label", "controller_key", "unit_number")}
        # The VM's description (CPUs, memory, firmware) and each disk's label and slot travel with the
        # snapshot, so that a boot check can give its sandbox the VM's shape without reading the tree.
        self.vm_tokens[uuid] = {"name": name, "disks": disk_tokens, "config": vm_config}

    def _create_snapshot(self, vm: Any, name: str, info: dict[str, Any]) -> Any:
        tools = info.get("guest.toolsRunningStatus")
        quiesce = self.source.quiesce and tools == "guestToolsRunning"
        label = SNAPSHOT_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        description = f"safehold backup from {socket.gethostname()} pid {os.getpid()}; removed when the backup ends"
        try:
            snapshot = self.session.wait(vm.CreateSnapshot_Task(label, description, False, quiesce))
        except Exception as exc:
            if not quiesce:
                raise _failure(name, exc, "creating the snapshot") from None
            self.warnings.append(f"VM {name}: the quiesced snapshot failed ({_describe(exc)}); "
                                 "this backup is crash-consistent")
            try:
                snapshot = self.session.wait(vm.CreateSnapshot_Task(label, description, False, False))
            except Exception as exc2:
                raise _failure(name, exc2, "creating the snapshot") from None
            quiesce = None  # already warned
        self.snapshots.append((name, vm, snapshot, label))
        if quiesce is False:
            why = "quiescing is off in the configuration" if not self.source.quiesce else \
                f"VMware Tools are not running ({tools})"
            if str(info.get("runtime.powerState")) == "poweredOff":
                pass  # a powered-off VM's disks are consistent without quiescing
            else:
                self.warnings.append(f"VM {name}: snapshot not quiesced because {why}; this backup is crash-consistent")
        return snapshot

    def _remove_leftovers(self, vm: Any, name: str, snapshot_info: Any) -> None:
        """Remove 'safehold-' snapshots that a killed run could not remove. A snapshot whose
        process still runs (same host, live pid) belongs to a concurrent backup and stays;
        one from another host counts as left over once it is older than a day."""
        stack = list(getattr(snapshot_info, "rootSnapshotList", None) or [])
        while stack:
            tree = stack.pop()
            stack.extend(tree.childSnapshotList or [])
            if not tree.name.startswith(SNAPSHOT_PREFIX):
                continue
            if _still_running(tree.description or "", tree.createTime):
                self.warnings.append(f"VM {name}: snapshot {tree.name} belongs to a safehold backup still running "
                                     f"({tree.description}); left in place")
                continue
            try:
                self.session.wait(tree.snapshot.RemoveSnapshot_Task(removeChildren=False))
                self.warnings.append(f"VM {name}: removed snapshot {tree.name} left by an interrupted backup")
            except Exception as exc:
                raise _failure(name, exc, f"removing the leftover snapshot {tree.name}") from None

    def _disk(self, vm: Any, name: str, snapshot: Any, device: Any, datacenter: str, parent_disks: dict,
              vm_config: dict) -> DiskItem | None:
        from pyVmomi import vim

        backing = device.backing
        label = device.deviceInfo.label if device.deviceInfo else f"disk {device.key}"
        if not isinstance(backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo):
            self.warnings.append(f"VM {name}: {label} is a {type(backing).__name__} disk, which safehold "
                                 "cannot read without VDDK; it is not in this backup")
            return None
        if backing.diskMode and backing.diskMode.startswith("independent"):
            self.warnings.append(f"VM {name}: {label} is independent (not part of snapshots); not backed up")
            return None
        if backing.parent is not None:
            raise VSphereBackupFailed(vm=name, detail=f"{label} has snapshots not made by safehold; safehold reads "
                                      "flat base disks only (no VDDK): delete or consolidate them first")
        size = device.capacityInBytes or (device.capacityInKB or 0) * 1024
        change_id = backing.changeId
        previous = parent_disks.get(str(device.key))
        areas: list[Extent] | None = None
        incremental = bool(previous and previous.get("change_id") and previous.get("file") == backing.fileName
                           and previous.get("size") == size and change_id)
        if incremental:
            try:
                areas = self._changed_areas(vm, snapshot, device.key, size, previous["change_id"])
            except SafeholdError:
                raise
            except Exception as exc:
                if _gone(exc):
                    raise _failure(name, exc) from None
                self.warnings.append(f"VM {name}: {label}: the change id of the previous backup was refused "
                                     f"({_describe(exc)}); reading the whole disk")
                incremental = False
        allocated: list[Extent] | None = None
        if not incremental:
            try:
                allocated = self._changed_areas(vm, snapshot, device.key, size, "*")
            except Exception as exc:
                if _gone(exc):
                    raise _failure(name, exc) from None
                self.warnings.append(f"VM {name}: {label}: allocated areas unknown ({_describe(exc)}); "
                                     "reading the whole disk")
        datastore, path = parse_path(backing.fileName)
        data_file = flat_path(path)
        extents = areas if incremental else allocated
        session = self.session

        def open_reader() -> _Reader:
            return _Reader(DatastoreReader(session, datacenter, datastore, data_file, size, extents), vm, name, session)

        metadata = {"vm": vm_config, "label": label, "device_key": device.key, "size": size,
                    "controller_key": device.controllerKey, "unit_number": device.unitNumber,
                    "thin": bool(backing.thinProvisioned), "file": backing.fileName, "change_id": change_id,
                    "incremental_from": previous.get("change_id") if incremental else None}
        return DiskItem(name=f"{name}/{label}".replace("\x00", ""), size=size, open=open_reader,
                        allocated=None if incremental else allocated, changed=areas if incremental else None,
                        metadata=metadata)

    def _changed_areas(self, vm: Any, snapshot: Any, key: int, size: int, change_id: str) -> list[Extent]:
        """All areas QueryChangedDiskAreas reports; it answers a stretch of the disk per call."""
        areas: list[Extent] = []
        offset = 0
        while offset < size:
            info = vm.QueryChangedDiskAreas(snapshot=snapshot, deviceKey=key, startOffset=offset, changeId=change_id)
            areas.extend((area.start, area.length) for area in info.changedArea or [])
            following = info.startOffset + info.length
            if following <= offset:  # a server that answers no progress would loop forever
                break
            offset = following
        return areas

    # -- cleanup -------------------------------------------------------------------
    def cleanup(self) -> list[tuple[str, str, str]]:
        """Remove every snapshot this run made; returns (vm, snapshot, problem) for those that stay."""
        from pyVmomi import vim, vmodl

        problems = []
        self.removed: list[str] = []
        self.gone: list[str] = []
        for name, vm, snapshot, label in reversed(self.snapshots):
            for attempt in (1, 2):
                try:
                    # A deleted VM took its snapshot with it. Asking first also spares vcsim, which
                    # drops the connection when told to remove the snapshot of a deleted VM.
                    self.session.properties([vm], ["name"])
                    self.session.wait(snapshot.RemoveSnapshot_Task(removeChildren=False, consolidate=True))
                    self.removed.append(f"{name}:{label}")
                    log.info("removed snapshot %s of VM %s", label, name)
                    break
                except vmodl.fault.ManagedObjectNotFound:
                    self.gone.append(name)  # the VM (and its snapshot with it) no longer exists
                    break
                except Exception as exc:
                    if attempt == 1 and is_not_authenticated(exc):
                        # The session expired while the disks were read: log in again to clean up.
                        try:
                            self.session.relogin()
                        except SafeholdError as login_error:
                            problems.append((name, label, login_error.message))
                            break
                        snapshot = vim.VirtualMachineSnapshot(snapshot._moId, self.session.instance._stub)
                        vm = vim.VirtualMachine(vm._moId, self.session.instance._stub)
                        continue
                    problems.append((name, label, _describe(exc)))
                    break
        self.snapshots = []
        return problems

    def cleanup_summary(self, problems: list[tuple[str, str, str]]) -> str:
        parts = []
        if self.removed:
            parts.append("the VM snapshot was removed" if len(self.removed) == 1 else
                         f"{len(self.removed)} VM snapshots were removed")
        if self.gone:
            parts.append(f"VM {', '.join(self.gone)} no longer exists (nor its snapshot)")
        for vm, label, detail in problems:
            parts.append(f"snapshot {label} of VM {vm} could NOT be removed ({detail}): remove it by hand")
        return "; ".join(parts) or "no VM snapshot had been made"


class _Reader:
    """A DatastoreReader whose failures become clear job errors naming the VM."""

    def __init__(self, reader: DatastoreReader, vm: Any, name: str, session: Session) -> None:
        self.reader, self.vm, self.name, self.session = reader, vm, name, session

    def read_at(self, offset: int, length: int) -> bytes:
        try:
            return self.reader.read_at(offset, length)
        except DatastoreHTTPError as exc:
            detail = str(exc)
            if exc.status in (401, 403) or exc.status == 0:
                pass
            elif exc.status == 404 and not self._exists():
                detail = "the VM disappeared during the backup (deleted or unregistered); " + detail
            raise VSphereBackupFailed(vm=self.name, detail=detail) from None

    def _exists(self) -> bool:
        try:
            self.session.properties([self.vm], ["name"])
            return True
        except Exception as exc:
            return not _gone(exc)

    def close(self) -> None:
        self.reader.close()


def _still_running(description: str, created: datetime.datetime | None) -> bool:
    match = re.search(r"from (\S+) pid (\d+)", description)
    if match is None:
        return False  # not ours in this form (an older release or edited): left over
    host, pid = match.group(1), int(match.group(2))
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        # Alive (our own pid included: a concurrent job of this server process): not a leftover.
        return True
    if created is None:
        return False
    age = datetime.datetime.now(datetime.timezone.utc) - created.astimezone(datetime.timezone.utc)
    return age < datetime.timedelta(days=1)


def _gone(exc: BaseException) -> bool:
    from pyVmomi import vmodl

    return isinstance(exc, vmodl.fault.ManagedObjectNotFound)


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__.split('.')[-1]}: {message}".strip()


def _failure(name: str, exc: BaseException, doing: str = "") -> VSphereBackupFailed:
    if _gone(exc):
        return VSphereBackupFailed(vm=name, detail="the VM disappeared during the backup (deleted or unregistered)")
    if is_not_authenticated(exc):
        return VSphereBackupFailed(vm=name, detail="the vSphere session expired or was ended" + (f" while {doing}" if doing else ""))
    return VSphereBackupFailed(vm=name, detail=(f"{doing}: " if doing else "") + _describe(exc))


__all__ = ["SNAPSHOT_PREFIX", "VmwareSource"]
