"""Restore file items into a directory.

Nothing wrong is ever written silently: every chunk is verified by the
reader before it is written, a file with a damaged chunk is removed and named
in the result, and the restore goes on with the other files. Directory
metadata (mode, times) is applied last, deepest first, so writing children
does not disturb it.
"""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

from ..errors import DestinationError, IntegrityError


class BlobReader(Protocol):
    """Contract: ``read_blob`` returns verified plaintext or raises IntegrityError;
    ``blob_size`` gives its plaintext length without reading it. Both thread-safe."""

    def read_blob(self, blob_id: bytes) -> bytes: ...

    def blob_size(self, blob_id: bytes) -> int: ...


@dataclass(eq=False)
class _OpenFile:
    """A file being written by the pool: closed and finished when its last chunk lands."""

    real: bytes
    item: dict
    fd: int
    remaining: int
    damaged: str | None = None
    error: OSError | None = None


@dataclass
class RestoreResult:
    files: int = 0
    directories: int = 0
    bytes_written: int = 0
    damaged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def selected(path: bytes, includes: list[bytes]) -> bool:
    """A path is selected when it is an include, lies under one, or leads to one."""
    if not includes:
        return True
    for include in includes:
        if path == include or path.startswith(include + b"/") or include.startswith(path + b"/"):
            return True
    return False


def safe_relative_path(path: bytes) -> bool:
    """A snapshot path that stays inside the destination: relative, no '', '.' or '..' parts."""
    parts = path.split(b"/")
    return bool(path) and not path.startswith(b"/") and all(p not in (b"", b".", b"..") for p in parts)


