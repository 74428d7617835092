"""Image restores write runs of consecutive chunks with one pwritev each: every byte must still land at its offset.

Each chunk holds bytes that name its own index, so a chunk written one place off, a hole filled
with a neighbour or a stale byte of an old target shows up in the comparison."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from safehold.errors import IntegrityError
from safehold.restore import image
from safehold.restore.image import HOLE, restore_image

CHUNK = 4096


class Reader:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.damaged: set[bytes] = set()

    def add(self, data: bytes) -> bytes:
        blob_id = hashlib.sha256(data).digest()
        self.blobs[blob_id] = data
        return blob_id

    def blob_size(self, blob_id: bytes) -> int:
        return len(self.blobs[blob_id])

    def read_blob(self, blob_id: bytes) -> bytes:
        if blob_id in self.damaged:
            raise IntegrityError(detail="damaged")
        return self.blobs[blob_id]


def content(index: int, length: int = CHUNK) -> bytes:
    """Bytes no other chunk holds: the index in every 8-byte word."""
    return (index.to_bytes(4, "big") + b"\xa5\x5a" + bytes([index % 251, 7])) * (length // 8) + b"z" * (length % 8)


def build(reader: Reader, layout: list[str], size: int | None = None) -> tuple[dict, bytes]:
    """An item from a layout ('d' data, 'h' hole, 's' a short chunk) and the image it must give."""
    ids, expected = [], bytearray()
    for index, kind in enumerate(layout):
        if kind == "h":
            ids.append(HOLE)
            expected += bytes(CHUNK)
        else:
            length = CHUNK if kind == "d" else CHUNK // 2 + 3
            data = content(index, length)
            ids.append(reader.add(data))
            expected += data + bytes(CHUNK - length)
    size = len(layout) * CHUNK if size is None else size
    return ({"path": b"disk", "type": "image", "size": size, "chunk_size": CHUNK, "chunks": b"".join(ids)},
            bytes(expected[:size]))


@pytest.fixture
def small_batches(monkeypatch):
    """Runs of three chunks, so a short image crosses several run boundaries."""
    monkeypatch.setattr(image, "BATCH_BYTES", 3 * CHUNK)
    monkeypatch.setattr(image, "AHEAD_BYTES", 2 * CHUNK)


@pytest.fixture
def writes(monkeypatch):
    """The real os.pwritev, recorded: (offset, bytes) of every call."""
    calls: list[tuple[int, int]] = []
    real = os.pwritev

    def recording(fd, buffers, offset, *rest):
        written = real(fd, buffers, offset, *rest)
        calls.append((offset, written))
        return written

    monkeypatch.setattr(image.os, "pwritev", recording)
    return calls


LAYOUT = list("dddhdddddhhddsd") + ["d"] * 4  # a chunk after a hole, a short chunk inside, data to the end


def test_batches_put_every_chunk_at_its_offset(tmp_path: Path, small_batches, writes) -> None:
    reader = Reader()
    item, expected = build(reader, LAYOUT)
    result = restore_image(reader, item, tmp_path / "disk.img", threads=3)
    assert (tmp_path / "disk.img").read_bytes() == expected
    assert result.holes == 3 and result.damaged_ranges == []
    # Several chunks per write, no write across a hole or after a short chunk.
    assert all(length <= 3 * CHUNK for _offset, length in writes)
    assert len(writes) < sum(1 for kind in LAYOUT if kind != "h")
    for offset, length in writes:
        first, last = offset // CHUNK, (offset + length - 1) // CHUNK
        assert "h" not in LAYOUT[first : last + 1] and "s" not in LAYOUT[first:last]


def test_one_write_per_batch_at_the_default_size(tmp_path: Path, writes) -> None:
    reader = Reader()
    item, expected = build(reader, ["d"] * 64)  # 256 KiB of consecutive data
    restore_image(reader, item, tmp_path / "disk.img", threads=2)
    assert (tmp_path / "disk.img").read_bytes() == expected
    assert writes == [(0, 64 * CHUNK)]  # the old writer made 64 calls


def test_a_short_last_chunk_ends_the_image(tmp_path: Path, small_batches) -> None:
    reader = Reader()
    size = 6 * CHUNK + 100
    ids = [reader.add(content(i)) for i in range(6)] + [reader.add(content(6, 100))]
    item = {"path": b"disk", "type": "image", "size": size, "chunk_size": CHUNK, "chunks": b"".join(ids)}
    result = restore_image(reader, item, tmp_path / "disk.img", threads=2)
    assert (tmp_path / "disk.img").read_bytes() == b"".join(content(i) for i in range(6)) + content(6, 100)
    assert result.bytes_written == size


def test_an_existing_larger_file_keeps_nothing_of_its_old_bytes(tmp_path: Path, small_batches) -> None:
    reader = Reader()
    item, expected = build(reader, list("hddhhdsdh"))
    target = tmp_path / "disk.img"
    target.write_bytes(b"\xee" * (40 * CHUNK))
    restore_image(reader, item, target, overwrite=True, threads=2)
    assert target.read_bytes() == expected  # its size, zeros in the holes and after the short chunk


def test_damaged_and_oversized_chunks_leave_their_neighbours_intact(tmp_path: Path, small_batches) -> None:
    reader = Reader()
    item, expected = build(reader, list("dddddd"))
    ids = bytearray(item["chunks"])
    reader.damaged.add(bytes(ids[2 * 32 : 3 * 32]))
    ids[4 * 32 : 5 * 32] = reader.add(b"L" * (CHUNK + 1))  # a hostile item: longer than its place
    item["chunks"] = bytes(ids)
    result = restore_image(reader, item, tmp_path / "disk.img", threads=2)
    data = (tmp_path / "disk.img").read_bytes()
    assert result.damaged_ranges == [(2 * CHUNK, CHUNK), (4 * CHUNK, CHUNK)]
    for index in (0, 1, 3, 5):
        assert data[index * CHUNK : (index + 1) * CHUNK] == content(index)
    assert data[2 * CHUNK : 3 * CHUNK] == bytes(CHUNK) and data[4 * CHUNK : 5 * CHUNK] == bytes(CHUNK)


def test_short_writes_resume_where_they_stopped(tmp_path: Path, monkeypatch) -> None:
    real = os.pwritev

    def at_most_5000(fd, buffers, offset):  # what a signal or a nearly full disk does
        joined = b"".join(bytes(b) for b in buffers)[:5000]
        return real(fd, [joined], offset)

    monkeypatch.setattr(image.os, "pwritev", at_most_5000)
    reader = Reader()
    item, expected = build(reader, list("ddhdddsdd"))
    restore_image(reader, item, tmp_path / "disk.img", threads=2)
    assert (tmp_path / "disk.img").read_bytes() == expected


@pytest.fixture
def loop_device(tmp_path: Path):
    """A 1 MiB loop device over a file of 0xEE bytes (root and losetup needed)."""
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("a loop device needs root and losetup")
    backing = tmp_path / "device.raw"
    backing.write_bytes(b"\xee" * (256 * CHUNK))
    made = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no loop device here: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        yield device, backing
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_a_block_device_gets_zeros_in_holes_and_keeps_its_size(loop_device, small_batches) -> None:
    device, backing = loop_device
    reader = Reader()
    layout = list("dhhddsdhd")
    item, expected = build(reader, layout)
    result = restore_image(reader, item, device, overwrite=True, threads=2)
    assert result.holes == 3
    with open(device, "rb") as f:
        written = f.read(len(expected))
        rest = f.read()
    assert written == expected  # holes and the tail of the short chunk: old bytes must not show
    assert rest == b"\xee" * (256 * CHUNK - len(expected))  # nothing past the image is touched
    assert os.path.getsize(backing) == 256 * CHUNK
