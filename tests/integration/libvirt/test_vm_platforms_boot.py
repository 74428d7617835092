"""``health_check: {type: boot}`` on VMware and Hyper-V targets: the VM's disk holds the bootable test
guest (tests/support/guest.py), the VM is backed up from vcsim (VMware) or the fake Hyper-V host, and
the restore test boots the *restored* raw disk in the local libvirt/QEMU sandbox with the VM's shape
(CPUs, memory) from the description saved in the snapshot. Neither platform boots anything here:
this proves that the restored disks boot under QEMU, not that the VM boots on ESXi or Hyper-V.

One boot each. In this folder because the boot check lists the machine's sandbox domains (the
"services" group of tests/conftest.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import guest
import pytest
import yaml

TESTS = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = "3m"  # TCG on 2 shared cores
MEMORY_MIB = 256  # the VM's memory, which the sandbox must take from the saved description


def boot_check(files: guest.Guest, line: str) -> dict:
    return {"type": "boot", "console": [f"^{guest.MARKER}$", f"^{re.escape(guest.DISK_LINE_PREFIX + line)}$"],
            "timeout": BOOT_TIMEOUT, "kernel": str(files.kernel), "initrd": str(files.initrd),
            "cmdline": files.cmdline}


def test_a_vmware_vms_restored_disk_boots_in_the_sandbox(tmp_path: Path, libvirt_uri: str) -> None:
    sys.path.insert(0, str(TESTS / "integration" / "vmware"))
    from pyVmomi import vim
    from vcsim_support import Lab

    from safehold.platforms.libvirt.sandbox import leftover_sandboxes

    line = f"restored vmware disk {uuid.uuid4().hex}"
    files = guest.make_guest(tmp_path / "guest", "vmw", line, image_format="raw")
    lab = Lab(tmp_path / "lab")
    try:
        vm_name = "DC0_H0_VM0"
        lab.wait(lab.vm(vm_name).ReconfigVM_Task(vim.vm.ConfigSpec(memoryMB=MEMORY_MIB, numCPUs=1)))
        lab.resize_disk(vm_name, guest.DISK_SIZE)
        lab.write(vm_name, 0, files.disk.read_bytes())
        config = tmp_path / "targets.yml"
        config.write_text(yaml.safe_dump({
            "repository": {"url": f"file://{tmp_path}/repo"}, "state_dir": str(tmp_path / "state"),
            "scheduler": {"sandbox_dir": str(tmp_path / "sandboxes")},
            "targets": [{"name": "vm", "tier": 2, "source": {
                "type": "vmware", "server": lab.server, "user": lab.USER, "ca_file": str(lab.ca_file),
                "vms": [vm_name]}, "restore_test": {"every": "7d", "health_check": boot_check(files, line)}}]}))
        env = dict(os.environ, SAFEHOLD_CONFIG=str(config), SAFEHOLD_PASSWORD="repository password",
                   SAFEHOLD_VSPHERE_PASSWORD=lab.PASSWORD)

        def safehold(*args: str) -> subprocess.CompletedProcess:
            done = subprocess.run([sys.executable, "-m", "safehold.cli.main", *args], env=env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, f"{args} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
            return done

        safehold("init")
        safehold("backup", "--target", "vm")
        # The VM's live disk changes after the backup: only the restored disk carries the line.
        lab.write(vm_name, 0, bytes(guest.DISK_SIZE))
        result = json.loads(safehold("restore-test", "--target", "vm", "--json").stdout)
        assert result["passed"], result
        assert f"{guest.DISK_LINE_PREFIX}{line}" in result["detail"] and result["art_seconds"] > 0
        shown = json.loads(safehold("jobs", "--id", str(result["job_id"]), "--json").stdout)
        boot = shown["job"]["details"]["boot"]
        label = next(d.deviceInfo.label for d in lab.vm(vm_name).config.hardware.device
                     if isinstance(d, vim.vm.device.VirtualDisk))
        assert boot["disks"] == {"vda": f"{vm_name}-{label}"}  # '<vm>-<disk label>', vcsim's label: disk-202-0
        assert (boot["memory_mib"], boot["vcpus"], boot["firmware"]) == (MEMORY_MIB, 1, "bios")
        assert "from the VMware configuration saved in the snapshot" in boot["boot_from"]
        assert boot["sandbox_domain"] not in [leftover.name for leftover in leftover_sandboxes(libvirt_uri)]
        assert not list((tmp_path / "sandboxes").iterdir())
    finally:
        lab.close()


def test_a_hyperv_vms_restored_disk_boots_in_the_sandbox(tmp_path: Path, libvirt_uri: str, fast_kdf,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(TESTS / "hyperv"))
    from fake_hyperv import FakeHyperVHost, qemu_img

    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.engine.restore_test import run_restore_test
    from safehold.platforms.libvirt.sandbox import leftover_sandboxes
    from safehold.sources.hyperv import HyperVSource

    line = f"restored hyper-v disk {uuid.uuid4().hex}"
    files = guest.make_guest(tmp_path / "guest", "hv", line, image_format="raw")
    host = FakeHyperVHost(tmp_path / "host")
    vm = host.create_vm("app", [guest.DISK_SIZE], processors=1, memory=MEMORY_MIB << 20, generation=2)
    vhdx = host.local(vm.drives[0].path)
    qemu_img("convert", "-n", "-f", "raw", "-O", "vhdx", str(files.disk), str(vhdx))  # the guest's disk in the VHDX
    config = tmp_path / "targets.yml"
    config.write_text(yaml.safe_dump({
        "repository": {"url": str(tmp_path / "repo")}, "state_dir": str(tmp_path / "state"),
        "targets": [{"name": "app", "tier": 2, "source": {"type": "hyperv", "host": "hv01.test", "vm": "app",
                                                         "username": "TEST\\svc"},
                     "restore_test": {"every": "7d", "health_check": boot_check(files, line)}}]}))
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "pw")
    monkeypatch.setenv("SAFEHOLD_HYPERV_PASSWORD", "secret")
    monkeypatch.setattr(HyperVSource, "connect", lambda self: host)
    context = Context.load(config, threads=2)
    try:
        init_repository(context)
        backup_target(context, "app")
        host.guest_write("app", 0, 0, 1 << 20, 0)  # the live disk changes: only the restored one carries the line
        result = run_restore_test(context, "app")
        assert result.passed and f"{guest.DISK_LINE_PREFIX}{line}" in result.detail, result
        details = context.catalog.get_job(result.job_id).details
        boot = details["boot"]
        assert boot["disks"] == {"vda": "scsi-0-0"}
        # Generation 2 is UEFI, but QEMU boots the check's kernel directly: no firmware needed.
        assert (boot["memory_mib"], boot["vcpus"], boot["firmware"]) == (MEMORY_MIB, 1, "bios")
        assert "generation 2 (efi firmware) from the Hyper-V VM description saved in the snapshot" in boot["boot_from"]
        assert boot["sandbox_domain"] not in [leftover.name for leftover in leftover_sandboxes(libvirt_uri)]
    finally:
        context.close()
