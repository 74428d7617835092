"""``safehold repair snapshots``: write damaged snapshots again without their damaged files.

A file is damaged when one of its chunks cannot be read back: the blob is in no index, its pack
is missing from storage or shorter than the index says, or (``read_data``) the pack is read and
the blob fails authentication. For each damaged snapshot a new snapshot is written with the
same time, target, paths and parent, the tag ``repaired``, and ``original`` = the damaged
snapshot's id; every file it leaves out is named in the report. As in restic's ``repair
snapshots``, the original is kept until the user forgets it (``forget_originals``: at once,
with a forget record like any forget).

- Hard links whose first name was dropped are dropped too (restore would refuse them anyway).
- A disk image with a damaged chunk is dropped whole: zeros in place of lost data would be a
  wrong disk that restores cleanly.
- The item stream is a msgpack stream cut into TREE blobs at content-defined points, so a lost
  TREE blob breaks it at an unknown item boundary: items before the gap are kept, the rest of
  the snapshot is reported lost.
- A snapshot with nothing left is not written again (it is reported; forget it by id).
- A snapshot already repaired (another snapshot names it as ``original``) is skipped, so the
  command is idempotent.

Write order and locking are a backup's: TREE blobs in packs, then the index, then (after
proving the lock still holds) the new snapshot, under a shared lock. It refuses to run while
blobs that snapshots miss are in packs no index names: that is a lost index object, and
``repair index`` recovers those files instead of dropping them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator

import msgpack

from .. import errors
from ..items import HOLE
from .backends import Kind
from .forgotten import record_forgotten
from .immutability import retained
from .reindex import scan_pack_headers, stored_packs
from .repository import Repository, Snapshot, TreeWriter

REPAIRED_TAG = "repaired"


@dataclass
class SnapshotRepair:
    original: str
    target: str
    time: str
    repaired: str | None = None  # the new snapshot's id (None in a dry run or when nothing is left)
    dropped: list[str] = field(default_factory=list)  # paths left out
    stream_damaged: str | None = None  # where the item stream broke, when it did
    items_kept: int = 0
    files_kept: int = 0
    bytes_kept: int = 0
    forgotten: bool = False
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RepairSnapshotsReport:
    snapshots_checked: int = 0
    intact: list[str] = field(default_factory=list)
    repaired: list[SnapshotRepair] = field(default_factory=list)
    nothing_left: list[SnapshotRepair] = field(default_factory=list)
    already_repaired: list[dict] = field(default_factory=list)  # {"original", "repaired", "forgotten"}
    packs_read: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # ids of snapshot objects that cannot be read

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        data["repaired"] = [r.as_dict() for r in self.repaired]
        data["nothing_left"] = [r.as_dict() for r in self.nothing_left]
        return data


def damaged_blobs(repository: Repository, stored: dict[str, int], read_data: bool, packs_of_interest: set[str] | None,
                  report: RepairSnapshotsReport, threads: int = 4) -> set[bytes]:
    """Ids of blobs whose indexed copy (the one a restore reads) cannot be read back: its pack is
    missing or too short, and with ``read_data`` it fails verification when the pack is read."""
    bad: set[tuple[bytes, str]] = set()
    expected: dict[str, dict[bytes, tuple]] = {}
    for blob_id, location in repository.index.entries():
        size = stored.get(location.pack)
        if size is None or size < location.offset + location.length:
            bad.add((blob_id, location.pack))
        elif read_data and (packs_of_interest is None or location.pack in packs_of_interest):
            expected.setdefault(location.pack, {})[blob_id] = (location.blob_type, location.offset, location.length)
    if read_data and expected:
        from concurrent.futures import ThreadPoolExecutor

        from .check import _verify_pack

        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="safehold-repair") as pool:
            packs = sorted(expected)
            for pack, (_reason, bad_blobs) in zip(packs, pool.map(
                    lambda name: _verify_pack(repository, name, expected[name]), packs)):
                bad.update((blob_id, pack) for blob_id in bad_blobs)
                report.packs_read += 1
    result = set()
    for blob_id, pack in bad:
        location = repository.index.lookup(blob_id)
        if location is not None and location.pack == pack:
            result.add(blob_id)
    return result


def _readable(repository: Repository, blob_id: bytes, bad: set[bytes]) -> bool:
    return blob_id == HOLE or (blob_id in repository.index and blob_id not in bad)


class _Stream:
    """The items of a snapshot, read one TREE blob at a time (a snapshot of millions of files is
    never held in memory), up to the first unreadable blob; ``broken`` then says where it broke."""

    def __init__(self, repository: Repository, snapshot: Snapshot, bad: set[bytes]) -> None:
        self.repository, self.snapshot, self.bad = repository, snapshot, bad
        self.broken: str | None = None
        self.count = 0
        self.last_path: bytes | None = None

    def __iter__(self) -> Iterator[dict]:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        tree = self.snapshot.tree
        for position, hex_id in enumerate(tree):
            blob_id = bytes.fromhex(hex_id)
            problem = None
            if not _readable(self.repository, blob_id, self.bad):
                problem = "not in the index or in a damaged pack"
            else:
                try:
                    unpacker.feed(self.repository.read_blob(blob_id))
                except errors.IntegrityError as exc:
                    problem = str(exc.fields.get("detail", exc))
            if problem is not None:
                last = self.last_path.decode(errors="backslashreplace") if self.last_path is not None else None
                self.broken = (f"item stream blob {position + 1} of {len(tree)} ({hex_id[:16]}) unreadable: "
                               f"{problem}; items after " + (repr(last) if last else "the start") + " are lost")
                return
            try:
                for item in unpacker:
                    # Anything but a map is malformed; it is passed on so that the plan names it.
                    item = item if isinstance(item, dict) else {"path": None}
                    self.count += 1
                    if isinstance(item.get("path"), bytes):
                        self.last_path = item["path"]
                    yield item
            except Exception as exc:  # a stream that does not decode: keep what did
                self.broken = f"item stream does not decode after {self.count} item(s): {exc}"
                return


def _chunk_ids(item: dict) -> Iterator[bytes]:
    chunks = item.get("chunks") or b""
    if isinstance(chunks, bytes):
        for i in range(0, len(chunks) - len(chunks) % 32, 32):
            yield chunks[i : i + 32]


def repair_plan(repository: Repository, snapshot: Snapshot, bad: set[bytes],
                writer: TreeWriter | None = None) -> SnapshotRepair:
    """What a repaired copy of ``snapshot`` drops; the items it keeps go to ``writer`` when given."""
    record = SnapshotRepair(snapshot.id, snapshot.target, snapshot.time.isoformat())
    stream = _Stream(repository, snapshot, bad)
    dropped_paths: set[bytes] = set()
    for number, item in enumerate(stream):
        path = item.get("path")
        chunks = item.get("chunks") or b""
        if not isinstance(path, bytes) or not isinstance(chunks, bytes) or len(chunks) % 32:
            # Hostile or damaged metadata: dropped, and named as well as it can be.
            record.dropped.append(path.decode(errors="backslashreplace") if isinstance(path, bytes)
                                  else f"<malformed item {number}>")
            continue
        damaged = any(not _readable(repository, chunks[i : i + 32], bad) for i in range(0, len(chunks), 32))
        if not damaged and item.get("type") == "hardlink" and item.get("target") in dropped_paths:
            damaged = True
        if damaged:
            dropped_paths.add(path)
            record.dropped.append(path.decode(errors="backslashreplace"))
            continue
        record.items_kept += 1
        if item.get("type") in ("file", "image"):
            record.files_kept += item.get("type") == "file"
            size = item.get("size")
            record.bytes_kept += size if isinstance(size, int) and size > 0 else 0
        if writer is not None:
            writer.add(item)
    record.stream_damaged = stream.broken
    return record


def repair_snapshots(repository: Repository, snapshots: list[Snapshot] | None = None, *, read_data: bool = False,
                     forget_originals: bool = False, dry_run: bool = False, threads: int = 4,
                     on_progress: Callable[[str], None] | None = None) -> RepairSnapshotsReport:
    """Repair ``snapshots`` (default: every snapshot). The caller holds a shared lock. Objects are
    read as stored, never from the local cache (cache.py)."""
    with repository.uncached():
        return _repair_snapshots(repository, snapshots, read_data, forget_originals, dry_run, threads, on_progress)


def _repair_snapshots(repository: Repository, snapshots: list[Snapshot] | None, read_data: bool,
                      forget_originals: bool, dry_run: bool, threads: int,
                      on_progress: Callable[[str], None] | None) -> RepairSnapshotsReport:
    on_progress = on_progress or (lambda message: None)
    report = RepairSnapshotsReport(dry_run=dry_run)
    damaged_index: dict[str, str] = {}
    repository.load_index(on_error=lambda name, exc: damaged_index.setdefault(name, str(exc)))
    if damaged_index:
        raise errors.RepairRefused(
            what="snapshots", reason=f"{len(damaged_index)} index object(s) are damaged, e.g. "
            f"{next(iter(damaged_index))[:16]}: files whose blobs they list would be dropped needlessly")
    unreadable: list[str] = []
    # A snapshot object that cannot be read holds its own item list: nothing of it can be written
    # again. It is named (check names it too; 'forget ID' removes it) and the others are repaired.
    everything = repository.list_snapshots(on_error=lambda name, exc: unreadable.append(name))
    report.unreadable = unreadable
    for name in unreadable:
        report.warnings.append(f"snapshot {name[:8]} cannot be read (its object is damaged): nothing of it can "
                               f"be repaired; 'safehold forget {name[:8]}' removes it")
    chosen = everything if snapshots is None else snapshots
    report.snapshots_checked = len(chosen)
    stored = stored_packs(repository)

    # Never drop a file that a lost index object hides: its blobs may sit in unindexed packs.
    needed: set[bytes] = set()
    for snapshot in chosen:
        needed.update(bytes.fromhex(h) for h in snapshot.tree)
    unindexed = {pack: size for pack, size in stored.items() if pack not in set(repository.index.packs)}
    if unindexed:
        found, _unreadable = scan_pack_headers(repository, unindexed, threads)
        in_unindexed = {e.blob_id for entries in found.values() for e in entries if e.blob_id not in repository.index}
        if in_unindexed:
            for snapshot in chosen:
                for item in _Stream(repository, snapshot, set()):
                    needed.update(_chunk_ids(item))
            hidden = needed & in_unindexed
            if hidden:
                raise errors.RepairRefused(
                    what="snapshots", reason=f"{len(hidden)} blob(s) these snapshots use are in packs no index "
                    "names (a lost index object), so their files are not damaged")

    on_progress("finding damaged blobs" + (" (reading the packs)" if read_data else ""))
    interest = None
    if read_data:
        interest = set()
        for snapshot in chosen:
            for hex_id in snapshot.tree:
                location = repository.index.lookup(bytes.fromhex(hex_id))
                if location is not None:
                    interest.add(location.pack)
            for item in _Stream(repository, snapshot, set()):
                for blob_id in _chunk_ids(item):
                    location = repository.index.lookup(blob_id)
                    if location is not None:
                        interest.add(location.pack)
    bad = damaged_blobs(repository, stored, read_data, interest, report, threads)

    repaired_by = {s.original: s.id for s in everything if s.original is not None}
    to_forget: list[Snapshot] = []
    for snapshot in chosen:
        if snapshot.id in repaired_by:
            report.already_repaired.append({"original": snapshot.id, "repaired": repaired_by[snapshot.id],
                                            "forgotten": False})
            # A run killed between writing the copy and forgetting the original finishes here.
            to_forget.append(snapshot)
            continue
        on_progress(f"snapshot {snapshot.short_id}")
        # A first pass finds the damage without writing; only a damaged snapshot is read again
        # to write its copy, so a run over intact snapshots stores nothing.
        record = repair_plan(repository, snapshot, bad)
        if not record.dropped and record.stream_damaged is None:
            report.intact.append(snapshot.id)
            continue
        if not record.items_kept:
            record.note = "nothing readable is left: no new snapshot written; 'safehold forget' it by id"
            report.nothing_left.append(record)
            continue
        report.repaired.append(record)
        if dry_run:
            continue
        writer = TreeWriter(repository)
        again = repair_plan(repository, snapshot, bad, writer)
        if (again.dropped, again.items_kept) != (record.dropped, record.items_kept):
            raise errors.IntegrityError(detail=f"snapshot {snapshot.short_id} read differently twice; nothing "
                                        "was written for it")
        record.repaired = _write_repaired(repository, snapshot, writer, record)
        to_forget.append(snapshot)
    if forget_originals and to_forget and not dry_run:
        locked = retained(repository, Kind.SNAPSHOTS, [s.id for s in to_forget])
        going = [s for s in to_forget if s.id not in locked]
        for snapshot in to_forget:
            if snapshot.id in locked:
                report.warnings.append(f"original {snapshot.short_id} kept: retained by Object Lock until "
                                       f"{locked[snapshot.id].isoformat(timespec='seconds')}")
        if going:
            repository.verify_before_delete()
        record_forgotten(repository, going, "repair snapshots --forget")
        for snapshot in going:
            repository.delete_snapshot(snapshot.id)
        gone = {s.id for s in going}
        for record in report.repaired:
            record.forgotten = record.original in gone
        for done in report.already_repaired:
            done["forgotten"] = done["original"] in gone
    return report


def _write_repaired(repository: Repository, original: Snapshot, tree: TreeWriter, record: SnapshotRepair) -> str:
    tree_ids = tree.finish()
    # A backup's write order and proofs: packs, index, then the snapshot.
    repository.ensure_lock()
    repository.flush_pack()
    repository.verify_before_commit()
    repository.write_index()
    repository.verify_before_commit()
    summary = dict(original.summary or {})
    if "files" in summary:
        summary["files"] = record.files_kept
    if "bytes_total" in summary:
        summary["bytes_total"] = record.bytes_kept
    summary["repair"] = {"original": original.id, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "hostname": socket.gethostname(), "dropped": len(record.dropped),
                         "stream_damaged": record.stream_damaged is not None}
    tags = list(original.tags) + ([REPAIRED_TAG] if REPAIRED_TAG not in original.tags else [])
    snapshot = Snapshot(id="", time=original.time, target=original.target, kind=original.kind,
                        hostname=original.hostname, paths=list(original.paths), tree=tree_ids, parent=original.parent,
                        tags=tags, summary=summary, source=dict(original.source or {}), original=original.id)
    return repository.save_snapshot(snapshot)

