"""Restore a libvirt snapshot: its disks as new qcow2 or raw images, then either a new domain
defined from the domain XML saved in the snapshot, or the disks of an existing shut-off domain
replaced.

Disks are first restored sparse as raw images (``restore.image``, every chunk verified), then
converted with ``qemu-img convert`` when qcow2 is wanted (zeros stay unallocated). A new domain
gets a new name, no UUID and no MAC addresses (libvirt makes fresh ones, so it can run beside the
original), and only the restored disks: a disk the snapshot does not hold is left out rather than
shared with the original. Replacing writes each image beside the old one and renames it over it,
so a failed restore leaves the old disk in place; the domain's checkpoints are dropped, because
their bitmaps lived in the replaced images (the next backup of it is therefore full).

A snapshot of an EBS target whose blocks are in the repository (``copy_blocks``) comes back the
same way (an AWS workload brought on-premise): it carries no domain XML, so ``define`` builds a
minimal one (``minimal_domain_xml``: CPUs, memory, firmware and network from the options, the
volumes as virtio disks, the boot volume as vda).
"""

from __future__ import annotations

import os
import stat
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DestinationError, DomainBusy, HypervisorUnavailable, PathNotInSnapshot, UsageError
from ..platforms.libvirt.connection import connect, domain_disks, import_libvirt, lookup_domain
from ..text import printable
from .base import BlobReader, Progress, RestoreReport, SnapshotInfo
from .directory import valid_name
from .image import restore_image
from .local import Place
from .options import LibvirtOptions

FORMATS = ("qcow2", "raw")


@dataclass
class DomainRestoreResult:
    domain: str | None = None  # defined or replaced domain
    action: str = "images"  # images | define | replace
    disks: dict[str, str] = field(default_factory=dict)  # disk target -> image path
    devices: dict[str, str] = field(default_factory=dict)  # EBS volume -> its disk in the new domain (vda ...)
    bytes_written: int = 0
    damaged_ranges: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def restore_disk(reader: BlobReader, item: dict, path: str, image_format: str, *, overwrite: bool = False,
                 threads: int | None = None, on_progress: Callable[[int], None] | None = None,
                 dir_fd: int | None = None) -> tuple[int, list]:
    """One disk item to ``path`` as raw or qcow2; returns (bytes written, damaged ranges).

    With ``dir_fd``, ``path`` is a single name inside that open directory and nothing is resolved
    by path: the raw image is written through the descriptor, the qcow2 output is first made as a
    fresh regular file there (``O_EXCL|O_NOFOLLOW``, so no link planted at its name is followed),
    and ``qemu-img`` reaches both through ``/proc/self/fd/DIR_FD/NAME``, which names the directory
    the descriptor holds, not whatever a path would lead to by then."""
    if image_format not in FORMATS:
        raise DestinationError(destination=path, detail=f"unknown image format {image_format!r}; use qcow2 or raw")
    if dir_fd is None and os.path.exists(path) and not overwrite:
        raise DestinationError(destination=path, detail="file exists")
    raw = path if image_format == "raw" else f"{path}.safehold-raw"
    try:
        result = restore_image(reader, item, raw, overwrite=overwrite if raw == path else True, threads=threads,
                               on_progress=on_progress, dir_fd=dir_fd)
        if image_format == "qcow2":
            if dir_fd is None:
                source, target, keep = raw, path, ()
            else:
                _fresh_file(dir_fd, path, overwrite)
                source, target, keep = f"/proc/self/fd/{dir_fd}/{raw}", f"/proc/self/fd/{dir_fd}/{path}", (dir_fd,)
            convert = subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", source, target],
                                     capture_output=True, text=True, pass_fds=keep)
            if convert.returncode != 0:
                raise DestinationError(destination=path, detail=f"qemu-img convert failed: {convert.stderr.strip()}")
    finally:
        if raw != path:
            _remove(raw, dir_fd)
    return result.bytes_written, result.damaged_ranges


