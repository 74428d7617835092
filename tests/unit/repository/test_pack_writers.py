"""Pack writers side by side (``Repository.writer``; the archivers of ``backup --all``'s targets):
a blob another writer holds unstored is stored again rather than referred to; each writer counts
its own statistics and proves its own packs; and ``write_index`` (the commit's barrier) returns
only once every pack stored before it is named by a stored index object, waiting for another
writer's index put in progress, or storing the packs of one that failed. Real local repository."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from safehold.repository import Repository
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend
from safehold.repository.pack import BlobType

pytestmark = pytest.mark.usefixtures("fast_kdf")

PASSWORD = b"correct horse battery staple"


class HeldIndexPuts(LocalBackend):
    """A local backend whose index puts from the thread named ``held`` wait for ``release`` (or
    fail with ``fail``): another writer's index write in progress, at a moment the test chooses."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.held, self.entered, self.release, self.fail = "", threading.Event(), threading.Event(), False

    def put(self, kind, name, data, *args, **kwargs):
        if kind is Kind.INDEX and threading.current_thread().name == self.held:
            self.entered.set()
            assert self.release.wait(10)
            if self.fail:
                raise OSError(5, "Input/output error")
        return super().put(kind, name, data, *args, **kwargs)


def stored_index_packs(repository: Repository) -> set[str]:
    return {pack for name in repository.list_names(Kind.INDEX)
            for pack, _entries in repository.load_object(Kind.INDEX, name)["packs"]}


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    backend = HeldIndexPuts(str(tmp_path / "repo"))
    Repository.init(backend, PASSWORD)
    opened = Repository.open(backend, PASSWORD)
    opened.load_index()
    return opened


def test_a_blob_another_writer_holds_unstored_is_stored_again(repository: Repository):
    first, second = repository.writer(), repository.writer()
    data = os.urandom(100_000)
    blob_id, added = first.save_blob(BlobType.DATA, data)  # in first's pack, not stored
    assert added
    assert second.save_blob(BlobType.DATA, data) == (blob_id, True)  # its own copy, not a reference
    assert second.save_blob(BlobType.DATA, data) == (blob_id, False)  # its own, in flight: deduplicated
    second.flush()
    assert (second.stats.blobs_added, first.stats.blobs_added, repository.stats.blobs_added) == (1, 1, 0)
    assert len(second.written_packs) == 1 and first.written_packs == [] == repository.written_packs
    del first  # fails: its pack is never stored
    reopened = Repository.open(repository.backend, PASSWORD)
    reopened.load_index()
    assert reopened.read_blob(blob_id) == data
    # Once stored and in the shared index, the blob is found there by any writer.
    assert repository.writer().save_blob(BlobType.DATA, data) == (blob_id, False)


@pytest.mark.parametrize("fails", [False, True], ids=["put-in-progress", "put-failed"])
def test_write_index_waits_for_the_index_of_every_pack_stored_before_it(repository: Repository, fails: bool):
    backend: HeldIndexPuts = repository.backend  # type: ignore[assignment]
    first, second = repository.writer(), repository.writer()
    shared = os.urandom(50_000)
    first.save_blob(BlobType.DATA, shared)
    first.flush_pack()  # stored; its index object not yet
    [pack] = first.written_packs
    # second refers to first's blob (found in the shared index) and to one of its own.
    assert second.save_blob(BlobType.DATA, shared)[1] is False
    second.save_blob(BlobType.DATA, os.urandom(50_000))
    second.flush_pack()

    backend.held, backend.fail = "first-commit", fails
    errors: list[BaseException] = []

    def commit_first() -> None:
        try:
            first.write_index()
        except BaseException as exc:  # the failed put
            errors.append(exc)

    # first's index write takes every pack stored so far (its own and second's) and is held.
    first_commit = threading.Thread(target=commit_first, name="first-commit")
    first_commit.start()
    assert backend.entered.wait(10)
    second_commit = threading.Thread(target=second.write_index, name="second-commit")
    second_commit.start()
    second_commit.join(0.3)
    assert second_commit.is_alive()  # not before the index naming first's pack is stored
    assert pack not in stored_index_packs(repository)
    backend.release.set()
    second_commit.join(10)
    first_commit.join(10)
    assert not second_commit.is_alive()
    assert bool(errors) == fails
    assert {pack, *second.written_packs} <= stored_index_packs(repository)
