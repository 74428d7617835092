"""Disk images: fixed chunks, holes, changed extents, growth, sparse restore."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, Snapshot
from safehold.items import HOLE
from safehold.repository.archiver import Archiver, Summary
from safehold.repository.backends.memory import MemoryBackend
from safehold.restore.image import restore_image
from safehold.sources.image import ImageSource, allocated_extents

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
KiB, MiB = 1024, 1024 * 1024
CHUNK = 64 * KiB


class RecordingReader:
    def __init__(self, reader, offsets: list[tuple[int, int]]) -> None:
        self.reader, self.offsets = reader, offsets

    def read_at(self, offset: int, length: int) -> bytes:
        self.offsets.append((offset, length))
        return self.reader.read_at(offset, length)

    def close(self) -> None:
        self.reader.close()


def backup(repository: Repository, image: Path, parent: Snapshot | None = None,
           changed: list[tuple[int, int]] | None = None,
           reads: list[tuple[int, int]] | None = None) -> tuple[Snapshot, Summary]:
    archiver = Archiver(repository, threads=2)
    with ImageSource(str(image), CHUNK).open(None, changed=changed) as view:
        if reads is not None:
            disk = view.disks[0]
            original = disk.open
            disk.open = lambda: RecordingReader(original(), reads)
        snapshot = archiver.snapshot(view, "disk", parent, chunk_size=CHUNK)
    return snapshot, archiver.summary


def restore(repository: Repository, snapshot: Snapshot, destination: Path, **options):
    [item] = list(repository.read_tree(snapshot))
    return restore_image(repository, item, destination, threads=2, **options)


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def chunks_of(extents: list[tuple[int, int]]) -> set[int]:
    return {i for offset, length in extents for i in range(offset // CHUNK, (offset + length - 1) // CHUNK + 1)}


@pytest.fixture
def repository() -> Repository:
    return Repository.init(MemoryBackend(), b"pw", FAST_KDF)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def sparse_image(tmp_path: Path, rng: random.Random) -> Path:
    """4 MiB + 1000 bytes: data in chunks 0-2, a few bytes in chunk 40 and in the last (partial) chunk,
    explicitly written zeros in chunk 5, holes everywhere else."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as handle:
        handle.truncate(4 * MiB + 1000)
    write_at(image, 0, rng.randbytes(3 * CHUNK))
    write_at(image, 5 * CHUNK, bytes(CHUNK))
    write_at(image, 40 * CHUNK + 100, rng.randbytes(1000))
    write_at(image, 64 * CHUNK, rng.randbytes(1000))
    return image


