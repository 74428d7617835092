"""Restore targets against a fake blob reader: selection, damage handling, safety of the destination."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from safehold.errors import DestinationError, IntegrityError
from safehold.restore.directory import DirectoryRestorer, selected
from safehold.restore.image import HOLE, restore_image


class FakeReader:
    """Blobs by id; ids listed in ``damaged`` fail verification like a damaged pack would."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.damaged: set[bytes] = set()
        self.reads: list[bytes] = []

    def add(self, data: bytes) -> bytes:
        blob_id = hashlib.sha256(data).digest()
        self.blobs[blob_id] = data
        return blob_id

    def blob_size(self, blob_id: bytes) -> int:
        if blob_id not in self.blobs:
            raise IntegrityError(detail=f"blob {blob_id.hex()[:16]} is not in the index")
        return len(self.blobs[blob_id])

    def read_blob(self, blob_id: bytes) -> bytes:
        self.reads.append(blob_id)
        if blob_id in self.damaged or blob_id not in self.blobs:
            raise IntegrityError(detail=f"blob {blob_id.hex()[:16]} is damaged")
        return self.blobs[blob_id]


def file_item(reader: FakeReader, path: bytes, *pieces: bytes, mode: int = 0o644) -> dict:
    return {"path": path, "type": "file", "mode": mode, "uid": os.getuid(), "gid": os.getgid(),
            "mtime": 1_700_000_000_000_000_000, "size": sum(map(len, pieces)),
            "chunks": b"".join(reader.add(p) for p in pieces)}


def dir_item(path: bytes, mode: int = 0o755) -> dict:
    return {"path": path, "type": "dir", "mode": mode, "uid": os.getuid(), "gid": os.getgid(),
            "mtime": 1_700_000_000_000_000_000}


def restore(reader: FakeReader, items: list[dict], destination: Path, **options):
    return DirectoryRestorer(reader, destination, threads=2, **options).restore(items)


# --- selection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "includes", "expected"),
    [
        (b"a/b/c", [], True),
        (b"a", [b"a/b"], True),  # leads to an include
        (b"a/b", [b"a/b"], True),
        (b"a/b/c", [b"a/b"], True),  # under an include
        (b"a/bc", [b"a/b"], False),  # a sibling sharing a prefix is not under it
        (b"a/c", [b"a/b"], False),
        (b"ab", [b"a/b"], False),
        (b"x", [b"a", b"x"], True),
    ],
)
def test_selected(path: bytes, includes: list[bytes], expected: bool) -> None:
    assert selected(path, includes) is expected


# --- directories ----------------------------------------------------------------------------------


def test_a_damaged_file_is_named_and_never_left_behind(tmp_path: Path) -> None:
    reader = FakeReader()
    good = file_item(reader, b"r/good", b"a" * 1000, b"b" * 1000)
    bad = file_item(reader, b"r/bad", b"first part is fine", b"second part is damaged", b"third")
    reader.damaged.add(bad["chunks"][32:64])
    result = restore(reader, [dir_item(b"r"), good, bad, file_item(reader, b"r/after", b"z")], tmp_path)
    assert result.damaged == ["r/bad"]
    assert not (tmp_path / "r" / "bad").exists()
    assert (tmp_path / "r" / "good").read_bytes() == b"a" * 1000 + b"b" * 1000
    assert (tmp_path / "r" / "after").read_bytes() == b"z"
    assert result.files == 2


def test_a_hard_link_to_a_damaged_file_is_not_written_either(tmp_path: Path) -> None:
    reader = FakeReader()
    bad = file_item(reader, b"r/bad", b"damaged")
    reader.damaged.add(bad["chunks"])
    link = dir_item(b"r/link") | {"type": "hardlink", "target": b"r/bad"}
    result = restore(reader, [dir_item(b"r"), bad, link], tmp_path)
    assert not (tmp_path / "r" / "bad").exists() and not (tmp_path / "r" / "link").exists()
    assert sorted(result.damaged) == ["r/bad", "r/link"]


def test_overwrite_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"must not change")
    destination = tmp_path / "dest"
    (destination / "r").mkdir(parents=True)
    os.symlink(outside, destination / "r" / "file")
    reader = FakeReader()
    restore(reader, [dir_item(b"r"), file_item(reader, b"r/file", b"restored")], destination, overwrite=True)
    assert outside.read_bytes() == b"must not change"
    assert not os.path.islink(destination / "r" / "file")
    assert (destination / "r" / "file").read_bytes() == b"restored"


