"""KVM/libvirt domains: a checkpoint plus a pull-mode backup job read over NBD.

Each backup asks libvirt for a *pull-mode backup* (``backupBegin``): QEMU
freezes a point-in-time view of every disk and exports it over NBD on a unix
socket in a private scratch folder, while the guest keeps running (writes
after that point are copied aside into a scratch file first). The same call
creates a *checkpoint* (a persistent dirty bitmap in each qcow2 disk), whose
name is stored in the snapshot and becomes the base of the next backup:

- full: read only what ``base:allocation`` says is allocated; the rest are holes;
- incremental: ``qemu:dirty-bitmap:backup-<disk>`` gives the 64 KiB blocks
  written since the base checkpoint; they become the disk's changed extents,
  so the repository copies every other chunk from the parent unread.

Checkpoints are chained (each backup's base is the previous snapshot's) and
pruned: only the newest ``keep_checkpoints`` made by safehold are kept, because
a bitmap costs a little on every guest write.

A shut-off domain is started *paused* (its CPUs never run, so the disks stay as
the guest left them) with auto-destroy, backed up the same way and destroyed.
A running domain is frozen through the QEMU guest agent (``fsFreeze``) for the
instant the backup starts when an agent is connected; otherwise the job log
warns that the backup is only crash-consistent.

Whatever happens, leaving the view ends the backup job, removes the scratch
folder and, when the backup failed, deletes the checkpoint it created, so the
previous safehold snapshot (and its checkpoint) stays the parent of the next run.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import DomainVanished, SourceError
from ..platforms.libvirt.connection import (
    DomainDisk,
    connect,
    domain_disks,
    guest_agent_connected,
    import_libvirt,
    lookup_domain,
)
from ..platforms.libvirt.nbd import NbdDiskReader, allocated, block_status, disconnect, dirty, nbd_handle
from .base import DiskItem, Extent, View

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "safehold-"
# libvirt domain states (virDomainState), named here so the module imports without libvirt.
_SHUTOFF, _CRASHED = 5, 6


# --- the domain's XML -------------------------------------------------------------------


def backup_xml(socket: str, scratch: str, disks: list[DomainDisk], base: dict[str, str]) -> str:
    """Pull-mode backup over a unix socket; ``base`` maps disk -> checkpoint for incremental disks."""
    root = ET.Element("domainbackup", mode="pull")
    ET.SubElement(root, "server", transport="unix", socket=socket)
    elements = ET.SubElement(root, "disks")
    for disk in disks:
        attributes = {"name": disk.target, "backup": "yes", "type": "file"}
        if disk.target in base:
            attributes |= {"backupmode": "incremental", "incremental": base[disk.target]}
        else:
            attributes["backupmode"] = "full"
        element = ET.SubElement(elements, "disk", attributes)
        ET.SubElement(element, "scratch", file=os.path.join(scratch, f"scratch-{disk.target}.qcow2"))
    return ET.tostring(root, encoding="unicode")


def checkpoint_xml(name: str, disks: list[DomainDisk], all_disks: list[DomainDisk]) -> str:
    """A checkpoint with a bitmap on each backed-up qcow2 disk; every other disk explicitly gets none."""
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    elements = ET.SubElement(root, "disks")
    tracked = {disk.target for disk in disks if disk.format == "qcow2"}
    for disk in all_disks:
        ET.SubElement(elements, "disk", name=disk.target, checkpoint="bitmap" if disk.target in tracked else "no")
    return ET.tostring(root, encoding="unicode")


def exports(job_xml: str) -> dict[str, tuple[str, str | None]]:
    """disk -> (NBD export name, dirty-bitmap name or None) from the running job's XML."""
    result = {}
    for disk in ET.fromstring(job_xml).iterfind("./disks/disk"):
        if disk.get("backup") == "yes":
            name = disk.get("name", "")
            result[name] = (disk.get("exportname", name), disk.get("exportbitmap"))
    return result


