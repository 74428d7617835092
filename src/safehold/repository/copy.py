"""Copying snapshots between two repositories that share their id parameters.

Both repositories use the same id key, chunker seed and chunker (the destination was created with
``init --copy-params-from``), so a blob has the same id in both and a snapshot's item stream can be
copied as it is: only the blobs the destination lacks are read from the source, checked, and
re-encrypted under the destination's own key.

Write order on the destination is the backup's (docs/repository-format.md): packs, then the index
that names them, then the snapshot object, after proving that the destination lock is still held
and every pack this run wrote is still stored. A copy killed at any moment leaves no snapshot on
the destination, only packs (and index objects written every few packs, so that the next run
skips what they hold); the packs no index names are what prune removes, as after a killed backup.
"""

from __future__ import annotations

import hmac
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

import blake3
import msgpack

from .. import errors
from ..concurrency import ordered_map
from .backends import Kind
from .check import referenced_blobs
from .forgotten import forgotten_names
from .prune import PruneReport, forget, hold_retained_snapshots, plan_forget, prune
from .repository import Repository, Snapshot
from .retention import RetentionPolicy

#: How a copy checks what it wrote on the destination (``verify``; docs/copies.md, "Verification"):
#: ``packs`` (the default) reads every pack this run wrote back whole and hashes it to its name
#: (a pack is named by the BLAKE3 of its bytes): the storage returned exactly what was written;
#: the plaintext of every blob in it was already checked against its id on the way in, and the
#: encryption is our own code on those checked bytes. ``full`` also decrypts every sent blob under
#: the destination's key, decompresses it and hashes it to its id again (the read-back of the
#: first versions: it proves the destination's key opens them too, at several times the CPU).
#: ``none`` reads nothing back.
VERIFY_MODES = ("packs", "full", "none")


def verify_mode(verify: bool | str | None) -> str:
    """A ``verify`` argument as one of VERIFY_MODES (True: the default, ``packs``; False/None: ``none``)."""
    if verify is True:
        return "packs"
    if verify is False or verify is None:
        return "none"
    if verify not in VERIFY_MODES:
        raise errors.UsageError(f"--verify {verify!r}: expected one of {', '.join(VERIFY_MODES)}")
    return verify


# Index objects are written every this many packs (the backup's default is 32, about 512 MiB): a
# killed copy re-sends at most this many packs' worth of blobs on its next run.
INDEX_EVERY_PACKS = 4


@dataclass
class CopyStats:
    snapshots_copied: int = 0
    snapshots_skipped: int = 0  # already on the destination (copied earlier)
    snapshots_dropped: int = 0  # not sent: the copy's retention dropped their copies before
    blobs_total: int = 0  # blobs the copied snapshots use
    blobs_sent: int = 0  # blobs added to the destination by this run
    blobs_present: int = 0  # blobs the destination already had
    bytes_sent: int = 0  # stored (compressed, encrypted) bytes written to the destination
    plain_bytes_sent: int = 0
    packs_written: int = 0
    blobs_verified: int = 0  # sent blobs checked on the destination (in a re-read pack, or one by one)
    packs_verified: int = 0  # packs this run wrote, read back and hashed to their names
    verify: str = "packs"  # the mode (VERIFY_MODES)
    verdict_records_copied: int = 0  # marks and scans carried to the copies (marks.copy_records)
    copied: list[dict] = field(default_factory=list)  # {"source": id, "destination": id, "target": ...}

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def copied_ids(destination: Repository, source_id: str) -> dict[str, str]:
    """Source snapshot id -> destination snapshot id, for the copies of ``source_id``'s snapshots
    already committed on the destination."""
    mapping: dict[str, str] = {}
    for snapshot in destination.list_snapshots(on_error=lambda name, exc: None):
        origin = snapshot.copied_from
        if origin is not None and origin.get("repository") == source_id:
            mapping[origin["snapshot"]] = snapshot.id
    return mapping


