"""Local paths: walks one or more roots and yields file items.

Each root appears in the snapshot under its own base name (``/srv/docs`` ->
``docs/...``). Names are handled as bytes throughout, so names that are not
valid UTF-8 are backed up and restored exactly. Hard links are detected by
(device, inode) and stored once; the later names point at the first.

Patterns (``exclude``/``include``) are shell globs. A pattern without '/'
matches any name component (``*.tmp``, ``node_modules``); a pattern with '/'
matches the path inside the snapshot (``docs/cache/*``). With ``include``
patterns, only matching files (and the directories leading to them) are kept.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from contextlib import contextmanager
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Iterator

from ..errors import SourceError
from .base import FileItem, View


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
        yield View(kind="files", paths=list(self.paths), items=self.items, incremental="mtime")

    def items(self) -> Iterator[FileItem]:
        seen_inodes: dict[tuple[int, int], bytes] = {}
        for root in self.paths:
            name = (os.path.basename(root.rstrip("/")) or "root").encode()
            root_bytes = os.fsencode(root)
            root_stat = os.lstat(root_bytes)
            yield from self._walk(root_bytes, name, root_stat, seen_inodes, root_stat.st_dev)

    def _walk(self, real: bytes, path: bytes, st: os.stat_result, seen: dict, device: int) -> Iterator[FileItem]:
        if not stat.S_ISDIR(st.st_mode):
            if self.patterns.included(path):
                yield self._item(real, path, st, seen)
            return
        item = self._item(real, path, st, seen)
        try:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
        except PermissionError as exc:
            raise SourceError(source=os.fsdecode(real), detail=exc.strerror) from None
        # With include patterns, a directory is kept only if it matches or leads to something kept.
        emitted = not self.patterns.include or self.patterns.included(path)
        if emitted:
            yield item
        for entry in entries:
            child_path = path + b"/" + entry.name
            if self.patterns.excluded(child_path):
                continue
            try:
                child_stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished during the walk
            if self.one_file_system and child_stat.st_dev != device and stat.S_ISDIR(child_stat.st_mode):
                continue
            for child in self._walk(os.fsencode(entry.path), child_path, child_stat, seen, device):
                if not emitted:
                    yield item
                    emitted = True
                yield child

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
            return FileItem(type="file", size=st.st_size, open=lambda: open(real, "rb"), **common)
        if stat.S_ISFIFO(mode):
            return FileItem(type="fifo", **common)
        if stat.S_ISCHR(mode):
            return FileItem(type="chardev", rdev=st.st_rdev, **common)
        if stat.S_ISBLK(mode):
            return FileItem(type="blockdev", rdev=st.st_rdev, **common)
        return FileItem(type="socket", **common)


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