def planned_reads(size: int, chunk_size: int, allocated: list[Extent] | None,
                  changed: list[Extent] | None) -> list[Extent]:
    """The chunk reads the archiver will ask for, in order: chunks touching a changed extent (all
    chunks on a full backup) that are also allocated. The same rule as the archiver's, so the
    reader can have them in flight before they are asked for."""
    count = (size + chunk_size - 1) // chunk_size

    def chunks(extents: list[Extent]) -> set[int]:
        found: set[int] = set()
        for offset, length in extents:
            if length > 0:
                found.update(range(offset // chunk_size, min(count, (offset + length - 1) // chunk_size + 1)))
        return found

    wanted = chunks(changed) if changed is not None else set(range(count))
    if allocated is not None:
        wanted &= chunks(allocated)
    return [(i * chunk_size, min(chunk_size, size - i * chunk_size)) for i in sorted(wanted)]


# --- the driver ----------------------------------------------------------------------------


class LibvirtSource:
    """Back up the disks of one libvirt domain (see the module docstring for how)."""

    def __init__(self, domain: str, uri: str = "qemu:///system", disks: list[str] | None = None,
                 chunk_size: int = 512 * 1024, keep_checkpoints: int = 2, scratch_dir: str | None = None) -> None:
        self.domain_name = domain
        self.uri = uri
        self.disk_names = list(disks or [])
        self.chunk_size = chunk_size
        self.keep_checkpoints = max(1, keep_checkpoints)
        self.scratch_dir = scratch_dir

    @contextmanager
    def open(self, parent_token: dict | None = None) -> Iterator[View]:
        libvirt = import_libvirt()
        connection = connect(self.uri)
        try:
            yield from self._backup(libvirt, connection, parent_token or {})
        finally:
            connection.close()

    def _backup(self, libvirt: Any, connection: Any, parent: dict) -> Iterator[View]:
        domain = lookup_domain(connection, self.domain_name, self.uri)
        uuid = domain.UUIDString()
        saved_xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        all_disks = domain_disks(saved_xml)
        disks = self._selected(all_disks)
        warnings: list[str] = []
        scratch = tempfile.mkdtemp(prefix="safehold-libvirt-", dir=self.scratch_dir)
        socket = os.path.join(scratch, "nbd.sock")
        started = job_started = succeeded = False
        checkpoint: str | None = None
        try:
            if domain.state()[0] in (_SHUTOFF, _CRASHED):
                # Paused: the guest never runs, so its disks stay exactly as it left them. Auto-destroy:
                # if safehold dies, libvirt stops the domain when our connection closes.
                try:
                    domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY)
                except libvirt.libvirtError as exc:
                    raise SourceError(source=f"domain {self.domain_name}", detail="it is shut off and could not "
                                      f"be started paused to read it: {exc}") from None
                started = True
            base = self._incremental_base(domain, parent, disks, uuid, warnings)
            for disk in disks:
                if disk.format != "qcow2":
                    warnings.append(f"disk {disk.target} of domain {self.domain_name} is {disk.format}, not qcow2: "
                                    "it cannot hold a dirty bitmap and is read in full every time")
            if any(disk.format == "qcow2" for disk in disks):
                checkpoint = f"{CHECKPOINT_PREFIX}{time.time_ns()}"
            if started:
                consistency = "shut-off"
                self._begin(libvirt, domain, disks, all_disks, base, checkpoint, scratch, socket)
            else:
                consistency = self._begin_consistent(libvirt, domain, disks, all_disks, base, checkpoint, scratch,
                                                     socket, warnings)
            job_started = True
            items = self._disk_items(domain, disks, base, socket)
            token = {
                "uri": self.uri, "domain": self.domain_name, "uuid": uuid, "checkpoint": checkpoint,
                "incremental_from": sorted(set(base.values()))[0] if base else None,
                "consistency": consistency, "domain_xml": saved_xml,
                "disks": {disk.target: {"format": disk.format, "path": disk.path,
                                        "checkpoint": checkpoint is not None and disk.format == "qcow2"}
                          for disk in disks},
            }
            yield View(kind="image", paths=[f"{self.uri}#{self.domain_name}/{d.target}" for d in disks], disks=items,
                       incremental="dirty-bitmap" if base else "none", token=token, warnings=warnings)
            succeeded = True
        except SourceError as exc:
            # A read that fails because the domain stopped or was undefined under us says so.
            if job_started and not isinstance(exc, DomainVanished) and not _domain_alive(libvirt, connection, uuid):
                raise DomainVanished(domain=self.domain_name, detail=str(exc)) from None
            raise
        except libvirt.libvirtError as exc:
            if job_started and not _domain_alive(libvirt, connection, uuid):
                raise DomainVanished(domain=self.domain_name, detail=str(exc)) from None
            raise SourceError(source=f"domain {self.domain_name}", detail=str(exc)) from None
        finally:
            self._finish(libvirt, connection, uuid, job_started, checkpoint, succeeded, started, disks)
            shutil.rmtree(scratch, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------------------
    def _selected(self, all_disks: list[DomainDisk]) -> list[DomainDisk]:
        if not self.disk_names:
            if not all_disks:
                raise SourceError(source=f"domain {self.domain_name}", detail="it has no disks to back up")
            return all_disks
        known = {disk.target: disk for disk in all_disks}
        missing = [name for name in self.disk_names if name not in known]
        if missing:
            raise SourceError(source=f"domain {self.domain_name}",
                              detail=f"no disk {', '.join(missing)}; its disks are {', '.join(known) or 'none'}")
        return [known[name] for name in self.disk_names]

    def _incremental_base(self, domain: Any, parent: dict, disks: list[DomainDisk], uuid: str,
                          warnings: list[str]) -> dict[str, str]:
        """disk -> checkpoint to read changes since, for disks the parent snapshot tracked."""
        checkpoint = parent.get("checkpoint")
        if not checkpoint:
            return {}
        if parent.get("uuid") != uuid:
            warnings.append(f"domain {self.domain_name} is not the one the parent snapshot read (its UUID "
                            "changed): full backup")
            return {}
        if checkpoint not in {c.getName() for c in domain.listAllCheckpoints()}:
            warnings.append(f"checkpoint {checkpoint} of the parent snapshot no longer exists on domain "
                            f"{self.domain_name}: full backup")
            return {}
        tracked = parent.get("disks", {})
        return {disk.target: checkpoint for disk in disks
                if disk.format == "qcow2" and tracked.get(disk.target, {}).get("checkpoint")}

    def _begin(self, libvirt: Any, domain: Any, disks, all_disks, base, checkpoint, scratch, socket) -> None:
        checkpoint_text = checkpoint_xml(checkpoint, disks, all_disks) if checkpoint else None
        domain.backupBegin(backup_xml(socket, scratch, disks, base), checkpoint_text, 0)

    def _begin_consistent(self, libvirt: Any, domain: Any, disks, all_disks, base, checkpoint, scratch, socket,
                          warnings: list[str]) -> str:
        """Start the job inside a guest fs-freeze when an agent answers; say so when it cannot."""
        frozen = False
        if guest_agent_connected(domain.XMLDesc(0)):
            try:
                domain.fsFreeze()
                frozen = True
            except libvirt.libvirtError as exc:
                warnings.append(f"the QEMU guest agent of domain {self.domain_name} did not freeze its file "
                                f"systems ({exc}): this backup is only crash-consistent")
        else:
            warnings.append(f"no QEMU guest agent is connected in domain {self.domain_name}: this backup is only "
                            "crash-consistent (as after a power cut); install qemu-guest-agent in the guest and add "
                            "its channel for application-consistent backups")
        try:
            self._begin(libvirt, domain, disks, all_disks, base, checkpoint, scratch, socket)
        finally:
            if frozen:
                # The point in time is fixed once backupBegin returns: thaw at once, the guest waits.
                try:
                    domain.fsThaw()
                except libvirt.libvirtError as exc:
                    warnings.append(f"thawing the file systems of domain {self.domain_name} failed: {exc}")
        return "fs-freeze" if frozen else "crash-consistent"

    def _disk_items(self, domain: Any, disks: list[DomainDisk], base: dict[str, str], socket: str) -> list[DiskItem]:
        names = exports(domain.backupGetXMLDesc(0))
        items = []
        for disk in disks:
            export, bitmap = names[disk.target]
            contexts = ("base:allocation",) + ((f"qemu:dirty-bitmap:{bitmap}",) if disk.target in base else ())
            handle = nbd_handle(socket, export, contexts)
            try:
                size = handle.get_size()
                used = allocated(block_status(handle, "base:allocation", size))
                changed = dirty(block_status(handle, contexts[1], size)) if len(contexts) > 1 else None
            finally:
                disconnect(handle)
            items.append(DiskItem(
                name=disk.target, size=size,
                open=lambda export=export, plan=planned_reads(size, self.chunk_size, used, changed):
                    NbdDiskReader(socket, export, plan),
                allocated=used, changed=changed,
                metadata={"format": disk.format, "path": disk.path, "domain": self.domain_name},
            ))
        return items

    def _finish(self, libvirt: Any, connection: Any, uuid: str, job_started: bool, checkpoint: str | None,
                succeeded: bool, started: bool, disks: list[DomainDisk]) -> None:
        """End the job; drop the new checkpoint on failure or old ones on success; stop what we started."""
        try:
            domain = connection.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return  # undefined meanwhile: its job, checkpoints and scratch state went with it
        if job_started and domain.isActive():
            _end_job(libvirt, domain)
        if checkpoint is not None:
            if succeeded:
                self._prune_checkpoints(libvirt, domain)
            else:
                _delete_checkpoint(libvirt, domain, checkpoint, disks)
        if started and domain.isActive():
            try:
                domain.destroy()
            except libvirt.libvirtError as exc:
                log.warning("could not stop domain %s started for its backup: %s", self.domain_name, exc)

    def _prune_checkpoints(self, libvirt: Any, domain: Any) -> None:
        ours = [c for c in domain.listAllCheckpoints() if c.getName().startswith(CHECKPOINT_PREFIX)]
        # creationTime has one-second resolution; our names carry nanoseconds and break ties.
        ours.sort(key=lambda c: (int(ET.fromstring(c.getXMLDesc(0)).findtext("creationTime", "0")), c.getName()))
        for old in ours[: -self.keep_checkpoints]:
            try:
                # Deleting merges its bitmap into its parent's, so newer checkpoints stay exact.
                old.delete(0)
            except libvirt.libvirtError as exc:
                log.warning("could not delete old checkpoint %s: %s", old.getName(), exc)


def _domain_alive(libvirt: Any, connection: Any, uuid: str) -> bool:
    try:
        return bool(connection.lookupByUUIDString(uuid).isActive())
    except libvirt.libvirtError:
        return False


def _end_job(libvirt: Any, domain: Any, timeout: float = 30.0) -> None:
    """A pull-mode backup has no natural end: the client ends it with abortJob."""
    try:
        domain.abortJob()
    except libvirt.libvirtError as exc:
        if domain.isActive():
            log.warning("ending the backup job failed: %s", exc)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if domain.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                return
        except libvirt.libvirtError:
            return
        time.sleep(0.05)
    log.warning("the backup job of domain %s did not end within %.0f s", domain.name(), timeout)


def _delete_checkpoint(libvirt: Any, domain: Any, name: str, disks: list[DomainDisk]) -> None:
    """Remove a checkpoint no snapshot refers to. libvirt deletes checkpoints of running domains
    only; for a stopped one drop its metadata and remove the bitmaps from the images ourselves."""
    try:
        checkpoint = domain.checkpointLookupByName(name)
    except libvirt.libvirtError:
        return
    try:
        if domain.isActive():
            checkpoint.delete(0)
            return
        checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    except libvirt.libvirtError as exc:
        log.warning("could not delete checkpoint %s: %s", name, exc)
        return
    for disk in disks:
        if disk.format == "qcow2" and disk.path and os.path.isfile(disk.path):
            subprocess.run(["qemu-img", "bitmap", "--remove", disk.path, name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


__all__ = ["LibvirtSource", "DomainDisk", "domain_disks", "connect", "lookup_domain"]
