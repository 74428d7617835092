"""Hyper-V virtual machines over PowerShell remoting, with RCT incrementals.

One backup: describe the VM, take a *recovery checkpoint* (the kind backup
applications use: application-consistent through the guest's VSS when it can,
else crash-consistent with a warning), ask RCT which byte ranges of each disk
changed since the reference point stored in the parent snapshot's token, read
those ranges (or everything, the first time) from the checkpoint's frozen
VHDX, then turn the checkpoint into an RCT *reference point* whose ids go into
the new snapshot's token. The checkpoint is always gone when the view closes:
converted on success, destroyed on failure. The parent's reference point is
removed only after the new snapshot is written, so a failed run leaves the
previous snapshot's RCT ids valid and the next run stays incremental.

All host work goes through the narrow :class:`~safehold.platforms.hyperv.shell.PowerShell`
seam (scripts in :mod:`safehold.platforms.hyperv.scripts`).
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import HyperVConnectionFailed, HyperVError, HyperVSessionExpired, PasswordMissing
from ..platforms.hyperv import scripts
from ..platforms.hyperv.shell import PowerShell, PowerShellFailed, PsrpShell
from .base import DiskItem, Extent, View

log = logging.getLogger(__name__)

APPLICATION_CONSISTENT, CRASH_CONSISTENT = 1, 2
CHECKPOINT_PREFIX = "safehold-"
READ_PIECE = 4 * 1024 * 1024  # bytes per read-disk call: base64 in one PSRP message stays a few MiB
READ_AHEAD = 16 * 1024 * 1024  # bytes fetched at once when the archiver will read them anyway


def disk_name(drive: dict) -> str:
    """A disk's name in the snapshot: its controller slot, stable across checkpoints (the VHDX
    path is not: a checkpoint moves the running VM onto an .avhdx)."""
    return f"{drive['ControllerType']}-{drive['ControllerNumber']}-{drive['ControllerLocation']}".lower()


def _device(identifier: str) -> str:
    # A drive's Id ends in \D, the disk in it (the reference point's VirtualDiskIdentifiers) in \L;
    # the rest (VM, controller, slot) is the same.
    return identifier.rsplit("\\", 1)[0].lower()


class HyperVDiskReader:
    """Reads a checkpoint's VHDX by mounting it read-only on the host (once, at the first read)
    and reading the disk device; ``close`` dismounts it.

    Every read is a WinRM round trip, so reads ahead up to ``READ_AHEAD`` bytes, but only
    within ``wanted`` (the chunk-aligned ranges the archiver will ask for: changed chunks in an
    incremental, everything in a full backup), never into data it would not read anyway.
    """

    def __init__(self, source: "_Backup", path: str, size: int, wanted: list[Extent] | None = None) -> None:
        self.source, self.path, self.size = source, path, size
        self.wanted = sorted(wanted) if wanted is not None else [(0, size)]
        self.number: int | None = None
        self.cache_offset, self.cache = 0, b""

    def _fetch_end(self, offset: int) -> int:
        for start, length in self.wanted:
            if start <= offset < start + length:
                return min(offset + READ_AHEAD, start + length, self.size)
        return min(offset + READ_PIECE, self.size)

    def _read(self, offset: int, end: int) -> bytes:
        if self.number is None:
            mounted = self.source.call(scripts.MOUNT_DISK, "mount the checkpoint's disk", Path=self.path)
            self.number = int(mounted["Number"])
            self.source.mounted.add(self.path)
        pieces = []
        position = offset
        while position < end:
            want = min(READ_PIECE, end - position)
            answer = self.source.call(scripts.READ_DISK, f"read {want} bytes at {position} of {self.path}",
                                      Number=self.number, Offset=position, Length=want)
            data = base64.b64decode(answer["Data"])
            if not data:
                break
            pieces.append(data)
            position += len(data)
        return b"".join(pieces)

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        cached_end = self.cache_offset + len(self.cache)
        if not (self.cache_offset <= offset and end <= cached_end):
            self.cache_offset = offset
            self.cache = self._read(offset, max(end, self._fetch_end(offset)))
        data = self.cache[offset - self.cache_offset : end - self.cache_offset]
        return data + bytes(length - len(data))  # past the end reads as zeros, like a short file

    def close(self) -> None:
        self.cache = b""
        if self.number is not None:
            self.number = None
            self.source.dismount(self.path)


def _aligned(extents: list[Extent], chunk_size: int, size: int) -> list[Extent]:
    """Extents widened to whole chunks and merged: the byte ranges the archiver will read."""
    merged: list[Extent] = []
    for offset, length in sorted(extents):
        if length <= 0:
            continue
        start = offset - offset % chunk_size
        end = min(size, -(-(offset + length) // chunk_size) * chunk_size)
        if merged and start <= merged[-1][0] + merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][0] + merged[-1][1], end) - merged[-1][0])
        else:
            merged.append((start, end - start))
    return merged


class _Backup:
    """The state of one open view: the checkpoint, mounts and reference points to clean up."""

    def __init__(self, shell: PowerShell, host: str, vm: dict) -> None:
        self.shell, self.host, self.vm = shell, host, vm
        self.checkpoint: dict | None = None
        self.reference_point: dict | None = None
        self.mounted: set[str] = set()
        self.warnings: list[str] = []

    def error(self, detail: str, advice: str) -> HyperVError:
        return HyperVError(host=self.host, vm=self.vm.get("Name", "?"), detail=detail, advice=advice)

    def call(self, script: scripts.Script, what: str, **parameters: Any) -> Any:
        """Run a script; turn its failure into one clear error that says what we were doing."""
        try:
            return self.shell.run(script, **parameters)
        except PowerShellFailed as exc:
            if exc.category == "ObjectNotFound":
                raise self.error(f"cannot {what}: {exc.message}",
                                 "the VM or its disk disappeared during the backup (deleted, renamed or moved "
                                 "to another host); check it and run the backup again") from exc
            if exc.category in ("PermissionDenied", "SecurityError"):
                raise self.error(f"cannot {what}: access denied: {exc.message}",
                                 "the account needs Hyper-V Administrators membership and read access "
                                 "to the VM's storage") from exc
            raise self.error(f"cannot {what}: {exc.message}", "see the host's Hyper-V-VMMS event log") from exc

    # -- cleanup: every step tolerates a dead session (one reconnect) and never masks the job's error
    def _cleanup(self, script: scripts.Script, **parameters: Any) -> bool:
        for attempt in (1, 2):
            try:
                self.shell.run(script, **parameters)
                return True
            except (HyperVSessionExpired, HyperVConnectionFailed):
                if attempt == 2:
                    break
                try:
                    self.shell.reconnect()
                except (HyperVSessionExpired, HyperVConnectionFailed):
                    break
            except PowerShellFailed as exc:
                if exc.category == "ObjectNotFound":
                    return True  # already gone (the VM itself may have been deleted)
                log.warning("Hyper-V cleanup %s failed: %s", script.name, exc.message)
                return False
        log.warning("Hyper-V cleanup %s failed: no session to host %s", script.name, self.host)
        return False

    def dismount(self, path: str) -> None:
        if self._cleanup(scripts.DISMOUNT_DISK, Path=path):
            self.mounted.discard(path)

    def complete(self) -> dict:
        """All data is stored: turn the checkpoint into a reference point (merging it away) and
        return its RCT ids for the snapshot's token."""
        for path in list(self.mounted):
            self.dismount(path)
        assert self.checkpoint is not None
        point = self.call(scripts.CONVERT_TO_REFERENCE_POINT, "convert the checkpoint into a reference point",
                          VMId=self.vm["Id"], SnapshotId=self.checkpoint["Id"])
        self.checkpoint = None  # merged: nothing left to destroy
        self.reference_point = point
        devices = {_device(d["Id"]): disk_name(d) for d in self.vm["Disks"]}
        rct = {}
        for disk_id, rct_id in zip(point.get("VirtualDiskIdentifiers") or [],
                                   point.get("ResilientChangeTrackingIdentifiers") or []):
            if _device(disk_id) in devices:
                rct[devices[_device(disk_id)]] = rct_id
        return {"reference_point": point["InstanceID"], "rct": rct}

    def abandon(self) -> None:
        """The backup failed: leave the host as it was before, except for the parent's reference point."""
        for path in list(self.mounted):
            self.dismount(path)
        if self.checkpoint is not None and self._cleanup(scripts.REMOVE_CHECKPOINT, VMId=self.vm["Id"],
                                                         SnapshotId=self.checkpoint["Id"]):
            self.checkpoint = None
        if self.reference_point is not None:
            # Converted, but the snapshot was never written: no safehold snapshot refers to it.
            self._cleanup(scripts.REMOVE_REFERENCE_POINT, VMId=self.vm["Id"],
                          InstanceID=self.reference_point["InstanceID"])


