"""The boot check's pure parts (engine.boot_check, platforms.libvirt.sandbox): what a sandbox takes
from a hostile saved domain XML, the sandbox's XML, the boot plan's refusals, the restored disks'
names, and which owners are gone. Booting itself is tested against libvirtd in
tests/integration/libvirt/test_libvirt_boot.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from safehold import errors
from safehold.config.models import BootCheck
from safehold.engine import boot_check
from safehold.engine.restore_test import SANDBOX_PREFIX as FOLDER_PREFIX
from safehold.platforms.libvirt.sandbox import (
    METADATA_NAMESPACE,
    BootSettings,
    SandboxDisk,
    SandboxOwner,
    read_saved_domain,
    sandbox_name,
    sandbox_xml,
)

SAVED = """\
<domain type='kvm'>
  <name>web-01</name>
  <memory unit='GiB'>2</memory>
  <vcpu placement='static'>2</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <kernel>/var/lib/libvirt/boot/vmlinuz</kernel>
    <initrd>/var/lib/libvirt/boot/initrd.img</initrd>
    <cmdline>console=ttyS0 root=/dev/vda1</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'><source file='/a.qcow2'/><target dev='sdb' bus='sata'/></disk>
    <disk type='file' device='disk'><source file='/b.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/c.iso'/><target dev='hdc' bus='ide'/></disk>
    <disk type='file' device='disk'><source file='/d'/><target dev='../../etc' bus='usb'/></disk>
    <interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br0'/></interface>
    <hostdev mode='subsystem' type='pci'/>
  </devices>
