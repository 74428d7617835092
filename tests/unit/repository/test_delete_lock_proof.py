"""Prune, forget and repair index prove their lock before they delete (issue 13, follow-up of item 1).

Before each destructive step a holder re-reads its own lock, checks its heartbeat, and checks that
no lock its own would have refused is held beside it; a contender still acquiring (a *claim*) that
backs off is no conflict. Any failure raises LockLost with nothing (more) deleted. The pause is
simulated here by moving the last heartbeat back; tests/e2e/test_stale_prune_lock.py stops a real
prune with SIGSTOP.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, locks
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.prune import ForgetDecision, forget, prune
from safehold.repository.reindex import repair_index
from safehold.sources.files import FilesSource

PASSWORD = b"pw"


@pytest.fixture(params=["memory", "local"])
def repository(request: pytest.FixtureRequest, fast_kdf: dict, tmp_path: Path) -> Repository:
    backend = MemoryBackend() if request.param == "memory" else LocalBackend(str(tmp_path / "repo"))
    return Repository.init(backend, PASSWORD, fast_kdf)


def backup(repository: Repository, root: Path):
    with repository.lock(purpose="backup t"), FilesSource([str(root)]).open() as view:
        repository.load_index()
        return Archiver(repository, threads=2).snapshot(view, "t", None)


@pytest.fixture
def garbage(repository: Repository, tmp_path: Path):
    """Two snapshots of different data; returns them (the first is what tests forget)."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "a").write_bytes(os.urandom(400_000))
    first = backup(repository, root)
    (root / "a").write_bytes(os.urandom(400_000))
    second = backup(repository, root)
    return first, second


def stored(repository: Repository) -> dict[Kind, set[str]]:
    return {kind: {info.name for info in repository.backend.list(kind)}
            for kind in (Kind.DATA, Kind.INDEX, Kind.SNAPSHOTS, Kind.FORGOTTEN)}


def other_lock(repository: Repository, exclusive: bool = False) -> locks.Lock:
    """Another holder's lock object, written without acquiring (what a host that judged ours stale does)."""
    return locks.Lock(repository, exclusive, "backup other")


def pause(lock: locks.Lock, seconds: float) -> None:
    clock, wall = lock._refreshed
    lock._refreshed = (clock - seconds, wall - seconds)


def test_a_held_lock_beside_an_exclusive_one_stops_prune_before_any_delete(repository, garbage) -> None:
    first, _ = garbage
    with repository.lock(exclusive=True, purpose="prune"):
        forget(repository, [ForgetDecision(first, False, [])])
        before = stored(repository)
        other_lock(repository)._write()  # held: no claim mark
        with pytest.raises(errors.LockLost, match="prune lost its lock.*backup other .* took a shared lock beside"):
            prune(repository)
    after = stored(repository)
    assert after[Kind.DATA] >= before[Kind.DATA] and after[Kind.INDEX] >= before[Kind.INDEX], \
        "prune deleted something after its lock was lost"


def test_a_lapsed_heartbeat_stops_prune_before_any_delete(repository, garbage) -> None:
    first, _ = garbage
    with repository.lock(exclusive=True, purpose="prune") as lock:
        forget(repository, [ForgetDecision(first, False, [])])
        before = stored(repository)
        pause(lock, locks.stale_after())
        with pytest.raises(errors.LockLost, match="no heartbeat reached the repository"):
            prune(repository)
    after = stored(repository)
    assert after[Kind.DATA] >= before[Kind.DATA] and after[Kind.INDEX] >= before[Kind.INDEX]


def test_a_claim_that_backs_off_is_no_conflict_and_prune_goes_on(repository, garbage) -> None:
    first, _ = garbage
    with repository.lock(exclusive=True, purpose="prune"):
        forget(repository, [ForgetDecision(first, False, [])])
        before = stored(repository)
        contender = other_lock(repository)
        contender._create()  # a claim: it will see our lock and delete its own
        timer = threading.Timer(0.1, repository.backend.delete, (Kind.LOCKS, contender.name))
        timer.start()
        report = prune(repository)
        timer.join()
    assert report.packs_deleted + report.unindexed_packs_deleted >= 1
    assert stored(repository)[Kind.DATA] < before[Kind.DATA]


def test_a_claim_left_standing_is_no_conflict(repository) -> None:
    with repository.lock(exclusive=True, purpose="prune"):
        other_lock(repository)._create()  # a contender stalled between its claim and its listing
        repository.verify_before_delete()


def test_a_claim_that_goes_ahead_is_a_conflict(repository) -> None:
    with repository.lock(exclusive=True, purpose="prune") as lock:
        contender = other_lock(repository)
        contender._create()
        timer = threading.Timer(0.1, contender._write)  # it judged ours stale: claim -> held
        timer.start()
        with pytest.raises(errors.LockLost, match="took a shared lock beside ours"):
            repository.verify_before_delete()
        timer.join()
        assert lock.lost is not None


def test_a_shared_lock_beside_a_shared_one_is_no_conflict(repository) -> None:
    with repository.lock(purpose="forget"):
        other_lock(repository)._write()
        repository.verify_before_delete()


def test_an_exclusive_lock_beside_forget_stops_it_before_any_record_or_delete(repository, garbage) -> None:
    first, _ = garbage
    with repository.lock(purpose="forget"):
        before = stored(repository)
        other_lock(repository, exclusive=True)._write()
        with pytest.raises(errors.LockLost, match="took an exclusive lock beside ours"):
            forget(repository, [ForgetDecision(first, False, [])])
    assert stored(repository) == before, "forget wrote a record or deleted a snapshot after losing its lock"


def test_forget_stops_at_the_next_snapshot_once_the_lock_is_lost(repository, garbage) -> None:
    first, second = garbage
    with repository.lock(purpose="forget") as lock:
        delete = repository.backend.delete

        def delete_then_lose(kind, name):
            delete(kind, name)
            if kind is Kind.SNAPSHOTS:
                lock.lose("test: lost after the first delete")

        repository.backend.delete = delete_then_lose
        with pytest.raises(errors.LockLost, match="lost after the first delete"):
            forget(repository, [ForgetDecision(first, False, []), ForgetDecision(second, False, [])])
        repository.backend.delete = delete
    assert stored(repository)[Kind.SNAPSHOTS] == {second.id}


def test_repair_index_deletes_no_index_object_once_the_lock_is_lost(repository, garbage) -> None:
    # A lost index object makes repair index rewrite the index (and delete the old objects).
    repository.backend.delete(Kind.INDEX, sorted(repository.index_names())[0])
    fresh = Repository.open(repository.backend, PASSWORD)
    with fresh.lock(exclusive=True, purpose="repair index"):
        before = stored(fresh)
        other_lock(fresh)._write()
        with pytest.raises(errors.LockLost):
            repair_index(fresh)
    after = stored(fresh)[Kind.INDEX]
    assert after >= before[Kind.INDEX] and after != before[Kind.INDEX], "the new index is written, nothing deleted"


def test_acquiring_ends_with_a_held_lock(repository) -> None:
    with repository.lock(purpose="backup t") as lock:
        [info] = locks.list_locks(repository)
        assert info.name == lock.name and info.claim is False


def test_a_contender_backs_off_from_a_claim_too(repository) -> None:
    other_lock(repository, exclusive=True)._create()
    with pytest.raises(errors.RepositoryLocked):
        repository.lock(purpose="backup t")
