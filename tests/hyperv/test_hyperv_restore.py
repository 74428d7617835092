"""Restore a Hyper-V snapshot as a new VM, and VHDX handling for real with qemu-img.

The restored VM's disks are real VHDX files that ``qemu-img compare`` finds equal
to the source VM's; a qcow2 image carried into a VM as VHDX, backed up, restored
and converted back to qcow2 compares equal too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fake_hyperv import FakeHyperVHost, qemu_img

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.restore import restore_snapshot
from safehold.restore.hyperv import raw_to_vhdx

MiB = 1024 * 1024


def compare(a: Path, b: Path, fmt_a: str, fmt_b: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b)],
                          capture_output=True, text=True)


def restore_hyperv_vm(context, snapshot_id: str, *, target: str, name: str, host_path: str, scratch=None) -> dict:
    """A new Hyper-V VM through the one restore job; returns the destination's details."""
    spec = {"kind": "hyperv", "name": name, "host_path": host_path, "scratch": None if scratch is None else str(scratch)}
    return restore_snapshot(context, snapshot_id, spec, target=target).details


def test_restore_as_a_new_vm(workspace, host: FakeHyperVHost) -> None:
    host.guest_write("vm1", 0, 0, 2 * MiB, 0x61)
    backup_target(workspace, "vm1")
    host.guest_write("vm1", 0, 33 * MiB, 70_000, 0x62)
    host.guest_write("vm1", 1, 7 * MiB, 4096, 0x63)
    latest = backup_target(workspace, "vm1")
    result = restore_hyperv_vm(workspace, latest.snapshot_id, target="vm1", name="vm1-restored",
                               host_path="D:\\Restores")
    new = host.vm("vm1-restored")
    assert result["vm_id"] == new.id and new.state == "Off"
    assert (new.generation, new.processors, new.memory) == (2, 4, 2 << 30)
    original = host.vm("vm1")
    assert [(d.controller_type, d.controller_location) for d in new.drives] == \
        [(d.controller_type, d.controller_location) for d in original.drives]
    for old, restored in zip(original.drives, new.drives):
        assert restored.path.startswith("D:\\Restores\\vm1-restored\\")
        info = qemu_img("info", "--output=json", str(host.local(restored.path)))
        assert '"format": "vhdx"' in info
        done = compare(host.local(old.path), host.local(restored.path), "vhdx", "vhdx")
        assert done.returncode == 0, done.stdout + done.stderr
    assert host.checkpoints == {} and host.mounts == {}


def test_restore_never_overwrites_an_existing_vm(workspace, host: FakeHyperVHost) -> None:
    latest = backup_target(workspace, "vm1")
    with pytest.raises(errors.DestinationError, match="exists"):
        restore_hyperv_vm(workspace, latest.snapshot_id, target="vm1", name="VM1", host_path="D:\\Restores")
    assert host.uploads == []  # refused before uploading anything


def test_qcow2_through_vhdx_backup_and_back(workspace, host: FakeHyperVHost, tmp_path: Path) -> None:
    # A qcow2 disk (as a KVM guest would have) with data at scattered offsets ...
    qcow2 = tmp_path / "guest.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(qcow2), str(48 * MiB))
    for offset, pattern in ((0, 0x11), (5 * MiB + 512, 0x22), (48 * MiB - 65536, 0x33)):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} 65536", str(qcow2)],
                       check=True, capture_output=True)
    # ... becomes the VM's VHDX (what a V2V import does), is backed up and restored as a new VM ...
    drive = host.vm("vm1").drives[0]
    qemu_img("convert", "-f", "qcow2", "-O", "vhdx", "-o", "subformat=dynamic", str(qcow2),
             str(host.local(drive.path)))
    snapshot = backup_target(workspace, "vm1")
    restore_hyperv_vm(workspace, snapshot.snapshot_id, target="vm1", name="back", host_path="C:\\VMs")
    restored_vhdx = host.local(host.vm("back").drives[0].path)
    # ... and converted back to qcow2, it holds the same bytes.
    back = tmp_path / "back.qcow2"
    qemu_img("convert", "-f", "vhdx", "-O", "qcow2", str(restored_vhdx), str(back))
    done = compare(qcow2, back, "qcow2", "qcow2")
    assert done.returncode == 0, done.stdout + done.stderr


