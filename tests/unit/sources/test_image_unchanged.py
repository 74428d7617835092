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


# -- issue 19, sixth round: device in the identity, force_read, every metadata change re-reads ----

class CountingReader:
    """The real reader (``FileDiskReader``, reading the real file), counting the bytes it returns."""

    def __init__(self, reader, counter: list[int]) -> None:
        self.reader, self.counter = reader, counter

    def read_at(self, offset, length):
        data = self.reader.read_at(offset, length)
        self.counter[0] += len(data)
        return data

    def close(self):
        self.reader.close()


def counted_backup(repository, path, parent=None, **options):
    """A backup whose reads of the image are counted at the reader (not taken from the summary)."""
    counter = [0]
    with ImageSource(str(path), CHUNK, **options).open(parent.source if parent else None) as view:
        for disk in view.disks:
            original = disk.open
            disk.open = lambda original=original: CountingReader(original(), counter)
        snapshot = Archiver(repository).snapshot(view, "img", parent, chunk_size=CHUNK)
    return snapshot, counter[0], view


def restored_bytes(repository, snapshot, tmp_path) -> bytes:
    from safehold.restore.image import restore_image

    [item] = list(repository.read_tree(snapshot))
    destination = tmp_path / f"restored-{snapshot.short_id}.img"
    restore_image(repository, item, destination, threads=2)
    return destination.read_bytes()


def image_file(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(6 * CHUNK) + bytes(2 * CHUNK) + os.urandom(CHUNK // 2))
    return image


def test_the_token_records_the_device_and_the_skip_restores_byte_identical(memory_repository, tmp_path):
    image = image_file(tmp_path)
    st = os.stat(image)
    first, read, _ = counted_backup(memory_repository, image)
    assert read == st.st_size
    assert first.source["file"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                                    "inode": st.st_ino, "device": st.st_dev}
    second, read, _ = counted_backup(memory_repository, image, first)
    assert read == 0 and second.source["incremental"] == "mtime"
    assert restored_bytes(memory_repository, second, tmp_path) == image.read_bytes()


def test_a_parent_token_without_the_device_is_read_again(memory_repository, tmp_path):
    """Snapshots written before the device was recorded (or a token that differs in any way) never
    match: the image is read whole once, and the new snapshot's token lets the next run skip it."""
    image = image_file(tmp_path)
    first, _, _ = counted_backup(memory_repository, image)
    older = dict(first.source["file"])
    del older["device"]
    first.source["file"] = older  # what an older build recorded
    second, read, _ = counted_backup(memory_repository, image, first)
    assert read == image.stat().st_size and second.source["incremental"] == "none"
    third, read, _ = counted_backup(memory_repository, image, second)
    assert read == 0
    assert restored_bytes(memory_repository, third, tmp_path) == image.read_bytes()


def test_hostile_parent_tokens_read_everything(memory_repository, tmp_path):
    image = image_file(tmp_path)
    first, _, _ = counted_backup(memory_repository, image)
    for token in (None, [], "file", {"file": None}, {"file": [1, 2]}, {"file": {**first.source["file"], "inode": "x"}}):
        first.source = token
        _, read, _ = counted_backup(memory_repository, image, first)
        assert read == image.stat().st_size, token


def test_only_the_mtime_moved_the_image_is_read_again(memory_repository, tmp_path):
    image = image_file(tmp_path)
    first, _, _ = counted_backup(memory_repository, image)
    st = os.stat(image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same bytes, same size: only the times moved
    second, read, _ = counted_backup(memory_repository, image, first)
    assert read == st.st_size and second.source["incremental"] == "none"
    assert restored_bytes(memory_repository, second, tmp_path) == image.read_bytes()


def test_a_change_that_restores_mtime_is_caught_by_ctime_and_size(memory_repository, tmp_path):
    image = image_file(tmp_path)
    first, _, _ = counted_backup(memory_repository, image)
    st = os.stat(image)
    with open(image, "r+b") as handle:  # a change hidden by putting the mtime back (touch -r)
        handle.seek(CHUNK)
        handle.write(b"\x5a" * 100)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    second, read, _ = counted_backup(memory_repository, image, first)
    assert read == st.st_size
    assert restored_bytes(memory_repository, second, tmp_path) == image.read_bytes()
    with open(image, "ab") as handle:  # grown
        handle.write(os.urandom(1000))
    third, read, _ = counted_backup(memory_repository, image, second)
    assert read == image.stat().st_size and third.source["file"]["size"] == image.stat().st_size
    assert restored_bytes(memory_repository, third, tmp_path) == image.read_bytes()


def test_force_read_reads_an_unchanged_image_whole(memory_repository, tmp_path):
    image = image_file(tmp_path)
    first, _, _ = counted_backup(memory_repository, image)
    second, read, view = counted_backup(memory_repository, image, first, force_read=True)
    assert read == image.stat().st_size and second.source["incremental"] == "none"
    assert any("force_read" in note for note in view.notes)
    # the token is still recorded, so the next run without the option skips again
    third, read, _ = counted_backup(memory_repository, image, second)
    assert read == 0
    assert restored_bytes(memory_repository, third, tmp_path) == image.read_bytes()


def test_force_read_from_targets_yml(tmp_path):
    from safehold.config.sources.files import ImageSource as ImageConfig
    from safehold.sources import open_source

    image = image_file(tmp_path)
    assert open_source(ImageConfig(type="image", path=str(image))).force_read is False
    assert open_source(ImageConfig(type="image", path=str(image), force_read=True)).force_read is True


def test_changed_extents_from_a_caller_win_over_the_metadata(memory_repository, tmp_path):
    """A platform's change tracking (extents handed in) is used as given, never the metadata rule."""
    image = image_file(tmp_path)
    first, _, _ = counted_backup(memory_repository, image)
    with ImageSource(str(image), CHUNK).open(first.source, changed=[(0, CHUNK)]) as view:
        assert view.incremental == "none" and view.disks[0].changed == [(0, CHUNK)]


def test_a_parent_record_shorter_than_its_size_is_not_reused(memory_repository, tmp_path, monkeypatch):
    """A damaged or crafted parent item (fewer chunk ids than its size needs) reads the image
    instead of shifting the new chunk list; the result restores byte-identical."""
    image = image_file(tmp_path)
    first, _, _ = counted_backup(memory_repository, image)
    real = memory_repository.read_tree

    def damaged(snapshot):
        for item in real(snapshot):
            if snapshot.id == first.id:
                item = dict(item, chunks=item["chunks"][:-96])  # three ids short
            yield item

    monkeypatch.setattr(memory_repository, "read_tree", damaged)
    second, read, _ = counted_backup(memory_repository, image, first)
    monkeypatch.setattr(memory_repository, "read_tree", real)
    assert read == image.stat().st_size
    assert restored_bytes(memory_repository, second, tmp_path) == image.read_bytes()
