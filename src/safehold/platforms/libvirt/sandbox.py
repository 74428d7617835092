"""Sandbox domains: restored disks booted in a throwaway libvirt domain until a sign of life.

A sandbox is a persistent domain named ``safehold-sandbox-<label>-<random>`` built from scratch
(never from a saved domain XML, which is hostile input read from a repository): the restored
images as its disks, no network interface (so no MAC address of production and nothing to reach;
with ``forwards``, for tcp/http probes, one card on QEMU's user networking with ``restrict=on``:
the guest reaches nothing, and only the forwarded loopback ports reach it; a random local MAC),
no graphics, no host devices, its first serial port written to a file, and ``destroy`` on
poweroff, reboot and crash, so a guest that dies ends its run at once. Its ``<metadata>`` names
the run that owns it (``SandboxOwner``), so a later run can tell a killed run's leftover from a
sandbox that is still booting for someone else (``leftover_sandboxes``).

``Sandbox`` starts one, follows its console (``wait_for``) and removes it (destroy, undefine with
its NVRAM and any snapshot or checkpoint metadata); the caller removes the disk files.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from ...errors import HypervisorUnavailable, SandboxSetupFailed
from .connection import connect, import_libvirt

SANDBOX_PREFIX = "safehold-sandbox-"
METADATA_NAMESPACE = "https://safehold.invalid/xmlns/sandbox/1"
QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
CONSOLE_KEEP = 1 << 20  # console characters kept for matching: the newest MiB
MAX_BOOT_FILE = 512 * 1024 * 1024  # a kernel or initrd larger than this is refused (a device, a wrong path)
_NAME_PART = re.compile(r"[^A-Za-z0-9_.-]+")
_MACHINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DISK_TARGET = re.compile(r"^(vd|sd|hd|xvd)[a-z]{1,3}$")
BUSES = ("virtio", "sata", "scsi", "ide")


@dataclass(frozen=True)
class SandboxDisk:
    target: str  # vda, sdb: the device name inside the guest
    path: str  # a restored image file on this host
    format: str = "raw"
    bus: str = "virtio"


@dataclass(frozen=True)
class BootSettings:
    """How the sandbox boots: direct kernel boot when ``kernel`` is set, else its first disk."""

    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    memory_mib: int = 1024
    vcpus: int = 1
    machine: str | None = None  # e.g. pc-q35-7.2; None: libvirt's default
    firmware: str | None = None  # 'efi' or None (BIOS)


@dataclass(frozen=True)
class SandboxOwner:
    """The run a sandbox belongs to, stored in its metadata.

    ``namespace`` says where ``pid`` means something (host, boot, pid namespace); ``created`` is
    the wall-clock time the sandbox was made (a pid reused later belongs to a younger process);
    ``deadline`` is when its run will have finished with it whatever happens, for owners on other
    hosts, whose processes cannot be looked at; ``folder`` holds its disks and console."""

    namespace: str
    pid: int
    created: float
    deadline: float
    folder: str
    job: int | None = None

    def as_attributes(self) -> dict[str, str]:
        found = {"namespace": self.namespace, "pid": str(self.pid), "created": f"{self.created:.3f}",
                 "deadline": f"{self.deadline:.3f}", "folder": self.folder}
        if self.job is not None:
            found["job"] = str(self.job)
        return found

    @classmethod
    def from_attributes(cls, attributes: dict[str, str]) -> SandboxOwner | None:
        try:
            job = attributes.get("job")
            return cls(attributes["namespace"], int(attributes["pid"]), float(attributes["created"]),
                       float(attributes["deadline"]), attributes["folder"], int(job) if job else None)
        except (KeyError, ValueError):
            return None


def sandbox_name(label: str) -> str:
    """A fresh domain name with the sandbox prefix; ``label`` (a target name) kept readable."""
    cleaned = _NAME_PART.sub("-", label).strip("-.")[:40] or "target"
    return f"{SANDBOX_PREFIX}{cleaned}-{uuid.uuid4().hex[:8]}"


def check_boot_file(path: str, what: str) -> str | None:
    """Why ``path`` cannot be a kernel or initrd for QEMU to load (None when it can)."""
    if not os.path.isabs(path):
        return f"the {what} {path!r} is not an absolute path"
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"the {what} {path} cannot be used: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"the {what} {path} is not a regular file"
    if info.st_size > MAX_BOOT_FILE:
        return f"the {what} {path} is {info.st_size} bytes, larger than any kernel or initrd"
    return None


@dataclass(frozen=True)
class SavedDomain:
    """What a sandbox takes from a domain XML saved in a snapshot (hostile input: every value is
    checked, and nothing else of it is used)."""

    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    memory_mib: int | None = None
    vcpus: int | None = None
    machine: str | None = None
    firmware: str | None = None
    buses: dict[str, str] = field(default_factory=dict)  # disk target -> bus


def read_saved_domain(xml: str) -> SavedDomain:
    """The boot settings and disk buses of a saved domain XML; values that do not look right are dropped."""
    root = ET.fromstring(xml)
    os_element = root.find("os")

    def text(tag: str) -> str | None:
        element = os_element.find(tag) if os_element is not None else None
        return element.text.strip() if element is not None and element.text and element.text.strip() else None

    type_element = os_element.find("type") if os_element is not None else None
    machine = type_element.get("machine") if type_element is not None else None
    firmware = os_element.get("firmware") if os_element is not None else None
    if os_element is not None and os_element.find("loader") is not None and firmware is None:
        loader = os_element.find("loader")
        firmware = "efi" if loader is not None and loader.get("type") == "pflash" else None
    buses: dict[str, str] = {}
    for disk in root.iterfind("./devices/disk"):
        target = disk.find("target")
        if disk.get("device", "disk") != "disk" or target is None:
            continue
        dev, bus = target.get("dev", ""), target.get("bus", "virtio")
        if _DISK_TARGET.fullmatch(dev):
            buses[dev] = bus if bus in BUSES else "virtio"
    return SavedDomain(
        kernel=text("kernel"), initrd=text("initrd"), cmdline=text("cmdline"),
        memory_mib=_memory_mib(root.find("memory")), vcpus=_count(root.findtext("vcpu")),
        machine=machine if machine and _MACHINE.fullmatch(machine) else None,
        firmware="efi" if firmware == "efi" else None, buses=buses)


def _memory_mib(element: ET.Element | None) -> int | None:
    if element is None or not element.text:
        return None
    factors = {"b": 1 / 1048576, "bytes": 1 / 1048576, "kib": 1 / 1024, "k": 1 / 1024, "mib": 1, "m": 1,
               "gib": 1024, "g": 1024, "tib": 1048576, "t": 1048576}
    factor = factors.get(element.get("unit", "KiB").lower())
    count = _count(element.text)
    return max(64, int(count * factor)) if factor and count else None


def _count(value: str | None) -> int | None:
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if 0 < number < 1 << 40 else None


def sandbox_xml(name: str, disks: list[SandboxDisk], boot: BootSettings, console: str, owner: SandboxOwner,
                domain_type: str = "qemu", description: str = "", forwards: dict[int, int] | None = None) -> str:
    """The sandbox's domain XML (see the module docstring for what it has and lacks).

    ``forwards``: host loopback port -> guest port, for probes. libvirt 9's ``<portForward>`` needs
    the passt backend (not installed with Debian's libvirt), so the card is given to QEMU directly
    (``<qemu:commandline>``): SLIRP with ``restrict=on`` and ``hostfwd`` on 127.0.0.1 only.
    """
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "description").text = description or "safehold sandbox; removed when its run ends"
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{METADATA_NAMESPACE}}}owner", owner.as_attributes())
    ET.SubElement(root, "memory", unit="MiB").text = str(boot.memory_mib)
    ET.SubElement(root, "vcpu").text = str(boot.vcpus)
    os_element = ET.SubElement(root, "os", **({"firmware": boot.firmware} if boot.firmware else {}))
    ET.SubElement(os_element, "type", arch="x86_64", **({"machine": boot.machine} if boot.machine else {})).text = "hvm"
    if boot.kernel:
        ET.SubElement(os_element, "kernel").text = boot.kernel
        if boot.initrd:
            ET.SubElement(os_element, "initrd").text = boot.initrd
        if boot.cmdline:
            ET.SubElement(os_element, "cmdline").text = boot.cmdline
    else:
        ET.SubElement(os_element, "boot", dev="hd")
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(root, event).text = "destroy"
    devices = ET.SubElement(root, "devices")
    for disk in disks:
        element = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(element, "driver", name="qemu", type=disk.format)
        ET.SubElement(element, "source", file=disk.path)
        ET.SubElement(element, "target", dev=disk.target, bus=disk.bus)
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=console)
    ET.SubElement(serial, "target", port="0")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="none")
    ET.SubElement(devices, "memballoon", model="none")
    if forwards:
        rules = ",".join(f"hostfwd=tcp:127.0.0.1:{int(host)}-:{int(guest)}" for host, guest in sorted(forwards.items()))
        mac = "52:54:00:" + ":".join(f"{byte:02x}" for byte in os.urandom(3))  # never production's
        commandline = ET.SubElement(root, f"{{{QEMU_NAMESPACE}}}commandline")
        for value in ("-netdev", f"user,id=safehold0,restrict=on,{rules}",
                      # A fixed, high PCI slot: libvirt numbers its own devices (the disks) from slot 2
                      # up and does not know about this one, which would otherwise take slot 2 first.
                      # (q35's root bus is pcie.0.)
                      "-device", f"virtio-net-pci,netdev=safehold0,mac={mac},"
                                 f"bus={'pcie.0' if 'q35' in (boot.machine or '') else 'pci.0'},addr=0x1e"):
            ET.SubElement(commandline, f"{{{QEMU_NAMESPACE}}}arg", value=value)
        ET.register_namespace("qemu", QEMU_NAMESPACE)
    ET.register_namespace("safehold", METADATA_NAMESPACE)
    return ET.tostring(root, encoding="unicode")


def domain_type_for(connection: Any) -> str:
    """'kvm' when this host can accelerate (libvirt offers it and the CPU has VT-x or AMD-V), else
    'qemu' (TCG). libvirt offers kvm whenever /dev/kvm exists, even where the CPU cannot run it."""
    try:
        capabilities = connection.getCapabilities()
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except Exception:  # no capabilities, no /proc: emulate, which works everywhere
        return "qemu"
    offered = "<domain type='kvm'" in capabilities or '<domain type="kvm"' in capabilities
    return "kvm" if offered and os.path.exists("/dev/kvm") and re.search(r"\b(vmx|svm)\b", flags) else "qemu"


@dataclass
class ConsoleMatch:
    pattern: str
    line: str  # the console line holding the match (guest output: hostile, escape before showing)
    seconds: float  # after the sandbox started


@dataclass
class BootOutcome:
    alive: bool
    matches: list[ConsoleMatch]
    seconds: float  # from start to the sign of life, or to giving up
    detail: str
    console_tail: str = ""


class Sandbox:
    """One sandbox domain on ``uri``. ``start`` defines and starts it, ``wait_for`` follows its
    console, ``remove`` destroys and undefines it (idempotent; call it whatever happened)."""

    POLL = 0.2

    def __init__(self, uri: str, name: str, console: str, label: str = "") -> None:
        self.uri = uri
        self.name = name
        self.label = label or name  # what the sandbox is for (a target's name), for errors
        self.console = console
        self.connection: Any = None
        self.domain: Any = None
        self.started = 0.0
        self.domain_type = "qemu"

    def start(self, disks: list[SandboxDisk], boot: BootSettings, owner: SandboxOwner, description: str = "",
              forwards: dict[int, int] | None = None) -> None:
        libvirt = import_libvirt()
        self.connection = connect(self.uri)
        self.domain_type = domain_type_for(self.connection)
        xml = sandbox_xml(self.name, disks, boot, self.console, owner, self.domain_type, description, forwards)
        # libvirt answered (connect did not fail): a refusal now is about this sandbox (a kernel QEMU
        # cannot read, a machine type or accelerator this host lacks), not about the hypervisor.
        try:
            self.domain = self.connection.defineXML(xml)
        except libvirt.libvirtError as exc:
            raise SandboxSetupFailed(target=self.label, detail=f"libvirt at {self.uri} refused to define "
                                     f"sandbox {self.name}: {exc}") from None
        self.started = time.monotonic()
        try:
            self.domain.create()
        except libvirt.libvirtError as exc:
            raise SandboxSetupFailed(target=self.label, detail=f"sandbox {self.name} did not start at {self.uri}: "
                                     f"{exc}") from None

    def wait_for(self, patterns: list[str], timeout: float, abort: threading.Event | None = None) -> BootOutcome:
        """Follow the console until every pattern matched (alive), the domain stopped, ``timeout``
        seconds passed or ``abort`` was set (then returns with ``detail`` 'aborted')."""
        compiled = [(pattern, re.compile(pattern, re.MULTILINE)) for pattern in patterns]
        matches: dict[str, ConsoleMatch] = {}
        text = ""
        offset = 0
        deadline = self.started + timeout
        while True:
            chunk, offset = _read_from(self.console, offset)
            now = time.monotonic()
            if chunk:
                text = (text + chunk)[-CONSOLE_KEEP:]
                for pattern, regex in compiled:
                    if pattern not in matches:
                        found = regex.search(text)
                        if found:
                            matches[pattern] = ConsoleMatch(pattern, _line_of(text, found.start()), now - self.started)
            if len(matches) == len(compiled):
                return BootOutcome(True, [matches[p] for p, _ in compiled], now - self.started,
                                   "every console pattern matched", _tail(text))
            missing = [pattern for pattern, _ in compiled if pattern not in matches]
            if abort is not None and abort.is_set():
                return BootOutcome(False, list(matches.values()), now - self.started, "aborted", _tail(text))
            if not self._active():
                chunk, offset = _read_from(self.console, offset)  # what it wrote before it stopped
                if chunk:
                    text = (text + chunk)[-CONSOLE_KEEP:]
                    continue
                return BootOutcome(False, list(matches.values()), now - self.started,
                                   f"the sandbox stopped after {now - self.started:.1f}s before the console showed "
                                   f"{_quoted(missing)}", _tail(text))
            if now >= deadline:
                return BootOutcome(False, list(matches.values()), now - self.started,
                                   f"no sign of life within {timeout:.0f}s: the console never showed "
                                   f"{_quoted(missing)}", _tail(text))
            time.sleep(self.POLL)

    def _active(self) -> bool:
        try:
            return bool(self.domain.isActive())
        except Exception:  # the domain went away under us: it is not running
            return False

    def remove(self) -> None:
        """Destroy and undefine the sandbox; raises HypervisorUnavailable if it could not be."""
        try:
            if self.connection is None:
                return
            if self.domain is None:  # defining failed: nothing of ours, unless a define half-happened
                self.domain = _lookup(self.connection, self.name)
            if self.domain is not None:
                remove_domain(self.domain, self.uri, self.name)
                self.domain = None
        finally:
            if self.connection is not None:
                try:
                    self.connection.close()
                except Exception:
                    pass
                self.connection = None


def remove_domain(domain: Any, uri: str, name: str) -> None:
    """Destroy (if running) and undefine ``domain`` with its NVRAM, snapshot and checkpoint metadata."""
    libvirt = import_libvirt()
    try:
        if domain.isActive():
            domain.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN and domain_still_active(domain):
            raise HypervisorUnavailable(uri=uri, detail=f"destroying sandbox {name} failed: {exc}") from None
    flags = (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
             | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    try:
        domain.undefineFlags(flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise HypervisorUnavailable(uri=uri, detail=f"undefining sandbox {name} failed: {exc}") from None


def domain_still_active(domain: Any) -> bool:
    try:
        return bool(domain.isActive())
    except Exception:
        return False


def _lookup(connection: Any, name: str) -> Any:
    libvirt = import_libvirt()
    try:
        return connection.lookupByName(name)
    except libvirt.libvirtError:
        return None


@dataclass(frozen=True)
class Leftover:
    name: str
    owner: SandboxOwner | None  # None: no safehold metadata (not ours to judge)
    active: bool


def leftover_sandboxes(uri: str) -> list[Leftover]:
    """Every domain on ``uri`` whose name has the sandbox prefix, with the owner its metadata names."""
    libvirt = import_libvirt()
    connection = connect(uri)
    try:
        found = []
        for domain in connection.listAllDomains():
            name = domain.name()
            if not name.startswith(SANDBOX_PREFIX):
                continue
            try:
                metadata = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NAMESPACE,
                                           libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                owner = SandboxOwner.from_attributes(dict(ET.fromstring(metadata).attrib))
            except (libvirt.libvirtError, ET.ParseError):
                owner = None
            found.append(Leftover(name, owner, domain_still_active(domain)))
        return found
    finally:
        connection.close()


def remove_sandbox_domain(uri: str, name: str) -> bool:
    """Remove the sandbox domain ``name`` if it still exists; returns whether it did."""
    if not name.startswith(SANDBOX_PREFIX):
        raise ValueError(f"{name} is not a sandbox")
    connection = connect(uri)
    try:
        domain = _lookup(connection, name)
        if domain is None:
            return False
        remove_domain(domain, uri, name)
        return True
    finally:
        connection.close()


def _read_from(path: str, offset: int) -> tuple[str, int]:
    """New console output after ``offset`` (at most a few MiB per call), and the next offset."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(4 * CONSOLE_KEEP)
    except FileNotFoundError:
        return "", offset
    # Serial consoles end lines with CR LF: as plain newlines, '$' in a pattern matches at a line's end.
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return text, offset + len(data)


def _line_of(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start:end if end >= 0 else len(text)][:500]


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])[-2000:]


def _quoted(patterns: list[str]) -> str:
    return ", ".join(repr(pattern) for pattern in patterns)


__all__ = ["BUSES", "SANDBOX_PREFIX", "BootOutcome", "BootSettings", "ConsoleMatch", "Leftover", "Sandbox",
           "SandboxDisk", "SandboxOwner", "SavedDomain", "check_boot_file", "domain_type_for", "leftover_sandboxes",
           "read_saved_domain", "remove_sandbox_domain", "sandbox_name", "sandbox_xml"]