def test_raw_to_vhdx_keeps_holes_unallocated(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as handle:
        handle.truncate(1024 * MiB)
        handle.seek(100 * MiB)
        handle.write(b"\xee" * MiB)
    vhdx = tmp_path / "disk.vhdx"
    raw_to_vhdx(raw, vhdx)
    assert vhdx.stat().st_size < 64 * MiB  # a dynamic VHDX stores blocks holding data, not 1 GiB
    assert compare(raw, vhdx, "raw", "vhdx").returncode == 0
    with pytest.raises(errors.DestinationError, match="qemu-img convert failed"):
        raw_to_vhdx(tmp_path / "missing.raw", tmp_path / "x.vhdx")


def test_cli_restores_the_latest_snapshot_as_a_new_vm(workspace, host: FakeHyperVHost) -> None:
    import json

    from typer.testing import CliRunner

    from safehold.cli.main import app

    host.guest_write("vm1", 1, 0, MiB, 0x99)
    backup_target(workspace, "vm1")
    config = str(Path(workspace.config.state_dir).parent / "targets.yml")
    done = CliRunner().invoke(app, ["--config", config, "hyperv", "restore", "latest", "--target", "vm1",
                                    "--name", "from-cli", "--path", "E:\\VMs", "--json"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["name"] == "from-cli" and answer["vm_id"] == host.vm("from-cli").id
    assert len(answer["disks"]) == 2
    from safehold.cli.main import run

    with pytest.raises(SystemExit) as again:  # through run(), which maps errors to exit codes
        run(["--config", config, "hyperv", "restore", "latest", "--target", "vm1", "--name", "from-cli",
             "--path", "E:\\VMs"])
    assert again.value.code == 33  # DestinationError: the name is taken


def test_failed_restore_leaves_no_half_made_vm(workspace, host: FakeHyperVHost) -> None:
    latest = backup_target(workspace, "vm1")
    host.upload_limit = 1  # the host's disk fills up during the second disk
    with pytest.raises(errors.DestinationError, match="not enough space"):
        restore_hyperv_vm(workspace, latest.snapshot_id, target="vm1", name="half", host_path="D:\\Restores")
    assert host.uploads == ["D:\\Restores\\half\\Virtual Hard Disks\\scsi-0-0.vhdx"]
    assert not host.local(host.uploads[0]).exists(), "the disk already uploaded is removed again"
    assert not any(vm.name == "half" for vm in host.vms.values())


def test_a_disk_name_from_the_snapshot_cannot_climb_out_of_the_scratch_folder(workspace, host, tmp_path) -> None:
    """A crafted snapshot (same VM, a disk named '../..'-something) is refused before any disk is written."""
    from safehold.repository import Snapshot
    from safehold.repository.repository import TreeWriter

    real = backup_target(workspace, "vm1")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with workspace.locked() as repository:
        original = repository.load_snapshot(real.snapshot_id)
        tree = TreeWriter(repository)
        for item in repository.read_tree(original):
            tree.add(item | {"path": b"../../escaped"})
        ids = tree.finish()
        repository.flush()
        crafted = Snapshot(id="", time=original.time, target=original.target, kind=original.kind,
                           hostname=original.hostname, paths=original.paths, tree=ids, source=original.source)
        repository.save_snapshot(crafted)
    with pytest.raises(errors.DestinationError, match="single file name"):
        restore_hyperv_vm(workspace, crafted.id, target="vm1", name="vm1-crafted", host_path="D:\\Restores",
                          scratch=str(scratch))
    assert not list(tmp_path.glob("escaped*")) and not list(scratch.parent.glob("**/escaped*.raw"))


def test_restore_test_of_a_hyperv_target_checks_the_disk_images(workspace, host: FakeHyperVHost,
                                                                 tmp_path: Path) -> None:
    """The disks come back as raw images in the sandbox; the host is not asked to make anything."""
    from safehold.engine.context import Context
    from safehold.engine.restore_test import run_restore_test

    host.guest_write("vm1", 1, 0, 4096, 0x5C)
    backup_target(workspace, "vm1")
    config = tmp_path / "targets.yml"
    check = "test $(ls | wc -l) -eq 2 && test $(od -An -tx1 -N1 \"$(ls | sed -n 2p)\") = 5c"
    config.write_text(config.read_text() + f"    restore_test: {{every: 7d, health_check: {{type: command, "
                                           f"run: '{check}'}}}}\n")
    context = Context.load(config, threads=2)
    try:
        uploads = list(host.uploads)
        result = run_restore_test(context, "vm1")
        assert result.passed and result.files == 2, result
        assert host.uploads == uploads and [vm.name for vm in host.vms.values()] == ["vm1"]
    finally:
        context.close()
