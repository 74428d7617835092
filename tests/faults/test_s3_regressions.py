"""Regressions the S3 fault campaign found, each pinned with one deterministic fault of the proxy.

- A GET whose body arrives shorter than its Content-Length (or is cut by a reset) was not
  retried: botocore retries requests, not the reading of a body, so ``check --read-data``
  reported a healthy pack as damaged (exit 19) and a restore failed.
- A lock's conditional PUT (``If-None-Match: *``) whose answer was lost after S3 stored it was
  retried by botocore and answered 412: the command died with an internal error (exit 70).
"""

from __future__ import annotations

import pytest

import moto_support
from faults_support import FaultProxy

pytestmark = pytest.mark.slow
PASSWORD = b"regression password"
FAST = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


@pytest.fixture
def proxy(moto):
    proxy = FaultProxy(moto.url, seed=1, rate=0.0, stall=1.0)
    yield proxy
    proxy.stop()


@pytest.fixture
def repository(moto, proxy, monkeypatch):
    from safehold.repository import Repository
    from safehold.repository.backends.s3 import S3Backend

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = moto_support.make_bucket(moto)
    backend = S3Backend(f"s3://{bucket}/repo", region=moto_support.REGION, endpoint_url=proxy.url)
    return Repository.init(backend, PASSWORD, FAST)


def test_a_truncated_body_is_read_again(repository, proxy):
    from safehold.repository.backends import Kind

    data = bytes(range(256)) * 4096
    repository.backend.put(Kind.DATA, "ab" * 32, data)
    proxy.control("next/truncate/GET")
    assert repository.backend.get(Kind.DATA, "ab" * 32) == data
    assert proxy.stats()["truncate"] == 1


def test_a_lock_whose_answer_was_lost_is_still_taken(repository, proxy):
    from safehold.repository.locks import list_locks

    proxy.control("next/reset-after/PUT")
    lock = repository.lock(purpose="regression")
    try:
        assert proxy.stats()["reset-after"] == 1
        assert [info.name for info in list_locks(repository)] == [lock.name]
    finally:
        lock.release()
