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
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import DomainNotFound, DomainVanished, HypervisorUnavailable, SourceError
from .base import DiskItem, Extent, View

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "safehold-"
NBD_MAX_REQUEST = 32 * 1024 * 1024  # QEMU's NBD server refuses larger reads
STATUS_REQUEST = 1 << 30
# libvirt domain states (virDomainState), named here so the module imports without libvirt.
_SHUTOFF, _CRASHED = 5, 6


def import_libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise HypervisorUnavailable(uri="(any)", detail="the libvirt Python bindings are not installed "
                                    "(Debian: python3-libvirt; PyPI: libvirt-python)") from None
    return libvirt


def import_nbd() -> Any:
    try:
        import nbd
    except ImportError:
        raise HypervisorUnavailable(uri="(any)", detail="the libnbd Python bindings are not installed "
                                    "(Debian: python3-libnbd, for the system Python)") from None
    return nbd


def connect(uri: str) -> Any:
    libvirt = import_libvirt()
    libvirt.registerErrorHandler(lambda _context, _error: None, None)  # no stderr noise; we raise
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorUnavailable(uri=uri, detail=str(exc)) from None


def lookup_domain(connection: Any, name: str, uri: str) -> Any:
    libvirt = import_libvirt()
    try:
        return connection.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise DomainNotFound(domain=name, uri=uri) from None
        raise HypervisorUnavailable(uri=uri, detail=str(exc)) from None


# --- the domain's XML -------------------------------------------------------------------


@dataclass
class DomainDisk:
    target: str  # 'vda': the name libvirt, the backup job and the snapshot use
    path: str | None
    format: str  # qcow2, raw, ...


def domain_disks(domain_xml: str) -> list[DomainDisk]:
    """The domain's disks (device='disk' with a source), in XML order; CD-ROMs are left out."""
    disks = []
    for disk in ET.fromstring(domain_xml).iterfind("./devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        target, source, driver = disk.find("target"), disk.find("source"), disk.find("driver")
        if target is None or source is None:
            continue
        path = source.get("file") or source.get("dev")
        disks.append(DomainDisk(target.get("dev", ""), path, driver.get("type", "raw") if driver is not None else "raw"))
    return disks


def guest_agent_connected(domain_xml: str) -> bool:
    """True when the live XML shows the QEMU guest agent's channel with an agent on the other end."""
    for target in ET.fromstring(domain_xml).iterfind("./devices/channel/target"):
        if target.get("name") == "org.qemu.guest_agent.0":
            return target.get("state") == "connected"
    return False


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


# --- NBD -----------------------------------------------------------------------------------


def nbd_handle(socket: str, export: str, contexts: tuple[str, ...] = ()) -> Any:
    nbd = import_nbd()
    handle = nbd.NBD()
    for context in contexts:
        handle.add_meta_context(context)
    handle.set_export_name(export)
    try:
        handle.connect_unix(socket)
    except nbd.Error as exc:
        raise SourceError(source=f"nbd+unix:///{export}?socket={socket}", detail=str(exc)) from None
    return handle


def disconnect(handle: Any) -> None:
    """Say goodbye to the server; libnbd frees the handle itself when it is garbage collected."""
    try:
        handle.shutdown()
    except Exception:  # already disconnected (the domain stopped): nothing left to say goodbye to
        pass


def block_status(handle: Any, context: str, size: int) -> list[tuple[int, int, int]]:
    """(offset, length, flags) covering the whole export for one negotiated meta context."""
    found: list[tuple[int, int, int]] = []
    offset = 0

    def record(name: str, start: int, entries: list[int], _error: Any) -> int:
        if name == context:
            position = start
            for i in range(0, len(entries), 2):
                length = min(entries[i], size - position)
                if length > 0:
                    found.append((position, length, entries[i + 1]))
                position += entries[i]
        return 0

    while offset < size:
        before = len(found)
        handle.block_status(min(size - offset, STATUS_REQUEST), offset, record)
        if len(found) == before:
            raise SourceError(source=context, detail=f"the NBD server sent no block status at offset {offset}")
        offset = found[-1][0] + found[-1][1]
    return found


def select(status: list[tuple[int, int, int]], wanted) -> list[Extent]:
    """Merge the extents whose flags satisfy ``wanted`` into (offset, length) runs."""
    runs: list[Extent] = []
    for offset, length, flags in status:
        if not wanted(flags):
            continue
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + length)
        else:
            runs.append((offset, length))
    return runs


# base:allocation flags: 1 = hole (unallocated), 2 = reads as zeros. Anything not known to
# read as zeros must be read. qemu:dirty-bitmap: 1 = dirty.
def allocated(status: list[tuple[int, int, int]]) -> list[Extent]:
    return select(status, lambda flags: not flags & 2)


def dirty(status: list[tuple[int, int, int]]) -> list[Extent]:
    return select(status, lambda flags: flags & 1)


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


class NbdDiskReader:
    """Reads one exported disk. A failed read (the domain stopped, QEMU died) raises SourceError.

    Given the ``planned`` reads, it keeps up to ``PREFETCH_BYTES`` of the next ones in flight
    (libnbd aio), so QEMU reads the image while the archiver hashes and compresses: on a cold
    cache scattered incremental reads overlap instead of waiting one by one. A read that is not
    the next planned one (the archiver chose otherwise) is served synchronously and skipped
    prefetches are dropped; the result is the same, only slower.
    """

    PREFETCH_BYTES = 32 * 1024 * 1024

    def __init__(self, socket: str, export: str, planned: list[Extent] | None = None) -> None:
        self.export = export
        self.handle = nbd_handle(socket, export)
        self.planned = deque(planned or [])
        self.in_flight: deque[tuple[int, int, Any, int]] = deque()  # offset, length, buffer, cookie
        self.in_flight_bytes = 0

    def _prefetch(self) -> None:
        nbd = import_nbd()
        while self.planned and (not self.in_flight or self.in_flight_bytes + self.planned[0][1] <= self.PREFETCH_BYTES):
            offset, length = self.planned.popleft()
            if length > NBD_MAX_REQUEST:
                self.planned.clear()  # larger than one NBD request: read those synchronously
                return
            buffer = nbd.Buffer(length)
            self.in_flight.append((offset, length, buffer, self.handle.aio_pread(buffer, offset)))
            self.in_flight_bytes += length

    def read_at(self, offset: int, length: int) -> bytes:
        nbd = import_nbd()
        try:
            while self.in_flight and self.in_flight[0][0] < offset:
                self._complete()  # prefetched but not wanted after all
            self._prefetch()
            if self.in_flight and self.in_flight[0][:2] == (offset, length):
                data = self._complete()
                self._prefetch()
                return data
            parts = [self.handle.pread(min(NBD_MAX_REQUEST, offset + length - start), start)
                     for start in range(offset, offset + length, NBD_MAX_REQUEST)]
            return b"".join(bytes(part) for part in parts)
        except nbd.Error as exc:
            raise SourceError(source=f"NBD export {self.export}", detail=str(exc)) from None

    def _complete(self) -> bytes:
        _offset, length, buffer, cookie = self.in_flight.popleft()
        self.in_flight_bytes -= length
        while not self.handle.aio_command_completed(cookie):  # raises nbd.Error if the read failed
            self.handle.poll(-1)
        return bytes(buffer.to_bytearray())

    def close(self) -> None:
        disconnect(self.handle)


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
