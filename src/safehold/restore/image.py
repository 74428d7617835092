"""Restore a disk item to an image file (sparse) or a block device.

Holes are skipped in a file (it stays sparse) and written as zeros on a
device, where old contents would otherwise show through. Chunks are read and
verified in parallel and written at their offsets.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..concurrency import ordered_map
from ..errors import DestinationError, IntegrityError
from ..items import HOLE
from .directory import BlobReader



@dataclass
class ImageRestoreResult:
    size: int = 0
    bytes_written: int = 0
    holes: int = 0
    damaged_ranges: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def restore_image(reader: BlobReader, item: dict, destination: str | Path, *, overwrite: bool = False,
                  threads: int | None = None, on_progress: Callable[[int], None] | None = None) -> ImageRestoreResult:
    destination = os.fspath(destination)
    on_progress = on_progress or (lambda done: None)
    is_device = os.path.exists(destination) and stat.S_ISBLK(os.stat(destination).st_mode)
    if os.path.exists(destination) and not is_device and not overwrite:
        raise DestinationError(destination=destination, detail="file exists")
    if os.path.isdir(destination):
        raise DestinationError(destination=destination, detail="is a directory; give a file name")
    size, chunk_size, chunks = item["size"], item["chunk_size"], item["chunks"]
    result = ImageRestoreResult(size=size)
    try:
        if not is_device:
            os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        fd = os.open(destination, os.O_WRONLY | (0 if is_device else os.O_CREAT | os.O_TRUNC), 0o600)
    except OSError as exc:
        raise DestinationError(destination=destination, detail=exc.strerror or str(exc)) from exc
    threads = max(1, threads or os.cpu_count() or 1)
    try:
        if not is_device:
            os.ftruncate(fd, size)  # sparse: holes cost nothing
        zero = bytes(chunk_size)

        def place(index: int) -> int:
            blob_id = chunks[index * 32 : (index + 1) * 32]
            offset = index * chunk_size
            length = min(chunk_size, size - offset)
            if blob_id == HOLE:
                if is_device:
                    os.pwrite(fd, zero[:length], offset)
                return 0
            try:
                data = reader.read_blob(blob_id)
            except IntegrityError:
                result.damaged_ranges.append((offset, length))
                return 0
            os.pwrite(fd, data, offset)
            return len(data)

        count = len(chunks) // 32
        result.holes = sum(1 for i in range(count) if chunks[i * 32 : (i + 1) * 32] == HOLE)
        with ThreadPoolExecutor(threads, thread_name_prefix="safehold-restore") as pool:
            for written in ordered_map(pool, place, range(count), threads * 4):
                result.bytes_written += written
                on_progress(result.bytes_written)
        # No fsync here, like file restores (and restic, borg): callers that need the data
        # on stable storage before they use it run sync; the benchmark times both.
    except OSError as exc:
        raise DestinationError(destination=destination, detail=exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
    if "mode" in item.get("metadata", {}) and not is_device:
        os.chmod(destination, item["metadata"]["mode"])
    result.damaged_ranges.sort()
    return result
