"""The restore's data-fetch layer (``repository/prefetch.py``) against the moto server: merged
range reads return exactly the blobs, memory stays within its bound, and a truncated or damaged
range is reported as damage naming the blob and the pack, never handed out."""

from __future__ import annotations

import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import moto_support
from safehold import errors
from safehold.repository import Repository
from safehold.repository import repository as repository_module
from safehold.repository.backends import Kind
from safehold.repository.backends.s3 import S3Backend
from safehold.repository.pack import BlobType
from safehold.repository.prefetch import PrefetchReader

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
KIB = 1024


@pytest.fixture(scope="module")
def stored(request):
    """One repository on moto with 240 blobs of 1-64 KiB in several packs (small packs, so ranges
    cross pack boundaries), shared by the tests of this module; returns (repository, {id: data})."""
    moto = moto_support.shared_server()
    bucket = moto_support.make_bucket(moto, object_lock=False)
    patch = pytest.MonkeyPatch()
    patch.setattr(repository_module, "PACK_TARGET_SIZE", 1024 * KIB)
    backend = S3Backend(f"s3://{bucket}/repo", client=moto.client("s3"))
    repository = Repository.init(backend, b"pw", FAST_KDF)
    generator = random.Random(19)
    blobs = {}
    for _ in range(240):
        data = os.urandom(generator.randint(1, 64) * KIB)
        blob_id, _ = repository.save_blob(BlobType.DATA, data)
        blobs[blob_id] = data
    repository.flush()
    patch.undo()
    request.addfinalizer(patch.undo)
    return repository, blobs, moto, bucket


def read_all(reader: PrefetchReader, order: list[bytes], threads: int = 4) -> list[bytes]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(reader.read_blob, order))


def test_merged_ranges_return_exactly_the_blobs(stored):
    repository, blobs, _, _ = stored
    order = list(blobs)
    order = order[:100] + order[50:60] + order[100:]  # repeated blobs, as deduplicated chunks are
    with PrefetchReader(repository, iter(order), connections=8, memory=4 * 1024 * KIB,
                        max_request=512 * KIB) as reader:
        assert read_all(reader, order) == [blobs[b] for b in order]
        stats = reader.stats
    assert stats.direct_reads <= 2  # the first read may come before the planner announced it
    assert stats.requests < len(order) // 4, stats  # neighbours merged into few range requests
    assert stats.bytes_fetched < 1.2 * sum(len(blobs[b]) for b in order) + 512 * KIB


def test_memory_stays_within_the_bound_when_blobs_are_skipped(stored):
    """The destination skips blobs (a damaged file's later chunks): the reader neither waits for
    them forever nor holds them beyond its budget."""
    repository, blobs, _, _ = stored
    order = list(blobs) * 3
    wanted = [b for i, b in enumerate(order) if i % 3]
    memory = 768 * KIB
    with PrefetchReader(repository, iter(order), connections=4, memory=memory, max_request=256 * KIB,
                        slack=8) as reader:
        assert read_all(reader, wanted, threads=1) == [blobs[b] for b in wanted]
        assert reader.stats.peak_held_bytes <= memory
        assert reader.stats.evicted_groups > 0


def test_a_tree_repeating_one_small_blob_cannot_grow_the_bookkeeping(stored, monkeypatch):
    """Bytes alone do not bound a crafted plan (one tiny blob listed over and over): the announced
    blobs are bounded too."""
    from safehold.repository import prefetch

    monkeypatch.setattr(prefetch, "MAX_WINDOW_BLOBS", 8)
    repository, blobs, _, _ = stored
    small = min(blobs, key=lambda b: len(blobs[b]))
    order = [small] * 400
    with PrefetchReader(repository, iter(order), connections=2) as reader:
        assert read_all(reader, order, threads=1) == [blobs[small]] * 400
        assert reader.stats.peak_held_blobs <= 4 * 8


def test_a_blob_outside_the_plan_is_read_directly(stored):
    repository, blobs, _, _ = stored
    order = list(blobs)
    with PrefetchReader(repository, iter(order[:10]), connections=2) as reader:
        assert reader.read_blob(order[200]) == blobs[order[200]]
        assert reader.stats.direct_reads == 1


