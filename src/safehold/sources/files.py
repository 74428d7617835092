"""Local paths: walks one or more roots and yields file items.

Each root appears in the snapshot under its own base name (``/srv/docs`` ->
``docs/...``). Names are handled as bytes throughout, so names that are not
valid UTF-8 are backed up and restored exactly. Hard links are detected by
(device, inode) and stored once; the later names point at the first.

Patterns (``exclude``/``include``) are shell globs. A pattern without '/'
matches any name component (``*.tmp``, ``node_modules``); a pattern with '/'
matches the path inside the snapshot (``docs/cache/*``). With ``include``
patterns, only matching files (and the directories leading to them) are kept.

What cannot be stored as listed does not fail the backup: a directory that
cannot be opened or listed, an entry that vanished or was replaced during the
walk is recorded in the view's ``skipped`` list and left out; a file is opened
without blocking or following links and judged on its descriptor
(:func:`open_listed_file`), and reports when it changed while it was read.
Only a root that cannot be read is a ``SourceError``.
"""

from __future__ import annotations

import errno
import grp
import io
import os
import pwd
import stat
from contextlib import contextmanager
from fnmatch import fnmatchcase
from functools import lru_cache, partial
from typing import Iterator

from ..errors import SourceError
from ..items import skip_reason
from .base import FileItem, ItemSkipped, SkippedItems, View


@lru_cache(maxsize=4096)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


class Patterns:
    def __init__(self, exclude: list[str], include: list[str]) -> None:
        self.exclude = [p.encode() if isinstance(p, str) else p for p in exclude]
        self.include = [p.encode() if isinstance(p, str) else p for p in include]

    @staticmethod
    def _matches(pattern: bytes, path: bytes) -> bool:
        if b"/" in pattern:
            pattern = pattern.strip(b"/")
            return fnmatchcase(path, pattern) or fnmatchcase(path, pattern + b"/*")
        return any(fnmatchcase(part, pattern) for part in path.split(b"/"))

    def excluded(self, path: bytes) -> bool:
        return any(self._matches(p, path) for p in self.exclude)

    def included(self, path: bytes) -> bool:
        return not self.include or any(self._matches(p, path) for p in self.include)


