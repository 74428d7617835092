"""The items that flow from a source driver to the repository writer.

Shared by ``sources`` (which produce them) and ``repository.archiver`` (which
stores them), so neither layer imports the other: the archiver knows nothing
of platforms, the drivers nothing of the storage format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Literal, Protocol

Incremental = Literal["cbt", "rct", "dirty-bitmap", "ebs-changed-blocks", "mtime", "none"]
Extent = tuple[int, int]  # (offset, length) in bytes

# In an image item's chunk list, an all-zero id marks a hole: a chunk of zeros, never stored.
HOLE = bytes(32)


@dataclass
class FileItem:
    """One filesystem entry. ``path`` is relative to the snapshot root, '/'-separated bytes
    (names need not be valid UTF-8)."""

    path: bytes
    type: str  # file, dir, symlink, hardlink, fifo, chardev, blockdev, socket
    mode: int
    uid: int
    gid: int
    user: str
    group: str
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    inode: int
    device: int
    size: int = 0
    link_target: bytes | None = None  # symlink target, or for 'hardlink' the path of the first link
    rdev: int = 0
    open: Callable[[], BinaryIO] | None = None  # regular files only
    # A hint, given a few items ahead by the archiver for a file it will read (not for one it takes
    # unchanged from the parent): start fetching it now, so that over a high-latency link (SFTP)
    # many small files are in flight instead of one round trip after another. Optional.
    prefetch: Callable[[], None] | None = None
    xattrs: dict[bytes, bytes] | None = None  # extended attributes (ACLs, SELinux labels, user.*)


class DiskReader(Protocol):
    """Reads a disk at offsets. A reader may also offer ``prefetch(offset, length)``: a hint,
    given a little ahead of scattered reads, that the range will be read soon (a file reader
    asks the kernel to start reading it, so scattered reads overlap instead of queueing)."""

    def read_at(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass
class DiskItem:
    """A disk (image file, block device, VM disk, EBS volume) of ``size`` bytes.

    ``allocated``: extents that may hold data (None: all of it); everything
    else reads as zeros and is stored as holes without being read.
    ``changed``: extents changed since the parent snapshot's token (None: not
    known, read everything allocated). Given ``changed``, chunks outside it are
    taken from the parent snapshot unread.
    """

    name: str
    size: int
    open: Callable[[], DiskReader]
    allocated: list[Extent] | None = None
    changed: list[Extent] | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class View:
    kind: Literal["files", "image"]
    paths: list[str]
    items: Callable[[], Iterator[FileItem]] | None = None
    disks: list[DiskItem] = field(default_factory=list)
    incremental: Incremental = "none"
    token: dict = field(default_factory=dict)
    # Said to the job log with the snapshot's own warnings (e.g. "only crash-consistent").
    warnings: list[str] = field(default_factory=list)
    # Said to the job log (info) once the view is closed: what the driver ran on the source host
    # (an SSH target's before/after commands), so an operator sees what was done and when.
    notes: list[str] = field(default_factory=list)
    # Called after every item is stored and before the snapshot is written; what it returns joins
    # the token. For platforms whose change-tracking id exists only once the source's snapshot is
    # released into a reference point (Hyper-V RCT); if it raises, no snapshot is written.
    complete: Callable[[], dict] | None = None


