"""A physical postgres snapshot (``base.tar`` from pg_basebackup) extracted into a data directory.

The tar is read as a stream of verified chunks (``BlobStream``) and extracted member by member
without a temporary copy. It is hostile input like any snapshot: names are split into single
components (no absolute path, no '..'), every directory is opened below the data directory with
O_NOFOLLOW|O_DIRECTORY and every file is made fresh with O_EXCL|O_NOFOLLOW relative to it, so no
member can write outside it. A data directory holds only directories and regular files (the
symlinks of pg_tblspc exist only with tablespaces, which a streamed base backup cannot carry);
anything else is skipped and listed. Modes become 0700/0600, as PostgreSQL requires; ``owner``
(the server's user, when restoring as root) owns everything.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import Callable

from ..errors import DestinationError
from .base import BlobReader
from .directory import open_directory_below, valid_name
from .pipe import chunk_ids

COPY_BLOCK = 1 << 20


class BlobStream(io.RawIOBase):
    """A stored file's content as a read-only stream, one verified chunk at a time."""

    def __init__(self, reader: BlobReader, item: dict, progress: Callable[[int], None]) -> None:
        self.reader = reader
        self.ids = chunk_ids(item)
        self.index = 0
        self.buffer = memoryview(b"")
        self.done = 0
        self.progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[override]
        while not self.buffer and self.index < len(self.ids):
            self.buffer = memoryview(self.reader.read_blob(self.ids[self.index]))
            self.index += 1
        count = min(len(target), len(self.buffer))
        target[:count] = self.buffer[:count]
        self.buffer = self.buffer[count:]
        self.done += count
        if count:
            self.progress(self.done)
        return count


def extract_base_tar(reader: BlobReader, item: dict, data_fd: int, *, owner: tuple[int, int] | None,
                     progress: Callable[[int], None]) -> tuple[int, int, list[str]]:
    """Extract ``item`` (a tar) below the open directory ``data_fd``; (files, bytes, skipped)."""
    files = written = 0
    skipped: list[str] = []
    stream = io.BufferedReader(BlobStream(reader, item, progress), buffer_size=COPY_BLOCK)
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as exc:
        raise DestinationError(destination="the data directory", detail=f"base.tar is not a tar archive: {exc}")
    with archive:
        for member in archive:
            parts = [part for part in os.fsencode(member.name).split(b"/") if part not in (b"", b".")]
            shown = member.name[:200]
            if not parts or not all(valid_name(part) for part in parts):
                if parts:
                    skipped.append(f"{shown}: unsafe name, not restored")
                continue
            if member.isdir():
                fd = open_directory_below(data_fd, parts)
                try:
                    os.fchmod(fd, 0o700)
                    if owner is not None:
                        os.fchown(fd, *owner)
                finally:
                    os.close(fd)
            elif member.isreg():
                parent = open_directory_below(data_fd, parts[:-1])
                try:
                    fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600, dir_fd=parent)
                finally:
                    os.close(parent)
                try:
                    source = archive.extractfile(member)
                    assert source is not None
                    while True:
                        block = source.read(COPY_BLOCK)
                        if not block:
                            break
                        _write_all(fd, block)
                        written += len(block)
                    if owner is not None:
                        os.fchown(fd, *owner)
                finally:
                    os.close(fd)
                files += 1
            else:
                skipped.append(f"{shown}: {'link' if member.issym() or member.islnk() else 'special file'}, "
                               "not restored")
    return files, written, skipped


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
