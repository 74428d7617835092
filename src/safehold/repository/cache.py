"""A local cache of a repository's immutable metadata objects, in the state folder.

Snapshot, index and verdict objects are named by the BLAKE3 hash of their stored (encrypted)
bytes and never rewritten, so a copy of their bytes kept on local disk is as good as a GET of
them, *if* it still hashes to its name. Without it every backup read every snapshot object (to
find its parent) and every index object of the repository: on S3 that grew with the history
(289 GETs per backup at 100 snapshots, docs/benchmarks.md). With it a backup GETs only the
objects other hosts wrote since its last run; the LISTs stay, and stay the source of truth of
*which* objects exist: only bytes are cached, never the answer to "what is there".

Layout: ``<state_dir>/cache/<repository id>/<kind>/<name>``, folders 0700, files 0600 (restic
keeps a cache of the same objects the same way). Rules, each for a reason:

- **The cache is hostile input too.** Every read is hashed against its name; a file that does
  not match (tampered, truncated, a disk error) is deleted and the object fetched again, never
  trusted, never an error. Names are only ever 64 lowercase hex digits (a name from a hostile
  listing cannot leave the folder); files are opened without following links.
- **Only what a listing names is used**: callers ask for names they have just listed, and each
  listing drops the cached files it no longer names (forget and prune delete objects; another
  host's prune rewrites the index).
- **Written whole or not at all**: a temporary file per process and thread, then a rename.
- **Never fails a command**: a state folder that cannot be written turns writing off for this
  cache, with one warning in the log; reads that fail are misses.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Iterable

from ..files import PRIVATE_FILE, make_private_directory
from .backends import Kind

__all__ = ["CACHED_KINDS", "MAX_CACHED_OBJECT", "ObjectCache"]

#: The kinds whose objects are named by the hash of their bytes and never rewritten.
CACHED_KINDS = frozenset({Kind.SNAPSHOTS, Kind.INDEX, Kind.VERDICTS})
#: A cache file larger than this is discarded unread (an index object is a few MiB at most).
MAX_CACHED_OBJECT = 256 * 1024 * 1024

_NAME = re.compile(r"[0-9a-f]{64}")
_REPOSITORY_ID = re.compile(r"[0-9a-f]{8,64}")
log = logging.getLogger("safehold.cache")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _hash(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


class ObjectCache:
    """The cached objects of one repository. Thread-safe; several processes may share the folder.

    ``get`` returns verified bytes or None; ``put`` stores bytes already known to hash to their
    name; ``keep_only`` drops what a fresh listing no longer names; ``discard`` drops one entry."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.writable = True
        self.hits = 0
        self.misses = 0
        self.discarded = 0  # files that did not match their name

    @classmethod
    def for_repository(cls, state_dir: str | os.PathLike[str], repository_id: str) -> "ObjectCache | None":
        """The cache of repository ``repository_id`` under ``state_dir``; None for an id that is no
        plain hex string (it comes from the repository's config: hostile, and a folder name here)."""
        if not isinstance(repository_id, str) or not _REPOSITORY_ID.fullmatch(repository_id):
            return None
        return cls(Path(state_dir) / "cache" / repository_id)

    def _path(self, kind: Kind, name: str) -> Path | None:
        if kind not in CACHED_KINDS or not _NAME.fullmatch(name):
            return None
        return self.root / kind.value / name

    def get(self, kind: Kind, name: str) -> bytes | None:
        """The object's bytes if a cached copy hashes to ``name``; a copy that does not is removed."""
        path = self._path(kind, name)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            self.misses += 1
            return None
        try:
            size = os.fstat(fd).st_size
            data = b"" if size > MAX_CACHED_OBJECT else _read_all(fd, size)
        except OSError:
            data = b""
        finally:
            os.close(fd)
        if data and _hash(data) == name:
            self.hits += 1
            return data
        # Tampered, truncated, oversized or unreadable: never trusted, fetched again by the caller.
        self.discarded += 1
        self.misses += 1
        log.info("cache: %s/%s does not match its name; discarded and fetched again", kind.value, name[:16])
        self._unlink(path)
        return None

    def put(self, kind: Kind, name: str, data: bytes) -> None:
        """Keep ``data`` (which the caller verified hashes to ``name``) under its name."""
        path = self._path(kind, name)
        if path is None or not self.writable or len(data) > MAX_CACHED_OBJECT:
            return
        temporary = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            make_private_directory(path.parent)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         PRIVATE_FILE)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except OSError as exc:
            self._unlink(temporary)
            self._stop_writing(exc)

    def discard(self, kind: Kind, name: str) -> None:
        path = self._path(kind, name)
        if path is not None:
            self._unlink(path)

    def keep_only(self, kind: Kind, names: Iterable[str]) -> int:
        """Remove the cached objects of ``kind`` that ``names`` (a fresh listing) does not hold, and
        temporary files left by a killed writer. Returns how many files were removed.

        Processes sharing the folder may race: a listing made just before another process wrote
        (and cached) an object drops that fresh copy. The cost is one GET later, never a wrong
        answer: what is cached is only ever bytes that hash to their name."""
        if kind not in CACHED_KINDS or not self.writable:
            return 0
        folder = self.root / kind.value
        try:
            present = os.listdir(folder)
        except OSError:
            return 0
        listed = set(names)
        removed = 0
        for entry in present:
            if entry in listed:
                continue
            if entry.startswith(".") and not _old(folder / entry):
                continue  # a live writer's temporary file, renamed in a moment; a killed one's goes later
            removed += self._unlink(folder / entry)
        return removed

    def _unlink(self, path: Path) -> int:
        try:
            os.unlink(path)
            return 1
        except FileNotFoundError:
            return 0
        except OSError as exc:
            self._stop_writing(exc)
            return 0

    def _stop_writing(self, exc: OSError) -> None:
        self.writable = False
        key = str(self.root)
        with _warned_lock:
            if key in _warned:
                return
            _warned.add(key)
        log.warning("the repository cache %s cannot be written (%s); objects are read from the repository "
                    "instead (slower on S3; make the state folder writable or set 'cache: false')", key,
                    exc.strerror or exc)


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, max(size, 1 << 16))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _old(path: Path, age: float = 60.0) -> bool:
    import time

    try:
        return time.time() - os.lstat(path).st_mtime > age
    except OSError:
        return False
