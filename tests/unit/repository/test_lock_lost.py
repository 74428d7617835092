"""A writer proves it still holds its lock before committing (issue 13, item 1).

Each way of losing the lock (removed, replaced by another holder, heartbeat lapsed, a pack
gone, a failed refresh) makes the archiver raise LockLost and write no snapshot. The pause
itself is simulated by moving the time of the last heartbeat back (what a SIGSTOP does);
tests/e2e/test_stale_lock.py does it with a real stopped process.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, locks
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend
from safehold.repository.backends.memory import MemoryBackend
from safehold.sources.files import FilesSource

PASSWORD = b"pw"


@pytest.fixture(params=["memory", "local"])
def repository(request: pytest.FixtureRequest, fast_kdf: dict, tmp_path: Path) -> Repository:
    backend = MemoryBackend() if request.param == "memory" else LocalBackend(str(tmp_path / "repo"))
    return Repository.init(backend, PASSWORD, fast_kdf)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        (root / f"file{i}").write_bytes(os.urandom(300_000))
    return root


def backup(repository: Repository, root: Path, before_commit=None):
    archiver = Archiver(repository, threads=2)
    with FilesSource([str(root)]).open() as view:
        if before_commit is not None:
            flush_pack = repository.flush_pack

            def flush_then_interfere() -> None:
                flush_pack()
                before_commit()

            repository.flush_pack = flush_then_interfere  # the moment a paused run resumes at
        return archiver.snapshot(view, "t", None)


def snapshots(repository: Repository) -> list[str]:
    return [info.name for info in repository.backend.list(Kind.SNAPSHOTS)]


def pause(lock: locks.Lock, seconds: float) -> None:
    """What SIGSTOP does to a holder: its last heartbeat recedes into the past."""
    clock, wall = lock._refreshed
    lock._refreshed = (clock - seconds, wall - seconds)


def test_a_held_lock_commits(repository: Repository, source: Path) -> None:
    with repository.lock(purpose="backup t"):
        snapshot = backup(repository, source)
    assert snapshots(repository) == [snapshot.id]


def test_lock_removed_before_the_commit(repository: Repository, source: Path) -> None:
    with repository.lock(purpose="backup t") as lock:
        with pytest.raises(errors.LockLost, match="backup t lost its lock on the repository: .* was removed"):
            backup(repository, source, lambda: repository.backend.delete(Kind.LOCKS, lock.name))
        assert snapshots(repository) == []
        assert repository.index_names() == [], "no index may be written after the lock is lost"


def test_lock_replaced_by_another_holder(repository: Repository, source: Path) -> None:
    def replace(lock: locks.Lock) -> None:
        document = {"exclusive": True, "hostname": "elsewhere", "pid": 4242, "purpose": "prune",
                    "created": time.time(), "heartbeat": time.time(), "namespace": "elsewhere:1"}
        repository.backend.put(Kind.LOCKS, lock.name,
                               repository.cipher.encrypt(json.dumps(document).encode(), locks._AAD))

    with repository.lock(purpose="backup t") as lock:
        with pytest.raises(errors.LockLost, match="now belongs to prune \\(pid 4242 on elsewhere\\)"):
            backup(repository, source, lambda: replace(lock))
    assert snapshots(repository) == []


def test_heartbeat_lapsed_past_the_hold_limit(repository: Repository, source: Path) -> None:
    with repository.lock(purpose="backup t") as lock:
        with pytest.raises(errors.LockLost, match="no heartbeat reached the repository for 1800s") as raised:
            backup(repository, source, lambda: pause(lock, locks.STALE_AFTER))
        assert raised.value.exit_code == 25 and "locks go stale after 1800s" in raised.value.hint
    assert snapshots(repository) == []


def test_a_lapse_within_the_hold_limit_still_commits(repository: Repository, source: Path) -> None:
    with repository.lock(purpose="backup t") as lock:
        backup(repository, source, lambda: pause(lock, locks.hold_limit() - 60))
    assert len(snapshots(repository)) == 1


def test_a_pack_it_wrote_is_missing(repository: Repository, source: Path) -> None:
    def prune_one() -> None:
        repository.backend.delete(Kind.DATA, repository.written_packs[0])

    with repository.lock(purpose="backup t"):
        with pytest.raises(errors.LockLost, match="1 of the 1 pack\\(s\\) it wrote are gone"):
            backup(repository, source, prune_one)
    assert snapshots(repository) == []


def test_a_lost_heartbeat_stops_the_run_before_it_writes_anything(repository: Repository, source: Path) -> None:
    with repository.lock(purpose="backup t") as lock:
        lock.lose("the lock could not be refreshed for 1700s: connection reset")
        with pytest.raises(errors.LockLost, match="connection reset"):
            backup(repository, source)
        assert repository.stats.blobs_added == 0 and repository.stats.packs_written == 0
    assert snapshots(repository) == []


def test_refresh_never_recreates_a_removed_lock(repository: Repository) -> None:
    with repository.lock(purpose="backup t") as lock:
        repository.backend.delete(Kind.LOCKS, lock.name)
        with pytest.raises(errors.LockLost, match="was removed"):
            lock.refresh()
        assert [info.name for info in repository.backend.list(Kind.LOCKS)] == []
        assert lock.lost is not None
        with pytest.raises(errors.LockLost):
            repository.ensure_lock()


def test_a_failed_refresh_is_retried_then_loses_the_lock(repository: Repository, monkeypatch: pytest.MonkeyPatch,
                                                         source: Path) -> None:
    monkeypatch.setenv(locks.STALE_AFTER_ENV, "1.5")  # refresh every 0.1 s, hold limit 1.3 s
    failing = {"on": False}
    real_write = locks.Lock._write

    def write(self: locks.Lock) -> None:
        if failing["on"]:
            raise OSError("connection reset")
        real_write(self)

    monkeypatch.setattr(locks.Lock, "_write", write)
    with repository.lock(purpose="backup t") as lock:
        failing["on"] = True
        time.sleep(0.5)
        assert lock.lost is None, "one failed refresh is transient: retried at the next tick"
        deadline = time.monotonic() + 10
        while lock.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.lost is not None and "could not be refreshed" in lock.lost and "connection reset" in lock.lost
        with pytest.raises(errors.LockLost, match="could not be refreshed"):
            backup(repository, source)
    assert snapshots(repository) == []


def test_stale_after_can_be_shortened_and_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    assert locks.stale_after() == locks.STALE_AFTER and locks.refresh_interval() == locks.REFRESH
    monkeypatch.setenv(locks.STALE_AFTER_ENV, "3")
    assert locks.stale_after() == 3 and locks.refresh_interval() == pytest.approx(0.2)
    assert locks.hold_limit() == pytest.approx(2.6)
    monkeypatch.setenv(locks.STALE_AFTER_ENV, "-1")
    with pytest.raises(ValueError, match="SAFEHOLD_LOCK_STALE_AFTER"):
        locks.stale_after()


def test_the_identity_check_ignores_the_heartbeat_field(repository: Repository) -> None:
    """Our own earlier heartbeat (another ``heartbeat`` value) is still ours."""
    with repository.lock(purpose="backup t") as lock:
        lock._write()
        lock.verify()
        assert lock.lost is None
        assert socket.gethostname() in json.loads(
            repository.cipher.decrypt(repository.backend.get(Kind.LOCKS, lock.name), locks._AAD))["hostname"]


def test_the_last_proof_refreshes_the_heartbeat(repository: Repository, source: Path) -> None:
    """After the final proof the snapshot write has the whole stale age, not what was left of it."""
    with repository.lock(purpose="backup t") as lock:
        backup(repository, source, lambda: pause(lock, locks.hold_limit() - 60))
        assert lock.lapsed() < 60
        document = json.loads(repository.cipher.decrypt(repository.backend.get(Kind.LOCKS, lock.name), locks._AAD))
        assert time.time() - document["heartbeat"] < 60
