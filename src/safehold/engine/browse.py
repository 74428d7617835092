"""Read-only views: snapshots, their contents, differences, repository statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from typing import Any

from .. import errors
from ..items import SKIPPED_LIST_LIMIT
from ..repository import Snapshot
from ..repository.backends import Kind
from ..repository.forgotten import replayed_records
from ..text import printable
from .context import Context
from .verdicts import assess_snapshots, signals_dict, verdict_dict


def snapshot_dict(snapshot: Snapshot) -> dict:
    summary = snapshot.summary
    return {
        "id": snapshot.id, "short_id": snapshot.short_id, "time": snapshot.time.isoformat(),
        "target": snapshot.target, "kind": snapshot.kind, "hostname": snapshot.hostname, "paths": snapshot.paths,
        "parent": snapshot.parent, "tags": snapshot.tags,
        "files": summary.get("files", 0), "bytes_total": summary.get("bytes_total", 0),
        "bytes_read": summary.get("bytes_read", 0), "bytes_added": summary.get("bytes_added", 0),
        "skipped": skipped_dict(summary.get("skipped")),
        "original": snapshot.original,  # set on snapshots written by 'repair snapshots'
        "copied_from": snapshot.copied_from,  # set on snapshots written by 'copy'
    }


def skipped_dict(record: Any) -> dict:
    """A snapshot summary's ``skipped`` record (``items.SkippedItems.as_record``) as plain JSON values
    for people and scripts: ``count`` (exact), ``reasons`` (count per reason), ``items`` (at most
    SKIPPED_LIST_LIMIT entries of path, type, reason, detail) and ``truncated``.

    The record comes from the repository, so it is hostile input: every field is type-checked and
    bounded, and paths and texts are escaped with ``text.printable`` (a name may hold terminal
    escapes; the escape is unambiguous, so the name can still be told exactly). Snapshots written
    before partial backups existed have no record: nothing was skipped that anyone knows of."""
    record = record if isinstance(record, dict) else {}
    items = []
    entries = record.get("items")
    for entry in (entries if isinstance(entries, list) else [])[:SKIPPED_LIST_LIMIT]:
        if not isinstance(entry, dict):
            continue
        path = entry.get("path")
        items.append({
            "path": printable(path) if isinstance(path, (bytes, str)) else "",
            "type": _short_text(entry.get("type")),
            "reason": _short_text(entry.get("reason")),
            "detail": _short_text(entry.get("detail"), 300),
        })
    reasons = record.get("reasons")
    reasons = {_short_text(name): _count(value) for name, value in list(reasons.items())[:16]} \
        if isinstance(reasons, dict) else {}
    count = max(_count(record.get("count")), len(items))
    return {"count": count, "reasons": reasons, "items": items, "truncated": count > len(items)}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _short_text(value: Any, limit: int = 32) -> str:
    return printable(value[:limit]) if isinstance(value, (str, bytes)) else ""


def _cache_rows(snapshots: list[Snapshot]) -> list[dict]:
    return [{"id": s.id, "time": s.time, "target": s.target, "kind": s.kind, "hostname": s.hostname,
             "parent": s.parent, "size": s.summary.get("bytes_total", 0), "files": s.summary.get("files", 0),
             "added_bytes": s.summary.get("bytes_added", 0), "tags": s.tags} for s in snapshots]


def list_snapshots(context: Context, target: str | None = None,
                   damaged: list[tuple[str, str]] | None = None, clean_only: bool = False) -> list[dict]:
    """Every readable snapshot (of ``target``). A snapshot object that cannot be read fails the
    listing, unless ``damaged`` is given: then it is appended there as (id, error) and the others
    are listed (the catalog's cache is then left as it was). ``clean_only``: only the restore
    points judged clean (``verdict.clean_point``: clean and not after a suspicious snapshot)."""
    repository = context.open_repository(load_index=False)
    found: list[tuple[str, str]] = []
    everything = repository.list_snapshots(
        on_error=None if damaged is None else lambda name, exc: found.append((name, str(exc))))
    if damaged is not None:
        damaged.extend(found)
    shown = [s for s in everything if target is None or s.target == target]
    # A snapshot that a forget record names was forgotten and put back: marked, never hidden.
    replayed = replayed_records(repository, shown)
    copies = _catalog_views(context, repository.id, everything if target is None and not found else None)
    # Each snapshot's ransomware verdict, judged within its target's history (engine/verdicts.py).
    assessed = assess_snapshots(repository, [s for s in everything if s.target in {x.target for x in shown}])
    rows = [snapshot_dict(s) | {"replayed": replayed[s.id].as_dict() if s.id in replayed else None,
                                "copies": sorted(copies.get(s.id, ())),
                                "verdict": verdict_dict(assessed.get(s.id)),
                                "signals": signals_dict(s.summary.get("signals"))} for s in shown]
    if clean_only:
        rows = [row for row in rows if row["verdict"]["clean_point"]]
    return rows


def _catalog_views(context: Context, repository_id: str, refresh: list[Snapshot] | None) -> dict[str, set[str]]:
    """Keep the catalog's snapshot cache current with ``refresh`` (the whole list, when in hand)
    and return the copies the catalog knows of (``_copies_in_catalog``).

    Opening the catalog costs a listing most of its start-up (SQLAlchemy and the migration check,
    ~0.4-0.6 s of CPU against ~0.3 s for everything else), and a listing repeated while nothing
    wrote to the catalog would only write the same rows again and read the same copy jobs. So a
    SQLite catalog this call opens itself is stamped after use (size, mtime and inode of the
    database and its WAL file, ``_catalog_stamp``), and the stamp, a digest of the rows cached
    and the copies read are kept in the state folder (``snapshot-listing.json``, 0700 like the
    rest of it). While the stamp is unchanged and the rows are the same, the catalog is left
    closed. Any write to the catalog (a job, a backup's cache row, a forget, a rebuild, or its
    replacement) changes the stamp. A catalog some caller already opened (the server) or on
    PostgreSQL is always read: the file is a hint for the command line only, and a broken or
    foreign file only costs the catalog's opening."""
    rows = _cache_rows(refresh) if refresh is not None else None
    digest = _rows_digest(rows) if rows is not None else None
    ours = context._catalog is None  # a catalog the caller holds open is the caller's
    database = _sqlite_file(context) if ours else None
    memo_path = Path(context.config.state_dir) / "snapshot-listing.json"
    key = f"{context.config.catalog_url}\n{repository_id}"
    memos = _read_memos(memo_path) if ours else {}
    memo = memos.get(key)
    stamp = _catalog_stamp(database) if database is not None else None
    if (isinstance(memo, dict) and stamp is not None and memo.get("stamp") == stamp
            and (digest is None or memo.get("digest") == digest) and isinstance(memo.get("copies"), dict)):
        return {str(snapshot): {str(name) for name in names} for snapshot, names in memo["copies"].items()
                if isinstance(names, list)}
    cached = None
    if rows is not None:
        try:
            context.catalog.replace_snapshots(repository_id, rows)
            cached = digest
        except Exception:  # a cache refresh must never fail a listing
            pass
    copies = _copies_in_catalog(context, repository_id)
    database = _sqlite_file(context) if ours and context._catalog is not None else None  # it may be new
    if database is not None:
        context.close()  # ours: closed before the stamp, so the stamp sees our own writes
        memos[key] = {"stamp": _catalog_stamp(database), "digest": cached,
                      "copies": {snapshot: sorted(names) for snapshot, names in copies.items()}}
        _write_memos(memo_path, memos)
    return copies


def _sqlite_file(context: Context) -> Path | None:
    url = context.config.catalog_url
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url[len("sqlite:///"):])
    return path if path.is_file() else None


