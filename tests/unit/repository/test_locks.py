"""Repository locks: shared and exclusive, staleness, unlock, waiting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from safehold import errors
from safehold.repository import Repository, locks
from safehold.repository.backends import Kind
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.locks import STALE_AFTER, LockInfo, list_locks, remove_locks

pytestmark = pytest.mark.usefixtures("fast_kdf")

PASSWORD = b"pw"


@pytest.fixture
def repository(fast_kdf: dict) -> Repository:
    return Repository.init(MemoryBackend(), PASSWORD, fast_kdf)


@pytest.fixture
def other(repository: Repository) -> Repository:
    """A second process's view of the same repository."""
    return Repository.open(repository.backend, PASSWORD)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def plant_lock(repository: Repository, name: str, **fields) -> None:
    """Write a lock object as another holder would have (possibly long ago, possibly dead)."""
    now = time.time()
    document = {"exclusive": False, "hostname": socket.gethostname(), "pid": os.getpid(), "purpose": "backup x",
                "created": now, "heartbeat": now} | fields
    # Our pid namespace unless the lock claims another host.
    document.setdefault("namespace", locks.process_namespace() if document["hostname"] == socket.gethostname()
                        else f"{document['hostname']}:elsewhere")
    data = repository.cipher.encrypt(json.dumps(document).encode(), locks._AAD)
    repository.backend.put(Kind.LOCKS, name, data)


def lock_names(repository: Repository) -> set[str]:
    return {info.name for info in repository.backend.list(Kind.LOCKS)}


def test_shared_locks_coexist(repository: Repository, other: Repository) -> None:
    with repository.lock() as first, other.lock() as second:
        assert lock_names(repository) == {first.name, second.name}
        assert {lock.exclusive for lock in list_locks(repository)} == {False}
    assert lock_names(repository) == set()


@pytest.mark.parametrize(("held_exclusive", "wanted_exclusive"), [(False, True), (True, False), (True, True)])
def test_conflicting_locks_raise_repository_locked(repository: Repository, other: Repository,
                                                   held_exclusive: bool, wanted_exclusive: bool) -> None:
    with repository.lock(exclusive=held_exclusive, purpose="the holder") as held:
        with pytest.raises(errors.RepositoryLocked) as caught:
            other.lock(exclusive=wanted_exclusive)
        assert "the holder" in str(caught.value) and str(os.getpid()) in str(caught.value)
        assert caught.value.exit_code == 14
        assert lock_names(repository) == {held.name}  # the loser removed its own lock
    with other.lock(exclusive=wanted_exclusive):  # free again
        pass


def test_lock_objects_are_encrypted(repository: Repository) -> None:
    with repository.lock(purpose="secret purpose") as lock:
        stored = repository.backend.get(Kind.LOCKS, lock.name)
        # The JSON's own keys stand for the plaintext: a short host name ("vm") turns up by chance in
        # a few hundred random bytes about once in 300 runs, so it proves nothing either way.
        assert b"secret purpose" not in stored and b'"hostname"' not in stored and b'"exclusive"' not in stored
        [info] = list_locks(repository)
        assert (info.purpose, info.pid, info.hostname, info.exclusive) == (
            "secret purpose", os.getpid(), socket.gethostname(), False)


def test_a_lock_of_a_dead_process_on_this_host_is_stale_and_does_not_block(repository: Repository) -> None:
    plant_lock(repository, "dead" * 8, exclusive=True, pid=dead_pid())
    [info] = list_locks(repository)
    assert info.is_stale()
    with repository.lock(exclusive=True):
        pass


