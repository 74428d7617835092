"""Forget records on S3 with Object Lock: written locked like snapshots, and a snapshot brought back
by removing its delete marker (the S3 way of undoing a delete) is flagged as replayed."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from safehold.repository import Repository, Snapshot
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.s3 import S3Backend
from safehold.repository.check import check
from safehold.repository.forgotten import live_snapshots, record_name
from safehold.repository.prune import ForgetDecision, forget, prune
from safehold.repository.reindex import repair_index
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"pw"


def backup(repository: Repository, tree: Path) -> Snapshot:
    with FilesSource([str(tree)]).open() as view:
        return Archiver(repository, threads=2).snapshot(view, "docs", None)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(300_000))
    return root


def test_forget_record_is_locked_and_an_undeleted_snapshot_is_flagged(moto, lock_bucket, s3, tree):
    backend = S3Backend(f"s3://{lock_bucket}/repo", client=moto.client("s3"), object_lock_mode="GOVERNANCE",
                        object_lock_days=1)
    backend.retention_period = timedelta(seconds=2)  # short, so the snapshot may be forgotten soon
    repository = Repository.init(backend, PASSWORD, FAST_KDF)
    first = backup(repository, tree)
    (tree / "b.bin").write_bytes(os.urandom(1000))
    second = backup(repository, tree)
    time.sleep(3)  # the first snapshot's retention ends

    backend.retention_period = timedelta(hours=1)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    assert [s.id for s in forget(repository, [ForgetDecision(first, False, [])], "test")] == [first.id]
    name = record_name(repository, first.id)
    head = s3.head_object(Bucket=lock_bucket, Key=backend.key(Kind.FORGOTTEN, name))
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] >= before + timedelta(hours=1)
    prune(repository)

    # Undo the delete the S3 way: remove the delete marker, and the snapshot is back.
    key = backend.key(Kind.SNAPSHOTS, first.id)
    versions = s3.list_object_versions(Bucket=lock_bucket, Prefix=key)
    [marker] = [m for m in versions.get("DeleteMarkers", []) if m["Key"] == key]
    s3.delete_object(Bucket=lock_bucket, Key=key, VersionId=marker["VersionId"])
    fresh = Repository.open(backend, PASSWORD)
    assert {s.id for s in fresh.list_snapshots()} == {first.id, second.id}
    report = check(fresh)
    assert not report.ok and [r["snapshot"] for r in report.replayed] == [first.id]
    assert [s.id for s in live_snapshots(fresh)] == [second.id]
    # The record cannot be removed while it is retained.
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=lock_bucket, Key=backend.key(Kind.FORGOTTEN, name),
                         VersionId=s3.head_object(Bucket=lock_bucket,
                                                  Key=backend.key(Kind.FORGOTTEN, name))["VersionId"])


def test_repair_index_on_object_lock_keeps_retained_index_objects(moto, lock_bucket, tree):
    backend = S3Backend(f"s3://{lock_bucket}/repo", client=moto.client("s3"), object_lock_mode="GOVERNANCE",
                        object_lock_days=1)
    backend.retention_period = timedelta(hours=1)
    repository = Repository.init(backend, PASSWORD, FAST_KDF)
    backup(repository, tree)
    # A lost index object can only be a hidden one here (a delete marker): the packs stay.
    [index] = repository.index_names()
    backend.client.delete_object(Bucket=lock_bucket, Key=backend.key(Kind.INDEX, index))
    report = repair_index(Repository.open(backend, PASSWORD))
    assert report.changed and report.packs_added and report.index_objects_written == 1
    assert check(Repository.open(backend, PASSWORD)).ok


def two_snapshots_under_a_short_lock(moto, lock_bucket, tree):
    """A repository on an Object Lock bucket whose objects are locked for 2 s, with two snapshots."""
    backend = S3Backend(f"s3://{lock_bucket}/repo", client=moto.client("s3"), object_lock_mode="GOVERNANCE",
                        object_lock_days=1)
    backend.retention_period = timedelta(seconds=2)
    repository = Repository.init(backend, PASSWORD, FAST_KDF)
    first = backup(repository, tree)
    (tree / "b.bin").write_bytes(os.urandom(1000))
    return backend, repository, first, backup(repository, tree)


def test_maintenance_extends_forget_records(moto, lock_bucket, tree):
    from safehold.repository.immutability import extend_retention

    backend, repository, first, second = two_snapshots_under_a_short_lock(moto, lock_bucket, tree)
    time.sleep(3)
    forget(repository, [ForgetDecision(first, False, [])])
    name = record_name(repository, first.id)
    backend.retention_period = timedelta(hours=2)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    report = extend_retention(repository, [second])
    assert report.objects_extended.get("forgotten") == 1
    assert backend.retention(Kind.FORGOTTEN, name) >= before + timedelta(hours=2)


def test_maintenance_extends_the_verdict_records_of_kept_snapshots(moto, lock_bucket, tree):
    """Marks and scans decide latest-clean: they stay locked as long as the snapshots they judge;
    records of snapshots no longer kept are left to expire."""
    from safehold.repository.immutability import extend_retention, verdict_records_retention
    from safehold.repository.marks import record_verdict

    backend, repository, first, second = two_snapshots_under_a_short_lock(moto, lock_bucket, tree)
    gone = record_verdict(repository, first, "suspicious", "operator", note="encrypted")
    kept = [record_verdict(repository, second, "clean", "operator"),
            record_verdict(repository, second, "suspicious", "scan", result={"verdict": "suspicious", "score": 2.0,
                                                                            "reasons": [], "baseline": 3})]
    time.sleep(3)  # every record's retention has ended
    assert set(verdict_records_retention(repository, [second])) == set(kept)
    backend.retention_period = timedelta(hours=2)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    report = extend_retention(repository, [second])
    assert report.objects_extended.get("verdicts") == 2
    for name in kept:
        assert backend.retention(Kind.VERDICTS, name) >= before + timedelta(hours=2)
    assert backend.retention(Kind.VERDICTS, gone) < before  # first is not kept: its mark may expire
    assert extend_retention(repository, [second]).objects_extended.get("verdicts") is None  # idempotent