def test_sparse_image_round_trip(repository: Repository, sparse_image: Path, tmp_path: Path) -> None:
    if allocated_extents(str(sparse_image)) is None:
        pytest.skip("filesystem cannot report holes")
    reads: list[tuple[int, int]] = []
    snapshot, summary = backup(repository, sparse_image, reads=reads)
    assert summary.files == 1 and summary.bytes_total == 4 * MiB + 1000
    # Holes are never read; the zero chunk is read and found to be zero.
    assert sorted(offset // CHUNK for offset, _ in reads) == [0, 1, 2, 5, 40, 64]
    assert summary.holes == 65 - 5
    assert summary.bytes_read == 5 * CHUNK + 1000
    [item] = list(repository.read_tree(snapshot))
    chunk_ids = [item["chunks"][i : i + 32] for i in range(0, len(item["chunks"]), 32)]
    assert len(chunk_ids) == 65
    assert [i for i, blob_id in enumerate(chunk_ids) if blob_id != HOLE] == [0, 1, 2, 40, 64]
    assert summary.blobs_added == 5 + len(snapshot.tree)

    destination = tmp_path / "restored.img"
    result = restore(repository, snapshot, destination)
    assert destination.read_bytes() == sparse_image.read_bytes()
    assert result.holes == 60 and result.damaged_ranges == []
    assert result.bytes_written == 4 * CHUNK + 1000
    assert os.stat(destination).st_blocks * 512 <= 512 * KiB  # sparse: 4 MiB apparent size


def test_image_without_hole_information_reads_everything(repository: Repository, sparse_image: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A block device (or a filesystem without SEEK_DATA): every chunk is read, zero chunks still become holes.
    from safehold.sources import image as image_module

    monkeypatch.setattr(image_module, "allocated_extents", lambda path: None)
    snapshot, summary = backup(repository, sparse_image)
    assert summary.bytes_read == 4 * MiB + 1000
    assert summary.holes == 60
    restore(repository, snapshot, tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == sparse_image.read_bytes()


@pytest.fixture
def full_image(tmp_path: Path, rng: random.Random) -> Path:
    image = tmp_path / "vm.img"
    image.write_bytes(rng.randbytes(4 * MiB))
    return image


def test_changed_extents_read_only_changed_chunks(repository: Repository, full_image: Path, tmp_path: Path,
                                                  rng: random.Random) -> None:
    parent, first = backup(repository, full_image)
    assert first.bytes_read == 4 * MiB
    changed = [(1 * MiB + 10 * KiB, 100 * KiB), (2 * MiB, 64 * KiB), (3 * MiB + 60 * KiB, 8 * KiB)]
    for offset, length in changed:
        write_at(full_image, offset, rng.randbytes(length))
    reads: list[tuple[int, int]] = []
    child, summary = backup(repository, full_image, parent=parent, changed=changed, reads=reads)
    expected_chunks = chunks_of(changed)
    assert expected_chunks == {16, 17, 32, 48, 49}
    assert sorted(reads) == [(i * CHUNK, CHUNK) for i in sorted(expected_chunks)]
    assert summary.bytes_read == len(expected_chunks) * CHUNK
    assert summary.chunks_reused_unread == 64 - len(expected_chunks)
    changed_bytes = sum(length for _, length in changed)
    assert summary.bytes_added <= 3 * changed_bytes
    assert child.parent == parent.id

    destination = tmp_path / "restored.img"
    restore(repository, child, destination)
    assert destination.read_bytes() == full_image.read_bytes()


def test_no_changes_reads_nothing(repository: Repository, full_image: Path, tmp_path: Path) -> None:
    parent, _ = backup(repository, full_image)
    reads: list[tuple[int, int]] = []
    child, summary = backup(repository, full_image, parent=parent, changed=[], reads=reads)
    assert reads == [] and summary.bytes_read == 0 and summary.blobs_added == 0
    restore(repository, child, tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == full_image.read_bytes()


def test_disk_that_grew_reads_changed_chunks_and_the_new_end(repository: Repository, tmp_path: Path,
                                                             rng: random.Random) -> None:
    image = tmp_path / "grow.img"
    old_size = 2 * MiB + 1000  # the parent's last chunk is partial and must be read again
    image.write_bytes(rng.randbytes(old_size))
    parent, _ = backup(repository, image)
    changed = [(100 * KiB, 10 * KiB)]
    write_at(image, 100 * KiB, rng.randbytes(10 * KiB))
    with open(image, "ab") as handle:
        handle.write(rng.randbytes(1 * MiB + 5000))
    new_size = image.stat().st_size
    reads: list[tuple[int, int]] = []
    child, summary = backup(repository, image, parent=parent, changed=changed, reads=reads)
    read_chunks = sorted(offset // CHUNK for offset, _ in reads)
    last = (new_size - 1) // CHUNK
    assert read_chunks == [1] + list(range(old_size // CHUNK, last + 1))
    restore(repository, child, tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == image.read_bytes()
    # And the parent still restores to the old, smaller image.
    restore(repository, parent, tmp_path / "parent.img")
    assert (tmp_path / "parent.img").stat().st_size == old_size


def test_changed_extents_without_a_parent_read_everything(repository: Repository, full_image: Path) -> None:
    _, summary = backup(repository, full_image, changed=[(0, 10)])
    assert summary.bytes_read == 4 * MiB and summary.chunks_reused_unread == 0


def test_restore_refuses_an_existing_file_without_overwrite(repository: Repository, full_image: Path,
                                                            tmp_path: Path) -> None:
    snapshot, _ = backup(repository, full_image)
    destination = tmp_path / "existing.img"
    destination.write_bytes(b"precious")
    with pytest.raises(errors.DestinationError):
        restore(repository, snapshot, destination)
    assert destination.read_bytes() == b"precious"
    restore(repository, snapshot, destination, overwrite=True)
    assert destination.read_bytes() == full_image.read_bytes()


def test_restore_refuses_a_directory(repository: Repository, full_image: Path, tmp_path: Path) -> None:
    snapshot, _ = backup(repository, full_image)
    (tmp_path / "dir").mkdir()
    with pytest.raises(errors.DestinationError):
        restore(repository, snapshot, tmp_path / "dir", overwrite=True)


def test_image_source_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.SourceError, match="no such"):
        with ImageSource(str(tmp_path / "missing.img"), CHUNK).open():
            pass
    with pytest.raises(errors.SourceError, match="not a regular file"):
        with ImageSource(str(tmp_path), CHUNK).open():
            pass


class HintingReader(RecordingReader):
    """Records reads and prefetch hints in one ordered log."""

    def __init__(self, reader, log: list[tuple[str, int]]) -> None:
        super().__init__(reader, [])
        self.log = log

    def read_at(self, offset: int, length: int) -> bytes:
        self.log.append(("read", offset // CHUNK))
        return self.reader.read_at(offset, length)

    def prefetch(self, offset: int, length: int) -> None:
        assert length == CHUNK
        self.log.append(("hint", offset // CHUNK))


def test_scattered_changed_chunks_are_hinted_ahead_within_a_window(repository: Repository, tmp_path: Path,
                                                                   rng: random.Random) -> None:
    from safehold.repository.archiver import PREFETCH_CHUNKS

    image = tmp_path / "big.img"
    image.write_bytes(rng.randbytes(128 * CHUNK))
    parent, _ = backup(repository, image)
    wanted = sorted(rng.sample(range(128), PREFETCH_CHUNKS + 20))
    for index in wanted:
        write_at(image, index * CHUNK + 100, rng.randbytes(200))
    log: list[tuple[str, int]] = []
    archiver = Archiver(repository, threads=2)
    with ImageSource(str(image), CHUNK).open(None, changed=[(i * CHUNK + 100, 200) for i in wanted]) as view:
        original = view.disks[0].open
        view.disks[0].open = lambda: HintingReader(original(), log)
        child = archiver.snapshot(view, "disk", parent, chunk_size=CHUNK)
    hints = [chunk for kind, chunk in log if kind == "hint"]
    reads = [chunk for kind, chunk in log if kind == "read"]
    assert hints == wanted and reads == wanted  # each changed chunk hinted once, in order, and read
    for position, (kind, chunk) in enumerate(log):
        if kind == "read":
            hinted = [c for k, c in log[:position] if k == "hint"]
            assert chunk in hinted  # hinted before it is read
            assert len(hinted) <= wanted.index(chunk) + PREFETCH_CHUNKS  # never more than the window ahead
    restore(repository, child, tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == image.read_bytes()


def test_a_chunk_read_again_that_is_the_parents_keeps_its_map_byte_unjudged(repository: Repository, tmp_path: Path,
                                                                            rng: random.Random,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without changed extents an incremental reads the whole image again; a chunk whose id is the
    parent's at the same offset keeps the parent's map byte instead of its histogram (issue 19
    sixth round: 0.4 ms a chunk). The map is what judging every chunk again gives."""
    from safehold.repository import archiver as archiver_module
    from safehold.repository.signals import image_chunk_randomness

    image = tmp_path / "disk.img"
    image.write_bytes(rng.randbytes(8 * CHUNK) + (b"text " * (8 * CHUNK))[:8 * CHUNK])
    first, _ = backup(repository, image)
    write_at(image, 3 * CHUNK + 10, b"changed" * 100)  # one chunk of random data, one of text
    write_at(image, 12 * CHUNK + 10, rng.randbytes(1000))
    judged: list[int] = []

    def counting(data: bytes):
        judged.append(len(data))
        return image_chunk_randomness(data)

    monkeypatch.setattr(archiver_module, "image_chunk_randomness", counting)
    second, summary = backup(repository, image, parent=first)
    assert summary.bytes_read == image.stat().st_size and summary.blobs_added == 2 + 1  # and the tree
    assert len(judged) == 2  # the two changed chunks only (all 16 before)
    [item] = list(repository.read_tree(second))
    data = image.read_bytes()
    expected = bytes(image_chunk_randomness(data[i:i + CHUNK])[1] for i in range(0, len(data), CHUNK))
    assert item["random"] == expected
