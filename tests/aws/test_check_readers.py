"""``check --read-data`` reads packs of a remote (S3) repository several at a time
(``check.REMOTE_READERS``): a connection to S3 in another region carries tens of MiB/s, so reading
one pack per core left a check at that rate times two. A local repository keeps one per core."""

from __future__ import annotations

import os
import threading
import time

import moto_support
import pytest

from safehold.repository import Repository
from safehold.repository import check as check_module
from safehold.repository import repository as repository_module
from safehold.repository.backends import Kind
from safehold.repository.backends.s3 import S3Backend
from safehold.repository.check import check
from safehold.repository.pack import BlobType

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


class CountedReads(S3Backend):
    """Counts the whole-pack reads in progress at once (each takes at least 50 ms, as a pack read
    across a region does)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.guard = threading.Lock()
        self.reading = self.peak = 0

    def get(self, kind, name, offset=0, length=None):
        if kind is not Kind.DATA or length is not None:
            return super().get(kind, name, offset, length)
        with self.guard:
            self.reading += 1
            self.peak = max(self.peak, self.reading)
        try:
            time.sleep(0.05)
            return super().get(kind, name, offset, length)
        finally:
            with self.guard:
                self.reading -= 1


def repository_of_packs(monkeypatch, packs: int) -> tuple[CountedReads, Repository]:
    """A repository on moto with ``packs`` packs of one blob each, opened afresh."""
    moto = moto_support.shared_server()
    bucket = moto_support.make_bucket(moto, object_lock=False)
    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", 64 * 1024)
    backend = CountedReads(f"s3://{bucket}/repo", client=moto.client("s3"))
    repository = Repository.init(backend, b"pw", FAST_KDF)
    for _ in range(packs):
        repository.save_blob(BlobType.DATA, os.urandom(70 * 1024))  # a pack each
    repository.flush()
    return backend, Repository.open(backend, b"pw")


def test_a_remote_repository_is_checked_several_packs_at_a_time(monkeypatch) -> None:
    backend, opened = repository_of_packs(monkeypatch, 24)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    report = check(opened, read_data_percent=100)
    assert report.ok and report.packs_read == 24, report
    assert 4 <= backend.peak <= check_module.REMOTE_READERS, backend.peak  # before: 2 (the cores)


def test_an_explicit_reader_count_still_wins(monkeypatch) -> None:
    backend, opened = repository_of_packs(monkeypatch, 6)
    report = check(opened, read_data_percent=100, threads=1)
    assert report.ok and backend.peak == 1