</domain>
"""


def test_a_saved_domain_gives_its_boot_settings_and_buses_and_nothing_else() -> None:
    saved = read_saved_domain(SAVED)
    assert (saved.kernel, saved.initrd, saved.cmdline) == (
        "/var/lib/libvirt/boot/vmlinuz", "/var/lib/libvirt/boot/initrd.img", "console=ttyS0 root=/dev/vda1")
    assert (saved.memory_mib, saved.vcpus, saved.machine, saved.firmware) == (2048, 2, "pc-q35-7.2", "efi")
    assert saved.buses == {"sdb": "sata", "vda": "virtio"}  # the CD-ROM and the name that is a path left out

    hostile = read_saved_domain("<domain><memory unit='KiB'>-5</memory><vcpu>many</vcpu><os>"
                                "<type machine='pc;rm -rf /'>hvm</type></os><devices><disk device='disk'>"
                                "<target dev='vdb' bus='floppy'/></disk></devices></domain>")
    assert (hostile.memory_mib, hostile.vcpus, hostile.machine, hostile.kernel) == (None, None, None, None)
    assert hostile.buses == {"vdb": "virtio"}


def test_the_sandbox_has_no_network_its_console_in_a_file_and_its_owner_in_its_metadata(tmp_path: Path) -> None:
    owner = boot_check.make_owner(tmp_path, 7, 60)
    name = sandbox_name("web/01 ../x")
    assert name.startswith("safehold-sandbox-web-01-..-x-") and "/" not in name
    xml = sandbox_xml(name, [SandboxDisk("vda", "/s/restore/vda"), SandboxDisk("sdb", "/s/restore/sdb", bus="sata")],
                      BootSettings(kernel="/k", initrd="/i", cmdline="console=ttyS0 <x>", memory_mib=256,
                                   machine="pc"), "/s/console.log", owner)
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu" and root.findtext("name") == name
    assert root.find("devices/interface") is None and root.find("devices/graphics") is None
    assert root.find("devices/serial").get("type") == "file"
    assert root.find("devices/serial/source").get("path") == "/s/console.log"
    assert [(d.find("target").get("dev"), d.find("target").get("bus"), d.find("source").get("file"))
            for d in root.iterfind("devices/disk")] == [("vda", "virtio", "/s/restore/vda"),
                                                        ("sdb", "sata", "/s/restore/sdb")]
    assert (root.findtext("os/kernel"), root.findtext("os/initrd"), root.findtext("os/cmdline")) == (
        "/k", "/i", "console=ttyS0 <x>")
    assert [root.findtext(event) for event in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    stored = root.find(f"metadata/{{{METADATA_NAMESPACE}}}owner")
    assert SandboxOwner.from_attributes(dict(stored.attrib)) == SandboxOwner(
        owner.namespace, owner.pid, round(owner.created, 3), round(owner.deadline, 3), str(tmp_path), 7)

    firmware = ET.fromstring(sandbox_xml(name, [], BootSettings(), "/c", owner))
    assert firmware.find("os/kernel") is None and firmware.find("os/boot").get("dev") == "hd"
    assert firmware.find("{http://libvirt.org/schemas/domain/qemu/1.0}commandline") is None  # no probes: no card

    # With probes: one restricted user-network card, forwards from loopback only, a fresh local MAC.
    probed = ET.fromstring(sandbox_xml(name, [], BootSettings(machine="pc-q35-7.2"), "/c", owner,
                                       forwards={40080: 80, 45432: 5432}))
    args = [arg.get("value") for arg in probed.iterfind(
        "{http://libvirt.org/schemas/domain/qemu/1.0}commandline/{http://libvirt.org/schemas/domain/qemu/1.0}arg")]
    assert args[0] == "-netdev" and args[2] == "-device"
    assert args[1] == "user,id=safehold0,restrict=on,hostfwd=tcp:127.0.0.1:40080-:80,hostfwd=tcp:127.0.0.1:45432-:5432"
    assert args[3].startswith("virtio-net-pci,netdev=safehold0,mac=52:54:00:")
    assert args[3].endswith(",bus=pcie.0,addr=0x1e")
    assert probed.find("devices/interface") is None  # nothing libvirt would connect to a host network


def target(kind: str = "libvirt") -> SimpleNamespace:
    return SimpleNamespace(name="web", source=SimpleNamespace(type=kind, uri="qemu+ssh://kvm-01/system"))


def test_the_plan_takes_the_checks_kernel_else_the_saved_one_and_refuses_what_is_not_there(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    plan = boot_check.plan_boot(target(), BootCheck(type="boot", console=["up"], kernel=str(kernel)),
                                {"domain_xml": SAVED})
    assert plan.boot.kernel == str(kernel) and plan.boot.initrd is None and plan.boot.cmdline is None
    assert plan.boot.memory_mib == 2048 and plan.uri == "qemu+ssh://kvm-01/system"
    assert plan.source == "the health check's kernel"

    with pytest.raises(errors.SandboxSetupFailed) as caught:
        boot_check.plan_boot(target(), BootCheck(type="boot", console=["up"]), {"domain_xml": SAVED})
    assert caught.value.exit_code == 61
    assert str(caught.value) == (
        "cannot boot a sandbox for web: the kernel /var/lib/libvirt/boot/vmlinuz cannot be used: No such file or "
        "directory (the kernel of the domain XML saved in the snapshot); set restore_test.health_check.kernel "
        "(and initrd, cmdline)")
    with pytest.raises(errors.SandboxSetupFailed, match="the kernel /dev/null is not a regular file"):
        boot_check.plan_boot(target(), BootCheck(type="boot", console=["up"], kernel="/dev/null"), {})
    with pytest.raises(errors.SandboxSetupFailed, match="the domain XML saved in the snapshot cannot be read"):
        boot_check.plan_boot(target(), BootCheck(type="boot", console=["up"]), {"domain_xml": "<domain"})

    plan = boot_check.plan_boot(target("image"), BootCheck(type="boot", console=["up"], memory_mib=128), {})
    assert plan.boot.kernel is None and plan.source == "the firmware, from the first disk"
    assert (plan.uri, plan.boot.memory_mib, plan.boot.vcpus) == ("qemu:///system", 128, 1)


def test_restored_images_become_disks_in_the_saved_order_with_safe_names(tmp_path: Path) -> None:
    image = tmp_path / "restore"
    image.write_bytes(b"")
    assert boot_check.restored_disks(image, {}) == [SandboxDisk("vda", str(image), "raw", "virtio")]

    folder = tmp_path / "disks"
    folder.mkdir()
    for name in ("vda", "sdb", "vm1-Hard disk 1"):
        (folder / name).write_bytes(b"")
    os.symlink("/etc/passwd", folder / "vdz")  # not a file the restore made: never a disk
    disks = boot_check.restored_disks(folder, {"sdb": "sata", "vda": "virtio"})
    assert [(disk.target, disk.bus, Path(disk.path).name) for disk in disks] == [
        ("sdb", "sata", "sdb"), ("vda", "virtio", "vda"), ("vdb", "virtio", "vm1-Hard disk 1")]


def vmware_token(vms: dict) -> dict:
    return {"server": "vc.test", "vms": vms}


def test_vmware_and_hyperv_snapshots_give_the_sandbox_their_vms_shape(tmp_path: Path) -> None:
    """CPUs, memory and firmware from the VM description saved with the snapshot (hostile: odd
    values dropped), the VMware disks in controller/unit order, direct kernel boot without UEFI."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    vm = {"name": "app", "config": {"num_cpus": 2, "memory_mb": 3072, "firmware": "efi"},
          "disks": {"2001": {"label": "Hard disk 2", "controller_key": 1000, "unit_number": 1},
                    "2000": {"label": "Hard disk 1", "controller_key": 1000, "unit_number": 0},
                    "2002": {"label": "Hard disk 10", "controller_key": 1001, "unit_number": 0}}}
    plan = boot_check.plan_boot(target("vmware"), BootCheck(type="boot", console=["up"]), vmware_token({"u": vm}))
    assert (plan.boot.vcpus, plan.boot.memory_mib, plan.boot.firmware, plan.boot.kernel) == (2, 3072, "efi", None)
    assert list(plan.buses) == ["app-Hard disk 1", "app-Hard disk 2", "app-Hard disk 10"]
    assert plan.uri == "qemu:///system" and "from the VMware configuration saved in the snapshot" in plan.source

    # The check's values win; with the check's kernel QEMU boots it directly, without the VM's UEFI.
    plan = boot_check.plan_boot(target("vmware"), BootCheck(type="boot", console=["up"], kernel=str(kernel),
                                                            vcpus=1), vmware_token({"u": vm}))
    assert (plan.boot.vcpus, plan.boot.memory_mib, plan.boot.firmware) == (1, 3072, None)

    hostile = {"name": "app", "config": {"num_cpus": True, "memory_mb": -1, "firmware": "efi;rm"},
               "disks": {"1": "x", "2": {"label": 5}}}
    plan = boot_check.plan_boot(target("vmware"), BootCheck(type="boot", console=["up"]), vmware_token({"u": hostile}))
    assert (plan.boot.vcpus, plan.boot.memory_mib, plan.boot.firmware, plan.buses) == (1, 1024, None, {})
    old = boot_check.plan_boot(target("vmware"), BootCheck(type="boot", console=["up"]),
                               vmware_token({"u": {"name": "app", "disks": {}}}))
    assert old.boot.memory_mib == 1024 and "no VM description in the snapshot" in old.source
    with pytest.raises(errors.SandboxSetupFailed, match=r"the disks of 2 VMs \(a, b\); a boot check boots one VM"):
        boot_check.plan_boot(target("vmware"), BootCheck(type="boot", console=["up"]),
                             vmware_token({"1": {"name": "a"}, "2": {"name": "b"}}))

    hyperv = {"vm": {"Generation": 2, "ProcessorCount": 4, "MemoryStartup": 2 << 30}}
    plan = boot_check.plan_boot(target("hyperv"), BootCheck(type="boot", console=["up"]), hyperv)
    assert (plan.boot.vcpus, plan.boot.memory_mib, plan.boot.firmware) == (4, 2048, "efi")
    assert "generation 2 (efi firmware) from the Hyper-V VM description" in plan.source
    generation1 = {"vm": {"Generation": 1, "ProcessorCount": 0, "MemoryStartup": "lots"}}
    plan = boot_check.plan_boot(target("hyperv"), BootCheck(type="boot", console=["up"]), generation1)
    assert (plan.boot.vcpus, plan.boot.memory_mib, plan.boot.firmware) == (1, 1024, None)

    # Restored Hyper-V disks ('<controller>-<number>-<location>'): IDE 0:0 first, then in slot order.
    folder = tmp_path / "hyperv"
    folder.mkdir()
    for name in ("scsi-0-10", "scsi-0-2", "ide-0-0"):
        (folder / name).write_bytes(b"")
    assert [(disk.target, Path(disk.path).name) for disk in boot_check.restored_disks(folder, {})] == [
        ("vda", "ide-0-0"), ("vdb", "scsi-0-2"), ("vdc", "scsi-0-10")]
    # disk_bus: a guest without virtio drivers gets every disk on SATA (or IDE, at most 4), same order.
    assert [(disk.target, disk.bus, Path(disk.path).name) for disk in boot_check.restored_disks(folder, {}, "sata")] \
        == [("sda", "sata", "ide-0-0"), ("sdb", "sata", "scsi-0-2"), ("sdc", "sata", "scsi-0-10")]
    for name in ("scsi-0-3", "scsi-0-4"):
        (folder / name).write_bytes(b"")
    with pytest.raises(errors.SandboxSetupFailed, match="5 disks, but the ide bus holds at most 4"):
        boot_check.restored_disks(folder, {}, "ide")