def _fresh_file(dir_fd: int, name: str, overwrite: bool) -> None:
    """An empty regular file ``name`` in ``dir_fd``, made here; an old regular file goes first
    (with ``overwrite``), anything else at the name is refused."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            raise DestinationError(destination=printable(name), detail="exists and is not a regular file")
        if not overwrite:
            raise DestinationError(destination=printable(name), detail="file exists")
        os.unlink(name, dir_fd=dir_fd)
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd))
    except OSError as exc:
        raise DestinationError(destination=printable(name), detail=exc.strerror or str(exc)) from exc


def _remove(name: str, dir_fd: int | None) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def new_domain_xml(saved_xml: str, name: str, disks: dict[str, tuple[str, str]]) -> str:
    """The saved XML renamed to ``name`` with ``disks`` (target -> (path, format)) as its only disks."""
    root = ET.fromstring(saved_xml)
    root.find("name").text = name  # type: ignore[union-attr]
    for tag in ("uuid", "seclabel"):
        for element in root.findall(tag):
            root.remove(element)
    devices = root.find("devices")
    if devices is None:
        raise DestinationError(destination=name, detail="the saved domain XML has no devices")
    for disk in list(devices.iterfind("disk")):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if disk.get("device", "disk") != "disk":
            continue
        if dev not in disks:
            devices.remove(disk)  # never share a disk with the original domain
            continue
        path, image_format = disks[dev]
        disk.set("type", "file")
        for child in list(disk):
            if child.tag in ("source", "backingStore", "driver"):
                disk.remove(child)
        disk.insert(0, ET.Element("driver", name="qemu", type=image_format))
        disk.insert(1, ET.Element("source", file=path))
    for interface in devices.iterfind("interface"):
        for mac in interface.findall("mac"):
            interface.remove(mac)  # libvirt generates a new address; the original may still be running
    return ET.tostring(root, encoding="unicode")


#: The options that describe a domain built without saved XML (an EBS snapshot's).
MINIMAL_OPTIONS = ("vcpus", "memory_mib", "boot_disk", "network", "firmware", "domain_type")


def minimal_domain_xml(name: str, disks: list[tuple[str, str, str]], *, vcpus: int = 2, memory_mib: int = 2048,
                       network: str | None = None, firmware: str = "bios", domain_type: str = "kvm") -> str:
    """A domain for disks that came without a description (EBS volumes): ``disks`` are (target dev,
    image path, format), the first one boots. virtio disks and network, a serial console, ACPI;
    no UUID or MAC (libvirt makes them). Built with ElementTree, so names and paths are escaped."""
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(root, "vcpu").text = str(vcpus)
    os_element = ET.SubElement(root, "os", **({"firmware": "efi"} if firmware == "efi" else {}))
    ET.SubElement(os_element, "type").text = "hvm"
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    devices = ET.SubElement(root, "devices")
    for order, (dev, path, image_format) in enumerate(disks, start=1):
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=image_format)
        ET.SubElement(disk, "source", file=path)
        ET.SubElement(disk, "target", dev=dev, bus="virtio")
        if order == 1:
            ET.SubElement(disk, "boot", order="1")
    if network:
        interface = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(interface, "source", network=network)
        ET.SubElement(interface, "model", type="virtio")
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    ET.SubElement(ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0")
    return ET.tostring(root, encoding="unicode")


def _device_order(device: object) -> str:
    """EC2 device names sort as the instance saw them: /dev/xvda and /dev/sda1 (the usual root
    devices) before /dev/sdf, /dev/xvdb ... (xvdX and sdX are the same slot)."""
    if not isinstance(device, str):
        return "~"  # not attached when backed up: after every attached one
    name = device.removeprefix("/dev/")
    if name.startswith("xvd"):
        name = "sd" + name[3:]
    return name.rstrip("0123456789")


def ebs_disk_order(volumes: dict, wanted: list[str], boot_disk: str | None) -> list[str]:
    """``wanted`` volume ids in the order they become vda, vdb ...: ``boot_disk`` first, then by the
    device each was attached at when backed up (the snapshot's token), then by id."""
    def key(volume: str) -> tuple:
        entry = volumes.get(volume) if isinstance(volumes, dict) else None
        attached = entry.get("attached") if isinstance(entry, dict) else None
        device = attached.get("device") if isinstance(attached, dict) else None
        return (volume != boot_disk, _device_order(device), volume)

    return sorted(wanted, key=key)


def define_domain(uri: str, xml: str, name: str) -> None:
    libvirt = import_libvirt()
    connection = connect(uri)
    try:
        _refuse_taken_name(connection, name)
        try:
            connection.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise HypervisorUnavailable(uri=uri, detail=f"defining domain {name} failed: {exc}") from None
    finally:
        connection.close()


def replaceable_disks(uri: str, domain_name: str, wanted: list[str]) -> dict[str, tuple[str, str]]:
    """target -> (path, format) of the disks to replace; refuses a running domain or a missing disk."""
    libvirt = import_libvirt()
    connection = connect(uri)
    try:
        domain = lookup_domain(connection, domain_name, uri)
        if domain.isActive():
            raise DomainBusy(domain=domain_name, detail="it is running")
        disks = {disk.target: disk for disk in domain_disks(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))}
    finally:
        connection.close()
    result = {}
    for target in wanted:
        disk = disks.get(target)
        if disk is None:
            raise DomainBusy(domain=domain_name, detail=f"it has no disk {target} (its disks: {', '.join(disks)})")
        if not disk.path or (os.path.exists(disk.path) and not os.path.isfile(disk.path)):
            raise DomainBusy(domain=domain_name, detail=f"disk {target} is not an image file")
        result[target] = (disk.path, disk.format if disk.format in FORMATS else "raw")
    return result


