"""Optional backend abilities are declared protocols, checked here against every concrete backend
(callers use ``isinstance``, never ``getattr`` with a default that hides a misspelt name)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from safehold.repository.backends import (
    Backend,
    DirectoryBackend,
    ImmutabilityFactsBackend,
    RetentionBackend,
    TemporaryFilesBackend,
    retention_of,
)
from safehold.repository.backends.local import LocalBackend
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.backends.s3 import S3Backend


def test_local_backend(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    assert isinstance(backend, Backend)
    assert isinstance(backend, DirectoryBackend) and isinstance(backend, TemporaryFilesBackend)
    assert not isinstance(backend, RetentionBackend) and not isinstance(backend, ImmutabilityFactsBackend)
    assert retention_of(backend) is None


def test_memory_backend() -> None:
    backend = MemoryBackend()
    assert isinstance(backend, Backend)
    for ability in (DirectoryBackend, TemporaryFilesBackend, RetentionBackend, ImmutabilityFactsBackend):
        assert not isinstance(backend, ability)
    assert retention_of(backend) is None


def test_s3_backend_enforces_retention_only_with_object_lock() -> None:
    client = object()  # never called: the constructor only keeps it
    plain = S3Backend("s3://bucket/prefix", client=client)
    locked = S3Backend("s3://bucket/prefix", object_lock_mode="COMPLIANCE", object_lock_days=30, client=client)
    for backend in (plain, locked):
        assert isinstance(backend, Backend)
        assert isinstance(backend, RetentionBackend)
        assert isinstance(backend, TemporaryFilesBackend) and isinstance(backend, ImmutabilityFactsBackend)
        assert not isinstance(backend, DirectoryBackend)
    assert retention_of(plain) is None
    assert retention_of(locked) is locked and locked.retention_period == timedelta(days=30)
