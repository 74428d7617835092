"""The local cache of snapshot, index and verdict objects (repository/cache.py): hostile files are
never trusted, names never leave the folder, a listing decides what stays, an unwritable state
folder only logs, and check reads what is stored, not the cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from safehold.repository import Repository
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.cache import ObjectCache
from safehold.repository.check import check
from safehold.repository.prune import ForgetDecision, forget
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def name_of(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[tuple[Kind, str]] = []

    def get(self, kind, name, offset=0, length=None):
        self.gets.append((kind, name))
        return super().get(kind, name, offset, length)


@pytest.fixture
def cached(tmp_path: Path) -> tuple[Repository, CountingBackend, Path]:
    backend = CountingBackend()
    repository = Repository.init(backend, b"pw", FAST_KDF)
    repository.cache = ObjectCache.for_repository(tmp_path / "state", repository.id)
    return repository, backend, tmp_path / "state" / "cache" / repository.id


def backup(repository: Repository, tree: Path, content: bytes):
    tree.mkdir(exist_ok=True)
    (tree / "file").write_bytes(content)
    with FilesSource([str(tree)]).open() as view:
        return Archiver(repository, threads=1).snapshot(view, "docs", None)


def test_put_get_modes_and_hostile_files(tmp_path: Path):
    cache = ObjectCache(tmp_path / "cache" / "abcdef0123")
    data = b"stored bytes" * 100
    name = name_of(data)
    cache.put(Kind.SNAPSHOTS, name, data)
    path = tmp_path / "cache" / "abcdef0123" / "snapshots" / name
    assert cache.get(Kind.SNAPSHOTS, name) == data
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path.parent).st_mode & 0o777 == 0o700
    assert os.stat(path.parent.parent).st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temporary file left
    # Altered, truncated, empty: each a miss, and the file is gone (fetched again by the caller).
    for damaged in (b"X" + data[1:], data[:-1], b""):
        path.write_bytes(damaged)
        assert cache.get(Kind.SNAPSHOTS, name) is None and not path.exists()
    # A link planted in place of a cache file is not followed, even to the right bytes.
    (tmp_path / "elsewhere").write_bytes(data)
    path.symlink_to(tmp_path / "elsewhere")
    assert cache.get(Kind.SNAPSHOTS, name) is None
    # Names from a listing are hostile: only 64 hex digits are ever a file name, only immutable kinds.
    for bad in ("../../../escape", name.upper(), name[:-1], name + "/x", ".hidden"):
        cache.put(Kind.SNAPSHOTS, bad, data)
        assert cache.get(Kind.SNAPSHOTS, bad) is None
    cache.put(Kind.LOCKS, name, data)
    assert cache.get(Kind.LOCKS, name) is None and not (tmp_path / "cache" / "abcdef0123" / "locks").exists()
    assert not (tmp_path / "escape").exists()
    assert ObjectCache.for_repository(tmp_path, "../other") is None
    assert ObjectCache.for_repository(tmp_path, "") is None


def test_keep_only_drops_what_the_listing_no_longer_names(tmp_path: Path):
    cache = ObjectCache(tmp_path / "c" / "abcdef0123")
    kept, gone = b"kept", b"gone"
    for data in (kept, gone):
        cache.put(Kind.INDEX, name_of(data), data)
    folder = tmp_path / "c" / "abcdef0123" / "index"
    (folder / ".x.1.2.tmp").write_bytes(b"a writer's temporary file, in use")
    old = folder / ".y.3.4.tmp"
    old.write_bytes(b"a killed writer's")
    os.utime(old, (0, 0))
    assert cache.keep_only(Kind.INDEX, [name_of(kept), name_of(b"listed, never cached")]) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted([".x.1.2.tmp", name_of(kept)])


def test_the_repository_reads_through_the_cache_and_a_listing_prunes_it(cached, tmp_path: Path):
    repository, backend, folder = cached
    first = backup(repository, tmp_path / "tree", b"one")
    second = backup(repository, tmp_path / "tree", b"two")
    assert {p.name for p in (folder / "snapshots").iterdir()} == {first.id, second.id}
    backend.gets.clear()
    fresh = Repository.open(backend, b"pw")
    fresh.cache = ObjectCache.for_repository(tmp_path / "state", fresh.id)
    fresh.load_index()
    assert [s.id for s in fresh.list_snapshots()] == [first.id, second.id]
    assert [kind for kind, _ in backend.gets if kind in (Kind.SNAPSHOTS, Kind.INDEX)] == []
    # Forget deletes the object and its cached copy; a listing drops a copy whose object is gone.
    forget(fresh, [ForgetDecision(first, False, [])], "test")
    assert not (folder / "snapshots" / first.id).exists()
    del backend.objects[(Kind.SNAPSHOTS, second.id)]  # as another host's forget would
    assert fresh.list_snapshots() == []
    assert list((folder / "snapshots").iterdir()) == []


def test_check_reads_what_is_stored_not_the_cached_copy(cached, tmp_path: Path):
    repository, backend, folder = cached
    snapshot = backup(repository, tmp_path / "tree", b"checked")
    assert (folder / "snapshots" / snapshot.id).exists()
    stored = bytearray(backend.objects[(Kind.SNAPSHOTS, snapshot.id)])
    stored[50] ^= 0x01
    backend.objects[(Kind.SNAPSHOTS, snapshot.id)] = bytes(stored)
    report = check(repository)
    assert not report.ok and any(snapshot.id[:16] in error for error in report.errors), report.errors
    assert repository.cache is not None  # back on after the check


def test_an_unwritable_state_folder_never_fails_and_says_so_once(tmp_path: Path, caplog):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "cache").write_text("a file where the cache folder would go")
    backend = CountingBackend()
    repository = Repository.init(backend, b"pw", FAST_KDF)
    repository.cache = ObjectCache.for_repository(tmp_path / "state", repository.id)
    with caplog.at_level(logging.WARNING, logger="safehold.cache"):
        first = backup(repository, tmp_path / "tree", b"one")
        backup(repository, tmp_path / "tree", b"two")
        repository.list_snapshots()
    warnings = [r for r in caplog.records if r.name == "safehold.cache" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be written" in warnings[0].getMessage()
    backend.gets.clear()
    assert repository.load_snapshot(first.id).id == first.id and backend.gets == [(Kind.SNAPSHOTS, first.id)]