def _catalog_stamp(database: Path) -> list | None:
    """What changes with every write to a SQLite catalog in WAL mode: the database file and its
    write-ahead log (size, modification time in ns, inode)."""
    stamp = []
    for path in (database, database.with_name(database.name + "-wal")):
        try:
            status = path.stat()
        except FileNotFoundError:
            stamp.append(None)
            continue
        except OSError:
            return None
        stamp.append([status.st_size, status.st_mtime_ns, status.st_ino])
    return stamp


def _rows_digest(rows: list[dict]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


MEMO_LIMIT = 64  # repositories remembered per state folder; the file stays small


def _read_memos(path: Path) -> dict:
    import json

    try:
        memos = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return memos if isinstance(memos, dict) else {}


def _write_memos(path: Path, memos: dict) -> None:
    from ..files import write_private_json

    try:
        write_private_json(path, dict(list(memos.items())[-MEMO_LIMIT:]))
    except OSError:
        pass  # a hint only: a read-only state folder must not fail the listing


def _copies_in_catalog(context: Context, repository_id: str) -> dict[str, set[str]]:
    """Snapshot id -> the destinations (copy names or urls) the catalog's successful copy jobs of
    this repository sent it to. From job history: a copy made from another host's catalog, or
    forgotten on the destination since, is not known here (the destination's own 'snapshots'
    says what it holds, with 'copied_from')."""
    found: dict[str, set[str]] = {}
    try:
        jobs = context.catalog.list_jobs(kind="copy", status="succeeded", limit=None)
    except Exception:  # a listing never fails because of the catalog
        return found
    for job in jobs:
        details = job.details or {}
        if details.get("source_id") != repository_id or not isinstance(details.get("copied"), list):
            continue
        for entry in details["copied"]:
            if isinstance(entry, dict) and isinstance(entry.get("source"), str):
                found.setdefault(entry["source"], set()).add(str(details.get("destination")))
    return found


def rebuild_catalog(context: Context) -> dict:
    """Recreate the catalog's snapshot cache from the repository, the source of truth."""
    with context.catalog.job("catalog-rebuild") as job:
        repository = context.open_repository(load_index=False)
        count = context.catalog.replace_snapshots(repository.id, _cache_rows(repository.list_snapshots()))
        job.log(f"cached {count} snapshot(s) of repository {repository.id}")
        return {"repository_id": repository.id, "snapshots": count}


def item_dict(item: dict) -> dict:
    return {
        "path": os.fsdecode(item["path"]), "type": item["type"], "size": item.get("size", 0),
        "mode": oct(item.get("mode", 0)), "uid": item.get("uid"), "gid": item.get("gid"),
        "user": item.get("user"), "group": item.get("group"), "mtime_ns": item.get("mtime"),
        "target": os.fsdecode(item["target"]) if item.get("target") is not None else None,
    }


def list_items(context: Context, snapshot_ref: str, path: str | None = None, target: str | None = None) -> list[dict]:
    repository = context.open_repository()
    snapshot = repository.find_snapshot(snapshot_ref, target)
    prefix = os.fsencode(path).strip(b"/") if path else b""
    items = []
    for item in repository.read_tree(snapshot):
        name = item["path"]
        if prefix and not (name == prefix or name.startswith(prefix + b"/")):
            continue
        items.append(item_dict(item))
    if prefix and not items:
        raise errors.PathNotInSnapshot(path=path, snapshot=snapshot.short_id)
    return items


@dataclass
class Difference:
    change: str  # "+" added, "-" removed, "M" content changed, "U" metadata changed, "T" type changed
    path: str

    def as_dict(self) -> dict:
        return {"change": self.change, "path": self.path}


def diff_snapshots(context: Context, first: str, second: str) -> list[Difference]:
    repository = context.open_repository()
    a = repository.find_snapshot(first)
    b = repository.find_snapshot(second)
    old = {item["path"]: item for item in repository.read_tree(a)}
    differences: list[Difference] = []
    for item in repository.read_tree(b):
        path = item["path"]
        before = old.pop(path, None)
        name = os.fsdecode(path)
        if before is None:
            differences.append(Difference("+", name))
        elif before["type"] != item["type"]:
            differences.append(Difference("T", name))
        elif before.get("chunks") != item.get("chunks") or before.get("target") != item.get("target"):
            differences.append(Difference("M", name))
        elif any(before.get(k) != item.get(k) for k in ("mode", "uid", "gid", "mtime", "xattrs")):
            differences.append(Difference("U", name))
    differences += [Difference("-", os.fsdecode(path)) for path in old]
    return sorted(differences, key=lambda d: d.path)


def repository_stats(context: Context) -> dict:
    repository = context.open_repository()
    packs = list(repository.backend.list(Kind.DATA))
    snapshots = repository.list_snapshots()
    unique_plain = 0
    blobs = 0
    seen: set[bytes] = set()
    for blob_id, location in repository.index.entries():
        if blob_id in seen:
            continue
        seen.add(blob_id)
        blobs += 1
        unique_plain += location.plain_length
    logical = sum(s.summary.get("bytes_total", 0) for s in snapshots)
    stored = sum(p.size for p in packs)
    targets: dict[str, int] = {}
    for snapshot in snapshots:
        targets[snapshot.target] = targets.get(snapshot.target, 0) + 1
    return {
        "repository_id": repository.id, "url": repository.backend.url, "snapshots": len(snapshots),
        "targets": targets, "packs": len(packs), "blobs": blobs, "stored_bytes": stored,
        "unique_plain_bytes": unique_plain, "logical_bytes": logical,
        "deduplication_ratio": round(logical / unique_plain, 2) if unique_plain else None,
        "compression_ratio": round(unique_plain / stored, 2) if stored else None,
        "index_memory_bytes": repository.index.memory_bytes(),
    }
