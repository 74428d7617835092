"""LocalBackend specifics the contract suite cannot express: layout, durability under faults, names."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from safehold.errors import UsageError
from safehold.repository.backends import Kind, ObjectExists, ObjectNotFound, open_backend
from safehold.repository.backends import local as local_module
from safehold.repository.backends.local import TEMP_PREFIX, LocalBackend
from safehold.repository.backends.memory import MemoryBackend

NAME = "ab" + "0" * 62


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(f"{TEMP_PREFIX}*")]


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(tmp_path / "repo")
    backend.create()
    return backend


def test_layout_spreads_data_by_the_first_two_characters(backend: LocalBackend) -> None:
    backend.put(Kind.DATA, NAME, b"pack")
    backend.put(Kind.SNAPSHOTS, NAME, b"snapshot")
    backend.put(Kind.CONFIG, "config", b"{}")
    assert (backend.root / "data" / "ab" / NAME).read_bytes() == b"pack"
    assert (backend.root / "snapshots" / NAME).read_bytes() == b"snapshot"
    assert (backend.root / "config").read_bytes() == b"{}"


def test_objects_are_private_to_the_owner(backend: LocalBackend) -> None:
    backend.put(Kind.KEYS, NAME, b"key")
    assert (backend.root / "keys" / NAME).stat().st_mode & 0o077 == 0


def test_a_failed_write_leaves_neither_the_object_nor_a_temporary_file(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.put(Kind.LOCKS, NAME, b"previous version")
    real_write = os.write
    calls = []

    def full_disk(fd: int, data) -> int:
        # The first write of each put lands partly, the next one finds the disk full.
        calls.append(len(data))
        if len(calls) % 2 == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:10])

    monkeypatch.setattr(local_module.os, "write", full_disk)
    with pytest.raises(OSError) as caught:
        backend.put(Kind.DATA, NAME, b"x" * 1000)
    with pytest.raises(OSError):
        backend.put(Kind.LOCKS, NAME, b"new version that will not fit")
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(ObjectNotFound):
        backend.get(Kind.DATA, NAME)
    assert backend.get(Kind.LOCKS, NAME) == b"previous version"  # the old version survives whole
    assert leftovers(backend.root) == []


def test_a_lost_exclusive_race_leaves_no_temporary_file(backend: LocalBackend) -> None:
    backend.put(Kind.LOCKS, NAME, b"a", exclusive=True)
    with pytest.raises(ObjectExists):
        backend.put(Kind.LOCKS, NAME, b"b", exclusive=True)
    assert leftovers(backend.root) == []


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", f"{TEMP_PREFIX}x"])
def test_names_that_could_escape_or_hide_are_refused(backend: LocalBackend, name: str) -> None:
    with pytest.raises(ValueError):
        backend.put(Kind.SNAPSHOTS, name, b"x")
    assert not (backend.root.parent / "escape").exists()


def test_remove_temporary_files_removes_only_leftovers(backend: LocalBackend) -> None:
    backend.put(Kind.DATA, NAME, b"kept")
    (backend.root / "data" / "ab" / f"{TEMP_PREFIX}{NAME}-1234").write_bytes(b"torn")
    (backend.root / "index" / f"{TEMP_PREFIX}x-1").write_bytes(b"torn")
    assert backend.remove_temporary_files() == 2
    assert leftovers(backend.root) == []
    assert backend.get(Kind.DATA, NAME) == b"kept"


def test_get_on_a_store_that_was_never_created_raises_object_not_found(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "nothing")
    assert backend.exists() is False
    with pytest.raises(ObjectNotFound):
        backend.get(Kind.CONFIG, "config")
    assert list(backend.list(Kind.DATA)) == []
    assert list(backend.list(Kind.SNAPSHOTS)) == []


def test_open_backend_by_url(tmp_path: Path) -> None:
    local = open_backend(f"file://{tmp_path}/r%20epo")
    assert isinstance(local, LocalBackend) and local.root == tmp_path / "r epo"
    plain = open_backend(str(tmp_path / "plain"))
    assert isinstance(plain, LocalBackend) and plain.root == tmp_path / "plain"
    assert isinstance(open_backend("memory://"), MemoryBackend)
    with pytest.raises(UsageError) as caught:
        open_backend("ftp://host/x")
    assert "file://" in str(caught.value) and "memory://" not in str(caught.value)
