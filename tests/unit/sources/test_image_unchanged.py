"""An image file whose size, mtime, ctime and inode match the parent is taken from it unread."""

import os

from safehold.repository.archiver import Archiver
from safehold.sources.image import ImageSource

CHUNK = 64 * 1024


def backup(repository, path, parent=None):
    with ImageSource(str(path), CHUNK).open(parent.source if parent else None) as view:
        return Archiver(repository).snapshot(view, "img", parent, chunk_size=CHUNK)


def test_unchanged_image_is_not_read_and_a_touched_one_is(memory_repository, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(5 * CHUNK) + bytes(3 * CHUNK))
    first = backup(memory_repository, image)
    assert first.summary["bytes_read"] == 5 * CHUNK + 3 * CHUNK

    second = backup(memory_repository, image, first)
    assert second.summary["bytes_read"] == 0 and second.summary["chunks_reused_unread"] == 8
    assert second.source["incremental"] == "mtime"
    assert next(memory_repository.read_tree(second))["chunks"] == next(memory_repository.read_tree(first))["chunks"]

    with open(image, "r+b") as handle:  # a real change moves mtime and ctime
        handle.seek(CHUNK)
        handle.write(b"\xab" * 100)
    third = backup(memory_repository, image, second)
    assert third.summary["bytes_read"] == 8 * CHUNK  # written, not sparse: every chunk is read again
    assert third.source["incremental"] == "none"
    assert next(memory_repository.read_tree(third))["chunks"] != next(memory_repository.read_tree(second))["chunks"]
