"""Changed-block tracking emulated from disk contents (the test harness's stand-in for vSphere CBT).

vcsim 0.24 has no ``QueryChangedDiskAreas``. This tracker records a digest of
every block of a disk file when a snapshot is taken, under a new change id, and
answers "what changed between change id A and the state at change id B" by
comparing the two recordings; ``*`` means "every block that is not zero", as
vSphere answers for a first backup. It reports content differences, so a block
rewritten with identical bytes counts as unchanged (real CBT would report it:
a superset). Like vSphere it answers one stretch of the disk per call
(``answer_limit``), so callers must loop on ``startOffset``.
Tested by test_vsphere_cbt.py; used by vsphere_proxy.py.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from dataclasses import dataclass

from blake3 import blake3


class UnknownChangeId(Exception):
    """The change id was never issued for this disk (vSphere answers a fault too)."""


@dataclass
class Recording:
    disk: str
    size: int
    blocks: list[bytes | None]  # digest per block; None for an all-zero block


@dataclass
class ChangeInfo:
    start_offset: int
    length: int
    areas: list[tuple[int, int]]


class ChangeTracker:
    def __init__(self, block_size: int = 64 * 1024, answer_limit: int = 4 * 1024 * 1024) -> None:
        self.block_size = block_size
        self.answer_limit = answer_limit
        self.recordings: dict[str, Recording] = {}
        self.epochs: dict[str, str] = {}
        self.sequence = itertools.count(1)
        self.lock = threading.Lock()

    def record(self, disk: str, path: str, size: int) -> str:
        """Record the contents of ``path`` (a disk of ``size`` bytes; a shorter file reads as zeros past
        its end) and return the new change id, in vSphere's form '52 .. .. ../N'."""
        zero = bytes(self.block_size)
        blocks: list[bytes | None] = []
        with open(path, "rb") if os.path.exists(path) else open(os.devnull, "rb") as handle:
            for _offset in range(0, size, self.block_size):
                data = handle.read(self.block_size)
                data = data + bytes(min(self.block_size, size - _offset) - len(data))
                blocks.append(None if data == zero[: len(data)] else blake3(data).digest())
        with self.lock:
            epoch = self.epochs.setdefault(disk, " ".join(f"{b:02x}" for b in uuid.uuid4().bytes[:8]))
            change_id = f"{epoch}/{next(self.sequence)}"
            self.recordings[change_id] = Recording(disk, size, blocks)
        return change_id

    def changed_areas(self, at: str, since: str, start_offset: int) -> ChangeInfo:
        """Areas that differ between the state at change id ``since`` (or '*': nothing) and at ``at``,
        from ``start_offset`` for at most ``answer_limit`` bytes."""
        with self.lock:
            current = self.recordings.get(at)
            if current is None:
                raise UnknownChangeId(at)
            if since == "*":
                before = None
            else:
                before = self.recordings.get(since)
                if before is None or before.disk != current.disk:
                    raise UnknownChangeId(since)
        if start_offset < 0 or start_offset >= current.size:
            raise ValueError(f"startOffset {start_offset} outside the disk (0..{current.size - 1})")
        end = min(current.size, start_offset + self.answer_limit)
        areas: list[tuple[int, int]] = []
        first = start_offset // self.block_size
        for index in range(first, (end + self.block_size - 1) // self.block_size):
            digest = current.blocks[index]
            if before is None:
                changed = digest is not None
            else:
                old = before.blocks[index] if index < len(before.blocks) else None
                changed = digest != old
            if not changed:
                continue
            offset = max(index * self.block_size, start_offset)
            length = min((index + 1) * self.block_size, end) - offset
            if areas and areas[-1][0] + areas[-1][1] == offset:
                areas[-1] = (areas[-1][0], areas[-1][1] + length)
            else:
                areas.append((offset, length))
        return ChangeInfo(start_offset, end - start_offset, areas)
