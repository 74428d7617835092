"""The items that flow from a source driver to the repository writer.

Shared by ``sources`` (which produce them) and ``repository.archiver`` (which
stores them), so neither layer imports the other: the archiver knows nothing
of platforms, the drivers nothing of the storage format.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Literal, Protocol, runtime_checkable

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
    # Regular files only. Raises ItemSkipped (or OSError) when the file cannot be read as listed;
    # the stream may be ChangeAware.
    open: Callable[[], BinaryIO] | None = None
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


# --- what a backup could not store as it was -----------------------------------------------

SkipReason = Literal["unreadable", "vanished", "replaced", "changed"]
SKIP_REASONS: tuple[str, ...] = ("unreadable", "vanished", "replaced", "changed")

#: Entries a snapshot and a job record name; the count and the count per reason are always exact.
SKIPPED_LIST_LIMIT = 100


class ItemSkipped(Exception):
    """Raised by ``FileItem.open()`` when the entry cannot be stored as it was listed: it is
    ``unreadable`` (permissions, I/O errors), has ``vanished``, or was ``replaced`` by another
    kind of entry (a FIFO or device swapped in for a regular file). ``detail`` says what happened
    in words; it never contains the path (callers add it, escaped)."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def skip_reason(error: OSError) -> SkipReason:
    """What an OSError met while listing or reading a source entry says about the entry."""
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "vanished"  # removed, or a directory on the way replaced by something else
    if error.errno == errno.ELOOP:
        return "replaced"  # O_NOFOLLOW met a symbolic link where the walk saw something else
    return "unreadable"


@runtime_checkable
class ChangeAware(Protocol):
    """A stream that can tell, once read to the end, whether its entry changed while it was read
    (size, modification time or identity differ from what the walk listed). A ``changed`` entry is
    stored as it was read and reported, since its stored content may be a mix of two versions."""

    def changed_while_read(self) -> str | None: ...


@dataclass
class SkippedItems:
    """What a backup could not store as it was, bounded: the first ``limit`` entries in walk order
    plus exact counts (per reason), so a tree of a million unreadable files costs a few kilobytes.

    ``unreadable``, ``vanished`` and ``replaced`` entries are left out of the snapshot; a
    ``changed`` one is stored as it was read. Entries hold the path as bytes (as in the item
    stream); whoever prints one passes it through ``safehold.text.printable``."""

    limit: int = SKIPPED_LIST_LIMIT
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)

    def add(self, path: bytes, type: str, reason: SkipReason, detail: str) -> None:
        self.count += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.items) < self.limit:
            self.items.append({"path": path, "type": type, "reason": reason, "detail": detail})

    def __bool__(self) -> bool:
        return self.count > 0

    def as_record(self) -> dict:
        """The form kept in a snapshot's summary (msgpack: paths stay bytes)."""
        return {"count": self.count, "reasons": dict(self.reasons), "items": [dict(item) for item in self.items]}


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
    # Entries the driver met but could not list or read (a directory it may not open, one that
    # vanished during the walk); the archiver adds what fails when it opens or reads a file.
    # Drivers of disk images leave it empty: a disk that cannot be read fails the backup.
    skipped: SkippedItems = field(default_factory=SkippedItems)