def copy_snapshot(source: Repository, destination: Repository, snapshot: Snapshot, stats: CopyStats,
                  parent_id: str | None, source_url: str, threads: int = 2, verify: bool | str = True,
                  on_progress: Callable[[dict], None] | None = None) -> Snapshot:
    """Copy one snapshot: its missing blobs, then the index, then the snapshot object, which is
    returned. Both repositories must be open with their indexes loaded and share params (checked
    by the caller); ``parent_id`` is the destination's copy of the snapshot's parent, if any.
    ``verify``: one of VERIFY_MODES (True: ``packs``, False: ``none``); the snapshot is written
    only after what was sent is verified."""
    mode = verify_mode(verify)
    stats.verify = mode
    wanted = referenced_blobs(source, snapshots=[snapshot])  # reads (and verifies) its TREE blobs
    missing = [blob_id for blob_id in wanted if not destination.has_blob(blob_id)]
    # In the source's pack order (the set has none): neighbours are read together, and the
    # destination's packs keep the source's locality. A blob the index lacks sorts first and
    # fails in transfer with the index's own error.
    missing.sort(key=lambda blob_id: _pack_position(source, blob_id))
    stats.blobs_total += len(wanted)
    stats.blobs_present += len(wanted) - len(missing)
    before = (destination.stats.blobs_added, destination.stats.bytes_added,
              destination.stats.plain_bytes_added, destination.stats.packs_written)
    packs_at_index = destination.stats.packs_written
    packs_before = len(destination.written_packs)

    # Both compress alike (zstd at the same level, or not at all): the stored frame moves as it is,
    # decompressed only to check its id, never compressed again (compression is most of a copy's
    # CPU). Otherwise the destination's own setting applies to the plaintext.
    pass_through = destination.compression == source.compression

    # The missing blobs are read through the restore's prefetcher: neighbours in a source pack
    # come in one ranged read (merged while the gap is small), many ranges in flight, within a
    # memory bound, instead of one request (S3) or one open-and-read (local) per blob.
    reader = _source_reader(source, missing, threads)

    def transfer(blob_id: bytes) -> bool:
        location = source.locate(blob_id)
        # Authenticated under the source key, decompressed and hashed to its id there.
        if reader is not None:
            body, data = reader.read_blob_body(blob_id)
        else:
            body, data = source.read_blob_body(blob_id, location)
        # The id must be the keyed hash of the plaintext under the shared id key: checked, not
        # trusted, so a destination never stores a blob under an id its content does not have.
        if not hmac.compare_digest(destination.cipher.blob_id(data), blob_id):
            raise errors.IntegrityError(detail=f"blob {blob_id.hex()[:16]} in pack {location.pack} does not "
                                               "hash to its id", pack=location.pack)
        _id, added = destination.save_blob(location.blob_type, data, blob_id=blob_id,
                                           body=bytes(body) if pass_through else None)
        return added

    sent: list[bytes] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            (closing(reader) if reader is not None else nullcontext()):
        for done, (blob_id, added) in enumerate(
                ordered_map(pool, lambda b: (b, transfer(b)), missing, window=max(4, threads * 4)), start=1):
            if added:
                sent.append(blob_id)
            if destination.stats.packs_written - packs_at_index >= INDEX_EVERY_PACKS:
                destination.ensure_lock()
                source.ensure_lock()
                destination.write_index()  # makes the packs so far reusable by a rerun after a kill
                packs_at_index = destination.stats.packs_written
            if on_progress is not None and done % 256 == 0:
                on_progress({"event": "copy", "snapshot": snapshot.id, "blobs_done": done,
                             "blobs_total": len(missing)})
    # Packs, then index, then snapshot, each step after proving the lock still holds (archiver.py).
    destination.ensure_lock()
    source.ensure_lock()
    destination.flush_pack()
    destination.verify_before_commit()
    destination.write_index()
    written = list(destination.written_packs[packs_before:])
    if mode == "full":
        _read_back(destination, sent, threads)
    elif mode == "packs":
        _verify_packs(destination, written, threads)
    if mode != "none":
        stats.blobs_verified += len(sent)  # every sent blob is in one of the packs written now
        stats.packs_verified += len(written)
    destination.verify_before_commit()
    stats.blobs_sent += destination.stats.blobs_added - before[0]
    stats.bytes_sent += destination.stats.bytes_added - before[1]
    stats.plain_bytes_sent += destination.stats.plain_bytes_added - before[2]
    stats.packs_written += destination.stats.packs_written - before[3]
    copy = Snapshot(
        id="", time=snapshot.time, target=snapshot.target, kind=snapshot.kind, hostname=snapshot.hostname,
        paths=list(snapshot.paths), tree=list(snapshot.tree), parent=parent_id, tags=list(snapshot.tags),
        summary=dict(snapshot.summary), source=dict(snapshot.source), original=snapshot.original,
        copied_from={"repository": source.id, "snapshot": snapshot.id, "url": source_url},
    )
    destination.save_snapshot(copy)
    stats.snapshots_copied += 1
    stats.copied.append({"source": snapshot.id, "destination": copy.id, "target": snapshot.target})
    return copy


