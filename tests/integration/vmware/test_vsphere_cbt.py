"""The CBT emulator of the vSphere test harness answers like vSphere's QueryChangedDiskAreas."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vsphere_cbt import ChangeTracker, UnknownChangeId  # noqa: E402

BLOCK = 64 * 1024
MiB = 1024 * 1024


def write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def all_areas(tracker: ChangeTracker, at: str, since: str, size: int) -> list[tuple[int, int]]:
    areas, offset = [], 0
    while offset < size:
        info = tracker.changed_areas(at, since, offset)
        assert info.start_offset == offset and info.length > 0
        areas += info.areas
        offset += info.length
    return areas


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk-flat.vmdk"
    path.write_bytes(bytes(8 * MiB))
    return path


def test_first_query_reports_nonzero_blocks_only(disk: Path) -> None:
    tracker = ChangeTracker(answer_limit=8 * MiB)
    write(disk, 3 * BLOCK + 10, b"x")
    write(disk, 5 * MiB, b"y" * (BLOCK + 1))
    change_id = tracker.record("d", str(disk), 8 * MiB)
    assert tracker.changed_areas(change_id, "*", 0).areas == [(3 * BLOCK, BLOCK), (5 * MiB, 2 * BLOCK)]


def test_changes_between_recordings_and_chained_ids(disk: Path) -> None:
    tracker = ChangeTracker(answer_limit=8 * MiB)
    write(disk, 0, b"a" * BLOCK)
    first = tracker.record("d", str(disk), 8 * MiB)
    write(disk, 2 * MiB, b"b")
    write(disk, 0, b"a" * BLOCK)  # same bytes again: content did not change
    second = tracker.record("d", str(disk), 8 * MiB)
    write(disk, 7 * MiB, b"c" * (2 * BLOCK))
    third = tracker.record("d", str(disk), 8 * MiB)
    assert first.split("/")[0] == second.split("/")[0] and first != second
    assert tracker.changed_areas(second, first, 0).areas == [(2 * MiB, BLOCK)]
    assert tracker.changed_areas(third, second, 0).areas == [(7 * MiB, 2 * BLOCK)]
    assert tracker.changed_areas(third, first, 0).areas == [(2 * MiB, BLOCK), (7 * MiB, 2 * BLOCK)]
    assert tracker.changed_areas(third, third, 0).areas == []


def test_answers_one_stretch_per_call(disk: Path) -> None:
    tracker = ChangeTracker(answer_limit=3 * MiB)
    write(disk, MiB - 1, b"z" * 2)  # crosses a block boundary
    write(disk, 3 * MiB - BLOCK, b"q" * (2 * BLOCK))  # crosses the first answer's end
    change_id = tracker.record("d", str(disk), 8 * MiB)
    first = tracker.changed_areas(change_id, "*", 0)
    assert (first.start_offset, first.length) == (0, 3 * MiB)
    assert first.areas == [(MiB - BLOCK, 2 * BLOCK), (3 * MiB - BLOCK, BLOCK)]
    assert tracker.changed_areas(change_id, "*", 3 * MiB).areas == [(3 * MiB, BLOCK)]
    assert all_areas(tracker, change_id, "*", 8 * MiB) == [(MiB - BLOCK, 2 * BLOCK), (3 * MiB - BLOCK, BLOCK),
                                                            (3 * MiB, BLOCK)]


def test_unknown_or_foreign_change_ids_are_refused(disk: Path, tmp_path: Path) -> None:
    tracker = ChangeTracker()
    mine = tracker.record("d", str(disk), 8 * MiB)
    other = tmp_path / "other-flat.vmdk"
    other.write_bytes(b"o" * BLOCK)
    theirs = tracker.record("e", str(other), BLOCK)
    with pytest.raises(UnknownChangeId):
        tracker.changed_areas(mine, "52 00/1", 0)
    with pytest.raises(UnknownChangeId):
        tracker.changed_areas(mine, theirs, 0)
    with pytest.raises(ValueError):
        tracker.changed_areas(mine, "*", 8 * MiB)


def test_grown_disk_and_short_file(tmp_path: Path) -> None:
    tracker = ChangeTracker()
    path = tmp_path / "grow-flat.vmdk"
    path.write_bytes(b"g" * BLOCK)  # a file shorter than the disk reads as zeros past its end
    small = tracker.record("d", str(path), 4 * BLOCK)
    assert tracker.changed_areas(small, "*", 0).areas == [(0, BLOCK)]
    with open(path, "ab") as handle:
        handle.write(bytes(5 * BLOCK) + b"n" * BLOCK)
    big = tracker.record("d", str(path), 8 * BLOCK)
    assert tracker.changed_areas(big, small, 0).areas == [(6 * BLOCK, BLOCK)]
