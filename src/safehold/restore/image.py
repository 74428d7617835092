"""Restore a disk item to an image file (sparse) or a block device.

Holes are skipped in a file (it stays sparse) and written as zeros on a
device, where old contents would otherwise show through. The image is cut into
runs of chunks that follow each other on the disk (up to ``BATCH_BYTES``; a hole
ends a run in a file); a pool thread reads, verifies and decodes a run and writes
it with one ``pwritev`` at its offset (runs are disjoint). Memory stays bounded:
``AHEAD_BYTES`` of runs in flight.

The item is hostile input (see ``directory``): the file is opened relative to a
directory descriptor with O_NOFOLLOW, so a symlink planted at its name is refused
rather than written through, and the stored mode loses setuid/setgid/sticky bits
unless ``special_files``.
"""

from __future__ import annotations

import errno
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..concurrency import ordered_map
from ..errors import DestinationError, IntegrityError
from ..items import HOLE
from ..text import printable
from .base import BlobReader
from .directory import valid_name


@dataclass
class ImageRestoreResult:
    size: int = 0
    bytes_written: int = 0
    holes: int = 0
    damaged_ranges: list[tuple[int, int]] = field(default_factory=list)
    #: The stored mode's setuid/setgid/sticky bits, when removed.
    special: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def restore_image(reader: BlobReader, item: dict, destination: str | Path, *, overwrite: bool = False,
                  threads: int | None = None, on_progress: Callable[[int], None] | None = None,
                  dir_fd: int | None = None, special_files: bool = False) -> ImageRestoreResult:
    """Restore ``item`` to ``destination``: a path the operator chose, or, with ``dir_fd``, a single
    name inside that open directory (a disk name from the snapshot, or the last component of an API
    destination below the restore root)."""
    shown = printable(os.fspath(destination))  # for messages: a disk name comes from the snapshot
    on_progress = on_progress or (lambda done: None)
    if dir_fd is None:
        fd, is_device = _open_path(os.fspath(destination), overwrite)
    else:
        fd, is_device = _open_at(dir_fd, os.fsencode(os.fspath(destination)), shown, overwrite)
    size, chunk_size, chunks = item["size"], item["chunk_size"], item["chunks"]
    result = ImageRestoreResult(size=size)
    threads = max(1, threads or os.cpu_count() or 1)
    try:
        if not is_device:
            # Opened new or truncated to zero (O_EXCL/O_TRUNC), so every byte not written below
            # reads as zero: holes cost nothing and nothing of a larger old file survives.
            os.ftruncate(fd, size)
        zero = memoryview(bytes(chunk_size)) if is_device else None
        count = len(chunks) // 32
        per_run = max(1, BATCH_BYTES // max(1, chunk_size))

        def runs() -> Iterator[range]:
            """Chunk indexes in runs of up to ``per_run`` that follow each other on the disk: a
            hole ends a run in a file (it is not written), and is part of the run on a device."""
            first = None
            for index in range(count):
                if not is_device and chunks[index * 32 : (index + 1) * 32] == HOLE:
                    if first is not None:
                        yield range(first, index)
                    first = None
                    continue
                if first is None:
                    first = index
                elif index - first == per_run:
                    yield range(first, index)
                    first = index
            if first is not None:
                yield range(first, count)

        def place(run: range) -> tuple[int, list[tuple[int, int]]]:
            """On a pool thread: read, verify and decode a run's chunks and write them with one
            ``pwritev`` while they are still in the CPU's cache (decrypting and decompressing
            release the GIL). Returns (data bytes written, damaged ranges)."""
            buffers: list[bytes | memoryview] = []
            start = end = run.start * chunk_size
            written, damaged = 0, []
            for index in run:
                offset = index * chunk_size
                length = min(chunk_size, size - offset)
                blob_id = chunks[index * 32 : (index + 1) * 32]
                data: bytes | memoryview | None = None
                if blob_id == HOLE:  # only on a device: old contents would show through
                    data = zero[: max(0, length)]
                else:
                    try:
                        data = reader.read_blob(blob_id)
                    except IntegrityError:
                        pass
                    if data is None or length <= 0 or len(data) > length:
                        # Damaged, or a chunk that does not fit where the item puts it (a hostile
                        # item): nothing written there, so it cannot spill into its neighbours.
                        damaged.append((offset, max(0, length)))
                        continue
                    written += len(data)
                if buffers and offset != end:  # after a damaged or short chunk
                    _write_all(fd, buffers, start)
                    buffers = []
                if not buffers:
                    start = offset
                buffers.append(data)
                end = offset + len(data)
                if is_device and len(data) < length:  # a short chunk's tail reads as zeros in a file
                    buffers.append(zero[: length - len(data)])
                    end = offset + length
            if buffers:
                _write_all(fd, buffers, start)
            return written, damaged

        result.holes = sum(1 for i in range(count) if chunks[i * 32 : (i + 1) * 32] == HOLE)
        window = max(2 * threads, AHEAD_BYTES // max(1, per_run * chunk_size))
        with ThreadPoolExecutor(threads, thread_name_prefix="safehold-restore") as pool:
            for written, damaged in ordered_map(pool, place, runs(), window):
                result.bytes_written += written
                result.damaged_ranges += damaged
                on_progress(result.bytes_written)
        if is_device:
            # A device has no file system journal behind it: the restore is done when the device
            # holds it (one flush at the end; image files, like file restores, are not synced).
            os.fdatasync(fd)
        mode = (item.get("metadata") or {}).get("mode")
        if isinstance(mode, int) and not isinstance(mode, bool) and not is_device:
            wanted = stat.S_IMODE(mode)
            if not special_files:
                wanted &= 0o777  # no setuid/setgid/sticky image file unless asked for
            if wanted != stat.S_IMODE(mode):
                result.special.append(f"{os.fsdecode(destination)}: mode {stat.S_IMODE(mode):o} restored as {wanted:o} "
                                      "(restore with --special-files to keep it)")
            os.fchmod(fd, wanted)  # the descriptor we wrote, not a path that could have changed
    except OSError as exc:
        raise DestinationError(destination=shown, detail=exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
    result.damaged_ranges.sort()
    return result


#: A run of consecutive chunks is read, decoded and written by one pool thread with one
#: ``pwritev`` of up to this many bytes, copied into the page cache while still in the CPU's cache.
#: 512 KiB: one write per default (512 KiB) chunk, eight per write for 64 KiB chunks. Measured on
#: the 1 GiB benchmark image (docs/benchmarks.md, issue 19 third round), on this 2-core VM under load:
#: larger writes were slower, not faster: a single writer joining 8-16 MiB batches behind 16-32 MiB
#: of read-ahead made the job 2-3x slower than per-chunk writes (decoded bytes out of cache, 3x the
#: page faults), and runs of four 512 KiB chunks per pool thread still ~2x (the copy of 2 MiB no
#: longer comes from the core's cache).
BATCH_BYTES = 512 * 1024
#: Decoded runs in flight (at least two per thread): the memory bound of an image restore.
AHEAD_BYTES = 8 * 1024 * 1024


def _write_all(fd: int, buffers: list[bytes | memoryview], offset: int) -> None:
    """``pwritev`` the buffers at ``offset``; a short write (a signal, a full device) resumes
    after what was written."""
    while buffers:
        written = os.pwritev(fd, buffers, offset)
        if not written:  # past the end of a device: never loop on it
            raise OSError(errno.ENOSPC, "no space left: the image is larger than the device")
        offset += written
        while buffers and written >= len(buffers[0]):
            written -= len(buffers[0])
            buffers = buffers[1:]
        if buffers and written:
            buffers = [memoryview(buffers[0])[written:], *buffers[1:]]


def _open_path(destination: str, overwrite: bool) -> tuple[int, bool]:
    """A path the operator typed. Its directories are theirs (made if missing); a block device
    may be named through a symlink (/dev/disk/by-id/...); a file is opened like a snapshot name."""
    path = os.path.abspath(destination)
    if os.path.islink(path) and os.path.exists(path) and stat.S_ISBLK(os.stat(path).st_mode):
        path = os.path.realpath(path)
    parent, name = os.path.split(path)
    try:
        os.makedirs(parent, exist_ok=True)
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DestinationError(destination=destination, detail=exc.strerror or str(exc)) from exc
    try:
        return _open_at(dir_fd, os.fsencode(name), destination, overwrite)
    finally:
        os.close(dir_fd)


def _open_at(dir_fd: int, name: bytes, shown: str, overwrite: bool) -> tuple[int, bool]:
    """Open ``name`` in ``dir_fd`` for writing, never through a symlink; returns (fd, is a device)."""
    if not valid_name(name):
        raise DestinationError(destination=shown, detail="not a single file name")
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise DestinationError(destination=shown, detail=exc.strerror or str(exc)) from exc
    is_device = info is not None and stat.S_ISBLK(info.st_mode)
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise DestinationError(destination=shown, detail="is a symlink; refusing to write through it")
        if stat.S_ISDIR(info.st_mode):
            raise DestinationError(destination=shown, detail="is a directory; give a file name")
        if not is_device and not stat.S_ISREG(info.st_mode):
            raise DestinationError(destination=shown, detail="exists and is neither a file nor a block device")
        if not is_device and not overwrite:
            raise DestinationError(destination=shown, detail="file exists")
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    if not is_device:
        flags |= os.O_CREAT | (os.O_TRUNC if info is not None else os.O_EXCL)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise DestinationError(destination=shown, detail=exc.strerror or str(exc)) from exc
    opened = os.fstat(fd).st_mode
    if stat.S_ISBLK(opened) != is_device or not (stat.S_ISBLK(opened) or stat.S_ISREG(opened)):
        os.close(fd)  # swapped between the check and the open
        raise DestinationError(destination=shown, detail="changed while it was opened")
    return fd, is_device
