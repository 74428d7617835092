"""Private files and folders: what safehold creates is readable by its user only, whatever the umask.

The catalog (job history, API token hashes), the state folder and a local
repository hold nothing in plaintext that matters alone, but their names,
sizes and timings leak what is backed up and when, and a world-writable
repository folder (umask 000) lets any local user delete or plant objects.
So folders are created 0700 and files 0600 explicitly, never by relying on
the process umask, which a multithreaded server must not change either
(umask is per process, not per thread).

Existing folders and files keep the mode their owner gave them.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIRECTORY", "PRIVATE_FILE", "create_private_file", "make_private_directory",
           "warn_if_others_can_read", "write_private_json"]

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600

log = logging.getLogger("safehold.files")
_warned: set[str] = set()


def make_private_directory(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and any missing parents as 0700 folders; existing ones are left alone."""
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIRECTORY)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # another process made it first: its mode is its creator's
        # mkdir's mode is filtered by the umask, which may also clear the owner's bits.
        os.chmod(folder, PRIVATE_DIRECTORY)
    return path


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True when it was created.

    For files that another library then opens by name (SQLite creates its
    database with the umask's mode otherwise).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return True


def write_private_json(path: str | os.PathLike[str], value: object) -> None:
    """Write ``value`` as JSON to ``path`` (0600, its folder made 0700 if missing) all at once:
    through a temporary file beside it, then renamed, so a reader sees the old file or the new one.
    OSError goes to the caller (the state folder's hints ignore it: a read-only folder must not
    fail a command)."""
    import json  # not at import time: commands that write no hint never need it

    path = Path(path)
    make_private_directory(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle)
    os.replace(temporary, path)


def warn_if_others_can_read(path: str | os.PathLike[str], what: str, fd: int | None = None) -> bool:
    """Log a warning (once per path and process) when group or others may read ``path``.

    A warning, not an error: the file may be shared on purpose (a group of
    operators), and refusing would stop every scheduled backup at once.
    """
    try:
        mode = os.fstat(fd).st_mode if fd is not None else os.stat(path).st_mode
    except OSError:
        return False
    if not mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        return False
    key = os.fspath(path)
    if key not in _warned:
        _warned.add(key)
        groups = (("its group", stat.S_IRGRP | stat.S_IWGRP), ("other users", stat.S_IROTH | stat.S_IWOTH))
        readers = " and ".join(who for who, bits in groups if mode & bits)
        log.warning("%s %s can be read or changed by %s (mode %04o); make it private: chmod 600 %s",
                    what, key, readers, stat.S_IMODE(mode), key)
    return True
