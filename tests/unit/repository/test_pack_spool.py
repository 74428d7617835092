"""A local repository writes each pack into a temporary file as it fills (``LocalBackend.spool``)
instead of holding it in memory: the memory it holds, the pack it stores, and what a failure leaves."""

from __future__ import annotations

import errno
import gc
import os
import tracemalloc
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository
from safehold.repository.backends import Kind
from safehold.repository.backends import local as local_module
from safehold.repository.backends.local import TEMP_PREFIX, LocalBackend
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.pack import BlobType, pack_name_of, read_pack_header

pytestmark = pytest.mark.usefixtures("fast_kdf")

PASSWORD = b"correct horse battery staple"
MiB = 2**20


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(f"{TEMP_PREFIX}*")]


def blobs(count: int, size: int = MiB) -> list[bytes]:
    """Incompressible blobs: what is stored is as large as what was given."""
    return [os.urandom(size) for _ in range(count)]


def held_while_saving(repository: Repository, data: list[bytes]) -> int:
    """Bytes of Python memory still held after saving ``data`` (below a pack's size, so nothing is
    flushed), not counting ``data`` itself."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for chunk in data:
            repository.save_blob(BlobType.DATA, chunk)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_a_local_repository_does_not_hold_the_pack_it_fills(tmp_path: Path) -> None:
    local = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)
    memory = Repository.init(MemoryBackend(), PASSWORD)
    data = blobs(8)
    # In memory (what every backend did before, and S3 still does): the 8 MiB are held until the
    # pack is written. The local one holds its entries only.
    assert held_while_saving(memory, data) > 8 * MiB
    assert held_while_saving(local, data) < MiB
    spooled = leftovers(local.backend.root)
    assert len(spooled) == 1 and spooled[0].startswith(f"data/{TEMP_PREFIX}spool-")
    assert (local.backend.root / spooled[0]).stat().st_size >= 8 * MiB
    assert list(local.backend.list(Kind.DATA)) == []  # nothing under a pack's name until it is stored

    local.flush()
    assert leftovers(local.backend.root) == []
    [info] = list(local.backend.list(Kind.DATA))
    stored = local.backend.get(Kind.DATA, info.name)
    assert pack_name_of(stored) == info.name  # named by the hash of its bytes, as before
    assert [entry.blob_id for entry in read_pack_header(local.cipher, stored)] == [
        local.cipher.blob_id(chunk) for chunk in data]
    reopened = Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD)
    reopened.load_index()
    for chunk in data:
        assert reopened.read_blob(reopened.cipher.blob_id(chunk)) == chunk
    assert (local.backend.root / "data" / info.name[:2] / info.name).stat().st_mode & 0o777 == 0o600


def test_full_packs_are_stored_as_they_fill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safehold.repository import repository as repository_module

    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", 2 * MiB)
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)
    data = blobs(7)
    for chunk in data:
        repository.save_blob(BlobType.DATA, chunk)
    repository.wait_for_uploads()  # full packs are stored in the background (SAFEHOLD_UPLOADS), before any flush
    assert len(list(repository.backend.list(Kind.DATA))) == 3  # 2 + 2 + 2 MiB; the seventh still spooled
    assert len(leftovers(repository.backend.root)) == 1
    repository.flush()
    assert len(list(repository.backend.list(Kind.DATA))) == 4 and leftovers(repository.backend.root) == []
    reopened = Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD)
    reopened.load_index()
    assert [reopened.read_blob(reopened.cipher.blob_id(chunk)) == chunk for chunk in data] == [True] * 7


def test_an_empty_flush_touches_nothing(tmp_path: Path) -> None:
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)
    repository.flush_pack()
    assert leftovers(repository.backend.root) == [] and list(repository.backend.list(Kind.DATA)) == []


def test_a_pack_never_stored_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A backup that fails before its pack is stored (its repository dropped) removes the spool."""
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)
    repository.save_blob(BlobType.DATA, os.urandom(4096))
    root = repository.backend.root
    assert len(leftovers(root)) == 1
    del repository
    gc.collect()
    assert leftovers(root) == []


def test_a_full_disk_while_a_pack_fills_fails_the_write_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)
    repository.save_blob(BlobType.DATA, os.urandom(4096))

    def full_disk(fd: int, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_module.os, "write", full_disk)
    blob = os.urandom(4096)
    with pytest.raises(errors.SafeholdError) as caught:
        repository.save_blob(BlobType.DATA, blob)
    monkeypatch.undo()
    assert "writing a pack" in str(caught.value) and caught.value.exit_code == 20
    assert not repository.has_blob(repository.cipher.blob_id(blob))  # not left "in flight"
    root = repository.backend.root
    assert leftovers(root) == []  # removed at once, not when the process ends
    # The pack is lost: later blobs of this run fail the same way instead of writing after a gap.
    with pytest.raises(errors.SafeholdError) as again:
        repository.save_blob(BlobType.DATA, os.urandom(4096))
    assert again.value.exit_code == 20
    with pytest.raises(errors.SafeholdError):
        repository.flush_pack()
    assert leftovers(root) == [] and list(LocalBackend(root).list(Kind.DATA)) == []


def test_a_spool_is_read_back_through_its_descriptor_never_by_its_path(tmp_path: Path):
    # The S3 backend reads a pack back from a spool in a shared temporary folder (/var/tmp): a file
    # swapped in under the spool's name must not be what gets uploaded.
    from safehold.repository.backends.local import Spool

    spool = Spool(tmp_path)
    spool.write(b"pack bytes " * 1000)
    os.rename(spool.path, tmp_path / "moved")
    spool.path.write_bytes(b"planted")
    with spool.reader() as body:
        assert body.read() == b"pack bytes " * 1000
    spool.discard()
    with pytest.raises(ValueError):
        spool.reader()