def test_an_owner_is_gone_when_its_process_is_or_its_deadline_passed(tmp_path: Path) -> None:
    alive = boot_check.make_owner(tmp_path, 1)
    assert not boot_check.owner_gone(alive)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert boot_check.owner_gone(SandboxOwner(alive.namespace, child.pid, time.time(), 0.0, str(tmp_path)))
    # A pid that now belongs to a process younger than the sandbox is another process: gone.
    assert boot_check.owner_gone(SandboxOwner(alive.namespace, os.getpid(), time.time() - 3600, 0.0, str(tmp_path)))
    elsewhere = SandboxOwner("other-host:boot:ns", 1, time.time(), time.time() - 1, str(tmp_path))
    assert boot_check.owner_gone(elsewhere)
    assert not boot_check.owner_gone(SandboxOwner("other-host:boot:ns", 1, time.time(), time.time() + 60, "/x"))
    assert not boot_check.owner_gone(SandboxOwner("other-host:boot:ns", 1, time.time(), 0.0, "/x"))  # no deadline


def test_sandbox_folders_of_ended_runs_are_removed_and_others_kept(tmp_path: Path) -> None:
    root = tmp_path / "restore-tests"
    root.mkdir()
    live, dead, unowned, foreign = (root / f"{FOLDER_PREFIX}{name}" for name in ("live", "dead", "unowned", "x"))
    for folder in (live, dead, unowned):
        folder.mkdir()
        (folder / "restore").write_bytes(b"disk")
    foreign = root / "someone-elses"
    foreign.mkdir()
    boot_check.write_owner(live, 1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    owner = boot_check.make_owner(dead, 2)
    (dead / boot_check.OWNER_FILE).write_text(json.dumps(dict(owner.as_attributes(), pid=str(child.pid))))
    (foreign / boot_check.OWNER_FILE).write_text(json.dumps(dict(owner.as_attributes(), pid=str(child.pid))))
    # test:///default: libvirt's in-process test driver, whose only domain is not a sandbox.
    removed = boot_check.remove_leftovers("test:///default", root)
    assert removed == [f"folder {dead}"]
    assert sorted(path.name for path in root.iterdir()) == sorted(
        path.name for path in (live, unowned, foreign))


def test_probes_pass_only_when_the_guest_really_answers(tmp_path: Path) -> None:
    """probe_once through a loopback port, against stand-ins for what QEMU's forward shows: a port
    that accepts and closes at once (the guest refused: no listener) fails a tcp probe, one that
    stays open passes; http needs the status and the body's match."""
    import http.server
    import socket
    import threading

    from safehold.config.restore_test import HttpProbe, TcpProbe

    closing = socket.socket()
    closing.bind(("127.0.0.1", 0))
    closing.listen()
    open_port = socket.socket()
    open_port.bind(("127.0.0.1", 0))
    open_port.listen()
    kept = []

    def serve(listener, close: bool) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            if close:
                connection.close()
            else:
                kept.append(connection)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"disk line 7\n" if self.path == "/" else b"nope"
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threads = [threading.Thread(target=serve, args=(closing, True), daemon=True),
               threading.Thread(target=serve, args=(open_port, False), daemon=True),
               threading.Thread(target=web.serve_forever, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        tcp = TcpProbe(type="tcp", port=80)
        assert boot_check.probe_once(tcp, open_port.getsockname()[1])[0] is True
        passed, detail = boot_check.probe_once(tcp, closing.getsockname()[1])
        assert passed is False and "nothing listens" in detail
        http_port = web.server_address[1]
        assert boot_check.probe_once(HttpProbe(type="http", expect="^disk line 7$"), http_port) == (
            True, "http port 80 /: status 200, body matches '^disk line 7$'")
        passed, detail = boot_check.probe_once(HttpProbe(type="http", expect="other"), http_port)
        assert passed is False and "does not match" in detail
        passed, detail = boot_check.probe_once(HttpProbe(type="http", path="/missing"), http_port)
        assert passed is False and "status 404, expected 200" in detail
        # Retried until the deadline, then the facts say what failed.
        forwards = {closing.getsockname()[1]: 80}
        started = time.monotonic()
        ok, detail, seconds, facts = boot_check.run_probes([tcp], forwards, started, started + 1.0,
                                                          threading.Event())
        assert ok is False and facts[0]["attempts"] >= 2 and 1.0 <= seconds < 5
    finally:
        web.shutdown()
        for listener in (closing, open_port, *kept):
            listener.close()
