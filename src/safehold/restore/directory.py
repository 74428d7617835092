"""Restore file items into a directory, treating the snapshot as hostile input.

Whoever holds the repository password can write any item stream (paths with ``..``, symlinks
pointing out, a directory item over a symlink, hard links through a parent that becomes a link),
so the restorer never resolves a path through the file system. It walks relative to directory
descriptors: every component is opened with ``O_NOFOLLOW | O_DIRECTORY`` below the destination's
descriptor, files are created with ``O_NOFOLLOW | O_EXCL``, links and nodes with ``dir_fd=``, and
metadata is applied to a descriptor (or, for symlinks, with ``follow_symlinks=False``), never to a
path. A symlink in the tree, whoever made it, can therefore never redirect a later write; symlinks
from the snapshot are also created last. Names are single components: never empty, ``.``, ``..``,
or containing ``/`` or NUL. Device nodes and setuid/setgid bits need ``special_files``.

Nothing wrong is ever written silently: every chunk is verified by the reader before it is
written, a file with a damaged chunk is removed and named in the result, and the restore goes on
with the other files. Directory metadata (mode, times) is applied last, deepest first, so writing
children does not disturb it.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import DestinationError, IntegrityError
from ..text import printable
from .base import BlobReader

#: How a directory is opened on the way down: never through a symlink (ELOOP), never a non-directory.
OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A new file: O_EXCL|O_NOFOLLOW, so neither a symlink nor a hard link planted at its name is written through.
CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Bits that grant privileges to whoever runs the file (or joins a directory's group).
PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID
#: Directory descriptors kept open (an LRU by snapshot path); far below the usual 1024 limit.
DIRECTORY_FDS = 128
#: errno values that mean "a component is a symlink or not a directory": the item is refused.
NOT_A_DIRECTORY = (errno.ELOOP, errno.ENOTDIR)


@dataclass(eq=False)
class _OpenFile:
    """A file being written by the pool: finished (metadata, close) when its last chunk lands."""

    parts: tuple[bytes, ...]
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
    #: Device nodes not created and setuid/setgid bits removed (without ``special_files``).
    special: list[str] = field(default_factory=list)

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


def valid_name(name: object) -> bool:
    """One path component that names an entry inside its directory (and nothing else)."""
    return (isinstance(name, bytes) and name not in (b"", b".", b"..") and b"/" not in name
            and b"\0" not in name)


def split_path(path: object) -> tuple[bytes, ...] | None:
    """The components of a snapshot path that stays inside the destination, or None."""
    if not isinstance(path, bytes):
        return None
    parts = tuple(path.split(b"/"))
    return parts if all(valid_name(part) for part in parts) else None


def safe_relative_path(path: bytes) -> bool:
    """A snapshot path that stays inside the destination: relative, no '', '.' or '..' parts, no NUL."""
    return split_path(path) is not None


def open_directory_below(root_fd: int, parts: Iterable[bytes], *, create: bool = True) -> int:
    """Open (making missing ones, mode 0700) the directory ``parts`` below ``root_fd``, one component
    at a time with O_NOFOLLOW|O_DIRECTORY: a symlink anywhere below the root raises OSError(ELOOP)
    or OSError(ENOTDIR) instead of being followed. Returns a new descriptor the caller closes."""
    current = os.dup(root_fd)
    try:
        for part in parts:
            if not valid_name(part):
                raise OSError(errno.EINVAL, f"not a single path component: {part!r}")
            following = _open_or_make(current, part, create)
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise
    return current


def _open_or_make(parent: int, name: bytes, create: bool) -> int:
    try:
        return os.open(name, OPEN_DIRECTORY, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o700, dir_fd=parent)  # 0700 until the stored mode is applied at the end
    except FileExistsError:
        pass  # made meanwhile; the open below still refuses anything but a directory
    return os.open(name, OPEN_DIRECTORY, dir_fd=parent)


class _DirectoryCache:
    """Descriptors of restored directories by snapshot path, least recently used closed first.

    A descriptor names the inode, not the path: once a directory was opened without following
    links, replacing its name by a symlink later cannot move writes out of the destination.
    Used by the main thread only.
    """

    def __init__(self, root_fd: int, limit: int = DIRECTORY_FDS) -> None:
        self.root = root_fd
        self.limit = max(2, limit)
        self.fds: OrderedDict[tuple[bytes, ...], int] = OrderedDict()

    def get(self, parts: tuple[bytes, ...], create: bool = True) -> int:
        """The descriptor of directory ``parts``; valid until the next call (it may be evicted then)."""
        if not parts:
            return self.root
        fd = self.fds.get(parts)
        if fd is not None:
            self.fds.move_to_end(parts)
            return fd
        parent = self.get(parts[:-1], create)
        fd = _open_or_make(parent, parts[-1], create)
        self.put(parts, fd)
        return fd

    def put(self, parts: tuple[bytes, ...], fd: int) -> None:
        old = self.fds.pop(parts, None)
        if old is not None and old != fd:
            os.close(old)
        self.fds[parts] = fd
        while len(self.fds) > self.limit:
            _, evicted = self.fds.popitem(last=False)
            os.close(evicted)

    def forget(self, parts: tuple[bytes, ...]) -> None:
        """Drop ``parts`` and everything below it (its name is about to be replaced)."""
        for key in [key for key in self.fds if key[: len(parts)] == parts]:
            os.close(self.fds.pop(key))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _Refused(Exception):
    """An item that is not restored: its path or its place is unsafe."""


class DirectoryRestorer:
    def __init__(self, reader: BlobReader, destination: str | Path, *, includes: list[str] | None = None,
                 overwrite: bool = False, threads: int | None = None,
                 on_progress: Callable[[int, str], None] | None = None, special_files: bool = False,
                 destination_fd: int | None = None) -> None:
        """``destination_fd``: write below this open directory (the engine's walk below the API's
        restore root) instead of opening ``destination``, which then only names it in messages."""
        self.reader = reader
        self.destination = os.fsencode(os.path.abspath(destination))
        self.destination_fd = destination_fd
        self.includes = [os.fsencode(i).strip(b"/") for i in (includes or [])]
        self.overwrite = overwrite
        self.special_files = special_files
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.on_progress = on_progress or (lambda done, current: None)
        self.result = RestoreResult()
        self.is_root = os.geteuid() == 0
        self._restored_files: dict[bytes, tuple[bytes, ...]] = {}  # snapshot path -> restored parts
        self._refused: set[bytes] = set()  # paths refused as unsafe: hard links to them are refused too
        self._state = threading.Condition()  # guards result counters, open files, removals, the first error
        self._open_files = 0
        self._error: tuple[bytes, OSError] | None = None
        self._remove: list[tuple[tuple[bytes, ...], int]] = []  # damaged files: (parts, inode), main thread removes
        self._slots = threading.BoundedSemaphore(self.threads * 4)
        self._dirs: _DirectoryCache | None = None

    # -- the destination ------------------------------------------------------------------------

    def _open_destination(self) -> int:
        if self.destination_fd is not None:
            fd = os.dup(self.destination_fd)
        else:
            # The destination itself is the operator's choice, symlinks in it included; everything
            # below it comes from the snapshot and is walked without following links.
            if os.path.lexists(self.destination) and not os.path.isdir(self.destination):
                raise DestinationError(destination=os.fsdecode(self.destination),
                                       detail="exists and is not a directory")
            try:
                os.makedirs(self.destination, exist_ok=True)
                fd = os.open(self.destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise DestinationError(destination=os.fsdecode(self.destination),
                                       detail=exc.strerror or str(exc)) from exc
        if not self.overwrite and os.listdir(fd):
            os.close(fd)
            raise DestinationError(destination=os.fsdecode(self.destination), detail="directory is not empty")
        return fd

    def _name(self, parts: tuple[bytes, ...]) -> str:
        """A restored path for an error message: escaped, since the names come from the snapshot."""
        return printable(self.destination + b"/" + b"/".join(parts))

    def _refuse(self, path: object, why: str) -> None:
        name = os.fsdecode(path) if isinstance(path, bytes) else repr(path)
        self.result.warnings.append(f"{name}: {why}, not restored")
        self.result.damaged.append(name)
        if isinstance(path, bytes):
            self._refused.add(path)

    def _parent(self, parts: tuple[bytes, ...], create: bool = True) -> int:
        try:
            return self._dirs.get(parts[:-1], create)
        except OSError as exc:
            if exc.errno in NOT_A_DIRECTORY:
                raise _Refused("a parent is a symlink or not a directory") from exc
            raise

    # -- the restore ------------------------------------------------------------------------------

    def restore(self, items: Iterable[dict]) -> RestoreResult:
        """Files are written by a pool: each chunk is fetched, verified and written at its offset
        by a worker, so many small files and the chunks of one large file all proceed in parallel."""
        root = self._open_destination()
        self._dirs = _DirectoryCache(root)
        try:
            self._restore(items)
        finally:
            self._dirs.close()
            os.close(root)
        return self.result

    def _restore(self, items: Iterable[dict]) -> None:
        directories: list[tuple[tuple[bytes, ...], dict, tuple[int, int]]] = []
        file_items: dict[bytes, dict] = {}
        hardlinks: list[tuple[tuple[bytes, ...], dict]] = []
        symlinks: list[tuple[tuple[bytes, ...], dict]] = []
        with ThreadPoolExecutor(self.threads, thread_name_prefix="safehold-restore") as pool:
            for item in items:
                problem = _malformed(item)
                if problem:
                    self._refuse(item.get("path") if isinstance(item, dict) else None, problem)
                    continue
                path, kind = item["path"], item["type"]
                if kind == "file":
                    file_items[path] = item  # a hard link may point at a file we skip
                if not selected(path, self.includes):
                    continue
                parts = split_path(path)
                if parts is None:
                    # A crafted or damaged snapshot must not write outside the destination.
                    self._refuse(path, "unsafe path")
                    continue
                try:
                    if kind == "dir":
                        fd, identity = self._make_directory(parts)
                        directories.append((parts, item, identity))
                        self.result.directories += 1
                    elif kind == "file":
                        self._start_file(pool, parts, item)
                        self.on_progress(self.result.bytes_written, os.fsdecode(path))
                    elif kind == "hardlink":
                        self._parent(parts)  # refused now if its parent is unsafe now
                        hardlinks.append((parts, item))  # after every file has landed
                    elif kind == "symlink":
                        self._parent(parts)
                        symlinks.append((parts, item))  # last: no link of ours exists while we write
                    elif kind == "fifo":
                        parent = self._parent(parts)
                        self._clear(parent, parts)
                        os.mkfifo(parts[-1], 0o600, dir_fd=parent)
                        self._node_metadata(parent, parts, item)
                    elif kind in ("chardev", "blockdev"):
                        self._device(parts, item)
                    # sockets cannot be restored meaningfully; skipped like every tool does
                except _Refused as refused:
                    self._refuse(path, str(refused))
                except OSError as exc:
                    raise DestinationError(destination=self._name(parts), detail=exc.strerror or str(exc)) from exc
                self._raise_worker_error()
            self._wait_for_files()
            self._remove_damaged()
            for parts, item in hardlinks:
                self._hardlink(pool, parts, item, file_items)
            self._wait_for_files()
            self._remove_damaged()
        self._raise_worker_error()
        for parts, item in symlinks:
            self._symlink(parts, item)
        self.on_progress(self.result.bytes_written, "")
        for parts, item, identity in reversed(directories):
            self._directory_metadata(parts, item, identity)

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            real, exc = self._error
            raise DestinationError(destination=printable(real), detail=exc.strerror or str(exc)) from exc

    def _wait_for_files(self) -> None:
        with self._state:
            self._state.wait_for(lambda: self._open_files == 0)

    def _clear(self, parent: int, parts: tuple[bytes, ...]) -> None:
        """Remove what is at the name (never following it); a directory in the way is an error."""
        try:
            info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            raise DestinationError(destination=self._name(parts), detail="a directory is in the way")
        os.unlink(parts[-1], dir_fd=parent)

    # -- directories ------------------------------------------------------------------------------

    def _make_directory(self, parts: tuple[bytes, ...]) -> tuple[int, tuple[int, int]]:
        parent = self._parent(parts)
        name = parts[-1]
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            pass
        try:
            fd = os.open(name, OPEN_DIRECTORY, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in NOT_A_DIRECTORY:
                raise
            # A symlink or a file is in the way (left by an earlier item, or in the destination
            # with --overwrite): replace the name like a file item does; unlink never follows it.
            # makedirs(exist_ok=True) accepted a symlink to a directory here, and the metadata
            # applied at the end then went to the link's target.
            self._dirs.forget(parts)
            os.unlink(name, dir_fd=parent)
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, OPEN_DIRECTORY, dir_fd=parent)
        info = os.fstat(fd)
        self._dirs.put(parts, fd)
        return fd, (info.st_dev, info.st_ino)

    def _directory_metadata(self, parts: tuple[bytes, ...], item: dict, identity: tuple[int, int]) -> None:
        try:
            fd = self._dirs.get(parts, create=False)  # cached, or walked again without following links
        except OSError as exc:
            self.result.warnings.append(f"{os.fsdecode(item['path'])}: directory metadata not restored: "
                                        f"{exc.strerror or exc}")
            return
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != identity:  # replaced during the restore: not ours to chmod
            self.result.warnings.append(f"{os.fsdecode(item['path'])}: replaced during the restore; "
                                        "directory metadata not restored")
            return
        self._apply_metadata(fd, item)

    # -- files ------------------------------------------------------------------------------------

    def _start_file(self, pool: ThreadPoolExecutor, parts: tuple[bytes, ...], item: dict) -> None:
        chunks = item["chunks"]
        ids = [chunks[i : i + 32] for i in range(0, len(chunks), 32)]
        parent = self._parent(parts)
        try:
            fd = os.open(parts[-1], CREATE_FILE, 0o600, dir_fd=parent)
        except FileExistsError:  # from the destination (--overwrite) or an earlier item: replace it
            self._clear(parent, parts)
            fd = os.open(parts[-1], CREATE_FILE, 0o600, dir_fd=parent)
        handle = _OpenFile(parts, item, fd, len(ids))
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
        real = self.destination + b"/" + path
        try:
            if handle.damaged is not None:
                # Never leave a file with wrong or missing bytes behind: empty it now, and let the
                # main thread remove the name (it holds the directory descriptors).
                os.ftruncate(handle.fd, 0)
                with self._state:
                    self._remove.append((handle.parts, os.fstat(handle.fd).st_ino))
                    self.result.damaged.append(os.fsdecode(path))
                    self.result.warnings.append(f"{os.fsdecode(path)}: {handle.damaged}")
            elif handle.error is not None:
                with self._state:
                    self._error = self._error or (real, handle.error)
            else:
                self._apply_metadata(handle.fd, handle.item)
                with self._state:
                    self._restored_files[path] = handle.parts
                    self.result.files += 1
        except OSError as exc:
            with self._state:
                self._error = self._error or (real, exc)
        finally:
            os.close(handle.fd)
            with self._state:
                self._open_files -= 1
                self._state.notify_all()

    def _remove_damaged(self) -> None:
        with self._state:
            remove, self._remove = self._remove, []
        for parts, inode in remove:
            try:
                parent = self._dirs.get(parts[:-1], create=False)
                if os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_ino == inode:
                    os.unlink(parts[-1], dir_fd=parent)
            except OSError:
                pass  # already emptied; the name is listed as damaged

    # -- links and nodes --------------------------------------------------------------------------

    def _hardlink(self, pool: ThreadPoolExecutor, parts: tuple[bytes, ...], item: dict,
                  file_items: dict[bytes, dict]) -> None:
        path, first = item["path"], item["target"]
        try:
            if first in self._refused or not safe_relative_path(first):
                # The content of an item whose own path was refused is not restored under another name.
                raise _Refused(f"hard link to the refused item {os.fsdecode(first)!r}")
            parent = self._parent(parts)  # walked again: it may have become a symlink since
            if first in self._restored_files:
                source = self._restored_files[first]
                source_dir = os.dup(self._parent(source, create=False))
                try:
                    parent = self._parent(parts)
                    if not stat.S_ISREG(os.stat(source[-1], dir_fd=source_dir, follow_symlinks=False).st_mode):
                        raise _Refused(f"{os.fsdecode(first)!r} is no longer a file")
                    self._clear(parent, parts)
                    os.link(source[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
                finally:
                    os.close(source_dir)
                self.result.files += 1
                return
            # The first name was not selected (or was damaged): restore this name as a file.
            original = file_items.get(first)
            if original is None:
                self.result.warnings.append(f"{os.fsdecode(path)}: hard link to unknown {os.fsdecode(first)}")
                return
            self._start_file(pool, parts, original | {"path": path})
        except _Refused as refused:
            self._refuse(path, str(refused))
            return
        except OSError as exc:
            if exc.errno in NOT_A_DIRECTORY:
                self._refuse(path, "a parent is a symlink or not a directory")
                return
            raise DestinationError(destination=self._name(parts), detail=exc.strerror or str(exc)) from exc
        self._wait_for_files()
        if path in self._restored_files:
            self._restored_files[first] = parts  # later links of the inode link to this copy

    def _symlink(self, parts: tuple[bytes, ...], item: dict) -> None:
        try:
            parent = self._parent(parts)
            self._clear(parent, parts)
            os.symlink(item["target"], parts[-1], dir_fd=parent)
            if self.is_root:
                os.chown(parts[-1], item.get("uid", -1), item.get("gid", -1), dir_fd=parent, follow_symlinks=False)
            os.utime(parts[-1], ns=_times(item), dir_fd=parent, follow_symlinks=False)
        except _Refused as refused:
            self._refuse(item["path"], str(refused))
        except OSError as exc:
            raise DestinationError(destination=self._name(parts), detail=exc.strerror or str(exc)) from exc

    def _device(self, parts: tuple[bytes, ...], item: dict) -> None:
        path = os.fsdecode(item["path"])
        if not self.special_files:
            # A restore run as root (a restore test, say) must not plant a /dev/mem twin.
            self.result.special.append(f"{path}: device node not created (restore with --special-files)")
            return
        if not self.is_root:
            self.result.warnings.append(f"{path}: device nodes need root; skipped")
            return
        parent = self._parent(parts)
        self._clear(parent, parts)
        flag = stat.S_IFCHR if item["type"] == "chardev" else stat.S_IFBLK
        os.mknod(parts[-1], 0o600 | flag, item.get("rdev", 0), dir_fd=parent)
        self._node_metadata(parent, parts, item)

    def _node_metadata(self, parent: int, parts: tuple[bytes, ...], item: dict) -> None:
        """Metadata of a fifo or device: through an O_PATH descriptor (opening the node itself could
        block or act on a device); its /proc link names that inode, not a path that could change."""
        fd = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            self._apply_metadata(f"/proc/self/fd/{fd}", item)
        finally:
            os.close(fd)

    def _apply_metadata(self, target: int | str, item: dict) -> None:
        """Owner, attributes, mode and times of an open descriptor (or its /proc link)."""
        name = os.fsdecode(item["path"])
        if self.is_root:
            try:
                os.chown(target, item.get("uid", -1), item.get("gid", -1))  # before chmod: chown clears setuid bits
            except OSError as exc:
                self.result.warnings.append(f"{name}: owner not restored: {exc.strerror}")
        for attribute, value in (item.get("xattrs") or {}).items():
            try:
                os.setxattr(target, attribute, value)
            except (OSError, TypeError, ValueError) as exc:  # security.* without privilege, no xattr support
                self.result.warnings.append(f"{name}: attribute {attribute!r} not restored: "
                                            f"{getattr(exc, 'strerror', None) or exc}")
        mode = stat.S_IMODE(item["mode"])
        if mode & PRIVILEGE_BITS and not self.special_files:
            mode &= ~PRIVILEGE_BITS  # a restore must not hand out a setuid binary unasked
            with self._state:
                self.result.special.append(f"{name}: setuid/setgid bits removed (restore with --special-files)")
        os.chmod(target, mode)
        os.utime(target, ns=_times(item))


def _times(item: dict) -> tuple[int, int]:
    return (item.get("atime", item["mtime"]), item["mtime"])


_NEEDS = {"file": ("chunks",), "hardlink": ("target",), "symlink": ("target",)}


def _malformed(item: object) -> str:
    """Why an item cannot be restored as given, or '' (a crafted stream may hold any msgpack value)."""
    if not isinstance(item, dict) or not isinstance(item.get("path"), bytes) or not isinstance(item.get("type"), str):
        return "malformed item"
    if item["type"] not in ("dir", "file", "hardlink", "symlink", "fifo", "chardev", "blockdev", "socket"):
        return f"unknown item type {item['type']!r}"
    if item["type"] != "socket" and ("mode" not in item or "mtime" not in item):
        return "item without mode or mtime"
    for key in _NEEDS.get(item["type"], ()):
        if not isinstance(item.get(key), bytes):
            return f"malformed {key}"
    if item["type"] == "file" and len(item["chunks"]) % 32:
        return "malformed chunk list"
    if item["type"] == "symlink" and b"\0" in item["target"]:
        return "symlink target with NUL"
    if not isinstance(item.get("xattrs") or {}, dict):
        return "malformed xattrs"
    for key, (low, high) in _RANGES.items():
        if key in item and (not isinstance(item[key], int) or isinstance(item[key], bool)
                            or not low <= item[key] < high):
            return f"malformed {key}"
    return ""


#: What the system calls accept; a crafted value outside would raise OverflowError mid-restore.
_RANGES = {"mode": (0, 2**32), "mtime": (-(2**63), 2**63), "atime": (-(2**63), 2**63), "uid": (0, 2**32 - 1),
           "gid": (0, 2**32 - 1), "rdev": (0, 2**64)}
