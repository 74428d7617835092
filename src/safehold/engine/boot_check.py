"""The ``boot`` health check of restore tests: the restored disks booted in a libvirt sandbox.

Before anything is restored, ``plan_boot`` settles how the sandbox boots (the check's kernel,
initrd and command line, else those of the domain XML saved in the snapshot, else the firmware
from the first disk) and refuses what cannot work: a missing kernel, a hypervisor that does not
answer. ``boot_restored`` then defines the sandbox (``platforms.libvirt.sandbox``) on the restored
images in the restore test's sandbox folder, waits for every console pattern, and removes the
domain whatever happens; the folder with the images and the console file is removed by the
restore test itself.

Leftovers: every sandbox carries its owner (host/boot/pid namespace, pid, creation time, a
deadline, its folder) in its metadata, and every sandbox folder an ``owner.json``.
``remove_leftovers`` removes those whose run is over: on this host when the owner process is
gone (killed), elsewhere once the deadline passed. So a SIGKILLed run is cleaned up by the next
boot check, and a sandbox another run is booting right now is left alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..catalog.processes import process_alive
from ..config.models import BootCheck
from ..platforms.libvirt.sandbox import (
    BUSES,
    BootOutcome,
    BootSettings,
    Sandbox,
    SandboxDisk,
    SandboxOwner,
    SavedDomain,
    check_boot_file,
    leftover_sandboxes,
    read_saved_domain,
    remove_sandbox_domain,
    sandbox_name,
)
from ..repository.locks import process_namespace
from ..text import printable

OWNER_FILE = "owner.json"
CLEANUP_MARGIN = 600.0  # seconds past the boot timeout after which another host's sandbox is surely abandoned
_DISK_TARGET = re.compile(r"^(vd|sd|hd|xvd)[a-z]{1,3}$")
_PREFIXES = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd"}

# Boot checks now waiting for a sign of life, so that a stopping control plane can end them.
_waits_lock = threading.Lock()
_waiting: set[threading.Event] = set()


@dataclass
class BootPlan:
    uri: str
    boot: BootSettings
    buses: dict[str, str] = field(default_factory=dict)  # disk target -> bus, in the saved domain's order
    source: str = ""  # where the boot settings came from, for the log


def sandbox_uri(target: Any, check: BootCheck) -> str:
    if check.uri:
        return check.uri
    if target.source.type == "libvirt":
        return target.source.uri
    return "qemu:///system"


def plan_boot(target: Any, check: BootCheck, snapshot_source: dict) -> BootPlan:
    """How the sandbox of ``target`` boots; raises SandboxSetupFailed for what cannot work."""
    saved = SavedDomain()
    described = ""  # where the VM's shape (CPUs, memory, firmware) came from, for the log
    kind = target.source.type
    xml = snapshot_source.get("domain_xml")
    if isinstance(xml, str) and xml:
        try:
            saved = read_saved_domain(xml)
        except Exception as exc:  # hostile input: whatever the parser says, it is not usable
            raise errors.SandboxSetupFailed(target=target.name,
                                            detail=f"the domain XML saved in the snapshot cannot be read: {exc}") from None
    elif kind in ("vmware", "hyperv"):
        saved, described = saved_vm_description(target.name, kind, snapshot_source)
    if check.kernel:
        kernel, initrd, cmdline, source = check.kernel, check.initrd, check.cmdline, "the health check's kernel"
    elif saved.kernel:
        kernel, initrd, cmdline = saved.kernel, saved.initrd, saved.cmdline
        source = "the kernel of the domain XML saved in the snapshot"
    else:
        kernel = initrd = cmdline = None
        source = "the firmware, from the first disk"
    for path, what in ((kernel, "kernel"), (initrd, "initrd")):
        problem = check_boot_file(path, what) if path else None
        if problem:
            hint = "" if check.kernel else "; set restore_test.health_check.kernel (and initrd, cmdline)"
            raise errors.SandboxSetupFailed(target=target.name, detail=f"{problem} ({source}){hint}")
    firmware = saved.firmware
    if kind in ("vmware", "hyperv") and kernel:
        firmware = None  # QEMU loads the kernel itself: the VM's UEFI firmware would only slow the boot down
    boot = BootSettings(kernel=kernel, initrd=initrd, cmdline=cmdline,
                        memory_mib=check.memory_mib or saved.memory_mib or 1024,
                        vcpus=check.vcpus or saved.vcpus or 1, machine=saved.machine, firmware=firmware)
    if described:
        source += f"; {described}"
    return BootPlan(sandbox_uri(target, check), boot, dict(saved.buses), source)


def _int_in(value: Any, low: int, high: int) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else None


def saved_vm_description(target: str, kind: str, source: dict) -> tuple[SavedDomain, str]:
    """The shape of a VMware or Hyper-V VM as its snapshot recorded it (the source token: hostile
    input, every value checked, anything odd dropped): CPUs, memory, firmware and, for VMware, the
    order of its disks (restored as '<vm>-<disk label>', booted in controller/unit order, so the
    first disk is the one the VM boots from). Returns it and a phrase for the log.

    A VMware snapshot of several VMs is refused: a boot check boots one VM."""
    if kind == "vmware":
        vms = source.get("vms")
        vms = [vm for vm in vms.values() if isinstance(vm, dict)] if isinstance(vms, dict) else []
        if len(vms) > 1:
            names = ", ".join(printable(str(vm.get("name")))[:80] for vm in vms[:5])
            raise errors.SandboxSetupFailed(
                target=target, detail=f"the snapshot holds the disks of {len(vms)} VMs ({names}); a boot check "
                "boots one VM: give each VM a target of its own (source.vms with one name)")
        vm = vms[0] if vms else {}
        config = vm.get("config") if isinstance(vm.get("config"), dict) else {}
        if not config:
            return SavedDomain(), "no VM description in the snapshot (made before safehold saved it): " \
                                  "the check's memory_mib and vcpus, else 1024 MiB and 1 vCPU"
        memory = _int_in(config.get("memory_mb"), 64, 1024 * 1024)
        vcpus = _int_in(config.get("num_cpus"), 1, 512)
        firmware = "efi" if config.get("firmware") == "efi" else None
        buses: dict[str, str] = {}
        name = vm.get("name")
        disks = vm.get("disks") if isinstance(vm.get("disks"), dict) else {}
        slots = []
        for disk in disks.values():
            if isinstance(disk, dict) and isinstance(disk.get("label"), str) and isinstance(name, str):
                slots.append((_int_in(disk.get("controller_key"), 0, 1 << 31) or 0,
                              _int_in(disk.get("unit_number"), 0, 1 << 16) or 0, f"{name}-{disk['label']}"))
        for _, _, restored in sorted(slots):
            buses[restored] = "virtio"
        return (SavedDomain(memory_mib=memory, vcpus=vcpus, firmware=firmware, buses=buses),
                f"{vcpus or '?'} vCPU(s), {memory or '?'} MiB, {firmware or 'bios'} firmware from the VMware "
                "configuration saved in the snapshot")
    vm = source.get("vm") if isinstance(source.get("vm"), dict) else {}
    if not vm:
        return SavedDomain(), "no VM description in the snapshot: the check's memory_mib and vcpus, else defaults"
    startup = _int_in(vm.get("MemoryStartup"), 64 << 20, 1 << 40)
    memory = startup // (1 << 20) if startup else None
    vcpus = _int_in(vm.get("ProcessorCount"), 1, 512)
    generation = _int_in(vm.get("Generation"), 1, 2)
    firmware = "efi" if generation == 2 else None
    return (SavedDomain(memory_mib=memory, vcpus=vcpus, firmware=firmware),
            f"{vcpus or '?'} vCPU(s), {memory or '?'} MiB, generation {generation or '?'} "
            f"({firmware or 'bios'} firmware) from the Hyper-V VM description saved in the snapshot")


def restored_disks(images: Path, buses: dict[str, str], bus: str | None = None) -> list[SandboxDisk]:
    """The restored images as sandbox disks: an image file is one disk ``vda``; a folder holds one
    file per disk, named after the disk ('vda'), attached under that name with the saved domain's
    bus, in the saved domain's order (the firmware boots the first); other names get free ones.
    ``bus`` (the check's ``disk_bus``) puts every disk on that bus, named in the same order."""
    if bus is not None:
        plain = restored_disks(images, buses)
        if bus == "ide" and len(plain) > 4:
            raise errors.SandboxSetupFailed(target="the sandbox", detail=f"{len(plain)} disks, but the ide bus "
                                            "holds at most 4: set disk_bus to sata")
        used: set[str] = set()
        disks = []
        for disk in plain:
            target = _free_target(_PREFIXES[bus], used)
            used.add(target)
            disks.append(SandboxDisk(target, disk.path, disk.format, bus))
        return disks
    if images.is_file():
        return [SandboxDisk("vda", str(images), "raw", "virtio")]
    files = {}
    with os.scandir(images) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                files[entry.name] = entry.path
    order = [name for name in buses if name in files] + sorted((name for name in files if name not in buses),
                                                                 key=_natural)
    disks: list[SandboxDisk] = []
    used = {name for name in order if _DISK_TARGET.fullmatch(name)}
    for name in order:
        bus = buses.get(name, "virtio")
        target = name if _DISK_TARGET.fullmatch(name) else _free_target(_PREFIXES.get(bus, "vd"), used)
        used.add(target)
        disks.append(SandboxDisk(target, files[name], "raw", bus if bus in BUSES else "virtio"))
    return disks


def _natural(name: str) -> list[Any]:
    """'Hard disk 2' before 'Hard disk 10'; 'ide-0-0' before 'scsi-0-0' (Hyper-V generation 1 boots IDE 0:0)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def _free_target(prefix: str, used: set[str]) -> str:
    for letter in "abcdefghijklmnopqrstuvwxyz":
        if prefix + letter not in used:
            return prefix + letter
    raise errors.SandboxSetupFailed(target="the sandbox", detail="more than 26 disks on one bus")


def make_owner(folder: Path, job_id: int | None, lifetime: float | None = None) -> SandboxOwner:
    """This run as the owner of ``folder`` (a restore test's sandbox) and what it makes; with
    ``lifetime``, seconds after which the run is surely over (else only its process tells)."""
    now = time.time()
    return SandboxOwner(process_namespace(), os.getpid(), now, now + lifetime if lifetime else 0.0, str(folder),
                        job_id)


def write_owner(folder: Path, job_id: int | None) -> SandboxOwner:
    """Record in ``folder`` which run owns it, so that a later run can remove it once that run is gone."""
    owner = make_owner(folder, job_id)
    (folder / OWNER_FILE).write_text(json.dumps(owner.as_attributes()))
    return owner


def owner_gone(owner: SandboxOwner, now: float | None = None) -> bool:
    """Whether the run that owns a sandbox is over: its process is gone (this host), or its
    deadline passed (another host, whose processes cannot be looked at; no deadline: never)."""
    now = time.time() if now is None else now
    if owner.namespace == process_namespace():
        created = dt.datetime.fromtimestamp(owner.created, dt.UTC)
        return not process_alive(owner.pid, started_before=created)
    return 0 < owner.deadline < now


def remove_leftovers(uri: str, sandbox_root: Path) -> list[str]:
    """Remove the sandbox domains on ``uri`` and the sandbox folders under ``sandbox_root`` whose run
    is over (see the module docstring); returns what was removed, for the job log."""
    removed: list[str] = []
    for leftover in leftover_sandboxes(uri):
        if leftover.owner is None or not owner_gone(leftover.owner):
            continue  # someone else's, or still booting
        if remove_sandbox_domain(uri, leftover.name):
            removed.append(f"domain {leftover.name}")
        folder = _own_folder(Path(leftover.owner.folder), sandbox_root)
        if folder is not None and folder.exists():
            _remove_folder(folder)
            removed.append(f"folder {folder}")
    return removed + remove_leftover_folders(sandbox_root)


def remove_leftover_folders(sandbox_root: Path) -> list[str]:
    """Remove the sandbox folders under ``sandbox_root`` whose owner (``owner.json``) is gone: what a
    killed restore test or drill left behind; returns what was removed."""
    removed: list[str] = []
    if sandbox_root.is_dir():
        for folder in sandbox_root.iterdir():
            owner = _folder_owner(folder)
            if owner is not None and owner_gone(owner):
                _remove_folder(folder)
                removed.append(f"folder {folder}")
    return removed


def _own_folder(folder: Path, sandbox_root: Path) -> Path | None:
    """``folder`` when it is a restore-test sandbox directly under ``sandbox_root`` (the metadata
    that names it is read back from libvirt, where anyone may have defined a look-alike)."""
    from .restore_test import SANDBOX_PREFIX as FOLDER_PREFIX

    if folder.parent != sandbox_root or not folder.name.startswith(FOLDER_PREFIX):
        return None
    return folder


def _folder_owner(folder: Path) -> SandboxOwner | None:
    from .restore_test import SANDBOX_PREFIX as FOLDER_PREFIX

    if not folder.name.startswith(FOLDER_PREFIX):
        return None
    try:
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode):
            return None
        attributes = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return SandboxOwner.from_attributes(attributes) if isinstance(attributes, dict) else None


def _remove_folder(folder: Path) -> None:
    from .restore_test import remove_sandbox

    remove_sandbox(folder)


@dataclass
class BootResult:
    passed: bool
    detail: str
    alive_at: float | None  # time.monotonic() of the sign of life
    facts: dict[str, Any]


def free_loopback_ports(guest_ports: list[int]) -> dict[int, int]:
    """A free port on 127.0.0.1 for each distinct guest port: host port -> guest port. (Asked of the
    kernel and released at once: another process could take one before QEMU binds it, in which case
    the sandbox does not start and the check fails with libvirt's message.)"""
    import socket

    forwards: dict[int, int] = {}
    for guest in sorted(set(guest_ports)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            forwards[probe.getsockname()[1]] = guest
    return forwards


def probe_once(probe: Any, host_port: int) -> tuple[bool, str]:
    """One try of a tcp or http probe through the forwarded loopback port; (passed, detail).

    QEMU's user networking accepts on the host port whether or not the guest listens, and closes
    the connection when the guest refuses it: so a tcp probe passes only when the connection is
    still open (or has sent something) a second after it was accepted. An http probe needs a
    response. What the guest sends is hostile: at most 64 KiB is read, and it is never shown raw.
    """
    import http.client
    import socket

    if probe.type == "tcp":
        try:
            with socket.create_connection(("127.0.0.1", host_port), timeout=2) as connection:
                connection.settimeout(1.0)
                try:
                    data = connection.recv(1)
                except TimeoutError:
                    return True, f"tcp port {probe.port} accepts connections"
                if data:
                    return True, f"tcp port {probe.port} accepts connections (it speaks first)"
                return False, f"tcp port {probe.port}: the guest closed the connection (nothing listens)"
        except OSError as exc:
            return False, f"tcp port {probe.port}: {exc.strerror or exc}"
    connection = http.client.HTTPConnection("127.0.0.1", host_port, timeout=3)
    try:
        connection.request("GET", probe.path, headers={"Host": "sandbox", "User-Agent": "safehold-probe"})
        response = connection.getresponse()
        body = response.read(64 * 1024).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        return False, f"http port {probe.port} {probe.path}: {type(exc).__name__}: {exc}"
    finally:
        connection.close()
    if response.status != probe.status:
        return False, f"http port {probe.port} {probe.path}: status {response.status}, expected {probe.status}"
    if probe.expect is not None and not re.search(probe.expect, body, re.MULTILINE):
        return False, f"http port {probe.port} {probe.path}: the body does not match {probe.expect!r}"
    return True, f"http port {probe.port} {probe.path}: status {response.status}" + (
        f", body matches {probe.expect!r}" if probe.expect is not None else "")


def run_probes(probes: list[Any], forwards: dict[int, int], started: float, deadline: float,
               abort: threading.Event) -> tuple[bool, str, float, list[dict[str, Any]]]:
    """Each probe in order, retried every half second until it passes or ``deadline``; returns
    (all passed, detail, seconds from ``started`` to the last pass or to giving up, facts)."""
    host_of = {guest: host for host, guest in forwards.items()}
    facts: list[dict[str, Any]] = []
    for probe in probes:
        attempts = 0
        while True:
            attempts += 1
            passed, detail = probe_once(probe, host_of[probe.port])
            if passed or time.monotonic() >= deadline or abort.is_set():
                break
            abort.wait(0.5)
        seconds = time.monotonic() - started
        facts.append({"type": probe.type, "port": probe.port, "host_port": host_of[probe.port], "passed": passed,
                      "attempts": attempts, "seconds": round(seconds, 3), "detail": printable(detail)})
        if not passed:
            return False, printable(detail), seconds, facts
    return True, "; ".join(fact["detail"] for fact in facts), time.monotonic() - started, facts


def boot_restored(job: Any, target: Any, check: BootCheck, plan: BootPlan, images: Path, folder: Path) -> BootResult:
    """Boot the images restored at ``images`` in a sandbox, wait for the console patterns (then the
    probes, through forwarded loopback ports), remove it."""
    owner = make_owner(folder, job.id, check.timeout.total_seconds() + CLEANUP_MARGIN)
    disks = restored_disks(images, plan.buses, check.disk_bus)
    if not disks:
        raise errors.SandboxSetupFailed(target=target.name, detail="the snapshot restored no disk to boot")
    name = sandbox_name(target.name)
    console = folder / "console.log"
    sandbox = Sandbox(plan.uri, name, str(console), target.name)
    facts: dict[str, Any] = {"sandbox_domain": name, "sandbox_uri": plan.uri, "boot_from": plan.source,
                             "disks": {disk.target: os.path.basename(disk.path) for disk in disks},
                             "disk_bus": ",".join(sorted({disk.bus for disk in disks})),
                             "vcpus": plan.boot.vcpus, "memory_mib": plan.boot.memory_mib,
                             "firmware": plan.boot.firmware or "bios"}
    forwards = free_loopback_ports([probe.port for probe in check.probes]) if check.probes else {}
    network = (f"restricted user network, guest port(s) {', '.join(str(g) for g in sorted(set(forwards.values())))} "
               "forwarded from loopback" if forwards else "no network")
    job.log(f"sandbox {name} on {plan.uri}: {len(disks)} disk(s) "
            f"({', '.join(disk.target for disk in disks)}), {network}, booting from {plan.source}")
    probed: tuple[bool, str, float, list[dict[str, Any]]] | None = None
    abort = threading.Event()
    with _waits_lock:
        _waiting.add(abort)
    removal_error: errors.SafeholdError | None = None
    try:
        sandbox.start(disks, plan.boot, owner,
                      description=f"safehold restore test of {target.name} (job {owner.job}); removed when it ends",
                      forwards=forwards or None)
        facts["accelerator"] = "kvm" if sandbox.domain_type == "kvm" else "tcg"
        outcome: BootOutcome = sandbox.wait_for(check.console, check.timeout.total_seconds(), abort)
        alive_at = sandbox.started + outcome.seconds if outcome.alive else None
        if outcome.alive and check.probes:
            probed = run_probes(check.probes, forwards, sandbox.started,
                                sandbox.started + check.timeout.total_seconds(), abort)
            facts["probes"] = probed[3]
            alive_at = sandbox.started + probed[2] if probed[0] else None
    finally:
        with _waits_lock:
            _waiting.discard(abort)
        try:
            sandbox.remove()
        except errors.SafeholdError as exc:
            removal_error = errors.SandboxNotRemoved(name=name, uri=plan.uri, folder=str(folder), detail=exc.message)
    if removal_error is not None:
        raise removal_error
    job.log(f"sandbox {name} destroyed and undefined")
    if outcome.detail == "aborted" or abort.is_set():
        from .restore_test import RestoreTestAborted

        raise RestoreTestAborted("the control plane stopped during the boot check")
    facts["boot_seconds"] = round(outcome.seconds, 3)
    facts["console_matches"] = [{"pattern": match.pattern, "line": printable(match.line),
                                 "seconds": round(match.seconds, 3)} for match in outcome.matches]
    if outcome.alive:
        lines = "; ".join(printable(match.line) for match in outcome.matches)
        alive = f"sign of life {outcome.seconds:.1f}s after the sandbox started: {lines}"
        if probed is not None and not probed[0]:
            return BootResult(False, f"{alive}; but probe {probed[1]} (gave up {probed[2]:.1f}s after the start)",
                              None, facts)
        if probed is not None:
            return BootResult(True, f"{alive}; {probed[1]} {probed[2]:.1f}s after the start", alive_at, facts)
        return BootResult(True, alive, alive_at, facts)
    facts["console_tail"] = "\n".join(printable(line) for line in outcome.console_tail.splitlines())
    tail = printable(outcome.console_tail.splitlines()[-1]) if outcome.console_tail.strip() else "(nothing)"
    return BootResult(False, f"{outcome.detail}; last console line: {tail}", None, facts)


def abort_boot_checks() -> int:
    """Stop every boot check that waits for a sign of life (the control plane is stopping)."""
    with _waits_lock:
        waiting = list(_waiting)
    for event in waiting:
        event.set()
    return len(waiting)


__all__ = ["BootPlan", "BootResult", "abort_boot_checks", "boot_restored", "owner_gone", "plan_boot",
           "remove_leftover_folders", "remove_leftovers", "restored_disks", "sandbox_uri", "saved_vm_description",
           "write_owner"]
