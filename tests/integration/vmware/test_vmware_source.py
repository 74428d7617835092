"""The VMware driver against vcsim (+ the CBT proxy): full, incremental, cleanup, failures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vcsim_support import Lab  # noqa: E402

from safehold import errors  # noqa: E402
from safehold.config import load_config  # noqa: E402
from safehold.engine.backup import backup_target  # noqa: E402
from safehold.engine.context import Context  # noqa: E402
from safehold.engine.maintenance import init_repository  # noqa: E402

MiB = 1024 * 1024
VM = "DC0_H0_VM0"
PASSWORD_ENV = "SAFEHOLD_TEST_VSPHERE_PASSWORD"


def make_context(tmp_path: Path, lab: Lab, monkeypatch: pytest.MonkeyPatch, **source: object) -> Context:
    monkeypatch.setenv(PASSWORD_ENV, lab.PASSWORD)
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "repository password")
    config = {
        "repository": {"url": f"file://{tmp_path}/repo"},
        "state_dir": str(tmp_path / "state"),
        "targets": [{"name": "vms", "tier": 2, "source": {
            "type": "vmware", "server": lab.server, "user": lab.USER, "password_env": PASSWORD_ENV,
            "ca_file": str(lab.ca_file), "vms": [VM], "chunk_size": "64KiB", **source}}],
    }
    path = tmp_path / "targets.yml"
    path.write_text(yaml.safe_dump(config))
    context = Context(load_config(path))
    if not (tmp_path / "repo").exists():
        init_repository(context)
    return context


def job_warnings(context: Context, job_id: int) -> list[str]:
    return [record.message for record in context.catalog.job_logs(job_id) if record.level == "warning"]


def test_full_then_incremental_reads_only_what_changed(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    path = lab.resize_disk(VM, 16 * MiB)
    lab.write(VM, 0, b"boot" * 1024)
    lab.write(VM, 9 * MiB, os.urandom(3 * 64 * 1024))
    context = make_context(tmp_path, lab, monkeypatch)
    first = backup_target(context, "vms")
    warnings = job_warnings(context, first.job_id)
    assert any("changed-block tracking was off" in w for w in warnings), warnings
    assert any("crash-consistent" in w for w in warnings), warnings
    assert first.summary["bytes_read"] == 4 * 64 * 1024  # only the allocated areas ('*')
    assert lab.snapshot_names(VM) == []
    assert lab.vm(VM).config.changeTrackingEnabled
    first_bytes = lab.read(VM)

    lab.write(VM, 5 * MiB + 100, b"changed")
    second = backup_target(context, "vms")
    assert second.parent_id == first.snapshot_id
    assert second.summary["bytes_read"] == 64 * 1024
    assert second.summary["chunks_reused_unread"] >= 16 * MiB // (64 * 1024) - 1
    assert lab.snapshot_names(VM) == []
    assert "QueryChangedDiskAreas" in lab.proxy.calls
    assert restored_image(context, first.snapshot_id, tmp_path) == first_bytes
    assert restored_image(context, second.snapshot_id, tmp_path) == lab.read(VM)
    assert not any("tracking was off" in w for w in job_warnings(context, second.job_id))


def test_restore_as_new_vm_and_onto_existing_disk(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    lab.resize_disk(VM, 8 * MiB)
    lab.write(VM, 64 * 1024, os.urandom(MiB))
    lab.write(VM, 7 * MiB, b"tail" * 100)
    context = make_context(tmp_path, lab, monkeypatch)
    backup_target(context, "vms")
    lab.write(VM, 3 * MiB, b"second" * 1000)
    expected = lab.read(VM)
    backup = backup_target(context, "vms")

    outcome = restore_vm(context, backup.snapshot_id, new_vm="restored-vm", power_on=True)
    assert outcome["created"] and len(outcome["disks"]) == 1
    assert lab.read("restored-vm") == expected
    restored = lab.vm("restored-vm")
    assert str(restored.runtime.powerState) == "poweredOn"
    assert restored.config.hardware.memoryMB == lab.vm(VM).config.hardware.memoryMB

    lab.write(VM, 0, b"ransomware" * 10000)
    with pytest.raises(errors.DestinationError, match="powered on"):
        restore_vm(context, backup.snapshot_id, vm=VM)
    lab.wait(lab.vm(VM).PowerOffVM_Task())
    outcome = restore_vm(context, backup.snapshot_id, vm=VM)
    assert not outcome["created"] and outcome["bytes_written"] == 8 * MiB
    assert lab.read(VM) == expected

    with pytest.raises(errors.DestinationError, match="exists"):
        restore_vm(context, backup.snapshot_id, new_vm="restored-vm")


def restore_vm(context: Context, snapshot_id: str, **options):
    """A vSphere restore through the one restore job; returns the destination's details."""
    from safehold.engine.restore import restore_snapshot

    return restore_snapshot(context, snapshot_id, {"kind": "vmware", **options}).details


