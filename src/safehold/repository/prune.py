"""Forget (drop snapshots by retention rules) and prune (drop data nothing uses).

Prune runs under the exclusive lock and is ordered so that a crash at any point
leaves every kept snapshot restorable:
1. repack the still-used blobs of mostly-unused packs into new packs;
2. write new index objects describing every kept pack (packs, then index);
3. delete the old index objects;
4. delete packs nothing indexes any more.
A crash before 3 leaves duplicate index entries (harmless); after 3, only
unindexed packs, which the next prune reads the headers of and deletes.
A pack no index names is read before anything is decided about it (see prune()).

Before each destructive step (deleting snapshots, old index objects, packs,
temporary files) the holder proves its lock is still its own and alone
(``Repository.verify_before_delete``), and a lost lock stops every single delete
(``ensure_lock``): a prune paused past the stale age may have been overtaken by a
backup that now uses blobs the plan would delete. It then stops with LockLost,
having deleted nothing more; what it wrote so far (repacked packs, new index
objects) only duplicates what is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from .. import errors
from .backends import Kind, TemporaryFilesBackend
from .check import referenced_blobs
from .immutability import RetainedObject, packs_named_by, retained, retention_backend
from .forgotten import record_forgotten, replayed_records
from .pack import PackEntry
from .reindex import index_packs, scan_pack_headers, stored_packs
from .repository import Repository, Snapshot
from .retention import RetentionPolicy, apply_policy

REPACK_UNUSED_FRACTION = 0.10
INDEX_PACKS_PER_OBJECT = 4096


@dataclass
class ForgetDecision:
    snapshot: Snapshot
    keep: bool
    reasons: list[str]


@dataclass
class PruneReport:
    packs_total: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    unindexed_packs_deleted: int = 0
    blobs_removed: int = 0
    bytes_before: int = 0
    bytes_freed: int = 0
    index_objects_replaced: int = 0
    unindexed_packs_read: int = 0  # headers read of packs no index named
    packs_reindexed: int = 0  # of those, packs holding used blobs: kept and indexed again
    unreadable_packs_kept: list[dict] = field(default_factory=list)  # {"pack", "reason"}
    temporary_files_removed: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    # Objects prune would have deleted but left alone: under Object Lock retention (kind, name, until, reason).
    retained: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def plan_forget(repository: Repository, policies: dict[str, RetentionPolicy],
                now: datetime | None = None) -> list[ForgetDecision]:
    """Apply each target's policy to its snapshots. Targets without a policy keep everything."""
    now = now or datetime.now(timezone.utc)
    by_target: dict[str, list[Snapshot]] = {}
    snapshots = repository.list_snapshots()
    # A snapshot forgotten before and put back (replayed) takes no place in the policy's
    # counts: it goes again, whatever the policy.
    replayed = replayed_records(repository, snapshots)
    decisions: list[ForgetDecision] = []
    for snapshot in snapshots:
        if snapshot.id in replayed:
            decisions.append(ForgetDecision(snapshot, False, [f"replayed: {replayed[snapshot.id].describe()}"]))
        else:
            by_target.setdefault(snapshot.target, []).append(snapshot)
    for target, snapshots in sorted(by_target.items()):
        policy = policies.get(target)
        if policy is None or policy.is_empty():
            decisions += [ForgetDecision(s, True, ["no retention policy"]) for s in snapshots]
            continue
        result = apply_policy(snapshots, policy, now)
        decisions += [ForgetDecision(s, True, list(reasons)) for s, reasons in result.keep]
        decisions += [ForgetDecision(s, False, []) for s in result.remove]
    return decisions


def hold_retained_snapshots(repository: Repository, decisions: list[ForgetDecision]) -> None:
    """Turn each removal of a snapshot still under retention into a keep, giving its retain-until as the reason."""
    locked = retained(repository, Kind.SNAPSHOTS, [d.snapshot.id for d in decisions if not d.keep])
    for decision in decisions:
        if not decision.keep and decision.snapshot.id in locked:
            decision.keep = True
            until = locked[decision.snapshot.id].isoformat(timespec="seconds")
            decision.reasons = [f"retained by Object Lock until {until} (the policy would remove it)"]


