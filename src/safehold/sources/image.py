"""A raw disk image file or block device, backed up as one disk.

For sparse image files the allocated extents come from ``SEEK_DATA``/
``SEEK_HOLE``, so holes are stored without being read. A block device is read
whole. Callers that know what changed (VM and EBS drivers, or a test) pass
``changed`` extents through the Python API.

An image file whose identity and metadata (device, inode, size, mtime, ctime) match what the
parent snapshot recorded is taken from the parent unread, as restic and the files source skip an
unchanged file; ``force_read`` (``force_read: true`` in targets.yml) reads it whole anyway.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from typing import Iterator

from ..errors import SourceError
from .base import DiskItem, Extent, View


class FileDiskReader:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def read_at(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) < length:  # past the end of a file that shrank, or a short read
            more = bytearray(data)
            while len(more) < length:
                piece = os.pread(self.fd, length - len(more), offset + len(more))
                if not piece:
                    more += bytes(length - len(more))
                    break
                more += piece
            data = bytes(more)
        return data

    def prefetch(self, offset: int, length: int) -> None:
        # Starts the reads without waiting for them; a device or file system without the
        # hint just reads on demand, as before.
        try:
            os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def allocated_extents(path: str) -> list[Extent] | None:
    """Data extents of a regular file, or None when the filesystem cannot tell."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        extents: list[Extent] = []
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == 6:  # ENXIO: no data after offset
                    break
                return None
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            offset = end
        return extents
    except OSError:
        return None
    finally:
        os.close(fd)


def disk_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class ImageSource:
    def __init__(self, path: str, chunk_size: int, force_read: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.chunk_size = chunk_size
        self.force_read = force_read

    @contextmanager
    def open(self, parent_token: dict | None = None, changed: list[Extent] | None = None) -> Iterator[View]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise SourceError(source=self.path, detail="no such file or device") from None
        except PermissionError:
            raise SourceError(source=self.path, detail="permission denied") from None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise SourceError(source=self.path, detail="not a regular file or block device")
        if not os.access(self.path, os.R_OK):
            raise SourceError(source=self.path, detail="permission denied")
        identity = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
                    "device": st.st_dev}
        incremental = "none"
        if changed is None and not self.force_read and stat.S_ISREG(st.st_mode) and \
                isinstance(parent_token, dict) and parent_token.get("file") == identity:
            # An image file whose device, inode, size, mtime and ctime match the parent's is
            # unchanged (the rule files use): take every chunk from the parent unread. The token
            # is compared whole, so a parent recorded before the device was (or a damaged one)
            # never matches and the file is read. A block device has no such guarantee and is
            # always read; extents handed in by a caller (a platform's change tracking) win.
            changed = []
            incremental = "mtime"
        # The holes of a file that will be read (two lseeks per extent); an unchanged one is not.
        allocated = allocated_extents(self.path) if stat.S_ISREG(st.st_mode) and incremental == "none" else None
        disk = DiskItem(
            name=os.path.basename(self.path), size=disk_size(self.path),
            open=lambda: FileDiskReader(self.path), allocated=allocated, changed=changed,
            metadata={"mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns},
        )
        # Extents handed in by a caller (a VM or EBS driver, a test) are noted in the token.
        token: dict = {"file": identity} if stat.S_ISREG(st.st_mode) else {}
        if changed is not None and incremental == "none":
            token |= {"changed_extents_from": "caller", "changed_extents": len(changed)}
        view = View(kind="image", paths=[self.path], disks=[disk], incremental=incremental, token=token)
        if self.force_read and changed is None and stat.S_ISREG(st.st_mode):
            view.notes.append(f"force_read: {self.path} read whole, whatever its metadata")
        yield view