def restored_image(context: Context, snapshot_id: str, tmp_path: Path) -> bytes:
    from safehold.engine.restore import restore_snapshot

    destination = tmp_path / f"restore-{snapshot_id[:8]}.img"
    restore_snapshot(context, snapshot_id, str(destination))
    return destination.read_bytes()


def failed_job(context: Context):
    return [job for job in context.catalog.list_jobs() if job.status == "failed"][-1]


@pytest.mark.parametrize("fault", ["refused-read", "vm-deleted", "session-expired"])
def test_failure_mid_backup_cleans_up_and_keeps_the_parent(tmp_path, lab, monkeypatch, fast_kdf, fault) -> None:
    lab.resize_disk(VM, 8 * MiB)
    lab.write(VM, 0, os.urandom(2 * MiB))
    context = make_context(tmp_path, lab, monkeypatch)
    first = backup_target(context, "vms")
    lab.write(VM, 4 * MiB, b"after the first backup" * 100)
    reads: list[str] = []

    def on_read(path: str, range_header: str) -> None:
        reads.append(range_header)
        if len(reads) == 1 and fault == "vm-deleted":
            lab.destroy(VM)
        if len(reads) == 1 and fault == "session-expired":
            lab.proxy.expire_sessions()

    lab.proxy.on_read = on_read
    if fault == "refused-read":
        lab.proxy.refuse_reads = lambda path, range_header: 503
    with pytest.raises(errors.VSphereBackupFailed) as failure:
        backup_target(context, "vms")
    message = str(failure.value)
    expected = {"refused-read": "HTTP 503", "vm-deleted": "the VM disappeared during the backup",
                "session-expired": "session expired"}[fault]
    assert expected in message and VM in message
    assert failure.value.exit_code == 56
    lab.proxy.on_read = lab.proxy.refuse_reads = None
    if fault == "vm-deleted":
        assert "no longer exists" in message
        return
    assert "the VM snapshot was removed" in message
    assert lab.snapshot_names(VM) == []

    lab.write(VM, 6 * MiB, b"and after the failed one" * 100)
    expected_bytes = lab.read(VM)
    third = backup_target(context, "vms")
    assert third.parent_id == first.snapshot_id  # the failed run stored nothing
    assert third.summary["bytes_read"] == 2 * 64 * 1024  # the two writes since the first backup
    assert restored_image(context, third.snapshot_id, tmp_path) == expected_bytes
    assert lab.snapshot_names(VM) == []


