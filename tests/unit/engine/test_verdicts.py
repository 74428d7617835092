"""Ransomware verdicts through the engine, in process (the CLI's end-to-end proof is in
tests/e2e/test_ransomware.py): the listing's verdicts and reasons, 'status', 'scan', 'mark', the
errors scripts see, and 'copy' carrying marks and scans so latest-clean agrees on the copy."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from control_support import files_target, make_context
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.browse import list_snapshots
from safehold.engine.context import Context
from safehold.engine.copy import copy_snapshots, repository_spec
from safehold.engine.status import target_statuses
from safehold.engine.verdicts import mark_snapshot, scan_snapshot
from safehold.repository import Repository
from safehold.repository.backends import Kind, open_backend
from safehold.repository.forgotten import live_snapshots
from safehold.repository.marks import latest_clean, load_records

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def encrypt(data: bytes) -> bytes:
    keys = random.Random(data)  # a key drawn from the plaintext: every run judges the same ciphertext
    return Cipher(algorithms.AES(keys.randbytes(32)), modes.CTR(keys.randbytes(16))).encryptor().update(data)


def make_files(data: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    contents = {}
    for i in range(40):
        contents[f"invoice{i:02}.csv"] = b"".join(b"%d invoice %d total %d EUR\n" % (i, n, rng.randrange(10_000))
                                                  for n in range(rng.randrange(50, 400)))
    contents["logo.png"] = b"\x89PNG\r\n\x1a\n" + rng.randbytes(30_000)
    for name, body in contents.items():
        (data / name).write_bytes(body)
    return contents


def attack(data: Path) -> None:
    """8 files encrypted in place, 6 rewritten encrypted as NAME.crypt (originals deleted), a note."""
    for i in range(1, 9):
        path = data / f"invoice{i:02}.csv"
        path.write_bytes(encrypt(path.read_bytes()))
    for i in range(9, 15):
        path = data / f"invoice{i:02}.csv"
        (data / f"invoice{i:02}.csv.crypt").write_bytes(encrypt(path.read_bytes()))
        path.unlink()
    (data / "HOW_TO_RECOVER_YOUR_FILES.txt").write_text("send 1 BTC\n")


@pytest.fixture
def attacked(tmp_path: Path):
    """A target 'files' with four snapshots: first (unknown), clean, attacked (suspicious), one after."""
    context = make_context(tmp_path / "ws", [files_target(tmp_path / "ws", "files")])
    data = tmp_path / "ws" / "data" / "files"
    original = make_files(data)
    ids = [backup_target(context, "files").snapshot_id]
    (data / "invoice00.csv").write_bytes(original["invoice00.csv"] + b"late entry\n")
    ids.append(backup_target(context, "files").snapshot_id)
    attack(data)
    ids.append(backup_target(context, "files").snapshot_id)  # a verdict never fails a backup
    ids.append(backup_target(context, "files").snapshot_id)
    yield context, ids
    context.close()


def state_in_status(context: Context, target: str = "files") -> dict:
    return next(t for t in target_statuses(context) if t.name == target).ransomware


def test_listing_status_scan_and_mark_of_an_attack(attacked) -> None:
    context, (first, clean, bad, after) = attacked
    rows = list_snapshots(context, "files")
    assert [row["id"] for row in rows] == [first, clean, bad, after]
    assert [(row["verdict"]["verdict"], row["verdict"]["clean_point"]) for row in rows] == [
        ("unknown", False), ("clean", True), ("suspicious", False), ("clean", False)]
    assert rows[3]["verdict"]["after_suspicious"] == bad
    reasons = {reason["signal"]: reason for reason in rows[2]["verdict"]["reasons"]}
    assert {"type_changed", "extension_churn", "ransom_notes"} <= set(reasons)
    assert reasons["type_changed"]["value"] == 14
    assert reasons["extension_churn"]["extension"] == "crypt"
    assert reasons["ransom_notes"]["files"] == ["files/HOW_TO_RECOVER_YOUR_FILES.txt"]
    assert rows[2]["signals"]["deleted"] == 6 and rows[2]["signals"]["added"] == 7
    assert [row["id"] for row in list_snapshots(context, "files", clean_only=True)] == [clean]
    state = state_in_status(context)
    assert state["suspicious"] is True and state["since"] == bad and state["latest_clean"] == clean
    assert context.open_repository(load_index=False).find_snapshot("latest-clean:files").id == clean

    # scan recomputes the verdict of a stored snapshot from its data, and records it
    scanned = scan_snapshot(context, bad[:12])
    assert scanned["verdict"]["verdict"] == "suspicious" and scanned["verdict"]["source"] == "scan"
    assert scanned["signals"]["type_changed"] == 14 and scanned["parent"] == clean
    assert [job.status for job in context.catalog.list_jobs(kind="scan")] == ["succeeded"]

    # The operator restored the data and marks the newest snapshot clean: the alarm ends there.
    marked = mark_snapshot(context, after[:12], "clean", note="restored after incident 7")
    assert marked["verdict"]["source"] == "operator" and marked["verdict"]["note"] == "restored after incident 7"
    assert marked["state"] == {"snapshot": after, "verdict": "clean", "score": 0.0, "suspicious": False,
                               "since": None, "latest_clean": after}
    state = state_in_status(context)
    assert state["suspicious"] is False and state["latest_clean"] == after
    # A later 'mark suspicious' of the clean one moves latest-clean back to none before the attack.
    mark_snapshot(context, after, "suspicious")
    assert context.open_repository(load_index=False).find_snapshot("latest-clean:files").id == clean


def test_errors_scripts_see_keep_their_exit_codes(tmp_path: Path) -> None:
    context = make_context(tmp_path / "ws", [files_target(tmp_path / "ws", "files")])
    make_files(tmp_path / "ws" / "data" / "files")
    backup_target(context, "files")  # a first snapshot is 'unknown'
    with pytest.raises(errors.NoCleanSnapshot) as caught:
        context.open_repository(load_index=False).find_snapshot("latest-clean:files")
    assert caught.value.exit_code == 90 and "'files'" in str(caught.value)
    with pytest.raises(errors.InvalidMark) as caught:
        mark_snapshot(context, "latest:files", "fine")
    assert caught.value.exit_code == 91 and "fine" in str(caught.value)
    assert not list(context.open_repository(load_index=False).backend.list(Kind.VERDICTS))
    context.close()


def test_copy_carries_marks_and_scans_so_latest_clean_agrees_on_the_copy(attacked, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    context, (first, clean, bad, after) = attacked
    monkeypatch.setenv("OFFSITE_PASSWORD", "offsite")
    source = context.open_repository(load_index=False)
    Repository.init(open_backend(str(tmp_path / "offsite")), b"offsite", FAST_KDF, params_from=source)
    spec = repository_spec(str(tmp_path / "offsite"), password_env="OFFSITE_PASSWORD")
    scan_snapshot(context, bad)
    mark_snapshot(context, after, "clean", note="checked")

    def copy_state() -> tuple[Repository, dict[str, str]]:
        destination = Repository.open(open_backend(str(tmp_path / "offsite")), b"offsite")
        return destination, {s.copied_from["snapshot"]: s.id for s in destination.list_snapshots()}

    result = copy_snapshots(context, spec, "files")
    assert result["snapshots_copied"] == 4 and result["verdict_records_copied"] == 2
    destination, copies = copy_state()
    copied = load_records(destination)
    assert copied[copies[after]]["operator"]["note"] == "checked"
    assert copied[copies[bad]]["scan"]["result"]["verdict"] == "suspicious"
    assert latest_clean(live_snapshots(destination, "files"), copied).id == copies[after]

    # A mark made on the source after the copy follows with the next copy job; nothing else is resent.
    mark_snapshot(context, after, "suspicious", note="not fixed after all")
    again = copy_snapshots(context, spec, "files")
    assert again["snapshots_copied"] == 0 and again["verdict_records_copied"] == 1
    destination, copies = copy_state()
    records = load_records(destination)
    assert records[copies[after]]["operator"]["verdict"] == "suspicious"
    source_clean = latest_clean(live_snapshots(source, "files"), load_records(source))
    assert source_clean.id == clean
    assert latest_clean(live_snapshots(destination, "files"), records).id == copies[clean]
    assert copy_snapshots(context, spec, "files")["verdict_records_copied"] == 0  # idempotent
    # A newer mark made on the copy itself is not overwritten by the source's older one.
    from safehold.repository.marks import record_verdict

    record_verdict(destination, destination.load_snapshot(copies[after]), "clean", "operator", note="offsite view")
    assert copy_snapshots(context, spec, "files")["verdict_records_copied"] == 0
    _, copies = copy_state()
    records = load_records(Repository.open(open_backend(str(tmp_path / "offsite")), b"offsite"))
    assert records[copies[after]]["operator"]["note"] == "offsite view"


def test_the_audit_names_verdict_records_of_kept_snapshots_that_are_not_locked() -> None:
    from datetime import datetime, timedelta, timezone

    from safehold.engine.immutability import AuditReport, _audit_verdict_records

    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    report = AuditReport()
    _audit_verdict_records(report, {"a" * 64: None, "b" * 64: now + timedelta(days=9)}, now, timedelta(days=1), 30)
    [finding] = report.findings
    assert not report.ok and finding.check == "verdicts" and "verdicts/aaaaaaaa" in finding.message
    assert "safehold maintenance" in finding.fix
    report = AuditReport()
    _audit_verdict_records(report, {"b" * 64: now + timedelta(days=9)}, now, timedelta(days=1), 30)
    assert report.ok and "1 verdict record(s) of kept snapshots are locked" in report.findings[0].message


def test_mark_and_scan_run_as_queued_jobs_like_every_api_action(attacked) -> None:
    """POST /api/v1/jobs {"kind": "mark"|"scan"} queues these (operator role); a worker runs them."""
    from safehold.engine.jobs import run_job, submit_job

    context, (first, clean, bad, after) = attacked
    job = run_job(context, submit_job(context, "mark", "files",
                                      {"snapshot": after[:12], "verdict": "clean", "note": "restored"}))
    assert job.status == "succeeded" and job.target == "files", job
    assert job.details["ransomware"]["latest_clean"] == after and job.details["ransomware"]["suspicious"] is False
    assert state_in_status(context)["latest_clean"] == after  # status reads the queued job's row
    scanned = run_job(context, submit_job(context, "scan", "files", {"snapshot": "latest:files"}))
    assert scanned.status == "succeeded" and scanned.details["snapshot"] == after
    for params in ({"snapshot": after, "verdict": "fine"}, {"snapshot": after}, {"snapshot": "; rm -rf /",
                   "verdict": "clean"}, {"snapshot": after, "verdict": "clean", "note": "x" * 1001}):
        with pytest.raises(errors.UsageError):
            submit_job(context, "mark", "files", params)
    with pytest.raises(errors.UsageError):
        submit_job(context, "scan", None, {"snapshot": after})  # a target is needed (status is per target)
    # An id of another target's snapshot under this target is refused, not recorded under the wrong name.
    with pytest.raises(errors.SnapshotNotFound) as caught:
        mark_snapshot(context, after, "clean", target="web")
    assert "it is a snapshot of files" in str(caught.value)
