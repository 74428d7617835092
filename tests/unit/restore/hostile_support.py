"""Building hostile snapshots with the project's own writer, and watching a sentinel tree.

The attacker of a restore holds the repository password, so a snapshot is whatever item stream
they chose to write: these helpers write item dicts through ``TreeWriter`` and ``save_blob`` exactly
as the archiver does, without any of the archiver's checks.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path

from safehold.repository import Repository, Snapshot
from safehold.repository.pack import BlobType
from safehold.repository.repository import TreeWriter

T0 = 1_700_000_000_000_000_000


def write_snapshot(repository: Repository, items: list[dict], kind: str = "files",
                   target: str = "hostile") -> Snapshot:
    """Items may carry ``content`` (bytes) instead of ``chunks``: it is stored as data blobs."""
    tree = TreeWriter(repository)
    for item in items:
        item = dict(item)
        if "content" in item:
            content = item.pop("content")
            size = item.get("chunk_size", 1 << 20)
            pieces = [content[i : i + size] for i in range(0, len(content), size)]
            item["chunks"] = b"".join(repository.save_blob(BlobType.DATA, p)[0] for p in pieces)
            item.setdefault("size", len(content))
        tree.add(item)
    ids = tree.finish()
    repository.flush()
    snapshot = Snapshot(id="", time=datetime.now(timezone.utc), target=target, kind=kind, hostname="attacker",
                        paths=["/"], tree=ids)
    repository.save_snapshot(snapshot)
    return snapshot


def base(path: bytes, kind: str, mode: int = 0o644, **extra) -> dict:
    return {"path": path, "type": kind, "mode": mode, "uid": os.getuid(), "gid": os.getgid(),
            "mtime": T0, **extra}


def file(path: bytes, content: bytes = b"x", mode: int = 0o644) -> dict:
    return base(path, "file", mode, content=content)


def directory(path: bytes, mode: int = 0o755) -> dict:
    return base(path, "dir", mode)


def symlink(path: bytes, target: bytes | str) -> dict:
    return base(path, "symlink", 0o777, target=os.fsencode(target))


def hardlink(path: bytes, target: bytes) -> dict:
    return base(path, "hardlink", 0o644, target=target)


def disk(path: bytes, content: bytes, chunk_size: int = 4096, mode: int = 0o640) -> dict:
    padded = content + bytes(-len(content) % chunk_size)
    return {"path": path, "type": "image", "size": len(padded), "chunk_size": chunk_size,
            "content": padded, "metadata": {"mode": mode}}


def fingerprint(root: Path) -> dict[str, tuple]:
    """Everything a restore could change under ``root``: type, inode, mode, owner, mtime, content or target."""
    seen: dict[str, tuple] = {}
    for directory, names, files in os.walk(root, followlinks=False):
        for name in [*names, *files, "."]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                extra: object = Path(path).read_bytes()
            elif stat.S_ISLNK(info.st_mode):
                extra = os.readlink(path)
            else:
                extra = None
            seen[os.path.relpath(path, root)] = (info.st_mode, info.st_ino, info.st_uid, info.st_gid,
                                                 info.st_mtime_ns, info.st_nlink, extra)
    return seen


def make_sentinel(path: Path) -> Path:
    """A small tree at ``path`` that a restore beside it must never change (see ``fingerprint``)."""
    (path / "dir").mkdir(parents=True)
    (path / "secret").write_bytes(b"do not touch")
    (path / "dir" / "inner").write_bytes(b"nor this")
    os.chmod(path, 0o750)
    os.chmod(path / "dir", 0o700)
    return path