#: Source bytes fetched ahead of the copy (the restore's default is 128 MiB; a copy also holds
#: the destination's open pack and its read-back).
PREFETCH_MEMORY = 64 * 1024 * 1024
PREFETCH_CONNECTIONS = 8


def _source_reader(repository: Repository, blob_ids: list[bytes], threads: int):
    """A ``PrefetchReader`` over ``blob_ids`` in the order the copy reads them, or None when there is
    nothing to read or ``SAFEHOLD_COPY_PREFETCH=0`` (blob by blob, as before)."""
    from .prefetch import PrefetchReader

    if not blob_ids or os.environ.get("SAFEHOLD_COPY_PREFETCH", "1").strip() == "0":
        return None
    return PrefetchReader(repository, iter(blob_ids), connections=max(PREFETCH_CONNECTIONS, threads),
                          memory=PREFETCH_MEMORY)


def _pack_position(repository: Repository, blob_id: bytes) -> tuple[str, int]:
    location = repository.index.lookup(blob_id)
    return ("", 0) if location is None else (location.pack, location.offset)


#: Packs re-read at once by ``--verify packs`` (each is read whole: 16-32 MiB in memory apiece).
VERIFY_PACKS_AT_ONCE = 4


def _verify_packs(destination: Repository, names: list[str], threads: int) -> None:
    """Read every pack in ``names`` back whole and hash it: a pack is named by the BLAKE3 of its
    bytes, so a match proves the storage holds exactly what this run wrote. Raises
    IntegrityError (naming the pack) on the first that does not match."""

    def check(name: str) -> None:
        data = destination._get(Kind.DATA, name)
        # blake3 releases the GIL on large inputs: the packs hash in parallel.
        if not hmac.compare_digest(blake3.blake3(data).hexdigest(), name):
            raise errors.IntegrityError(detail=f"pack {name[:16]} read back from the destination does not hash to "
                                               f"its name ({len(data)} bytes)", pack=name)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, VERIFY_PACKS_AT_ONCE))) as pool:
        for _ in ordered_map(pool, check, names, window=max(1, min(threads, VERIFY_PACKS_AT_ONCE))):
            pass


def _read_back(destination: Repository, blob_ids: Iterable[bytes], threads: int) -> None:
    """Read every blob this run sent back from the destination: decrypted under its key, and hashed
    again to its id. Raises IntegrityError (naming the pack) on the first that does not match."""

    blob_ids = list(blob_ids)
    # The sent blobs fill the new packs in order: read back a pack range at a time.
    reader = _source_reader(destination, blob_ids, threads) or destination

    def check(blob_id: bytes) -> None:
        data = reader.read_blob(blob_id)
        if not hmac.compare_digest(destination.cipher.blob_id(data), blob_id):
            raise errors.IntegrityError(detail=f"blob {blob_id.hex()[:16]} read back from the destination does "
                                               "not hash to its id")

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            (closing(reader) if reader is not destination else nullcontext()):
        for _ in ordered_map(pool, check, blob_ids, window=max(4, threads * 4)):
            pass