def plan_forget_ids(repository: Repository, refs: list[str]) -> list[ForgetDecision]:
    """Decisions removing the snapshots named by ``refs`` (ids, prefixes of at least 4
    characters, 'latest:TARGET'). Every ref is resolved before anything is removed: one that
    matches nothing or several snapshots raises SnapshotNotFound or AmbiguousSnapshot."""
    decisions: list[ForgetDecision] = []
    seen: set[str] = set()
    for ref in refs:
        try:
            snapshot = repository.find_snapshot(ref)
            why = f"named on the command line ({ref})"
        except errors.IntegrityError as exc:
            # A damaged snapshot object: nothing of it can be read or repaired, and while it is
            # there prune refuses to run. Naming it is how it goes; its forget record says so.
            snapshot = damaged_snapshot(repository, ref, exc)
            why = f"named on the command line ({ref}); its object cannot be read: {exc}"
        if snapshot.id not in seen:
            seen.add(snapshot.id)
            decisions.append(ForgetDecision(snapshot, False, [why]))
    return decisions


def damaged_snapshot(repository: Repository, ref: str, error: errors.IntegrityError) -> Snapshot:
    """A stand-in for the unreadable snapshot object that ``ref`` names (an id or prefix, never
    'latest'), so that it can be forgotten like any other: target '?' and the epoch as its time."""
    if ref.startswith("latest"):
        raise error
    names = [info.name for info in repository.backend.list(Kind.SNAPSHOTS) if info.name.startswith(ref)]
    if len(names) != 1:
        raise error
    return Snapshot(id=names[0], time=datetime.fromtimestamp(0, timezone.utc), target="?", kind="?", hostname="?",
                    paths=[], tree=[], tags=["unreadable"])


def forget(repository: Repository, decisions: list[ForgetDecision], reason: str = "retention policy") -> list[Snapshot]:
    """Delete the snapshots the decisions remove, except those under retention (kept, see above).

    A forget record is written for each before it is deleted (see forgotten.py), so a copy put
    back later is flagged as replayed."""
    hold_retained_snapshots(repository, decisions)
    going = [decision.snapshot for decision in decisions if not decision.keep]
    if going:
        repository.verify_before_delete()
    record_forgotten(repository, going, reason)
    for snapshot in going:
        repository.delete_snapshot(snapshot.id)
    return going


