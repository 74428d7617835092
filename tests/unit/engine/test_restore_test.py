"""Restore tests (engine.restore_test): every health-check kind passes and fails for real, the
ART is recorded against the tier's RTO, and the sandbox is removed whatever happens."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from control_support import FakeClock, files_target, make_context

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.restore_test import run_health_check, run_restore_test, sandbox_root


def context_with(tmp_path: Path, clock: FakeClock, health_check: dict | None, tier: int = 1, **settings):
    target = files_target(tmp_path, "web", tier=tier, restore_test={"every": "1d", **(
        {"health_check": health_check} if health_check else {})})
    context = make_context(tmp_path / "ws", [target], settings or None, clock)
    return context


def sandboxes(context) -> list[Path]:
    root = sandbox_root(context)
    return list(root.iterdir()) if root.exists() else []


DIGEST = hashlib.sha256(b"web\n").hexdigest()


@pytest.mark.parametrize(
    "check",
    [
        None,
        {"type": "command", "run": "grep -qx web web/hostname"},
        {"type": "file_exists", "path": "web/hostname"},
        {"type": "file_exists", "path": "/web/hostname"},
        {"type": "checksum", "path": "web/hostname", "sha256": DIGEST},
    ],
)
def test_passing_check_records_art_against_rto_and_removes_the_sandbox(tmp_path, clock, check) -> None:
    context = context_with(tmp_path, clock, check)
    backup_target(context, "web")
    result = run_restore_test(context, "web")
    assert result.passed and result.rto_met and result.rto_seconds == 3600
    assert 0 < result.art_seconds < 60
    job = context.catalog.get_job(result.job_id)
    assert job.status == "succeeded" and job.kind == "restore-test"
    assert job.details["art_seconds"] == round(result.art_seconds, 3)
    assert job.details["rto_met"] is True and job.details["passed"] is True
    assert job.bytes_read == 4
    assert sandboxes(context) == []


@pytest.mark.parametrize(
    ("check", "detail"),
    [
        ({"type": "command", "run": "echo broken >&2; exit 3"}, "exit status 3: broken"),
        ({"type": "command", "run": "sleep 30", "timeout": "1s"}, "command still running after 1s"),
        ({"type": "file_exists", "path": "web/missing"}, "web/missing does not exist"),
        ({"type": "checksum", "path": "web/hostname", "sha256": "0" * 64}, f"has SHA-256 {DIGEST}, expected"),
        ({"type": "checksum", "path": "web/missing", "sha256": "0" * 64}, "cannot read web/missing"),
    ],
)
def test_failing_check_fails_the_job_and_still_removes_the_sandbox(tmp_path, clock, check, detail) -> None:
    context = context_with(tmp_path, clock, check)
    backup_target(context, "web")
    with pytest.raises(errors.RestoreTestFailed) as caught:
        run_restore_test(context, "web")
    assert detail in str(caught.value) and caught.value.exit_code == 22
    job = context.catalog.list_jobs(kind="restore-test", limit=1)[0]
    assert job.status == "failed" and job.error_type == "RestoreTestFailed"
    assert job.details["passed"] is False and job.details["rto_met"] is False
    assert "art_seconds" in job.details
    assert sandboxes(context) == []


def test_failed_restore_removes_the_sandbox(tmp_path, clock) -> None:
    context = context_with(tmp_path, clock, None)
    with pytest.raises(errors.SnapshotNotFound):
        run_restore_test(context, "web")  # nothing to restore
    assert context.catalog.list_jobs(kind="restore-test", limit=1)[0].status == "failed"
    assert sandboxes(context) == []


def test_read_only_restored_tree_is_removed(tmp_path, clock) -> None:
    data = tmp_path / "data" / "web"
    context = context_with(tmp_path, clock, {"type": "command", "run": "chmod -R a-w web"})
    os.chmod(data, 0o555)
    try:
        backup_target(context, "web")
    finally:
        os.chmod(data, 0o755)
    run_restore_test(context, "web")
    assert sandboxes(context) == []


def test_art_above_the_rto_is_recorded_as_missed(tmp_path, clock) -> None:
    context = context_with(tmp_path, clock, {"type": "command", "run": "sleep 1.2"})
    path = context.config.path
    path.write_text(path.read_text().replace("state_dir: state", "state_dir: state\ntiers: {1: {rpo: 15m, rto: 1s}}"))
    from safehold.config import load_config

    context.config = load_config(path)
    backup_target(context, "web")
    result = run_restore_test(context, "web")
    assert result.passed and not result.rto_met and result.art_seconds > 1
    assert context.catalog.get_job(result.job_id).details["rto_met"] is False


def test_image_snapshot_is_checked_in_the_sandbox(tmp_path, clock) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(1 << 20))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    target = {"name": "disk", "tier": 2, "source": {"type": "image", "path": str(image)},
              "restore_test": {"health_check": {"type": "checksum", "path": "restore", "sha256": digest}}}
    context = make_context(tmp_path / "ws", [target], None, clock)
    backup_target(context, "disk")
    result = run_restore_test(context, "disk")
    assert result.passed and result.bytes_restored == 1 << 20
    assert sandboxes(context) == []


def test_sandbox_dir_setting_is_used(tmp_path, clock) -> None:
    context = context_with(tmp_path, clock, None, sandbox_dir=str(tmp_path / "sandbox-root"))
    backup_target(context, "web")
    job_id = run_restore_test(context, "web").job_id
    sandbox = context.catalog.get_job(job_id).details["sandbox"]
    assert sandbox.startswith(str(tmp_path / "sandbox-root") + "/safehold-restore-test-")
    assert (tmp_path / "sandbox-root").is_dir() and not Path(sandbox).exists()


def test_health_check_without_restore(tmp_path) -> None:
    from safehold.config.models import CommandCheck

    (tmp_path / "tree").mkdir()
    assert run_health_check(CommandCheck(type="command", run="pwd"), tmp_path / "tree") == (True, "exit status 0")