class FilesSource:
    def __init__(self, paths: list[str], exclude: list[str] | None = None, include: list[str] | None = None,
                 one_file_system: bool = False) -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        self.patterns = Patterns(exclude or [], include or [])
        self.one_file_system = one_file_system
        names = [os.path.basename(p.rstrip("/")) or "root" for p in self.paths]
        if len(set(names)) != len(names):
            raise SourceError(source=", ".join(self.paths),
                              detail="two paths share a base name; back them up as separate targets")

    @contextmanager
    def open(self, parent_token: dict | None = None) -> Iterator[View]:
        for path in self.paths:
            if not os.path.lexists(path):
                raise SourceError(source=path, detail="no such file or directory")
            if not os.access(path, os.R_OK):
                raise SourceError(source=path, detail="permission denied")
        view = View(kind="files", paths=list(self.paths), incremental="mtime")
        view.items = lambda: self.items(view.skipped)
        yield view

    def items(self, skipped: SkippedItems | None = None) -> Iterator[FileItem]:
        """The entries under every root, in walk order. What cannot be listed below a root is
        recorded in ``skipped`` and left out; a root that cannot be listed is a SourceError."""
        skipped = skipped if skipped is not None else SkippedItems()
        seen_inodes: dict[tuple[int, int], bytes] = {}
        for root in self.paths:
            name = (os.path.basename(root.rstrip("/")) or "root").encode()
            root_bytes = os.fsencode(root)
            try:
                root_stat = os.lstat(root_bytes)
            except OSError as exc:
                raise SourceError(source=root, detail=exc.strerror or str(exc)) from None
            yield from self._walk(root_bytes, name, root_stat, seen_inodes, root_stat.st_dev, skipped, root=True)

    def _walk(self, real: bytes, path: bytes, st: os.stat_result, seen: dict, device: int,
              skipped: SkippedItems, root: bool = False) -> Iterator[FileItem]:
        if not stat.S_ISDIR(st.st_mode):
            if self.patterns.included(path):
                item = self._entry(real, path, st, seen, skipped)
                if item is not None:
                    yield item
            return
        # A directory is opened without following links and checked to be the one listed, then
        # listed through its descriptor: one swapped for a symbolic link is never walked into.
        try:
            fd = _open_listed_directory(real, st)
        except ItemSkipped as exc:
            if root:
                raise SourceError(source=os.fsdecode(real), detail=exc.detail) from None
            skipped.add(path, "dir", exc.reason, exc.detail)
            return
        try:
            try:
                with os.scandir(fd) as listing:  # names come as str from a descriptor: sort their bytes
                    entries = sorted(((os.fsencode(entry.name), entry) for entry in listing), key=lambda pair: pair[0])
            except OSError as exc:
                if root:
                    raise SourceError(source=os.fsdecode(real), detail=exc.strerror or str(exc)) from None
                skipped.add(path, "dir", skip_reason(exc), f"cannot be listed: {exc.strerror or exc}")
                return
            item = self._entry(real, path, st, seen, skipped)
            if item is None:
                return
            # With include patterns, a directory is kept only if it matches or leads to something kept.
            emitted = not self.patterns.include or self.patterns.included(path)
            if emitted:
                yield item
            for name, entry in entries:
                child_path = path + b"/" + name
                if self.patterns.excluded(child_path):
                    continue
                try:
                    child_stat = entry.stat(follow_symlinks=False)  # fstatat() on the listed directory
                except OSError as exc:
                    skipped.add(child_path, _listed_type(entry), skip_reason(exc),
                                "removed since its directory was listed" if skip_reason(exc) == "vanished"
                                else exc.strerror or str(exc))
                    continue
                if self.one_file_system and child_stat.st_dev != device and stat.S_ISDIR(child_stat.st_mode):
                    continue
                for child in self._walk(real + b"/" + name, child_path, child_stat, seen, device, skipped):
                    if not emitted:
                        yield item
                        emitted = True
                    yield child
        finally:
            os.close(fd)

    def _entry(self, real: bytes, path: bytes, st: os.stat_result, seen: dict,
               skipped: SkippedItems) -> FileItem | None:
        """The item of a listed entry, or None (recorded in ``skipped``) when it went away meanwhile."""
        try:
            return self._item(real, path, st, seen)
        except OSError as exc:  # readlink() of a link that was removed or replaced since it was listed
            reason = skip_reason(exc)
            if exc.errno == errno.EINVAL:
                reason, detail = "replaced", "no longer a symlink"
            else:
                detail = "removed since it was listed" if reason == "vanished" else exc.strerror or str(exc)
            skipped.add(path, _type_name(st.st_mode), reason, detail)
            return None

    def _item(self, real: bytes, path: bytes, st: os.stat_result, seen: dict) -> FileItem:
        mode = st.st_mode
        common = dict(
            path=path, mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid, user=_user(st.st_uid),
            group=_group(st.st_gid), mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, atime_ns=st.st_atime_ns,
            inode=st.st_ino, device=st.st_dev, xattrs=read_xattrs(real),
        )
        if stat.S_ISDIR(mode):
            return FileItem(type="dir", **common)
        if stat.S_ISLNK(mode):
            return FileItem(type="symlink", link_target=os.readlink(real), **common)
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = seen.get(key)
                if first is not None:
                    return FileItem(type="hardlink", link_target=first, **common)
                seen[key] = path
            return FileItem(type="file", size=st.st_size, open=partial(open_listed_file, real, st), **common)
        if stat.S_ISFIFO(mode):
            return FileItem(type="fifo", **common)
        if stat.S_ISCHR(mode):
            return FileItem(type="chardev", rdev=st.st_rdev, **common)
        if stat.S_ISBLK(mode):
            return FileItem(type="blockdev", rdev=st.st_rdev, **common)
        return FileItem(type="socket", **common)