def prune(repository: Repository, dry_run: bool = False,
          on_progress: Callable[[str], None] | None = None) -> PruneReport:
    """Remove unused data. The caller must hold the exclusive lock.

    A pack no index names is not garbage until its header says so: an index object may have been
    lost, and the pack may hold blobs that snapshots use. So the headers of unindexed packs are
    read first (a few KiB each) and their blobs join the plan like any other: used ones are kept
    and indexed again, packs of garbage are deleted, and a pack whose header cannot be read is
    kept while any snapshot misses a blob (it may hold it). Prune deletes nothing when it cannot
    tell what the snapshots use (a damaged index object, an unreadable snapshot or item stream):
    it raises PruneRefused."""
    on_progress = on_progress or (lambda message: None)
    report = PruneReport(dry_run=dry_run)
    try:
        repository.load_index()
    except errors.IntegrityError as exc:
        raise errors.PruneRefused(reason=f"an index object is damaged ({exc.fields.get('detail', exc)})") from None
    old_indexes = repository.index_names()
    stored = stored_packs(repository)
    report.packs_total = len(stored)
    report.bytes_before = sum(stored.values())

    indexed_packs = set(repository.index.packs)
    unindexed_sizes = {pack: size for pack, size in stored.items() if pack not in indexed_packs}
    if unindexed_sizes:
        on_progress(f"reading the headers of {len(unindexed_sizes)} pack(s) no index names")
    found, unreadable = scan_pack_headers(repository, unindexed_sizes)
    index_packs(repository, found.items())  # in memory: the index written below names them
    report.unindexed_packs_read = len(unindexed_sizes)

    on_progress("finding used blobs")
    try:
        used = referenced_blobs(repository)
    except errors.IntegrityError as exc:
        raise errors.PruneRefused(reason=str(exc.fields.get("detail", exc))) from None
    missing = sum(1 for blob_id in used if blob_id not in repository.index)
    # A pack no index names whose header does not read cannot give a restore anything: it is
    # garbage, unless some snapshot misses a blob, which it might hold (kept for a later recovery).
    keep_unreadable: set[str] = set()
    if missing:
        report.warnings.append(f"{missing} blob(s) that snapshots use are in no readable pack; 'safehold check' "
                               "names them and 'safehold repair snapshots' drops the files that need them")
        keep_unreadable = set(unreadable)
        for pack, reason in sorted(unreadable.items()):
            report.unreadable_packs_kept.append({"pack": pack, "reason": reason})
            report.warnings.append(f"pack {pack} kept: no index names it, its {reason}, and it may hold a "
                                   "missing blob")

    # Per pack: which entries are kept. A blob stored twice is kept once: in an indexed pack
    # rather than in one only its header named, so re-reading headers changes no earlier plan.
    def indexed_first():
        for blob_id, location in repository.index.entries():
            if location.pack not in found:
                yield blob_id, location
        if found:
            for blob_id, location in repository.index.entries():
                if location.pack in found:
                    yield blob_id, location

    kept_once: set[bytes] = set()
    pack_entries: dict[str, list[tuple[PackEntry, bool]]] = {}
    for blob_id, location in indexed_first():
        if location.pack not in stored:
            continue
        entry = PackEntry(location.blob_type, blob_id, location.offset, location.length, location.plain_length)
        keep = blob_id in used and blob_id not in kept_once
        if keep:
            kept_once.add(blob_id)
        pack_entries.setdefault(location.pack, []).append((entry, keep))

    delete: list[str] = []
    repack: list[str] = []
    for pack, entries in pack_entries.items():
        unused = sum(e.length for e, keep in entries if not keep)
        total = sum(e.length for e, _ in entries)
        if all(not keep for _, keep in entries):
            delete.append(pack)
        elif unused > REPACK_UNUSED_FRACTION * total:
            repack.append(pack)
        report.blobs_removed += sum(1 for _, keep in entries if not keep)
    # Left: packs with an empty header (nothing to index) and unreadable ones.
    unindexed = [pack for pack in stored if pack not in pack_entries and pack not in keep_unreadable]
    # Packs no index named that hold used blobs: they must be named by the index written below.
    reindexed = [pack for pack in found if any(keep for _, keep in pack_entries.get(pack, []))]
    kept_indexes, held_garbage = _hold_retained(repository, old_indexes, delete, repack, unindexed, report)
    report.packs_reindexed = len(reindexed)
    report.packs_deleted = len([p for p in delete if p not in found])
    report.packs_repacked = len(repack)
    report.unindexed_packs_deleted = len(unindexed) + len([p for p in delete if p in found])
    report.bytes_freed = sum(stored[p] for p in delete + unindexed)
    if dry_run:
        if delete or repack or unindexed:
            report.retained += [RetainedObject(Kind.INDEX, name, until).as_dict()
                                for name, until in sorted(kept_indexes.items())]
        # Repacking frees about the unused part of each repacked pack.
        report.bytes_freed += sum(e.length for p in repack for e, keep in pack_entries[p] if not keep)
        return report
    if not delete and not repack and not unindexed and not reindexed:
        _remove_temporary_files(repository, report)
        return report
    repository.ensure_lock()

    # 1. repack
    before = repository.stats.packs_written
    if repack:
        on_progress(f"repacking {len(repack)} pack(s)")
    failed_repack: set[str] = set()
    for pack in repack:
        repository.ensure_lock()  # a lost lock stops the work here, long before any delete
        try:
            for entry, keep in pack_entries[pack]:
                if keep:
                    data = repository.read_blob(entry.blob_id)
                    repository.save_blob(entry.blob_type, data, entry.blob_id, force=True)
        except errors.IntegrityError as exc:
            report.warnings.append(f"pack {pack} kept as it is: {exc}")
            failed_repack.add(pack)
    repository.flush()
    report.packs_written = repository.stats.packs_written - before
    report.bytes_freed += sum(stored[p] for p in repack if p not in failed_repack)
    gone = set(delete) | (set(repack) - failed_repack) | set(unindexed)
    # Retained packs holding only garbage stay stored but leave the index: a new index
    # object naming them would pin them again and again (see _hold_retained).
    unlisted = gone | held_garbage

    # 2. new index of everything kept, 3. old index objects away, 4. packs away.
    on_progress("writing the new index")
    by_pack: dict[str, list[PackEntry]] = {}
    for blob_id, location in repository.index.entries():
        if location.pack in unlisted:
            continue
        by_pack.setdefault(location.pack, []).append(
            PackEntry(location.blob_type, blob_id, location.offset, location.length, location.plain_length)
        )
    written_indexes = set(repository.index_names()) - set(old_indexes)
    packs = sorted(by_pack.items())
    for start in range(0, len(packs), INDEX_PACKS_PER_OBJECT):
        repository.ensure_lock()
        repository.write_index_object(packs[start : start + INDEX_PACKS_PER_OBJECT])
    # Index objects this prune's repacking wrote are retained from birth: they stay as duplicates.
    fresh_retained = retained(repository, Kind.INDEX, written_indexes)
    # 3. The first delete: prove the lock (see the module docstring); each delete checks it again.
    repository.verify_before_delete()
    for name in list(old_indexes) + sorted(written_indexes):
        if name in kept_indexes or name in fresh_retained:
            until = kept_indexes.get(name) or fresh_retained[name]
            report.retained.append(RetainedObject(Kind.INDEX, name, until).as_dict())
            continue
        repository.ensure_lock()
        repository.backend.delete(Kind.INDEX, name)
        report.index_objects_replaced += 1
    on_progress(f"deleting {len(gone)} pack(s)")
    repository.verify_before_delete()
    for pack in sorted(gone):
        repository.ensure_lock()
        repository.backend.delete(Kind.DATA, pack)
    _remove_temporary_files(repository, report)
    # The in-memory index still names deleted packs: read the new one.
    repository.reload_index()
    return report