# --- the copy's own retention ---------------------------------------------------------------------
#
# A copy may keep longer (or shorter) than the source: its retention runs on the destination after
# each copy job. Forgetting a copy there must not make the next job send the source snapshot again,
# so before a copy is deleted a *drop record* is written in the destination's forgotten/ folder,
# named by the keyed BLAKE3 (the destination's id key) of "safehold-copy-dropped:" || source
# repository id || "/" || source snapshot id, encrypted like a forget record. A copy job lists
# forgotten/ once and leaves out every source snapshot a drop record names. The name cannot collide
# with a forget record's (another prefix) and, like those, only a key holder can compute it; records
# are never deleted (they are under Object Lock like snapshots when the destination has it).

_DROPPED_PREFIX = b"safehold-copy-dropped:"
_DROPPED_AAD = b"safehold-copy-dropped"
DROP_RECORD_VERSION = 1


def dropped_name(destination: Repository, source_id: str, snapshot_id: str) -> str:
    return blake3.blake3(_DROPPED_PREFIX + f"{source_id}/{snapshot_id}".encode(),
                         key=destination.master.id_key).hexdigest()


def dropped_sources(destination: Repository, source_id: str, snapshot_ids: Iterable[str]) -> set[str]:
    """The ids among ``snapshot_ids`` (of the source ``source_id``) whose copies the destination's
    retention dropped: not to be sent again. One listing, nothing read."""
    names = forgotten_names(destination)
    if not names:
        return set()
    return {snapshot_id for snapshot_id in snapshot_ids if dropped_name(destination, source_id, snapshot_id) in names}


def record_dropped(destination: Repository, copies: Iterable[Snapshot], reason: str) -> list[str]:
    """Write a drop record for each copy about to be forgotten (call before deleting it).
    Idempotent; a snapshot without ``copied_from`` (not a copy) needs none."""
    written = []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for copy in copies:
        origin = copy.copied_from
        if origin is None:
            continue
        name = dropped_name(destination, origin["repository"], origin["snapshot"])
        if destination.backend_has(Kind.FORGOTTEN, name):
            continue
        document = {"version": DROP_RECORD_VERSION, "source_repository": origin["repository"],
                    "source_snapshot": origin["snapshot"], "copy": copy.id, "target": copy.target,
                    "snapshot_time": copy.time.isoformat(), "dropped_at": now, "hostname": socket.gethostname(),
                    "reason": reason}
        data = destination.cipher.encrypt(msgpack.packb(document), _DROPPED_AAD + name.encode())
        destination._put(Kind.FORGOTTEN, name, data, destination.retain_until())
        written.append(name)
    return written


@dataclass
class CopyRetention:
    target: str
    policy: str
    kept: list[str] = field(default_factory=list)  # destination snapshot ids
    forgotten: list[dict] = field(default_factory=list)  # {"copy": id, "source": id or None, "time"}
    prune: dict | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def apply_copy_retention(destination: Repository, target: str, policy: RetentionPolicy,
                         now: datetime | None = None,
                         on_progress: Callable[[str], None] | None = None) -> CopyRetention:
    """Forget the copies of ``target`` that ``policy`` does not keep, each after its drop record,
    then prune when anything went. The caller holds the destination's exclusive lock. Copies still
    under Object Lock retention are kept (as 'forget' keeps them) and get no drop record."""
    decisions = [decision for decision in plan_forget(destination, {target: policy}, now)
                 if decision.snapshot.target == target]
    hold_retained_snapshots(destination, decisions)
    result = CopyRetention(target, policy.describe(), kept=[d.snapshot.id for d in decisions if d.keep])
    going = [decision.snapshot for decision in decisions if not decision.keep]
    if not going:
        return result
    destination.verify_before_delete()
    record_dropped(destination, going, f"copy retention: {policy.describe()}")
    for snapshot in forget(destination, decisions, reason=f"copy retention: {policy.describe()}"):
        result.forgotten.append({"copy": snapshot.id, "time": snapshot.time.isoformat(),
                                 "source": snapshot.copied_from["snapshot"] if snapshot.copied_from else None})
    report: PruneReport = prune(destination, on_progress=on_progress)
    result.prune = report.as_dict()
    return result


def default_threads() -> int:
    return os.cpu_count() or 1
