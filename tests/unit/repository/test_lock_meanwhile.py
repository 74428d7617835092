"""Reads made while a lock is acquired (``Lock.acquire(meanwhile=...)``; a backup's history, issue
19): they start only once our claim is stored, their result is dropped with RepositoryLocked on a
conflict, an error they raise releases the lock, and nothing of ours is left behind."""

from __future__ import annotations

import pytest

from safehold import errors
from safehold.repository import Repository
from safehold.repository.backends import Kind
from safehold.repository.backends.memory import MemoryBackend

PASSWORD = b"pw"


@pytest.fixture
def repository(fast_kdf: dict) -> Repository:
    return Repository.init(MemoryBackend(), PASSWORD, fast_kdf)


def lock_names(repository: Repository) -> list[str]:
    return [info.name for info in repository.backend.list(Kind.LOCKS)]


def test_the_reads_start_after_the_claim_is_stored(repository: Repository):
    seen: list[list[str]] = []
    lock = repository.lock(purpose="backup t", meanwhile=lambda: seen.append(lock_names(repository)))
    try:
        assert seen == [[lock.name]]  # made once, with our claim already in the repository
    finally:
        lock.release()
    assert lock_names(repository) == []


def test_a_conflict_drops_the_reads_and_leaves_nothing(repository: Repository, fast_kdf: dict):
    other = Repository.open(repository.backend, PASSWORD)
    prune = other.lock(exclusive=True, purpose="prune")
    ran: list[bool] = []
    try:
        with pytest.raises(errors.RepositoryLocked, match="prune"):
            repository.lock(purpose="backup t", meanwhile=lambda: ran.append(True))
        assert lock_names(repository) == [prune.name]
    finally:
        prune.release()
    assert ran == [True] and repository.held_lock is None


def test_an_error_in_the_reads_releases_the_lock(repository: Repository):
    def fail() -> None:
        raise errors.IntegrityError(detail="a damaged index object")

    with pytest.raises(errors.IntegrityError, match="damaged index"):
        repository.lock(purpose="backup t", meanwhile=fail)
    assert lock_names(repository) == [] and repository.held_lock is None


def test_with_a_wait_the_reads_come_after_the_lock_is_held(repository: Repository):
    seen: list[bool] = []
    lock = repository.lock(purpose="backup t", wait=1.0,
                           meanwhile=lambda: seen.append(repository.held_lock is not None))
    lock.release()
    assert seen == [True]
