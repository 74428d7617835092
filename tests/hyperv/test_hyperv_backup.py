"""Hyper-V backups through the real engine and repository, against the fake host.

Full, then guest writes, then an RCT incremental that reads only what changed;
restores compared byte for byte with the VM's disks (real VHDX files read by
qemu-img). Failures (VM deleted mid-backup, a refused read, an expired session)
fail the job clearly, remove the checkpoint and keep the previous snapshot the
parent of the next run, which stays incremental.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_hyperv import FakeHyperVHost

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.restore import restore_snapshot
from safehold.sources.hyperv import CHECKPOINT_PREFIX, HyperVSource

MiB = 1024 * 1024
CHUNK = 64 * 1024


def snapshots(context) -> list:
    return context.open_repository().list_snapshots("vm1")


def assert_host_clean(host: FakeHyperVHost) -> None:
    assert host.checkpoints == {}, "a checkpoint was left behind"
    assert host.mounts == {}, "a disk was left mounted"


def assert_restores_equal_vm(context, snapshot_id: str, host: FakeHyperVHost, tmp_path: Path) -> None:
    out = tmp_path / f"restore-{snapshot_id[:8]}"
    restore_snapshot(context, snapshot_id, str(out), target="vm1")
    for drive in host.vm("vm1").drives:
        name = f"{drive.controller_type}-{drive.controller_number}-{drive.controller_location}".lower()
        assert (out / name).read_bytes() == host.disk_bytes(drive.path), name


def test_full_then_rct_incremental_reads_only_the_changes(workspace, host: FakeHyperVHost, tmp_path: Path) -> None:
    host.guest_write("vm1", 0, 0, 3 * MiB, 0x5A)
    host.guest_write("vm1", 1, 4 * MiB, 100_000, 0x77)
    full = backup_target(workspace, "vm1")
    assert full.parent_id is None
    assert full.summary["bytes_read"] == 56 * MiB  # a first backup reads every byte of both disks
    assert_host_clean(host)
    assert len(host.reference_points) == 1
    first = snapshots(workspace)[-1]
    assert first.source["consistency"] == "application" and set(first.source["rct"]) == {"scsi-0-0", "scsi-0-1"}
    assert first.source["vm"] == {"Generation": 2, "ProcessorCount": 4, "MemoryStartup": 2 << 30}

    host.guest_write("vm1", 0, 10 * MiB + 4096, 8192, 0x01)  # inside one 64 KiB chunk
    host.guest_write("vm1", 0, 40 * MiB - 4096, 8192, 0x02)  # straddles two chunks
    host.guest_write("vm1", 1, 0, 512, 0x03)
    incremental = backup_target(workspace, "vm1")
    assert incremental.parent_id == full.snapshot_id
    assert incremental.summary["bytes_read"] == 4 * CHUNK
    assert incremental.summary["chunks_reused_unread"] == 56 * MiB // CHUNK - 4
    assert snapshots(workspace)[-1].source["incremental"] == "rct"
    assert_host_clean(host)
    assert len(host.reference_points) == 1, "the parent's reference point is removed once the new snapshot exists"
    assert host.closed == 2  # every session ended
    assert_restores_equal_vm(workspace, incremental.snapshot_id, host, tmp_path)


def test_no_production_checkpoint_falls_back_to_crash_consistent_with_a_warning(workspace, host) -> None:
    host.vm("vm1").vss = False
    result = backup_target(workspace, "vm1")
    assert snapshots(workspace)[-1].source["consistency"] == "crash"
    warnings = [line for line in workspace.catalog.job_logs(result.job_id) if line.level == "warning"]
    assert len(warnings) == 1 and "only crash-consistent" in warnings[0].message
    assert "Could not create backup checkpoint" in warnings[0].message
    assert_host_clean(host)


def failing_backup(workspace, expected: type[errors.SafeholdError]) -> errors.SafeholdError:
    with pytest.raises(expected) as failure:
        backup_target(workspace, "vm1")
    return failure.value


def test_vm_deleted_mid_backup_fails_clearly_and_leaves_nothing(workspace, host: FakeHyperVHost) -> None:
    host.at("read-disk", 5, lambda: host.delete_vm("vm1"))
    error = failing_backup(workspace, errors.HyperVError)
    assert error.exit_code == 58 and "disappeared" in error.hint
    assert "PhysicalDrive" not in error.message and "vm1" in error.message
    assert_host_clean(host)
    assert snapshots(workspace) == []
    (job,) = [job for job in workspace.catalog.list_jobs() if job.kind == "backup"]
    assert job.status == "failed"


@pytest.mark.parametrize("fault", ["refused-read", "expired-session", "refused-conversion"])
def test_failed_run_removes_the_checkpoint_and_the_previous_snapshot_stays_the_parent(
        workspace, host: FakeHyperVHost, tmp_path: Path, fault: str) -> None:
    host.guest_write("vm1", 0, 0, MiB, 0x10)
    good = backup_target(workspace, "vm1")
    parent_point = set(host.reference_points)
    host.guest_write("vm1", 0, 20 * MiB, 4096, 0x20)
    reads = host.count("read-disk")
    if fault == "refused-read":
        host.at("read-disk", reads + 1, lambda: setattr(host, "refuse_reads", True))
        error = failing_backup(workspace, errors.HyperVError)
        assert error.exit_code == 58 and "access denied" in error.message
    elif fault == "expired-session":
        host.at("read-disk", reads + 1, host.expire_session)
        error = failing_backup(workspace, errors.HyperVSessionExpired)
        assert error.exit_code == 59
    else:
        original = host._convert_to_reference_point
        host._convert_to_reference_point = lambda **kw: (_ for _ in ()).throw(
            host._fail("convert-to-reference-point failed (error 32769)", "PermissionDenied"))
        error = failing_backup(workspace, errors.HyperVError)
        host._convert_to_reference_point = original
    assert_host_clean(host)
    assert set(host.reference_points) == parent_point, "the parent's RCT ids must stay valid"
    assert [s.id for s in snapshots(workspace)] == [good.snapshot_id]

    host.refuse_reads = False
    host.guest_write("vm1", 1, MiB, 4096, 0x30)
    after = backup_target(workspace, "vm1")
    assert after.parent_id == good.snapshot_id
    assert snapshots(workspace)[-1].source["incremental"] == "rct"
    assert after.summary["bytes_read"] == 2 * CHUNK  # the two writes since the good snapshot, nothing more
    assert_host_clean(host)
    assert_restores_equal_vm(workspace, after.snapshot_id, host, tmp_path)


def test_lost_change_tracking_reads_everything_again(workspace, host: FakeHyperVHost, tmp_path: Path) -> None:
    host.guest_write("vm1", 0, 0, MiB, 0x10)
    backup_target(workspace, "vm1")
    host.reset_change_tracking("vm1")
    host.guest_write("vm1", 0, 30 * MiB, 4096, 0x44)
    result = backup_target(workspace, "vm1")
    assert result.summary["bytes_read"] == 56 * MiB
    assert sum("change tracking since the parent is not available" in w for w in result.summary["warnings"]) == 2
    assert snapshots(workspace)[-1].source["incremental"] == "none"
    assert_restores_equal_vm(workspace, result.snapshot_id, host, tmp_path)


def test_checkpoint_left_by_a_killed_run_is_removed(workspace, host: FakeHyperVHost) -> None:
    from safehold.platforms.hyperv import scripts

    vm = host.vm("vm1")
    host.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=1, Name=CHECKPOINT_PREFIX + "killed")
    host.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=1, Name="admin's own")
    result = backup_target(workspace, "vm1")
    assert any("left behind by an interrupted run" in w for w in result.summary["warnings"])
    assert [c["name"] for c in host.checkpoints.values()] == ["admin's own"]


def test_unknown_vm_is_a_clear_error(workspace, host: FakeHyperVHost) -> None:
    host.delete_vm("vm1")
    error = failing_backup(workspace, errors.HyperVError)
    assert "unable to find a virtual machine" in error.message and "Get-VM" in error.hint


def test_driver_checks_against_the_source_protocol() -> None:
    from safehold.sources.base import Source

    driver: Source = HyperVSource(host="h", vm="v")
    assert callable(driver.open)


def test_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHOLD_HYPERV_PASSWORD", raising=False)
    with pytest.raises(errors.PasswordMissing, match="SAFEHOLD_HYPERV_PASSWORD"):
        HyperVSource(host="h", vm="v", username="u").connect()
    monkeypatch.setenv("SAFEHOLD_HYPERV_PASSWORD", "pw")
    shell = HyperVSource(host="h", vm="v", username="u").connect()
    assert shell._options["cert_validation"] is True and shell._options["password"] == "pw"
    lab = HyperVSource(host="h", vm="v", username="u", verify_certificate=False).connect()
    assert lab._options["cert_validation"] is False


def test_reads_ahead_only_over_data_it_will_store(workspace, host: FakeHyperVHost) -> None:
    from safehold.sources.hyperv import READ_AHEAD, READ_PIECE

    host.guest_write("vm1", 0, 0, MiB, 0x10)
    backup_target(workspace, "vm1")
    # A full backup: few round trips, not one per 64 KiB chunk (896 chunks).
    assert host.count("read-disk") == 48 * MiB // READ_PIECE + 8 * MiB // READ_PIECE
    host.guest_write("vm1", 0, 5 * MiB, 4096, 0x20)
    host.guest_write("vm1", 0, 30 * MiB + 100, 200_000, 0x21)
    before = host.count("read-disk")
    result = backup_target(workspace, "vm1")
    reads = [params for name, params in host.calls[-20:] if name == "read-disk"]
    assert host.count("read-disk") - before == 2  # one per changed run ...
    assert sum(r["Length"] for r in reads[-2:]) == result.summary["bytes_read"] == CHUNK + 4 * CHUNK  # ... of whole chunks
    assert READ_AHEAD >= READ_PIECE