# Never block and never follow: O_NONBLOCK makes the open of a FIFO (or a device) that was swapped
# in for the listed file return at once instead of waiting for a writer forever, O_NOFOLLOW refuses a
# symbolic link swapped in, O_NOCTTY keeps a terminal from becoming ours. What was opened is then
# judged on the descriptor (fstat), which no later swap can change.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_DIRECTORY_FLAGS = _FILE_FLAGS | os.O_DIRECTORY


class ListedFile(io.FileIO):
    """A regular file opened by :func:`open_listed_file`; knows the ``lstat`` the walk listed."""

    def __init__(self, fd: int, listed: os.stat_result) -> None:
        super().__init__(fd, "rb", closefd=True)
        self.listed = listed

    def changed_while_read(self) -> str | None:
        """Why the content read may not be the file as listed (its size or modification time moved
        since the walk listed it), or None. Called once the stream was read to its end."""
        try:
            now = os.fstat(self.fileno())
        except OSError:
            return None
        if now.st_size != self.listed.st_size:
            return f"changed while it was read (size {self.listed.st_size} -> {now.st_size} bytes); stored as read"
        if now.st_mtime_ns != self.listed.st_mtime_ns:
            return "modified while it was read; stored as read"
        return None


def open_listed_file(real: bytes, listed: os.stat_result) -> ListedFile:
    """Open the regular file the walk listed at ``real`` (``listed`` is its lstat), or raise
    ItemSkipped: unreadable, vanished, or replaced by a link, a FIFO, a device or another file."""
    try:
        fd = os.open(real, _FILE_FLAGS)
    except OSError as exc:
        raise ItemSkipped(skip_reason(exc), _open_failure(exc)) from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            raise ItemSkipped("replaced", f"replaced by a {_type_name(now.st_mode)} since it was listed")
        if (now.st_dev, now.st_ino) != (listed.st_dev, listed.st_ino):
            raise ItemSkipped("replaced", "replaced by another file since it was listed")
        os.set_blocking(fd, True)
        return ListedFile(fd, listed)
    except BaseException:
        os.close(fd)
        raise


def _open_listed_directory(real: bytes, listed: os.stat_result) -> int:
    try:
        fd = os.open(real, _DIRECTORY_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:  # O_NOFOLLOW|O_DIRECTORY met a link or a file: say which
            try:
                now = _type_name(os.lstat(real).st_mode)
            except OSError:
                now = "something else"
            raise ItemSkipped("replaced", f"replaced by a {now} since it was listed") from None
        raise ItemSkipped(skip_reason(exc), _open_failure(exc)) from None
    try:
        now = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ItemSkipped(skip_reason(exc), _open_failure(exc)) from None
    if (now.st_dev, now.st_ino) != (listed.st_dev, listed.st_ino):
        os.close(fd)
        raise ItemSkipped("replaced", "replaced by another directory since it was listed")
    return fd


def _open_failure(exc: OSError) -> str:
    reason = skip_reason(exc)
    if reason == "vanished":
        return "removed since it was listed"
    if reason == "replaced":
        return "replaced by a symlink since it was listed"
    return exc.strerror or str(exc)


_TYPE_NAMES = ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"),
               (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"), (stat.S_ISSOCK, "socket"))


def _type_name(mode: int) -> str:
    return next((name for test, name in _TYPE_NAMES if test(mode)), "unknown")


def _listed_type(entry: os.DirEntry) -> str:
    """The entry's type from the directory listing alone (no system call), for an entry gone since."""
    try:
        if entry.is_symlink():
            return "symlink"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "file"
    except OSError:
        pass
    return "unknown"


def read_xattrs(real: bytes) -> dict[bytes, bytes] | None:
    """Extended attributes of an entry (not followed through symlinks); None when there are none
    or the filesystem has no xattr support."""
    try:
        names = os.listxattr(real, follow_symlinks=False)
    except OSError:
        return None
    attributes = {}
    for name in names:
        try:
            attributes[os.fsencode(name)] = os.getxattr(real, name, follow_symlinks=False)
        except OSError:
            continue  # removed meanwhile, or not readable by us
    return attributes or None
