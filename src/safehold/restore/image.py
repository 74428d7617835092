"""Restore a disk item to an image file (sparse) or a block device.

Holes are skipped in a file (it stays sparse) and written as zeros on a
device, where old contents would otherwise show through. Chunks are read,
verified and decoded on a pool of threads ahead of the writer; the writer joins
chunks that follow each other into sequential ``pwritev`` calls of up to
``BATCH_BYTES``, written by a small pool (disjoint ranges). Memory stays bounded:
``AHEAD_BYTES`` of decoded chunks (at least four per thread) plus a batch per
writing thread and the one being filled.

The item is hostile input (see ``directory``): the file is opened relative to a
directory descriptor with O_NOFOLLOW, so a symlink planted at its name is refused
rather than written through, and the stored mode loses setuid/setgid/sticky bits
unless ``special_files``.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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

        def read(index: int) -> bytes | None | IntegrityError:
            """On a pool thread: the chunk's verified plaintext, None for a hole, or the error."""
            blob_id = chunks[index * 32 : (index + 1) * 32]
            if blob_id == HOLE:
                return None
            try:
                return reader.read_blob(blob_id)  # decrypts and decompresses outside the GIL
            except IntegrityError as exc:
                return exc

        window = max(threads * 4, AHEAD_BYTES // max(1, chunk_size))
        with ThreadPoolExecutor(threads, thread_name_prefix="safehold-restore") as pool, \
                ThreadPoolExecutor(threads, thread_name_prefix="safehold-restore-write") as writers:
            writer = _BatchWriter(fd, writers, threads)
            for index, data in enumerate(ordered_map(pool, read, range(count), window)):
                offset = index * chunk_size
                length = min(chunk_size, size - offset)
                if data is None:
                    result.holes += 1
                    if is_device and length > 0:  # old contents of a device would show through
                        writer.add(offset, zero[:length])
                    continue
                if isinstance(data, IntegrityError) or length <= 0 or len(data) > length:
                    # Damaged, or a chunk that does not fit where the item puts it (a hostile
                    # item): nothing written there, so it cannot spill into its neighbours.
                    result.damaged_ranges.append((offset, max(0, length)))
                    continue
                writer.add(offset, data)
                result.bytes_written += len(data)
                if is_device and len(data) < length:  # a short chunk's tail reads as zeros in a file
                    writer.add(offset + len(data), zero[: length - len(data)])
                if writer.flushed:
                    on_progress(result.bytes_written - writer.pending_data)
            writer.finish()
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


#: Consecutive chunks go to the disk in one ``pwritev`` of up to this many bytes (four 512 KiB
#: chunks: a quarter of the system calls). Measured on the 1 GiB benchmark image (docs/benchmarks.md,
#: issue 19 third round): 8-16 MiB batches with 16-32 MiB decoded ahead made the restore job 2-3x
#: slower than one pwrite per chunk (the decoded bytes left the CPU cache before they were copied
#: into the page cache, and were allocated fresh: 3x the page faults); 2-4 MiB with 4 MiB ahead
#: are as fast as per-chunk writes, within the noise of this machine.
BATCH_BYTES = 2 * 1024 * 1024
#: Decoded chunks the pool may hold ahead of the writer (at least four per thread); with the
#: batches being written, the memory bound of an image restore.
AHEAD_BYTES = 4 * 1024 * 1024
_IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024)


class _BatchWriter:
    """Collects buffers that follow each other on the disk and writes them with one ``pwritev``.

    A buffer that does not start where the batch ends (after a hole, a damaged or a short chunk)
    starts a new batch, so every byte lands at the offset its chunk names. Full batches are written
    by ``writers`` (at most ``depth`` at once, on disjoint ranges), so the copy into the page cache,
    the costly part on a small VM, runs on several cores as the per-chunk writes of old did.
    ``finish`` writes the last batch and waits for all; a write's OSError is raised from
    ``add`` or ``finish``."""

    def __init__(self, fd: int, writers: ThreadPoolExecutor, depth: int) -> None:
        self.fd = fd
        self.writers = writers
        self.depth = max(1, depth)
        self.writing: deque[Future] = deque()
        self.start = 0
        self.buffers: list[bytes | memoryview] = []
        self.length = 0
        self.flushed = False  # set by add() when it wrote the previous batch
        self.pending_data = 0  # bytes of the current batch (for progress)

    def add(self, offset: int, data: bytes | memoryview) -> None:
        self.flushed = False
        if self.buffers and (offset != self.start + self.length or self.length + len(data) > BATCH_BYTES
                             or len(self.buffers) >= _IOV_MAX):
            self.flush()
            self.flushed = True
        if not self.buffers:
            self.start = offset
        self.buffers.append(data)
        self.length += len(data)
        self.pending_data = self.length

    def flush(self) -> None:
        if self.buffers:
            self.writing.append(self.writers.submit(self._write, self.buffers, self.start))
        self.buffers, self.length, self.pending_data = [], 0, 0
        while len(self.writing) > self.depth:
            self.writing.popleft().result()

    def finish(self) -> None:
        self.flush()
        while self.writing:
            self.writing.popleft().result()

    def _write(self, buffers: list[bytes | memoryview], offset: int) -> None:
        while buffers:
            written = os.pwritev(self.fd, buffers, offset)
            offset += written
            # A short write (a signal, a full device) resumes after what was written.
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
