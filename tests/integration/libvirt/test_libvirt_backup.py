"""The libvirt driver against a real libvirtd and QEMU (TCG): full and incremental backups,
restores compared byte for byte with ``qemu-img compare``, checkpoints, shut-off domains, and a
domain that disappears in the middle of a backup."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

import pytest

from libvirt_support import DISK_SIZE, same_contents

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.libvirt import list_checkpoints
from safehold.engine.restore import restore_snapshot

MiB = 1024 * 1024
CHUNK = 512 * 1024


def job_warnings(context, job_id: int) -> list[str]:
    return [line.message for line in context.catalog.job_logs(job_id) if line.level == "warning"]


def scratch_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "safehold-libvirt-*")))


def restore_domain(context, snapshot_id, **options):
    """A libvirt restore through the one restore job; options as LibvirtOptions (``image_format`` = format)."""
    if "image_format" in options:
        options["format"] = options.pop("image_format")
    return restore_snapshot(context, snapshot_id, {"kind": "libvirt", **options})


def test_full_then_incremental_restores_byte_for_byte(make_domain, safehold, connection, tmp_path):
    domain = make_domain()
    domain.write(0xAB, 0, 1 * MiB)
    domain.write(0xCD, 40 * MiB, 256 * 1024)
    context = safehold(domain)
    leftovers = scratch_folders()

    full = backup_target(context, "vm")
    assert full.summary["bytes_total"] == DISK_SIZE
    # base:allocation: only the two written areas (1 MiB + one 512 KiB chunk) are read, the rest are holes.
    assert full.summary["bytes_read"] == 1 * MiB + CHUNK
    assert full.summary["holes"] == DISK_SIZE // CHUNK - 3
    token = context.open_repository().find_snapshot(full.snapshot_id).source
    assert token["incremental"] == "none" and token["checkpoint"] in domain.checkpoints()
    assert token["consistency"] == "crash-consistent"
    assert any("only crash-consistent" in line for line in job_warnings(context, full.job_id))
    at_full = domain.copy_image(tmp_path / "at-full.raw")

    # Three guest writes: 64 KiB inside an old chunk, 64 KiB straddling two chunks, 1 MiB in a hole.
    domain.write(0x11, 100 * 1024, 64 * 1024)
    domain.write(0x22, 10 * MiB - 32 * 1024, 64 * 1024)
    domain.write(0x33, 50 * MiB, 1 * MiB)
    incremental = backup_target(context, "vm")
    assert incremental.parent_id == full.snapshot_id
    token = context.open_repository().find_snapshot(incremental.snapshot_id).source
    assert token["incremental"] == "dirty-bitmap"
    assert token["incremental_from"] == context.open_repository().find_snapshot(full.snapshot_id).source["checkpoint"]
    # Only the dirty blocks' chunks are read: 1 + 2 + 2 chunks of 512 KiB.
    assert incremental.summary["bytes_read"] == 5 * CHUNK
    assert incremental.summary["chunks_reused_unread"] == DISK_SIZE // CHUNK - 5
    assert scratch_folders() == leftovers, "the backup left its scratch folder behind"
    assert connection.lookupByName(domain.name).jobInfo()[0] == 0, "the backup job is still running"

    domain.flush()
    latest_qcow2 = restore_domain(context, incremental.snapshot_id, images_dir=str(tmp_path / "restored"),
                                  define=f"{domain.name}-copy")
    image = Path(latest_qcow2.details["disks"]["vda"])
    assert image.name.endswith(".qcow2")
    compared = same_contents(domain.image, image)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    copy = connection.lookupByName(f"{domain.name}-copy")
    try:
        assert copy.UUIDString() != domain.domain.UUIDString()
        assert f"<source file='{image}'" in copy.XMLDesc(0)
        assert not copy.isActive()
    finally:
        copy.undefine()

    first_raw = restore_domain(context, full.snapshot_id, images_dir=str(tmp_path / "raw"), image_format="raw")
    assert first_raw.details["action"] == "images"
    compared = same_contents(at_full, Path(first_raw.details["disks"]["vda"]))
    assert compared.returncode == 0, compared.stdout + compared.stderr
    # The older snapshot really is older: it differs from the disk now.
    assert same_contents(domain.image, Path(first_raw.details["disks"]["vda"])).returncode == 1


def test_checkpoints_are_chained_and_pruned(make_domain, safehold, libvirt_uri):
    domain = make_domain()
    context = safehold(domain, keep_checkpoints=2)
    names = []
    for pattern in (0x01, 0x02, 0x03):
        domain.write(pattern, pattern * MiB, 64 * 1024)
        result = backup_target(context, "vm")
        names.append(context.open_repository().find_snapshot(result.snapshot_id).source["checkpoint"])
    assert domain.checkpoints() == sorted(names[1:])
    rows = list_checkpoints(libvirt_uri, domain.name)
    assert [row["name"] for row in rows] == names[1:]
    assert rows[1]["parent"] == names[1]  # each checkpoint's parent is the one before it
    # The chain still serves incrementals after pruning: the third backup read one chunk.
    assert result.summary["bytes_read"] == CHUNK


def test_shut_off_domain_is_read_paused_and_stays_off(make_domain, safehold, tmp_path):
    domain = make_domain(running=False)
    context = safehold(domain)
    first = backup_target(context, "vm")
    assert not domain.domain.isActive()
    token = context.open_repository().find_snapshot(first.snapshot_id).source
    assert token["consistency"] == "shut-off"
    assert not job_warnings(context, first.job_id)  # a shut-off disk is consistent: no warning

    domain.start()
    domain.write(0x5A, 3 * MiB, 64 * 1024)
    domain.stop()  # QEMU stores the dirty bitmap in the qcow2 file when it exits
    second = backup_target(context, "vm")
    assert not domain.domain.isActive()
    token = context.open_repository().find_snapshot(second.snapshot_id).source
    assert token["incremental"] == "dirty-bitmap"
    assert second.summary["bytes_read"] == CHUNK
    restored = restore_domain(context, second.snapshot_id, images_dir=str(tmp_path / "r"), image_format="raw")
    compared = same_contents(domain.image, Path(restored.details["disks"]["vda"]))
    assert compared.returncode == 0, compared.stdout + compared.stderr


def test_raw_disk_is_read_in_full_with_a_warning(make_domain, safehold):
    domain = make_domain(image_format="raw")
    domain.write(0x77, 0, 64 * 1024)
    context = safehold(domain)
    first = backup_target(context, "vm")
    second = backup_target(context, "vm")
    assert second.summary["bytes_read"] == first.summary["bytes_read"] > 0
    assert any("cannot hold a dirty bitmap" in line for line in job_warnings(context, second.job_id))
    assert domain.checkpoints() == []


def test_domain_undefined_mid_backup_fails_cleanly(make_domain, safehold, monkeypatch):
    import libvirt

    from safehold.platforms.libvirt import nbd as driver

    domain = make_domain()
    domain.write(0x42, 0, 1 * MiB)
    context = safehold(domain)
    leftovers = scratch_folders()
    read_at = driver.NbdDiskReader.read_at

    def read_then_vanish(self, offset, length):
        domain.domain.destroy()
        domain.domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        return read_at(self, offset, length)

    monkeypatch.setattr(driver.NbdDiskReader, "read_at", read_then_vanish)
    with pytest.raises(errors.DomainVanished):
        backup_target(context, "vm")
    assert scratch_folders() == leftovers
    assert context.open_repository().list_snapshots("vm") == []


def test_domain_that_vanishes_mid_backup_fails_cleanly(make_domain, safehold, monkeypatch):
    from safehold.platforms.libvirt import nbd as driver

    domain = make_domain()
    domain.write(0x42, 0, 2 * MiB)
    context = safehold(domain)
    first = backup_target(context, "vm")
    checkpoints = domain.checkpoints()
    leftovers = scratch_folders()

    domain.write(0x43, 0, 64 * 1024)
    read_at = driver.NbdDiskReader.read_at

    def read_then_vanish(self, offset, length):
        domain.domain.destroy()  # the VM goes away under the running backup
        return read_at(self, offset, length)

    monkeypatch.setattr(driver.NbdDiskReader, "read_at", read_then_vanish)
    with pytest.raises(errors.DomainVanished) as caught:
        backup_target(context, "vm")
    monkeypatch.setattr(driver.NbdDiskReader, "read_at", read_at)
    assert caught.value.exit_code == 52 and domain.name in str(caught.value)
    failed = context.catalog.list_jobs(target="vm", kind="backup", limit=1)[0]
    assert failed.status == "failed" and failed.error_type == "DomainVanished"
    assert domain.checkpoints() == checkpoints, "the failed backup's checkpoint was left behind"
    assert scratch_folders() == leftovers
    assert [s.id for s in context.open_repository().list_snapshots("vm")] == [first.snapshot_id]

    domain.start()
    domain.write(0x44, 0, 64 * 1024)
    again = backup_target(context, "vm")
    assert again.parent_id == first.snapshot_id
    token = context.open_repository().find_snapshot(again.snapshot_id).source
    assert token["incremental"] == "dirty-bitmap"
    assert token["incremental_from"] == checkpoints[0]
    assert again.summary["bytes_read"] == CHUNK


def test_replace_disk_of_a_shut_off_domain(make_domain, safehold, tmp_path):
    domain = make_domain()
    domain.write(0x61, 0, 1 * MiB)
    context = safehold(domain)
    good = backup_target(context, "vm")
    expected = domain.copy_image(tmp_path / "good.raw")
    domain.write(0x62, 0, 2 * MiB)  # the damage the restore undoes

    with pytest.raises(errors.DomainBusy) as caught:
        restore_domain(context, good.snapshot_id, replace=domain.name)
    assert caught.value.exit_code == 53

    domain.stop()
    outcome = restore_domain(context, good.snapshot_id, replace=domain.name)
    assert outcome.details["disks"] == {"vda": str(domain.image)}
    compared = same_contents(expected, domain.image)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert domain.checkpoints() == []  # their bitmaps were in the replaced image
    domain.start()  # the domain boots its replaced disk
    assert domain.domain.isActive()