def _copy_repository(stored) -> tuple[Repository, dict, object]:
    """A private copy of the shared repository's objects (so damaging one leaves the others)."""
    repository, blobs, moto, bucket = stored
    s3 = moto.client("s3")
    target = moto_support.make_bucket(moto, object_lock=False)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            s3.copy_object(Bucket=target, Key=entry["Key"], CopySource={"Bucket": bucket, "Key": entry["Key"]})
    copy = Repository.open(S3Backend(f"s3://{target}/repo", client=s3), b"pw")
    copy.load_index()
    return copy, blobs, s3


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_truncated_or_damaged_range_is_named_never_returned(stored, damage):
    copy, blobs, s3 = _copy_repository(stored)
    order = list(blobs)
    victim = order[120]
    location = copy.locate(victim)
    key = copy.backend.key(Kind.DATA, location.pack)
    body = bytearray(s3.get_object(Bucket=copy.backend.bucket, Key=key)["Body"].read())
    if damage == "truncate":
        body = body[: location.offset + location.length // 2]  # the pack ends inside the blob
    else:
        body[location.offset + location.length // 2] ^= 0x01
    s3.put_object(Bucket=copy.backend.bucket, Key=key, Body=bytes(body))
    results: dict[bytes, object] = {}

    def read(blob_id: bytes) -> None:
        try:
            results[blob_id] = reader.read_blob(blob_id)
        except errors.IntegrityError as exc:
            results[blob_id] = exc

    with PrefetchReader(copy, iter(order), connections=4, max_request=512 * KIB) as reader:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(read, order))
    failure = results[victim]
    assert isinstance(failure, errors.IntegrityError)
    assert location.pack in str(failure) and victim.hex()[:16] in str(failure)
    if damage == "truncate":
        assert "truncated" in str(failure)
    for blob_id, result in results.items():  # everything else is intact, or named as damaged
        if not isinstance(result, errors.IntegrityError):
            assert result == blobs[blob_id]
        else:
            assert copy.locate(blob_id).pack == location.pack


def test_a_flush_fetches_what_was_planned_before_the_plan_ends(stored):
    """A restore of one file from a large snapshot: the planner reaches the file, then walks the
    rest of the tree for a long time. The FLUSH after the file fetches its blobs at once (without
    it they waited for a full window or the plan's end, and the destination read them one by one)."""
    import threading
    import time

    from safehold.repository.prefetch import FLUSH, FLUSH_BYTES

    repository, blobs, _, _ = stored
    order, size = [], 0
    for blob_id, data in blobs.items():
        order.append(blob_id)
        size += len(data)
        if size > FLUSH_BYTES:
            break
    walked = threading.Event()

    def plan():
        yield from order
        yield FLUSH
        walked.wait(30)  # the rest of a large tree, still being walked

    try:
        with PrefetchReader(repository, plan(), connections=4) as reader:
            deadline = time.monotonic() + 5
            while reader.stats.requests == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert reader.stats.requests > 0, "nothing fetched before the plan ended"
            assert read_all(reader, order) == [blobs[b] for b in order]
            assert reader.stats.direct_reads == 0
    finally:
        walked.set()


@pytest.mark.parametrize("value, expected", [(None, 8), ("24", 24), ("0", 1)])
def test_the_largest_range_request_is_tunable(stored, monkeypatch, value, expected):
    """SAFEHOLD_RESTORE_REQUEST_MIB sets the reader's largest range (24: whole packs, fewer requests
    on a machine short of CPU); the default stays 8 MiB (more connections busy on S3); never below 1 MiB."""
    from types import SimpleNamespace

    from safehold.engine.restore import _reader

    repository, _, _, _ = stored
    if value is None:
        monkeypatch.delenv("SAFEHOLD_RESTORE_REQUEST_MIB", raising=False)
    else:
        monkeypatch.setenv("SAFEHOLD_RESTORE_REQUEST_MIB", value)
    monkeypatch.setattr(repository, "read_tree", lambda snapshot: iter(()))  # an empty plan
    reader = _reader(repository, SimpleNamespace(kind="files"), {"kind": "directory"}, None)
    try:
        assert isinstance(reader, PrefetchReader)
        assert reader.max_request == expected * 1024 * KIB
    finally:
        reader.close()
