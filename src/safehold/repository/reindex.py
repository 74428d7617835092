"""Rebuilding the index from the packs' own headers (``safehold repair index``).

Every pack ends with an encrypted header listing its blobs (see pack.py), so the index is
redundant: a lost or damaged index object can be rebuilt by reading pack headers, the last
few KiB of each pack, never the data. As restic's ``repair index`` does:

1. load every index object that still reads (damaged ones are named and dropped);
2. list the stored packs; read the header of each pack no index names (``read_all_packs``:
   of every pack, and the index is rebuilt from headers alone);
3. drop index entries of packs that are gone, and entries that lie past the end of a
   truncated pack;
4. when anything changed, write index objects naming every pack, then delete the old index
   objects (not those under Object Lock retention: they stay as duplicates).

It runs under the exclusive lock and is idempotent: a second run finds nothing to change and
writes nothing. Packs are never deleted here; a pack whose header cannot be read is left in
storage, out of the index, and named (``check --read-data`` says more; prune keeps it).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .. import errors
from .backends import Kind
from .crypto import DecryptionFailed
from .immutability import RetainedObject, retained
from .pack import HEADER_TAIL_READ, PackEntry, header_length_of, read_pack_header_from_tail
from .repository import Repository

INDEX_PACKS_PER_OBJECT = 4096


def read_pack_header(repository: Repository, pack: str, size: int) -> list[PackEntry]:
    """The entries of one stored pack from its header: one ranged read of the pack's tail (two for
    a header longer than HEADER_TAIL_READ). Raises DecryptionFailed when the header is damaged or
    does not match the pack's size, BackendError on a storage error."""
    if size < 4:
        raise DecryptionFailed("pack too short")
    start = max(0, size - HEADER_TAIL_READ)
    tail = repository._get(Kind.DATA, pack, start, size - start)
    if len(tail) != size - start:
        raise DecryptionFailed(f"pack shorter than listed ({start + len(tail)} of {size} bytes)")
    needed = header_length_of(tail, size) + 4
    if needed > len(tail):
        tail = repository._get(Kind.DATA, pack, size - needed, needed)
        if len(tail) != needed:
            raise DecryptionFailed("pack shorter than its header says")
    return read_pack_header_from_tail(repository.cipher, tail, size)


def scan_pack_headers(repository: Repository, packs: dict[str, int], threads: int = 8,
                      on_progress: Callable[[int, int], None] | None = None,
                      ) -> tuple[dict[str, list[PackEntry]], dict[str, str]]:
    """Read the headers of ``packs`` (name -> stored size) in parallel. Returns (entries of each
    pack whose header reads, the reason for each pack whose header does not)."""
    found: dict[str, list[PackEntry]] = {}
    unreadable: dict[str, str] = {}
    if not packs:
        return found, unreadable

    def one(pack: str) -> tuple[str, list[PackEntry] | None, str | None]:
        try:
            return pack, read_pack_header(repository, pack, packs[pack]), None
        except DecryptionFailed as exc:
            return pack, None, f"header unreadable: {exc}"
        except errors.IntegrityError as exc:  # gone since the listing
            return pack, None, str(exc)

    with ThreadPoolExecutor(max(1, min(threads, len(packs))), thread_name_prefix="safehold-headers") as pool:
        for done, (pack, entries, reason) in enumerate(pool.map(one, sorted(packs)), 1):
            if entries is not None:
                found[pack] = entries
            else:
                unreadable[pack] = reason or "unreadable"
            if on_progress is not None:
                on_progress(done, len(packs))
    return found, unreadable


def stored_packs(repository: Repository) -> dict[str, int]:
    try:
        return {info.name: info.size for info in repository.backend.list(Kind.DATA)}
    except OSError as exc:
        raise errors.from_os_error(exc, "listing data/") from exc


def indexed_entries(repository: Repository) -> dict[str, dict[bytes, PackEntry]]:
    """pack -> {blob id: entry} from the loaded index (a blob named twice for one pack counts once)."""
    by_pack: dict[str, dict[bytes, PackEntry]] = {}
    for blob_id, location in repository.index.entries():
        by_pack.setdefault(location.pack, {})[blob_id] = PackEntry(
            location.blob_type, blob_id, location.offset, location.length, location.plain_length)
    return by_pack


