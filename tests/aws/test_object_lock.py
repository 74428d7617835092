"""Object Lock in the repository: every data, index and snapshot object is written
locked (single and multipart uploads), forget and prune never try to delete a
retained object and say until when they kept it, and maintenance extends the
retention of what kept snapshots need, and only that."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, Snapshot
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.s3 import MIB, S3Backend
from safehold.repository.check import check
from safehold.repository.immutability import chain_of, extend_retention, packs_named_by
from safehold.repository.pack import BlobType, PackEntry
from safehold.repository.prune import plan_forget, forget, prune
from safehold.repository.retention import RetentionPolicy
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"pw"


def make_repository(moto, bucket: str, period: timedelta, **options) -> Repository:
    backend = S3Backend(f"s3://{bucket}/repo", client=moto.client("s3"), object_lock_mode="GOVERNANCE",
                        object_lock_days=1, **options)
    backend.retention_period = period  # seconds-long locks let a test watch them run out
    return Repository.init(backend, PASSWORD, FAST_KDF)


def backup(repository: Repository, tree: Path) -> Snapshot:
    with FilesSource([str(tree)]).open() as view:
        return Archiver(repository, threads=2).snapshot(view, "docs", None)


def leave_garbage(repository: Repository, seed: bytes) -> tuple[str, str]:
    """What a backup killed before its snapshot leaves: a pack and the index naming it. Returns both names."""
    before_packs = {i.name for i in repository.backend.list(Kind.DATA)}
    before_index = set(repository.index_names())
    repository.save_blob(BlobType.DATA, seed * 1000)
    repository.flush()
    [pack] = {i.name for i in repository.backend.list(Kind.DATA)} - before_packs
    [index] = set(repository.index_names()) - before_index
    return pack, index


def lock_of(s3, bucket: str, key: str) -> tuple[str | None, datetime | None]:
    head = s3.head_object(Bucket=bucket, Key=key)
    return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")


def record_deletes(repository: Repository) -> list[str]:
    deleted: list[str] = []
    repository.backend.client.meta.events.register(
        "before-call.s3.DeleteObject", lambda params, **kwargs: deleted.append(params["Key"]))
    return deleted


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "small.txt").write_bytes(b"hello\n" * 100)
    (root / "big.bin").write_bytes(os.urandom(12 * MIB))
    return root


def test_every_object_but_locks_is_locked_single_and_multipart(moto, lock_bucket, s3, tree):
    started = datetime.now(timezone.utc).replace(microsecond=0)
    repository = make_repository(moto, lock_bucket, timedelta(days=1), multipart_threshold=5 * MIB,
                                 part_size=5 * MIB)
    repository.add_key(b"second", FAST_KDF)
    backup(repository, tree)
    finished = datetime.now(timezone.utc)
    assert len(list(repository.backend.list(Kind.KEYS))) == 2
    multipart = 0
    # The config and the keys too: without them nothing locked can be read.
    for kind in (Kind.CONFIG, Kind.KEYS, Kind.DATA, Kind.INDEX, Kind.SNAPSHOTS):
        names = [i.name for i in repository.backend.list(kind)]
        assert names, kind
        for name in names:
            key = repository.backend.key(kind, name)
            mode, until = lock_of(s3, lock_bucket, key)
            assert mode == "GOVERNANCE", key
            assert started + timedelta(days=1) <= until <= finished + timedelta(days=1, seconds=1), key
            multipart += "-" in s3.head_object(Bucket=lock_bucket, Key=key)["ETag"]
    assert multipart >= 1  # the 12 MiB file's pack went up in parts, and is locked all the same


def test_forget_keeps_retained_snapshots_and_says_until_when(moto, lock_bucket, tree):
    repository = make_repository(moto, lock_bucket, timedelta(hours=1))
    first = backup(repository, tree)
    (tree / "small.txt").write_bytes(b"changed")
    second = backup(repository, tree)
    deletes = record_deletes(repository)
    decisions = plan_forget(repository, {"docs": RetentionPolicy(keep_last=1)})
    removed = forget(repository, decisions)
    assert removed == [] and deletes == []
    [held] = [d for d in decisions if d.snapshot.id == first.id]
    assert held.keep and "retained by Object Lock until" in held.reasons[0]
    until = repository.backend.retention(Kind.SNAPSHOTS, first.id)
    assert until.isoformat(timespec="seconds") in held.reasons[0]
    assert {s.id for s in repository.list_snapshots()} == {first.id, second.id}


def test_prune_never_deletes_retained_objects_and_reports_them(moto, lock_bucket, tree):
    repository = make_repository(moto, lock_bucket, timedelta(hours=1))
    backup(repository, tree)
    pack, index = leave_garbage(repository, b"g")
    deletes = record_deletes(repository)
    report = prune(repository)
    assert deletes == []  # not even tried
    assert report.packs_deleted == report.unindexed_packs_deleted == 0
    kept = {(r["kind"], r["name"]): r for r in report.retained}
    assert set(kept) == {("data", pack)}  # nothing to rewrite, so the index objects were never candidates
    assert repository.backend_has(Kind.INDEX, index)
    # Until the later of its own retention and that of the retained index object naming it (written
    # just after the pack: a second later when the two writes straddle a second's boundary).
    expected = max(repository.backend.retention(Kind.DATA, pack),
                   repository.backend.retention(Kind.INDEX, index)).isoformat(timespec="seconds")
    assert kept[("data", pack)]["until"] == expected and kept[("data", pack)]["reason"] == "retained"
    assert repository.backend_has(Kind.DATA, pack)
    assert check(repository).ok


def test_prune_removes_garbage_once_its_retention_has_ended(moto, lock_bucket, tree, tmp_path):
    repository = make_repository(moto, lock_bucket, timedelta(seconds=2))
    snapshot = backup(repository, tree)
    pack, index = leave_garbage(repository, b"g")
    time.sleep(3)
    report = prune(repository)
    assert report.retained == []
    assert report.packs_deleted + report.unindexed_packs_deleted == 1
    assert not repository.backend_has(Kind.DATA, pack)
    assert not repository.backend_has(Kind.INDEX, index)
    fresh = Repository.open(repository.backend, PASSWORD)
    assert check(fresh).ok and [s.id for s in fresh.list_snapshots()] == [snapshot.id]


def test_a_pack_named_by_a_retained_index_object_is_kept(moto, lock_bucket, tree):
    # An index object outliving its pack would name a missing pack: prune keeps such packs.
    repository = make_repository(moto, lock_bucket, timedelta(seconds=2))
    backup(repository, tree)
    pack, index = leave_garbage(repository, b"g")
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    repository.backend.extend_retention(Kind.INDEX, index, later)
    time.sleep(3)
    assert repository.backend.retention(Kind.DATA, pack) < datetime.now(timezone.utc)  # the pack's own lock ended
    report = prune(repository)
    kept = {(r["kind"], r["name"]): r for r in report.retained}
    assert kept[("data", pack)]["reason"] == "named by a retained index object"
    assert kept[("data", pack)]["until"] == later.isoformat(timespec="seconds")
    assert repository.backend_has(Kind.DATA, pack) and repository.backend_has(Kind.INDEX, index)
    fresh = Repository.open(repository.backend, PASSWORD)
    assert check(fresh).ok


def test_maintenance_extends_what_kept_snapshots_need_and_nothing_else(moto, lock_bucket, tree):
    repository = make_repository(moto, lock_bucket, timedelta(hours=1))
    snapshot = backup(repository, tree)
    pack, _index = leave_garbage(repository, b"g")
    garbage_until = repository.backend.retention(Kind.DATA, pack)
    repository.backend.retention_period = timedelta(hours=3)  # e.g. object_lock.days raised
    before = datetime.now(timezone.utc).replace(microsecond=0)
    report = extend_retention(repository, [snapshot])
    chain = chain_of(repository, [snapshot])
    assert pack not in chain.packs and chain.packs
    [key] = [info.name for info in repository.backend.list(Kind.KEYS)]
    assert report.objects_checked == 2 + 1 + len(chain.index_objects) + len(chain.packs)  # config, key, chain
    assert report.objects_extended == {"config": 1, "keys": 1, "snapshots": 1, "index": len(chain.index_objects),
                                       "data": len(chain.packs)}
    for kind, names in ((Kind.CONFIG, ["config"]), (Kind.KEYS, [key]), (Kind.SNAPSHOTS, [snapshot.id]),
                        (Kind.INDEX, chain.index_objects), (Kind.DATA, chain.packs)):
        for name in names:
            assert repository.backend.retention(kind, name) >= before + timedelta(hours=3)
    assert repository.backend.retention(Kind.DATA, pack) == garbage_until  # left to expire
    again = extend_retention(repository, [snapshot])  # idempotent: nothing is close to its end now
    assert again.objects_extended == {} and again.objects_checked == report.objects_checked


def test_superseded_index_objects_stop_pinning_garbage(moto, lock_bucket, tree):
    # An old index object naming a kept pack and a garbage pack, still retained. Prune must
    # keep the garbage pack (the old index names it) but leave it out of the new index, and
    # maintenance must extend the new index object, not the old one, or the garbage would
    # stay pinned for ever.
    repository = make_repository(moto, lock_bucket, timedelta(seconds=2))
    snapshot = backup(repository, tree)
    garbage, _ = leave_garbage(repository, b"g")
    entries: dict[str, list] = {}
    for blob_id, location in repository.index.entries():
        entries.setdefault(location.pack, []).append(
            PackEntry(location.blob_type, blob_id, location.offset, location.length, location.plain_length))
    repository.backend.retention_period = timedelta(hours=1)
    old = repository.write_index_object(sorted(entries.items()))
    repository.backend.retention_period = timedelta(seconds=2)
    other, _ = leave_garbage(repository, b"h")  # deletable once expired, so prune rewrites the index
    time.sleep(3)
    report = prune(repository)
    assert not repository.backend_has(Kind.DATA, other)
    assert ("data", garbage, "named by a retained index object") in {
        (r["kind"], r["name"], r["reason"]) for r in report.retained}
    assert ("index", old) in {(r["kind"], r["name"]) for r in report.retained}  # replaced, but locked: kept
    assert repository.backend_has(Kind.DATA, garbage) and repository.backend_has(Kind.INDEX, old)
    fresh = Repository.open(repository.backend, PASSWORD)
    new_indexes = set(fresh.index_names()) - {old}
    named = packs_named_by(fresh, new_indexes)
    assert not any(garbage in packs for packs in named.values())
    chain = chain_of(fresh, [snapshot])
    assert set(chain.index_objects) <= new_indexes and garbage not in chain.packs
    assert check(fresh).ok


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_maintenance_locks_the_config_and_the_keys_and_forgets_removed_keys(moto, lock_bucket, s3, tree, mode):
    # A repository whose config and keys were written unlocked (as safehold did before it locked
    # them): maintenance locks them, in the repository's mode, like the data.
    unlocked = S3Backend(f"s3://{lock_bucket}/repo", client=moto.client("s3"))
    Repository.init(unlocked, PASSWORD, FAST_KDF)
    backend = S3Backend(f"s3://{lock_bucket}/repo", client=moto.client("s3"), object_lock_mode=mode,
                        object_lock_days=1)
    backend.retention_period = timedelta(hours=2)
    repository = Repository.open(backend, PASSWORD)
    spare = repository.add_key(b"spare", FAST_KDF)  # written locked at once
    assert lock_of(s3, lock_bucket, backend.key(Kind.KEYS, spare))[0] == mode
    [first] = {i.name for i in backend.list(Kind.KEYS)} - {spare}
    assert lock_of(s3, lock_bucket, backend.key(Kind.KEYS, first)) == (None, None)
    assert lock_of(s3, lock_bucket, backend.key(Kind.CONFIG, "config")) == (None, None)
    snapshot = backup(repository, tree)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    report = extend_retention(repository, [snapshot])
    assert report.objects_extended["config"] == 1 and report.objects_extended["keys"] == 1  # the spare is fresh
    for kind, name in ((Kind.CONFIG, "config"), (Kind.KEYS, first)):
        mode_now, until = lock_of(s3, lock_bucket, backend.key(kind, name))
        assert mode_now == mode and until >= before + timedelta(hours=2), (kind, name)
    # A removed key is hidden (a delete marker): safehold ignores it, maintenance no longer extends it,
    # and its locked version stays stored until its lock ends.
    spare_until = backend.retention(Kind.KEYS, spare)
    assert repository.key_retained_until(spare) == spare_until
    repository.remove_key(spare[:8])
    assert spare not in {i.name for i in backend.list(Kind.KEYS)}
    with pytest.raises(errors.WrongPassword):
        Repository.open(backend, b"spare")
    backend.retention_period = timedelta(hours=6)
    again = extend_retention(repository, [snapshot])
    assert again.missing == [] and again.objects_extended["keys"] == 1  # the first key only
    versions = s3.list_object_versions(Bucket=lock_bucket, Prefix=backend.key(Kind.KEYS, spare))
    [kept] = versions["Versions"]
    assert versions["DeleteMarkers"] and s3.head_object(
        Bucket=lock_bucket, Key=backend.key(Kind.KEYS, spare), VersionId=kept["VersionId"]
    )["ObjectLockRetainUntilDate"] == spare_until