def _hold_retained(repository: Repository, old_indexes: list[str], delete: list[str], repack: list[str],
                   unindexed: list[str], report: PruneReport) -> tuple[dict[str, datetime], set[str]]:
    """Take packs under retention out of the plan (in place). Returns the old index objects
    that must stay, and the held packs that hold nothing any snapshot uses.

    Index objects are reported only when prune goes on to replace them (a prune
    with nothing to do leaves every index object alone anyway).

    Prune never asks the store to delete a retained object. A pack named by a
    retained index object is kept as well (pinned), so no index object that
    survives this prune names a missing pack. Held garbage packs are left out of
    the new index, so once the old index objects naming them expire, they are
    unindexed packs that the first prune after their own retention deletes.
    """
    if retention_backend(repository) is None:
        return {}, set()
    now = datetime.now(timezone.utc)
    kept_indexes = retained(repository, Kind.INDEX, old_indexes, now)
    pinned: dict[str, datetime] = {}
    for index_name, packs in packs_named_by(repository, kept_indexes).items():
        for pack in packs:
            pinned[pack] = max(pinned.get(pack, kept_indexes[index_name]), kept_indexes[index_name])
    candidates = delete + repack + unindexed
    own = retained(repository, Kind.DATA, candidates, now)
    held: dict[str, RetainedObject] = {}
    for pack in candidates:
        if pack in own:
            held[pack] = RetainedObject(Kind.DATA, pack, max(own[pack], pinned.get(pack, own[pack])))
        elif pack in pinned:
            held[pack] = RetainedObject(Kind.DATA, pack, pinned[pack], "named by a retained index object")
    in_use = {p for p in repack if p in held}
    delete[:] = [p for p in delete if p not in held]
    repack[:] = [p for p in repack if p not in held]
    unindexed[:] = [p for p in unindexed if p not in held]
    report.retained += [held[p].as_dict() for p in sorted(held)]
    garbage = set(held) - in_use
    return kept_indexes, garbage


def _remove_temporary_files(repository: Repository, report: PruneReport) -> None:
    if isinstance(repository.backend, TemporaryFilesBackend):
        # Another writer's temporary files, should one have gone ahead beside a lost lock.
        repository.verify_before_delete()
        report.temporary_files_removed = repository.backend.remove_temporary_files()