def test_a_directory_in_the_way_of_a_file_is_a_destination_error(tmp_path: Path) -> None:
    (tmp_path / "r" / "file").mkdir(parents=True)
    reader = FakeReader()
    with pytest.raises(DestinationError):
        restore(reader, [dir_item(b"r"), file_item(reader, b"r/file", b"x")], tmp_path, overwrite=True)


def test_directory_modes_are_applied_after_their_contents(tmp_path: Path) -> None:
    # A read-only directory must still receive its files (mode applied last, deepest first).
    reader = FakeReader()
    items = [dir_item(b"ro", 0o555), dir_item(b"ro/inner", 0o500), file_item(reader, b"ro/inner/f", b"data")]
    restore(reader, items, tmp_path)
    assert (tmp_path / "ro" / "inner" / "f").read_bytes() == b"data"
    assert stat.S_IMODE(os.stat(tmp_path / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(tmp_path / "ro" / "inner").st_mode) == 0o500
    assert os.stat(tmp_path / "ro").st_mtime_ns == 1_700_000_000_000_000_000


def test_sockets_are_skipped(tmp_path: Path) -> None:
    result = restore(FakeReader(), [dir_item(b"r"), dir_item(b"r/sock") | {"type": "socket"}], tmp_path)
    assert not os.path.lexists(tmp_path / "r" / "sock") and result.damaged == []


def test_items_cannot_escape_the_destination(tmp_path: Path) -> None:
    destination = tmp_path / "dest"
    reader = FakeReader()
    items = [dir_item(b"r"), file_item(reader, b"r/../../escaped", b"outside!")]
    try:
        restore(reader, items, destination)
    except DestinationError:
        pass  # refusing the item is fine too
    assert not (tmp_path / "escaped").exists()


# --- images ------------------------------------------------------------------------------------------

CHUNK = 4096


def image_item(reader: FakeReader, chunks: list[bytes | None], size: int) -> dict:
    ids = b"".join(HOLE if c is None else reader.add(c) for c in chunks)
    return {"path": b"disk", "type": "image", "size": size, "chunk_size": CHUNK, "chunks": ids,
            "metadata": {"mode": 0o640}}


def test_image_restore_skips_holes_and_reports_damaged_ranges(tmp_path: Path) -> None:
    reader = FakeReader()
    chunks = [b"a" * CHUNK, None, b"b" * CHUNK, None, b"c" * CHUNK, b"d" * 100]
    item = image_item(reader, chunks, 5 * CHUNK + 100)
    reader.damaged.add(item["chunks"][2 * 32 : 3 * 32])
    destination = tmp_path / "disk.img"
    result = restore_image(reader, item, destination, threads=2)
    assert result.holes == 2 and result.size == 5 * CHUNK + 100
    assert result.damaged_ranges == [(2 * CHUNK, CHUNK)]
    data = destination.read_bytes()
    assert len(data) == 5 * CHUNK + 100
    assert data[:CHUNK] == b"a" * CHUNK and data[4 * CHUNK : 5 * CHUNK] == b"c" * CHUNK
    assert data[CHUNK : 2 * CHUNK] == bytes(CHUNK) and data[-100:] == b"d" * 100
    assert data[2 * CHUNK : 3 * CHUNK] == bytes(CHUNK)  # damaged bytes are not written
    assert result.bytes_written == 2 * CHUNK + 100  # a, c and the partial d
    assert stat.S_IMODE(os.stat(destination).st_mode) == 0o640
    assert HOLE not in reader.reads  # holes are never looked up


def test_image_restore_to_an_existing_file_needs_overwrite(tmp_path: Path) -> None:
    reader = FakeReader()
    item = image_item(reader, [b"x" * CHUNK], CHUNK)
    destination = tmp_path / "disk.img"
    destination.write_bytes(b"old" * 10_000)
    with pytest.raises(DestinationError):
        restore_image(reader, item, destination)
    assert destination.read_bytes() == b"old" * 10_000
    restore_image(reader, item, destination, overwrite=True)
    assert destination.read_bytes() == b"x" * CHUNK  # truncated to the image size


def test_an_image_restores_into_a_folder_that_does_not_exist_yet(tmp_path: Path) -> None:
    reader = FakeReader()
    data = os.urandom(1000)
    item = {"path": b"disk.img", "type": "image", "size": 4096, "chunk_size": 4096, "chunks": reader.add(data)}
    result = restore_image(reader, item, tmp_path / "new" / "folder" / "disk.img")
    assert (tmp_path / "new" / "folder" / "disk.img").read_bytes()[:1000] == data
    assert result.bytes_written == 1000