def test_a_lock_written_with_a_dead_pid_via_getpid(repository: Repository, other: Repository,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pid = dead_pid()
    monkeypatch.setattr(locks.os, "getpid", lambda: pid)
    crashed = repository.lock(exclusive=True)
    crashed._stop.set()  # the process "died": no more heartbeats, lock left behind
    monkeypatch.undo()
    assert [info.pid for info in list_locks(repository)] == [pid]
    with other.lock(exclusive=True):
        pass


def test_a_lock_from_another_pid_namespace_with_our_hostname_is_not_judged_by_pid(repository: Repository) -> None:
    # Two containers may share a hostname; a pid we cannot see there may be alive.
    plant_lock(repository, "ns" * 16, exclusive=True, pid=dead_pid(), namespace="same-host:other-boot:1")
    [info] = list_locks(repository)
    assert not info.is_stale()
    with pytest.raises(errors.RepositoryLocked):
        repository.lock()


def test_a_lock_of_a_live_process_on_another_host_is_not_stale(repository: Repository) -> None:
    plant_lock(repository, "far" * 8, exclusive=True, hostname="elsewhere.example", pid=dead_pid())
    [info] = list_locks(repository)
    assert not info.is_stale()  # we cannot see other hosts' processes: only the heartbeat counts
    with pytest.raises(errors.RepositoryLocked):
        repository.lock()


def test_a_lock_of_a_live_local_process_is_not_stale(repository: Repository) -> None:
    plant_lock(repository, "live" * 8, exclusive=True, pid=os.getppid())
    assert not list_locks(repository)[0].is_stale()
    with pytest.raises(errors.RepositoryLocked):
        repository.lock()


def test_a_lock_whose_pid_was_reused_by_another_process_is_stale(repository: Repository) -> None:
    # Found by the kill campaign (tests/faults): a killed prune's lock, left in the repository,
    # came back to life 13 minutes later when a busy host gave its pid to another process.
    reused = os.getppid()  # alive, but started at another time than the holder recorded
    plant_lock(repository, "reuse" * 6 + "ab", exclusive=True, pid=reused,
               process_started=locks._process_start(reused) + 1)
    [info] = list_locks(repository)
    assert info.is_stale()
    with repository.lock(exclusive=True):
        pass


def test_a_live_holder_is_told_apart_by_its_start_time(repository: Repository, other: Repository) -> None:
    holder = repository.lock(exclusive=True)
    try:
        [info] = list_locks(other)
        assert info.process_started == locks._process_start(os.getpid()) is not None
        assert not info.is_stale()
        with pytest.raises(errors.RepositoryLocked):
            other.lock()
    finally:
        holder.release()


def test_a_lock_without_a_recent_heartbeat_is_stale(repository: Repository) -> None:
    now = time.time()
    plant_lock(repository, "old" * 8, exclusive=True, hostname="elsewhere.example",
               created=now - 3 * STALE_AFTER, heartbeat=now - STALE_AFTER - 60)
    [info] = list_locks(repository)
    assert info.is_stale()
    assert not info.is_stale(now=info.heartbeat + STALE_AFTER - 1)
    assert info.is_stale(now=info.heartbeat + STALE_AFTER + 1)
    with repository.lock(exclusive=True):
        pass


def test_is_stale_boundaries() -> None:
    info = LockInfo("n", False, "elsewhere.example", 1, "backup", created=0.0, heartbeat=1000.0)
    assert not info.is_stale(now=1000.0 + STALE_AFTER)
    assert info.is_stale(now=1000.0 + STALE_AFTER + 0.001)


def test_an_unreadable_lock_blocks_like_an_exclusive_one(repository: Repository) -> None:
    repository.backend.put(Kind.LOCKS, "junk" * 8, b"written with another key")
    [info] = list_locks(repository)
    assert info.exclusive and not info.is_stale()
    with pytest.raises(errors.RepositoryLocked):
        repository.lock()


def test_remove_locks_removes_only_stale_ones_unless_asked(repository: Repository, other: Repository) -> None:
    now = time.time()
    plant_lock(repository, "dead" * 8, pid=dead_pid())
    plant_lock(repository, "old" * 8, hostname="elsewhere.example", heartbeat=now - STALE_AFTER - 1)
    live = other.lock()
    try:
        removed = remove_locks(repository)
        assert {lock.name for lock in removed} == {"dead" * 8, "old" * 8}
        assert lock_names(repository) == {live.name}
        removed = remove_locks(repository, all_locks=True)
        assert [lock.name for lock in removed] == [live.name]
        assert lock_names(repository) == set()
    finally:
        live.release()


def test_wait_retries_until_the_holder_releases(repository: Repository, other: Repository,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    holder = repository.lock(exclusive=True, purpose="prune")
    backend = other.backend
    conflicts = threading.Event()
    attempts = []
    real_delete = MemoryBackend.delete

    def delete(kind, name):  # the waiter backs off by deleting its own lock: count those
        if kind is Kind.LOCKS and name != holder.name:
            attempts.append(name)
            conflicts.set()
        real_delete(backend, kind, name)

    monkeypatch.setattr(backend, "delete", delete)
    monkeypatch.setattr(locks, "REFRESH", 3600.0)
    result: dict = {}

    def waiter() -> None:
        try:
            result["lock"] = other.lock(exclusive=False, wait=60.0)
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    thread = threading.Thread(target=waiter)
    thread.start()
    assert conflicts.wait(timeout=30), "the waiter never tried"
    holder.release()
    thread.join(timeout=60)
    assert not thread.is_alive() and "error" not in result
    acquired = result["lock"]
    try:
        assert len(attempts) >= 1
        assert lock_names(repository) == {acquired.name}
    finally:
        acquired.release()


def test_wait_gives_up_after_the_deadline(repository: Repository, other: Repository,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock for the lock module only: each sleep advances it, so the deadline passes
    # without real waiting.
    clock = [1000.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    fake_time = types.SimpleNamespace(time=time.time, monotonic=lambda: clock[0], sleep=sleep)
    monkeypatch.setattr(locks, "time", fake_time)
    with repository.lock(exclusive=True):
        with pytest.raises(errors.RepositoryLocked):
            other.lock(wait=10.0)
    assert len(sleeps) >= 3 and sum(sleeps) == pytest.approx(10.0)
    assert sleeps[:3] == [0.2, 0.4, 0.8]  # backing off


def test_heartbeat_rewrites_the_lock(repository: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    beats = threading.Event()
    written = []
    real_write = locks.Lock._write

    def write(self) -> None:
        real_write(self)
        written.append(time.time())
        if len(written) >= 3:
            beats.set()

    monkeypatch.setattr(locks.Lock, "_write", write)
    monkeypatch.setattr(locks, "REFRESH", 0.01)
    lock = repository.lock()
    try:
        assert beats.wait(timeout=30)
    finally:
        lock.release()
    assert lock_names(repository) == set()
    # After release the heartbeat thread has stopped: no lock reappears.
    assert not lock._thread.is_alive()