class HyperVSource:
    """Source driver for ``type: hyperv`` targets (see ``config.HyperVSource``)."""

    def __init__(self, host: str, vm: str, port: int | None = None, ssl: bool = True,
                 verify_certificate: bool = True, ca_bundle: str | None = None, auth: str = "negotiate",
                 username: str | None = None, password_env: str = "SAFEHOLD_HYPERV_PASSWORD",
                 consistency: str = "application", chunk_size: int = 512 * 1024) -> None:
        self.host, self.vm_name, self.port, self.ssl = host, vm, port, ssl
        self.verify_certificate, self.ca_bundle, self.auth = verify_certificate, ca_bundle, auth
        self.username, self.password_env = username, password_env
        self.consistency, self.chunk_size = consistency, chunk_size

    def connect(self) -> PowerShell:
        """The session to the host. Tests replace this method to hand in the fake host."""
        password = os.environ.get(self.password_env)
        if self.username and not password and self.auth not in ("kerberos", "certificate"):
            raise PasswordMissing(detail=f"environment variable {self.password_env} is not set",
                                  variable=self.password_env)
        return PsrpShell(self.host, port=self.port, username=self.username, password=password, ssl=self.ssl,
                         verify_certificate=self.verify_certificate, ca_bundle=self.ca_bundle, auth=self.auth)

    @contextmanager
    def open(self, parent_token: dict | None = None) -> Iterator[View]:
        shell = self.connect()
        try:
            vm = self._describe(shell)
            backup = _Backup(shell, self.host, vm)
            self._remove_leftovers(backup)
            try:
                self._checkpoint(backup)
                view = self._view(backup, parent_token or {})
                yield view
            except BaseException:
                backup.abandon()
                raise
            previous = (parent_token or {}).get("reference_point")
            if previous and previous != (backup.reference_point or {}).get("InstanceID"):
                # The new snapshot is written: the parent's reference point is no longer needed.
                backup._cleanup(scripts.REMOVE_REFERENCE_POINT, VMId=vm["Id"], InstanceID=previous)
        finally:
            shell.close()

    # -- steps ------------------------------------------------------------------------------
    def _describe(self, shell: PowerShell) -> dict:
        try:
            return shell.run(scripts.DESCRIBE_VM, Name=self.vm_name)
        except PowerShellFailed as exc:
            # Get-VM reports an unknown name as InvalidArgument (InvalidParameter,...GetVM).
            if exc.category in ("ObjectNotFound", "InvalidArgument"):
                advice = f"check the name with Get-VM on {self.host}; names are case-insensitive but exact"
            else:
                advice = "see the host's Hyper-V-VMMS event log"
            raise HyperVError(host=self.host, vm=self.vm_name, detail=exc.message, advice=advice) from exc

    def _remove_leftovers(self, backup: _Backup) -> None:
        # A run killed before its cleanup leaves its recovery checkpoint behind; it would block
        # nothing but keep an .avhdx growing, so the next run removes it.
        for checkpoint in backup.call(scripts.LIST_CHECKPOINTS, "list checkpoints", VMId=backup.vm["Id"]) or []:
            if checkpoint["Name"].startswith(CHECKPOINT_PREFIX) and checkpoint["SnapshotType"] == "Recovery":
                backup.call(scripts.REMOVE_CHECKPOINT, "remove a checkpoint left by an earlier run",
                            VMId=backup.vm["Id"], SnapshotId=checkpoint["Id"])
                backup.warnings.append(f"removed checkpoint {checkpoint['Name']} left behind by an interrupted run")

    def _checkpoint(self, backup: _Backup) -> None:
        name = f"{CHECKPOINT_PREFIX}{uuid.uuid4()}"
        level = APPLICATION_CONSISTENT if self.consistency == "application" else CRASH_CONSISTENT
        try:
            backup.checkpoint = backup.shell.run(scripts.CREATE_CHECKPOINT, VMId=backup.vm["Id"],
                                                 ConsistencyLevel=level, Name=name)
        except PowerShellFailed as exc:
            if level != APPLICATION_CONSISTENT or exc.category != "InvalidOperation":
                raise backup.error(f"cannot create a checkpoint: {exc.message}",
                                   "see the host's Hyper-V-VMMS event log") from exc
            # No production checkpoint (guest without integration services or VSS, VM off or
            # paused at the wrong moment): back up crash-consistent rather than not at all.
            backup.warnings.append(
                f"backup of VM {self.vm_name} is only crash-consistent: the application-consistent "
                f"(production) checkpoint failed: {exc.message}")
            level = CRASH_CONSISTENT
            backup.checkpoint = backup.call(scripts.CREATE_CHECKPOINT, "create a crash-consistent checkpoint",
                                            VMId=backup.vm["Id"], ConsistencyLevel=level, Name=name)
        else:
            if level == CRASH_CONSISTENT:
                backup.warnings.append(f"backup of VM {self.vm_name} is only crash-consistent "
                                       "(consistency: crash in the configuration)")
        backup.checkpoint["ConsistencyLevel"] = level

    def _changes(self, backup: _Backup, path: str, size: int, limit_id: str) -> list[Extent]:
        extents: list[Extent] = []
        offset = 0
        while offset < size:
            answer = backup.shell.run(scripts.DISK_CHANGES, Path=path, LimitId=limit_id, ByteOffset=offset,
                                      ByteLength=size - offset)
            extents += [(int(o), int(n)) for o, n in zip(answer["ChangedByteOffsets"], answer["ChangedByteLengths"])]
            processed = int(answer["ProcessedByteLength"])
            if processed <= 0:
                raise PowerShellFailed("GetVirtualDiskChanges processed no bytes", "InvalidResult")
            offset += processed
        return extents

    def _view(self, backup: _Backup, parent: dict) -> View:
        vm, checkpoint = backup.vm, backup.checkpoint
        assert checkpoint is not None
        sizes = {disk_name(d): int(d["Size"]) for d in vm["Disks"]}
        same_vm = parent.get("vm_id") == vm["Id"]
        if parent and not same_vm:
            backup.warnings.append(f"VM {self.vm_name} has a new id since the parent snapshot: full backup")
        disks: list[DiskItem] = []
        tracked = 0
        for drive in checkpoint["HardDrives"]:
            name = disk_name(drive)
            size = sizes[name]
            changed: list[Extent] | None = None
            limit_id = (parent.get("rct") or {}).get(name) if same_vm else None
            if limit_id:
                try:
                    changed = self._changes(backup, drive["Path"], size, limit_id)
                    tracked += 1
                except PowerShellFailed as exc:
                    # An RCT id the host no longer knows (disk replaced, VM moved, RCT reset after
                    # an unclean shutdown): correct, only slower, to read the whole disk.
                    backup.warnings.append(f"{name}: change tracking since the parent is not available "
                                           f"({exc.message}): reading the whole disk")
            path = drive["Path"]
            wanted = _aligned(changed, self.chunk_size, size) if changed is not None else None
            disks.append(DiskItem(
                name=name, size=size,
                open=lambda path=path, size=size, wanted=wanted: HyperVDiskReader(backup, path, size, wanted),
                changed=changed, metadata={"controller": {k: drive[k] for k in
                                                          ("ControllerType", "ControllerNumber", "ControllerLocation")}},
            ))
        consistency = "application" if checkpoint["ConsistencyLevel"] == APPLICATION_CONSISTENT else "crash"
        token = {
            "host": self.host, "vm_id": vm["Id"], "vm_name": vm["Name"], "consistency": consistency,
            "vm": {"Generation": vm.get("Generation", 2), "ProcessorCount": vm.get("ProcessorCount", 1),
                   "MemoryStartup": vm.get("MemoryStartup", 1 << 30)},
        }
        return View(kind="image", paths=[f"hyperv://{self.host}/{vm['Name']}"], disks=disks,
                    incremental="rct" if disks and tracked == len(disks) else "none", token=token,
                    warnings=backup.warnings, complete=backup.complete)
