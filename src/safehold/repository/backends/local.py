"""Local filesystem backend.

Layout: ``config``, ``keys/<name>``, ``locks/<name>``, ``snapshots/<name>``,
``index/<name>``, ``forgotten/<name>``, ``verdicts/<name>`` (created on first use),
``data/<first two hex chars>/<name>``.

Durability: every object is written to a temporary file in the same directory,
fsynced, renamed into place, and the directory fsynced, so a crash or a full
disk never leaves a torn object under its final name. Temporary files are named
``.tmp-*`` and ignored by ``list``; prune removes leftovers.

Packs are written as they are filled (``spool``): each stored blob goes into a temporary file
under ``data/`` when it is added, and the finished pack is fsynced and renamed to its name (its
hash, known only at the end), so a 16 MiB pack is never held in memory (issue 19, fifth round).

Modes: folders are created 0700 and objects 0600 whatever the umask (see
``safehold.files``), so a repository under umask 000 is not world-writable.
"""

from __future__ import annotations

import os
import secrets
import weakref
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from ...files import PRIVATE_DIRECTORY, make_private_directory
from .base import Kind, ObjectExists, ObjectInfo, ObjectNotFound

TEMP_PREFIX = ".tmp-"


class LocalBackend:
    supports_retention = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    # -- paths --------------------------------------------------------------
    def _dir(self, kind: Kind, name: str = "") -> Path:
        if kind is Kind.CONFIG:
            return self.root
        if kind is Kind.DATA and name:
            return self.root / kind.value / name[:2]
        return self.root / kind.value

    def _path(self, kind: Kind, name: str) -> Path:
        if kind is Kind.CONFIG:
            return self.root / "config"
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid object name {name!r}")
        return self._dir(kind, name) / name

    # -- contract -----------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "config").is_file()

    def create(self) -> None:
        if self.exists():
            raise ObjectExists(f"a repository exists at {self.url}")
        make_private_directory(self.root)
        for kind in (Kind.KEYS, Kind.LOCKS, Kind.SNAPSHOTS, Kind.INDEX, Kind.DATA, Kind.FORGOTTEN):
            _make_folder(self.root / kind.value)
        for i in range(256):
            _make_folder(self.root / "data" / f"{i:02x}")
        _fsync_dir(self.root)

    def put(self, kind: Kind, name: str, data: bytes | Sequence[bytes], *, exclusive: bool = False,
            retain_until: datetime | None = None) -> None:
        path = self._path(kind, name)
        directory = path.parent
        if not directory.is_dir():
            make_private_directory(directory)
        temp = directory / f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the umask can only remove bits
        try:
            for part in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                view = memoryview(part)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            if exclusive:
                # link() fails if the name exists: an atomic create-if-absent.
                try:
                    os.link(temp, path)
                except FileExistsError:
                    raise ObjectExists(f"{kind.value}/{name}") from None
                finally:
                    temp.unlink(missing_ok=True)
            else:
                os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(directory)

    def spool(self, kind: Kind) -> "Spool":
        """A temporary file to write an object of ``kind`` into as it is made; ``put_spool`` stores it."""
        directory = self.root / kind.value
        if not directory.is_dir():
            make_private_directory(directory)
        return Spool(directory)

    def put_spool(self, kind: Kind, name: str, spool: "Spool", *, retain_until: datetime | None = None) -> None:
        """Store what was written into ``spool`` as ``kind/name``: fsynced, then renamed into place
        (an existing object of that name, the same bytes since names are hashes, is replaced)."""
        path = self._path(kind, name)
        directory = path.parent
        if not directory.is_dir():
            make_private_directory(directory)
        spool.commit(path)
        _fsync_dir(directory)

    def get(self, kind: Kind, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(kind, name)
        try:
            with open(path, "rb") as handle:
                if offset:
                    handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(kind, name) from None

    def stat(self, kind: Kind, name: str) -> ObjectInfo:
        try:
            return ObjectInfo(name, self._path(kind, name).stat().st_size)
        except FileNotFoundError:
            raise ObjectNotFound(kind, name) from None

    def list(self, kind: Kind) -> Iterator[ObjectInfo]:
        if kind is Kind.CONFIG:
            if self.exists():
                yield ObjectInfo("config", (self.root / "config").stat().st_size)
            return
        base = self.root / kind.value
        directories = [base]
        if kind is Kind.DATA:
            directories = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        for directory in directories:
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    yield ObjectInfo(entry.name, entry.stat().st_size)
                except FileNotFoundError:
                    continue

    def delete(self, kind: Kind, name: str) -> None:
        path = self._path(kind, name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def remove_temporary_files(self) -> int:
        """Delete ``.tmp-*`` leftovers of killed writers; returns how many."""
        removed = 0
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    Path(directory, name).unlink(missing_ok=True)
                    removed += 1
        return removed


class Spool:
    """A temporary file (``.tmp-spool-*``) that an object is appended to piece by piece. Not
    thread-safe. Closed and removed if it is dropped without ``commit`` (a failed backup, at the
    latest when the process exits); a killed process leaves it for prune."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{TEMP_PREFIX}spool-{secrets.token_hex(8)}"
        self.size = 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._drop = weakref.finalize(self, _discard, self._fd, str(self.path))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._drop.alive:  # discarded: its descriptor is closed (and may be reused)
            raise ValueError("write to a discarded spool")
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as exc:  # named: an S3 repository's spool is on a local disk (full?)
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            view = view[written:]
            self.size += written

    def commit(self, path: Path) -> None:
        """fsync, close and rename to ``path``; on failure the temporary file is removed."""
        if not self._drop.alive:
            raise ValueError("commit of a discarded spool")
        try:
            os.fsync(self._fd)
            os.replace(self.path, path)
        except BaseException:
            self.discard()
            raise
        self._drop.detach()
        os.close(self._fd)

    def reader(self) -> BinaryIO:
        """What was written, from its start, through a duplicate of the descriptor: the file is
        never opened again by its path, which may lie in a shared temporary folder (the S3
        backend reads a pack back to upload it). It stays until ``discard``."""
        if not self._drop.alive:
            raise ValueError("read of a discarded spool")
        fd = os.dup(self._fd)
        os.lseek(fd, 0, os.SEEK_SET)
        return os.fdopen(fd, "rb")

    def discard(self) -> None:
        self._drop()


def _discard(fd: int, path: str) -> None:
    try:
        os.close(fd)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_folder(path: Path) -> None:
    """One folder of the layout, 0700 even under umask 000 (an existing one keeps its mode)."""
    try:
        os.mkdir(path, PRIVATE_DIRECTORY)
    except FileExistsError:
        return
    os.chmod(path, PRIVATE_DIRECTORY)