class DirectoryRestorer:
    def __init__(self, reader: BlobReader, destination: str | Path, *, includes: list[str] | None = None,
                 overwrite: bool = False, threads: int | None = None,
                 on_progress: Callable[[int, str], None] | None = None) -> None:
        self.reader = reader
        self.destination = os.fsencode(os.path.abspath(destination))
        self.includes = [os.fsencode(i).strip(b"/") for i in (includes or [])]
        self.overwrite = overwrite
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.on_progress = on_progress or (lambda done, current: None)
        self.result = RestoreResult()
        self.is_root = os.geteuid() == 0
        self._restored_files: dict[bytes, bytes] = {}  # snapshot path -> restored real path
        self._state = threading.Condition()  # guards result counters, open files and the first error
        self._open_files = 0
        self._error: tuple[bytes, OSError] | None = None
        self._slots = threading.BoundedSemaphore(self.threads * 4)
        self._root = os.path.realpath(self.destination)
        self._inside: set[bytes] = set()  # directories known to resolve inside the destination

    def _prepare_destination(self) -> None:
        if os.path.exists(self.destination):
            if not os.path.isdir(self.destination):
                raise DestinationError(destination=os.fsdecode(self.destination), detail="exists and is not a directory")
            if os.listdir(self.destination) and not self.overwrite:
                raise DestinationError(destination=os.fsdecode(self.destination), detail="directory is not empty")
        os.makedirs(self.destination, exist_ok=True)

    def restore(self, items: Iterable[dict]) -> RestoreResult:
        """Files are written by a pool: each chunk is fetched, verified and written at its offset
        by a worker, so many small files and the chunks of one large file all proceed in parallel."""
        self._prepare_destination()
        directories: list[tuple[bytes, dict]] = []
        file_items: dict[bytes, dict] = {}
        hardlinks: list[tuple[bytes, dict]] = []
        with ThreadPoolExecutor(self.threads, thread_name_prefix="safehold-restore") as pool:
            for item in items:
                path = item["path"]
                if item["type"] == "file":
                    file_items[path] = item  # a hard link may point at a file we skip
                if not selected(path, self.includes):
                    continue
                if not safe_relative_path(path):
                    # A crafted or damaged snapshot must not write outside the destination.
                    self.result.warnings.append(f"{os.fsdecode(path)}: unsafe path, not restored")
                    self.result.damaged.append(os.fsdecode(path))
                    continue
                real = self.destination + b"/" + path
                if not self._parent_is_inside(real):
                    self.result.warnings.append(f"{os.fsdecode(path)}: parent is a symlink, not restored")
                    self.result.damaged.append(os.fsdecode(path))
                    continue
                kind = item["type"]
                try:
                    if kind == "dir":
                        os.makedirs(real, exist_ok=True)
                        directories.append((real, item))
                        self.result.directories += 1
                        continue
                    self._clear(real)
                    if kind == "file":
                        self._start_file(pool, real, item)
                        self.on_progress(self.result.bytes_written, os.fsdecode(path))
                    elif kind == "hardlink":
                        hardlinks.append((real, item))  # after every file has landed
                    elif kind == "symlink":
                        os.symlink(item["target"], real)
                        self._apply_metadata(real, item)
                    elif kind == "fifo":
                        os.mkfifo(real, item["mode"])
                        self._apply_metadata(real, item)
                    elif kind in ("chardev", "blockdev"):
                        if not self.is_root:
                            self.result.warnings.append(f"{os.fsdecode(path)}: device nodes need root; skipped")
                            continue
                        flag = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
                        os.mknod(real, item["mode"] | flag, item.get("rdev", 0))
                        self._apply_metadata(real, item)
                    # sockets cannot be restored meaningfully; skipped like every tool does
                except OSError as exc:
                    raise DestinationError(destination=os.fsdecode(real), detail=exc.strerror or str(exc)) from exc
                self._raise_worker_error()
            self._wait_for_files()
            for real, item in hardlinks:
                self._hardlink(pool, real, item, file_items)
            self._wait_for_files()
        self._raise_worker_error()
        self.on_progress(self.result.bytes_written, "")
        for real, item in reversed(directories):
            self._apply_metadata(real, item)
        return self.result

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            real, exc = self._error
            raise DestinationError(destination=os.fsdecode(real), detail=exc.strerror or str(exc)) from exc

    def _wait_for_files(self) -> None:
        with self._state:
            self._state.wait_for(lambda: self._open_files == 0)

    def _parent_is_inside(self, real: bytes) -> bool:
        """The parent directory, with symlinks resolved, must lie inside the destination.

        Directories already checked are remembered: resolving every parent again
        was a fifth of the restoring thread's time on a tree of small files.
        """
        directory = os.path.dirname(real)
        if directory in self._inside:
            return True
        parent = os.path.realpath(directory)
        root = self._root
        inside = parent == root or parent.startswith(root + b"/")
        if inside:
            self._inside.add(directory)
        return inside

    def _clear(self, real: bytes) -> None:
        if os.path.lexists(real):
            if os.path.isdir(real) and not os.path.islink(real):
                raise DestinationError(destination=os.fsdecode(real), detail="a directory is in the way")
            os.unlink(real)

    def _start_file(self, pool: ThreadPoolExecutor, real: bytes, item: dict) -> None:
        chunks = item["chunks"]
        ids = [chunks[i : i + 32] for i in range(0, len(chunks), 32)]
        fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        handle = _OpenFile(real, item, fd, len(ids))
        with self._state:
            self._open_files += 1
        if not ids:
            self._finish_file(handle)
            return
        offset = 0
        for blob_id in ids:
            try:
                size = self.reader.blob_size(blob_id)
            except IntegrityError as exc:  # not even in the index: the file cannot be restored
                handle.damaged = str(exc)
                size = 0
            self._slots.acquire()  # bounds chunks in flight, so memory stays flat
            pool.submit(self._write_chunk, handle, blob_id, offset)
            offset += size

    def _write_chunk(self, handle: _OpenFile, blob_id: bytes, offset: int) -> None:
        try:
            if handle.damaged is None and handle.error is None:
                data = self.reader.read_blob(blob_id)
                view = memoryview(data)
                while view:
                    written = os.pwrite(handle.fd, view, offset)
                    view = view[written:]
                    offset += written
                with self._state:
                    self.result.bytes_written += len(data)
        except IntegrityError as exc:
            handle.damaged = str(exc)
        except OSError as exc:
            handle.error = exc
        except BaseException as exc:  # a bug: report it on the main thread, never lose it
            handle.error = OSError(0, repr(exc))
        finally:
            self._slots.release()
            with self._state:
                handle.remaining -= 1
                last = handle.remaining == 0
            if last:
                self._finish_file(handle)

    def _finish_file(self, handle: _OpenFile) -> None:
        path = handle.item["path"]
        try:
            os.close(handle.fd)
            if handle.damaged is not None:
                os.unlink(handle.real)  # never leave a file with wrong or missing bytes behind
                with self._state:
                    self.result.damaged.append(os.fsdecode(path))
                    self.result.warnings.append(f"{os.fsdecode(path)}: {handle.damaged}")
            elif handle.error is not None:
                with self._state:
                    self._error = self._error or (handle.real, handle.error)
            else:
                self._apply_metadata(handle.real, handle.item)
                with self._state:
                    self._restored_files[path] = handle.real
                    self.result.files += 1
        except OSError as exc:
            with self._state:
                self._error = self._error or (handle.real, exc)
        finally:
            with self._state:
                self._open_files -= 1
                self._state.notify_all()

    def _hardlink(self, pool: ThreadPoolExecutor, real: bytes, item: dict, file_items: dict[bytes, dict]) -> None:
        first = item["target"]
        if first in self._restored_files:
            os.link(self._restored_files[first], real)
            self.result.files += 1
            return
        # The first name was not selected (or was damaged): restore this name as a file.
        original = file_items.get(first)
        if original is None:
            self.result.warnings.append(f"{os.fsdecode(item['path'])}: hard link to unknown {os.fsdecode(first)}")
            return
        self._start_file(pool, real, original | {"path": item["path"]})
        self._wait_for_files()
        if item["path"] in self._restored_files:
            self._restored_files[first] = real  # later links of the inode link to this copy

    def _apply_metadata(self, real: bytes, item: dict) -> None:
        is_link = item["type"] == "symlink"
        if self.is_root:
            try:
                os.lchown(real, item["uid"], item["gid"])
            except OSError as exc:
                self.result.warnings.append(f"{os.fsdecode(real)}: owner not restored: {exc.strerror}")
        for name, value in (item.get("xattrs") or {}).items():
            try:
                os.setxattr(real, name, value, follow_symlinks=False)
            except OSError as exc:  # e.g. security.* without privilege, or no xattr support
                self.result.warnings.append(
                    f"{os.fsdecode(real)}: attribute {os.fsdecode(name)} not restored: {exc.strerror}")
        if not is_link:
            os.chmod(real, item["mode"])
        os.utime(real, ns=(item.get("atime", item["mtime"]), item["mtime"]), follow_symlinks=not is_link)
