"""Full packs stored in the background (``SAFEHOLD_UPLOADS``, issue 19): several side by side while
the writer goes on filling the next one; the commit (``flush_pack``) waits for every one; a failed
one fails the writer before anything refers to it; the lock is never released while one is being
put; ``SAFEHOLD_UPLOADS=1`` stores each pack in the thread that filled it. Real local repository."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository
from safehold.repository import repository as repository_module
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend
from safehold.repository.pack import BlobType

pytestmark = pytest.mark.usefixtures("fast_kdf")

PASSWORD = b"correct horse battery staple"
PACK = 200_000  # PACK_TARGET_SIZE for these tests
BLOB = 210_000  # random, so stored as large: each blob fills a pack of its own


class GatedPacks(LocalBackend):
    """A local backend whose pack stores wait for ``gate`` and count how many run at once; the
    ``fail``-th pack store fails with EIO."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.running = self.peak = self.started = 0
        self.fail = 0
        self.threads: set[str] = set()
        self.deleted_locks_while_running = 0

    def put_spool(self, kind, name, spool, **kwargs):
        if kind is not Kind.DATA:
            return super().put_spool(kind, name, spool, **kwargs)
        with self.lock:
            self.running += 1
            self.started += 1
            number = self.started
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            assert self.gate.wait(10)
            if number == self.fail:
                spool.discard()
                raise OSError(5, "Input/output error")
            return super().put_spool(kind, name, spool, **kwargs)
        finally:
            with self.lock:
                self.running -= 1

    def delete(self, kind, name):
        if kind is Kind.LOCKS:
            with self.lock:
                self.deleted_locks_while_running += self.running
        return super().delete(kind, name)


@pytest.fixture
def repository(tmp_path: Path, monkeypatch) -> Repository:
    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", PACK)
    backend = GatedPacks(str(tmp_path / "repo"))
    Repository.init(backend, PASSWORD)
    opened = Repository.open(backend, PASSWORD)
    opened.load_index()
    return opened


def wait_until(predicate, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        threading.Event().wait(0.01)
    assert predicate()


def fill(repository: Repository, packs: int) -> list[bytes]:
    ids = []
    for _ in range(packs):
        blob_id, added = repository.save_blob(BlobType.DATA, os.urandom(BLOB))
        assert added
        ids.append(blob_id)
    return ids


def stored_index_packs(repository: Repository) -> set[str]:
    return {pack for name in repository.list_names(Kind.INDEX)
            for pack, _entries in repository.load_object(Kind.INDEX, name)["packs"]}


def test_full_packs_are_stored_side_by_side_and_the_commit_waits_for_them(repository: Repository):
    backend = repository.backend
    backend.gate.clear()  # every pack store waits: the writer must not
    ids = fill(repository, 4)  # four full packs handed to the background, none stored yet
    wait_until(lambda: backend.started == 4)
    assert backend.peak == 4
    assert all(name.startswith("safehold-upload") for name in backend.threads)
    assert repository.written_packs == [] and not any(blob_id in repository.index for blob_id in ids)
    assert all(repository.has_blob(blob_id) for blob_id in ids)  # deduplicated against while in flight

    committed = threading.Thread(target=repository.flush)
    committed.start()
    committed.join(0.3)
    assert committed.is_alive()  # the commit waits for the stores
    backend.gate.set()
    committed.join(10)
    assert not committed.is_alive()
    assert len(repository.written_packs) == 4
    assert set(repository.written_packs) <= stored_index_packs(repository)
    # a thread per store, ended with it: nothing idle is left behind in a long-running process
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("safehold-upload")])
    reopened = Repository.open(backend, PASSWORD)
    reopened.load_index()
    assert all(len(reopened.read_blob(blob_id)) == BLOB for blob_id in ids)


def test_the_writer_waits_only_when_every_slot_is_taken(repository: Repository, monkeypatch):
    monkeypatch.setenv("SAFEHOLD_UPLOADS", "2")
    writer = Repository.open(repository.backend, PASSWORD)
    writer.load_index()
    backend = repository.backend
    backend.gate.clear()
    fill(writer, 2)  # both slots taken, the writer is free
    wait_until(lambda: backend.started == 2)
    third = threading.Thread(target=fill, args=(writer, 1))
    third.start()
    third.join(0.3)
    assert third.is_alive() and backend.started == 2  # a third full pack waits for a slot
    backend.gate.set()
    third.join(10)
    writer.flush()
    assert backend.peak == 2 and len(writer.written_packs) == 3


def test_a_failed_background_store_fails_the_writer_and_is_never_indexed(repository: Repository):
    backend = repository.backend
    backend.fail = 2
    with pytest.raises(errors.SafeholdError) as raised:  # at the next full pack, or at the commit
        fill(repository, 3)
        repository.flush()
    assert "Input/output error" in str(raised.value)
    repository.drain_uploads()
    stored = {info.name for info in backend.list(Kind.DATA)}
    assert stored == set(repository.written_packs) and 1 <= len(stored) <= 2  # never the failed one
    assert stored_index_packs(repository) <= stored
    with pytest.raises(errors.SafeholdError):  # and a commit after it fails too
        repository.flush()


def test_a_failure_is_raised_at_the_next_full_pack(repository: Repository):
    backend = repository.backend
    backend.fail = 1
    fill(repository, 1)
    wait_until(lambda: backend.started == 1 and all(f.done() for f in repository._pending))  # failed, in its thread
    with pytest.raises(errors.SafeholdError):
        fill(repository, 1)


def test_the_lock_is_released_only_after_the_stores_in_progress(repository: Repository):
    backend = repository.backend
    lock = repository.lock(purpose="backup")
    backend.gate.clear()
    fill(repository, 2)  # a backup that fails here: no commit waits for these
    releasing = threading.Thread(target=lock.release)
    releasing.start()
    releasing.join(0.3)
    assert releasing.is_alive() and list(backend.list(Kind.LOCKS))  # still ours while packs are put
    backend.gate.set()
    releasing.join(10)
    assert not releasing.is_alive()
    assert backend.deleted_locks_while_running == 0 and not list(backend.list(Kind.LOCKS))


def test_one_upload_stores_each_pack_in_the_filling_thread(repository: Repository, monkeypatch):
    monkeypatch.setenv("SAFEHOLD_UPLOADS", "1")
    writer = Repository.open(repository.backend, PASSWORD)
    writer.load_index()
    fill(writer, 3)
    assert len(writer.written_packs) == 3  # stored before save_blob returned
    assert repository.backend.threads == {threading.current_thread().name}


@pytest.mark.parametrize("value", ["0", "65", "many", "-2"])
def test_a_bad_upload_count_is_named(tmp_path: Path, monkeypatch, value: str):
    backend = LocalBackend(str(tmp_path / "repo"))
    Repository.init(backend, PASSWORD)
    monkeypatch.setenv("SAFEHOLD_UPLOADS", value)
    with pytest.raises(errors.UsageError, match=f"SAFEHOLD_UPLOADS={value!r}"):
        Repository.open(backend, PASSWORD)