def test_session_expiring_before_cleanup_is_renewed_to_remove_the_snapshot(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    lab.resize_disk(VM, 2 * MiB)
    lab.write(VM, 0, b"data" * 1000)
    context = make_context(tmp_path, lab, monkeypatch)

    def on_call(method: str) -> None:
        if method == "RemoveSnapshot_Task" and not lab.proxy.expired:
            lab.proxy.expire_sessions()

    lab.proxy.on_call = on_call
    result = backup_target(context, "vms")
    assert lab.proxy.expired and lab.snapshot_names(VM) == []
    assert restored_image(context, result.snapshot_id, tmp_path) == lab.read(VM)


def test_certificates_are_checked_unless_insecure(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    context = make_context(tmp_path, lab, monkeypatch, ca_file=None)
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)  # the test CA is in no system store anyway
    with pytest.raises(errors.VSphereConnectFailed, match="certificate not trusted") as failure:
        backup_target(context, "vms")
    assert failure.value.exit_code == 54 and "ca_file" in failure.value.hint
    context = make_context(tmp_path, lab, monkeypatch, ca_file=None, insecure=True)
    assert backup_target(context, "vms").snapshot_id


def test_wrong_or_missing_password_is_a_clear_connect_error(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    context = make_context(tmp_path, lab, monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(errors.VSphereConnectFailed, match="wrong user name or password"):
        backup_target(context, "vms")
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(errors.VSphereConnectFailed, match=f"the variable {PASSWORD_ENV}"):
        backup_target(context, "vms")
    password_file = tmp_path / "vsphere.password"
    password_file.write_text(lab.PASSWORD + "\n")
    context = make_context(tmp_path, lab, monkeypatch, password_file=str(password_file))
    monkeypatch.delenv(PASSWORD_ENV)
    assert backup_target(context, "vms").snapshot_id


def test_selection_by_folder_tag_and_glob(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    from safehold.engine.vmware import list_target_vms

    lab.tag("backup", "daily", "DC0_H0_VM1", "DC0_C0_RP0_VM0")
    context = make_context(tmp_path, lab, monkeypatch, vms=[], tags=["backup/daily"])
    assert sorted(vm["name"] for vm in list_target_vms(context, "vms")) == ["DC0_C0_RP0_VM0", "DC0_H0_VM1"]
    context = make_context(tmp_path, lab, monkeypatch, vms=["DC0_C0_*"], tags=["daily"])
    assert sorted(vm["name"] for vm in list_target_vms(context, "vms")) == ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1",
                                                                           "DC0_H0_VM1"]
    context = make_context(tmp_path, lab, monkeypatch, vms=[], folder="DC0/vm")
    assert len(list_target_vms(context, "vms")) == 4
    lab.resize_disk("DC0_C0_RP0_VM1", MiB)
    lab.write("DC0_C0_RP0_VM1", 4096, b"cluster vm" * 100)
    result = backup_target(context, "vms")
    assert result.summary["files"] == 4  # one disk per VM
    with pytest.raises(errors.UsageError, match="--source-vm"):
        restore_vm(context, result.snapshot_id, new_vm="copy")
    restore_vm(context, result.snapshot_id, new_vm="copy", source_vm="DC0_C0_RP0_VM1")
    assert lab.read("copy") == lab.read("DC0_C0_RP0_VM1")
    for missing in ({"vms": ["no-such-vm"]}, {"vms": [], "folder": "DC0/vm/nothing"}, {"vms": [], "tags": ["nope"]}):
        context = make_context(tmp_path, lab, monkeypatch, **missing)
        with pytest.raises(errors.VMNotFound) as failure:
            backup_target(context, "vms")
        assert failure.value.exit_code == 55


def test_quiesced_when_tools_run_and_crash_consistent_warning_otherwise(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    context = make_context(tmp_path, lab, monkeypatch)
    lab.proxy.tools_running = True
    result = backup_target(context, "vms")
    assert not any("crash-consistent" in w for w in job_warnings(context, result.job_id))
    assert ">true</quiesce>" in lab.proxy.snapshot_requests[-1]
    lab.proxy.fail_quiesce = True
    result = backup_target(context, "vms")
    warnings = job_warnings(context, result.job_id)
    assert any("quiesced snapshot failed" in w and "crash-consistent" in w for w in warnings), warnings
    assert lab.snapshot_names(VM) == []


def test_leftover_snapshot_of_a_killed_run_is_removed(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    vm = lab.vm(VM)
    host = socket.gethostname()
    lab.wait(vm.CreateSnapshot_Task("safehold-20260101T000000Z", f"safehold backup from {host} pid {dead.pid}; "
                                    "removed when the backup ends", False, False))
    lab.wait(vm.CreateSnapshot_Task("safehold-20260102T000000Z", f"safehold backup from {host} pid {os.getpid()}; "
                                    "removed when the backup ends", False, False))  # a backup still running
    lab.wait(vm.CreateSnapshot_Task("user-snapshot", "not ours", False, False))
    context = make_context(tmp_path, lab, monkeypatch)
    result = backup_target(context, "vms")
    warnings = job_warnings(context, result.job_id)
    assert any("removed snapshot safehold-20260101T000000Z" in w for w in warnings), warnings
    assert any("safehold-20260102T000000Z belongs to a safehold backup still running" in w for w in warnings)
    assert sorted(lab.snapshot_names(VM)) == ["safehold-20260102T000000Z", "user-snapshot"]
    lab.expected_snapshots.add("safehold-20260102T000000Z")


def test_unknown_change_id_falls_back_to_a_full_read(tmp_path, lab, monkeypatch, fast_kdf) -> None:
    from vsphere_cbt import ChangeTracker

    lab.resize_disk(VM, 4 * MiB)
    lab.write(VM, MiB, b"x" * 70000)
    context = make_context(tmp_path, lab, monkeypatch)
    backup_target(context, "vms")
    lab.proxy.tracker = ChangeTracker()  # CBT reset on the host: old change ids are unknown now
    lab.write(VM, 3 * MiB, b"y")
    result = backup_target(context, "vms")
    assert any("change id of the previous backup was refused" in w for w in job_warnings(context, result.job_id))
    assert result.summary["bytes_read"] == 3 * 64 * 1024  # the allocated areas, read again
    assert restored_image(context, result.snapshot_id, tmp_path) == lab.read(VM)