def drop_checkpoints(uri: str, domain_name: str) -> int:
    """Remove the checkpoint metadata of a shut-off domain whose images were replaced."""
    libvirt = import_libvirt()
    connection = connect(uri)
    try:
        domain = lookup_domain(connection, domain_name, uri)
        checkpoints: list[Any] = domain.listAllCheckpoints()
        for checkpoint in checkpoints:
            try:
                checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            except libvirt.libvirtError:
                pass  # a child deleted with its parent already
        return len(checkpoints)
    finally:
        connection.close()


class LibvirtDestination:
    """A libvirt snapshot's disks: as images in ``images_dir``, as a new domain defined from the
    saved XML (``define``), or over the images of a shut-off domain (``replace``: written beside
    them and renamed over them by ``commit``, so a failure leaves the old disks)."""

    def __init__(self, options: LibvirtOptions, *, threads: int | None = None,
                 restore_root: str | None = None) -> None:
        if options.define and options.replace:
            raise UsageError("--define and --replace exclude each other: restore as a new domain or into one")
        if not options.replace and not options.images_dir:
            raise UsageError("name the folder for the restored images with --images-dir")
        self.options = options
        self.threads = threads
        self.restore_root = restore_root  # API restores: images_dir lies below it, walked without links
        self.uri = options.uri or "qemu:///system"
        self.written: list[str] = []  # image files write made (temporary ones, with replace)
        self.result: DomainRestoreResult | None = None
        self.domain_xml = ""
        self.wanted: list[str] = []
        self.final: dict[str, str] = {}
        self.places: dict[str, tuple[str, str]] = {}
        self.defined = False
        self.minimal = False  # no saved XML (an EBS snapshot): define builds a minimal domain
        self.devices: dict[str, str] = {}  # volume -> disk target in that domain
        self.made_folder: str | None = None  # images_dir, when write made it
        self.report = RestoreReport()

    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Any:
        options = self.options
        token = snapshot.source
        self.minimal = "domain_xml" not in token
        given = [name for name in MINIMAL_OPTIONS if getattr(options, name) is not None]
        if self.minimal:
            if not isinstance(token.get("volumes"), dict):
                raise UsageError(f"snapshot {snapshot.short_id} is not of a libvirt domain, nor of an EBS "
                                 "target; restore it with 'safehold restore'")
            if token.get("blocks_copied") is False:
                raise UsageError(f"snapshot {snapshot.short_id} of {snapshot.target} holds no data in the "
                                 "repository (copy_blocks: false); only snapshots whose blocks were copied "
                                 "come back as a libvirt domain")
        elif given:
            raise UsageError(f"{', '.join('--' + name.replace('_', '-') for name in given)}: snapshot "
                             f"{snapshot.short_id} has its own domain description; these options are for "
                             "snapshots without one (an EBS target's)")
        self.uri = options.uri or token.get("uri") or "qemu:///system"
        self.domain_xml = token.get("domain_xml", "")
        by_name = {os.fsdecode(item["path"]): item for item in items}
        wanted = list(options.disks or by_name)
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise PathNotInSnapshot(path=", ".join(unknown), snapshot=snapshot.short_id)
        if self.minimal:
            if options.boot_disk is not None and options.boot_disk not in wanted:
                raise PathNotInSnapshot(path=options.boot_disk, snapshot=snapshot.short_id)
            wanted = ebs_disk_order(token["volumes"], wanted, options.boot_disk)
            if len(wanted) > 26:
                raise UsageError(f"snapshot {snapshot.short_id} holds {len(wanted)} volumes; a domain is "
                                 "defined with at most 26 (vda-vdz): choose them with --disk")
            self.devices = {name: f"vd{chr(ord('a') + index)}" for index, name in enumerate(wanted)}
        # Destination paths, decided (and a running domain refused) before any data is written.
        if options.replace:
            current = replaceable_disks(self.uri, options.replace, wanted)
            places = {name: (f"{path}.safehold-restore", disk_format) for name, (path, disk_format) in current.items()}
            final = {name: path for name, (path, _format) in current.items()}
        else:
            assert options.images_dir is not None
            prefix = options.define or token.get("domain") or snapshot.target
            for name in wanted:
                # Disk names and the domain name come from the snapshot: each file must be one
                # name inside images_dir, never a path that climbs out of it.
                if not valid_name(os.fsencode(f"{prefix}-{name}.{options.format}")):
                    raise DestinationError(destination=printable(f"{prefix}-{name}.{options.format}"),
                                           detail="a disk or domain name in the snapshot is not a single file name")
            folder = os.path.abspath(options.images_dir)
            places = {name: (os.path.join(folder, f"{prefix}-{name}.{options.format}"), options.format)
                      for name in wanted}
            final = {name: path for name, (path, _format) in places.items()}
            for path, _format in places.values():
                if os.path.exists(path) and not options.overwrite:
                    raise DestinationError(destination=path, detail="file exists")
            if options.define:
                _refuse_existing_domain(self.uri, options.define)
        self.wanted, self.places, self.final = wanted, places, final
        return [by_name[name] for name in wanted]

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        options = self.options
        result = DomainRestoreResult(domain=options.define or options.replace,
                                     action="define" if options.define else "replace" if options.replace else "images")
        folder = None if options.replace else self._open_images_dir()
        try:
            for name, item in zip(self.wanted, plan):
                path, disk_format = self.places[name]
                if not os.path.exists(path):
                    self.written.append(path)
                elif options.replace:
                    self.written.append(path)  # a temporary file an earlier failed run left: ours
                # New images are written through the folder's descriptor, by their single name;
                # replace writes beside the domain's own images, whose paths libvirt gave us.
                written, damaged = restore_disk(
                    reader, item, path if folder is None else os.path.basename(path), disk_format,
                    overwrite=options.overwrite or bool(options.replace), threads=self.threads,
                    on_progress=lambda done, base=result.bytes_written: progress(base + done, name), dir_fd=folder)
                result.bytes_written += written
                result.damaged_ranges += [f"{name}: bytes {offset}-{offset + length - 1}" for offset, length in damaged]
                result.disks[name] = self.final[name]
            result.devices = dict(self.devices) if options.define else {}
        finally:
            if folder is not None:
                os.close(folder)
        self.result = result
        self.report = RestoreReport(files=len(self.wanted), bytes_written=result.bytes_written,
                                    damaged=list(result.damaged_ranges), details=result.as_dict())
        return self.report

    def _open_images_dir(self) -> int:
        """The images folder as an open descriptor (made if missing): below the restore root by a
        walk that follows no link (API restores), else the operator's path as given."""
        images_dir = self.options.images_dir
        assert images_dir is not None
        existed = os.path.isdir(images_dir)
        if self.restore_root is not None:
            place = Place(images_dir, self.restore_root)
            try:
                folder = place.directory()
            finally:
                place.close()
            assert folder is not None
        else:
            try:
                os.makedirs(images_dir, exist_ok=True)
                folder = os.open(images_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise DestinationError(destination=images_dir, detail=exc.strerror or str(exc)) from exc
        if not existed:
            self.made_folder = images_dir
        return folder

    def commit(self) -> None:
        self.made_folder = None  # kept from here on: it holds the restored images
        self._commit()

    def _commit(self) -> None:
        """Rename over the old images (replace) or define the domain; nothing is defined or replaced
        from damaged data (the images stay for inspection; replace's temporary files go)."""
        result = self.result
        assert result is not None
        if result.damaged_ranges:
            if self.options.replace:
                self.rollback()
            self.written = []
            return
        if self.options.replace:
            for name in self.wanted:
                os.replace(self.places[name][0], self.final[name])
            self.written = []
            dropped = drop_checkpoints(self.uri, self.options.replace)
            self.report.log.append(f"replaced disk(s) {', '.join(self.wanted)} of domain {self.options.replace}; "
                                   f"dropped {dropped} checkpoint(s)")
        elif self.options.define and self.minimal:
            options = self.options
            vcpus, memory = options.vcpus or 2, options.memory_mib or 2048
            xml = minimal_domain_xml(options.define, [(self.devices[name], self.final[name], options.format)
                                                      for name in self.wanted],
                                     vcpus=vcpus, memory_mib=memory, network=options.network,
                                     firmware=options.firmware or "bios", domain_type=options.domain_type or "kvm")
            define_domain(self.uri, xml, options.define)
            self.defined = True
            self.written = []
            disks = ", ".join(f"{self.devices[name]}={name}" for name in self.wanted)
            self.report.log.append(f"defined domain {options.define} ({vcpus} vCPU, {memory} MiB) from a minimal "
                                   f"description with disk(s) {disks}")
        elif self.options.define:
            xml = new_domain_xml(self.domain_xml, self.options.define,
                                 {name: (self.final[name], self.options.format) for name in self.wanted})
            define_domain(self.uri, xml, self.options.define)
            self.defined = True
            self.written = []
            self.report.log.append(f"defined domain {self.options.define} with disk(s) {', '.join(self.wanted)}")
        else:
            self.written = []

    def rollback(self) -> None:
        for path in self.written:
            for leftover in (path, f"{path}.safehold-raw"):
                if os.path.lexists(leftover):
                    os.unlink(leftover)
        self.written = []
        if self.made_folder is not None and os.path.isdir(self.made_folder) and not os.listdir(self.made_folder):
            os.rmdir(self.made_folder)
        self.made_folder = None


def _refuse_existing_domain(uri: str, name: str) -> None:
    connection = connect(uri)
    try:
        _refuse_taken_name(connection, name)
    finally:
        connection.close()


def _refuse_taken_name(connection: Any, name: str) -> None:
    try:
        connection.lookupByName(name)
    except import_libvirt().libvirtError:
        return
    raise DestinationError(destination=f"domain {name}", detail="a domain of that name exists already")


__all__ = ["LibvirtDestination", "DomainRestoreResult", "FORMATS", "define_domain", "drop_checkpoints",
           "ebs_disk_order", "minimal_domain_xml", "new_domain_xml", "replaceable_disks", "restore_disk"]