@dataclass
class RepairIndexReport:
    packs_stored: int = 0
    packs_indexed_before: int = 0
    packs_indexed_after: int = 0
    headers_read: int = 0
    packs_added: list[str] = field(default_factory=list)       # stored, no index named them: indexed now
    packs_removed: list[dict] = field(default_factory=list)    # {"pack", "reason"}: index entries dropped
    packs_unreadable: list[dict] = field(default_factory=list)  # {"pack", "reason"}: stored, header unreadable
    blobs_added: int = 0
    blobs_removed: int = 0
    index_objects_damaged: list[dict] = field(default_factory=list)  # {"name", "reason"}
    index_objects_written: int = 0
    index_objects_removed: int = 0
    retained: list[dict] = field(default_factory=list)
    changed: bool = False
    dry_run: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def repair_index(repository: Repository, *, read_all_packs: bool = False, dry_run: bool = False,
                 threads: int = 8, on_progress: Callable[[str], None] | None = None) -> RepairIndexReport:
    """Rebuild the index from pack headers. The caller must hold the exclusive lock. The index
    objects are read as stored, never from the local cache (cache.py)."""
    with repository.uncached():
        return _repair_index(repository, read_all_packs, dry_run, threads, on_progress)


def _repair_index(repository: Repository, read_all_packs: bool, dry_run: bool, threads: int,
                  on_progress: Callable[[str], None] | None) -> RepairIndexReport:
    on_progress = on_progress or (lambda message: None)
    report = RepairIndexReport(dry_run=dry_run)
    damaged: dict[str, str] = {}
    repository.load_index(on_error=lambda name, exc: damaged.setdefault(name, str(exc)))
    report.index_objects_damaged = [{"name": name, "reason": reason} for name, reason in sorted(damaged.items())]
    old_indexes = repository.index_names()
    stored = stored_packs(repository)
    report.packs_stored = len(stored)
    before = indexed_entries(repository)
    report.packs_indexed_before = len(before)

    after: dict[str, dict[bytes, PackEntry]] = {}
    for pack, entries in before.items():
        if pack not in stored:
            report.packs_removed.append({"pack": pack, "reason": "missing from storage"})
            report.blobs_removed += len(entries)
            continue
        end = max(e.offset + e.length for e in entries.values())
        if stored[pack] < end:
            kept = {blob_id: e for blob_id, e in entries.items() if e.offset + e.length <= stored[pack]}
            report.packs_removed.append({"pack": pack, "reason": f"truncated: {stored[pack]} bytes, index needs "
                                         f"{end}; {len(entries) - len(kept)} blob(s) past the end dropped"})
            report.blobs_removed += len(entries) - len(kept)
            if kept:
                after[pack] = kept
            continue
        after[pack] = entries

    to_read = {pack: size for pack, size in stored.items() if read_all_packs or pack not in after}
    on_progress(f"reading the headers of {len(to_read)} pack(s)")
    found, unreadable = scan_pack_headers(repository, to_read, threads)
    report.headers_read = len(to_read)
    for pack, entries in sorted(found.items()):
        from_header = {e.blob_id: e for e in entries}
        if pack not in after:
            if not from_header:  # nothing to index (safehold never writes such a pack)
                unreadable[pack] = "header lists no blob"
                continue
            report.packs_added.append(pack)
            report.blobs_added += len(from_header)
            after[pack] = from_header
        elif from_header != after[pack]:
            # read_all_packs: the header is the truth about what a pack holds.
            report.blobs_added += len(set(from_header) - set(after[pack]))
            report.blobs_removed += len(set(after[pack]) - set(from_header))
            report.packs_removed.append({"pack": pack, "reason": "index entries differ from the pack header: "
                                         "replaced by the header's"})
            after[pack] = from_header
    for pack, reason in sorted(unreadable.items()):
        # An indexed pack with a damaged header keeps its index entries: its blobs may all be
        # intact (restores read through the index), and check --read-data tells.
        report.packs_unreadable.append({"pack": pack, "reason": reason + (
            "; its index entries are kept" if pack in after else "; left in storage, not indexed")})
    report.packs_indexed_after = len(after)
    report.changed = bool(damaged or report.packs_added or report.packs_removed)
    if not report.changed or dry_run:
        return report

    on_progress(f"writing the index of {len(after)} pack(s)")
    packs = sorted((pack, sorted(entries.values(), key=lambda e: e.offset)) for pack, entries in after.items())
    for start in range(0, len(packs), INDEX_PACKS_PER_OBJECT):
        repository.write_index_object(packs[start : start + INDEX_PACKS_PER_OBJECT])
        report.index_objects_written += 1
    locked = retained(repository, Kind.INDEX, old_indexes)
    # Deleting index objects: prove the lock first (as prune does), and stop at any delete once it is lost.
    repository.verify_before_delete()
    for name in old_indexes:
        if name in locked:
            report.retained.append(RetainedObject(Kind.INDEX, name, locked[name]).as_dict())
            continue
        repository.ensure_lock()
        repository.backend.delete(Kind.INDEX, name)
        report.index_objects_removed += 1
    # A damaged index object under retention stays; it must not stop this process from going on.
    repository.reload_index(on_error=lambda name, exc: None)
    return report


def index_packs(repository: Repository, found: Iterable[tuple[str, list[PackEntry]]]) -> None:
    """Add packs read from their headers to the in-memory index (nothing is written)."""
    for pack, entries in found:
        if entries:
            repository.index.add_pack(pack, entries)
