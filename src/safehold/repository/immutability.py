"""Immutability: what Object Lock retention protects, and keeping it in force.

Concepts:

- **Retained object**: a data, index or snapshot object whose retain-until lies
  in the future. The store refuses to delete it; safehold never even tries
  (prune and forget ask first and report what they kept until when).
- **Chain** of a snapshot: its snapshot object, every pack holding a blob it
  uses, and index objects that name those packs. Restoring needs all of it, so
  all of it must stay locked while the snapshot is kept.
- **Maintenance** extends retention on the chains of the snapshots the retention
  policy keeps, before it runs out. Objects no kept snapshot needs are left to
  expire, so prune can eventually remove them.
- **Repository objects**: the ``config`` and every key file under ``keys/``.
  Every locked object is unreadable without them, so they are locked too and
  maintenance extends them whatever the retention policy keeps. A key removed
  with ``safehold key remove`` is no longer listed, so it is no longer extended:
  its locked version expires after its last lock ends.
- **Forget records** (``forgotten/``): what flags a forgotten snapshot that is put
  back (see forgotten.py). Deleting one hides a replay, so they are locked when
  written and maintenance extends every one of them; the audit checks them.
- **Verdict records** (``verdicts/``): an operator's marks and scans' verdicts of a
  snapshot (see marks.py). They decide ``latest-clean``, so they must last as long
  as the snapshot they judge: maintenance extends the records of kept snapshots
  (records of forgotten snapshots are left to expire); the audit checks them.
- **Pinned pack**: a pack named by an index object that is itself still
  retained. Prune keeps it, so that no surviving index object ever names a
  missing pack.

Only backends with ``supports_retention`` (S3 with ``object_lock``) retain
anything; for the others every function here is a no-op.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

from .backends import Kind, ObjectNotFound, RetentionBackend, retention_of
from .repository import Repository, Snapshot

LOOKUP_THREADS = 16


@dataclass(frozen=True)
class RetainedObject:
    kind: Kind
    name: str
    until: datetime
    reason: str = "retained"

    def as_dict(self) -> dict:
        return {"kind": self.kind.value, "name": self.name, "until": self.until.isoformat(timespec="seconds"),
                "reason": self.reason}


def retention_backend(repository: Repository) -> RetentionBackend | None:
    return retention_of(repository.backend)


def retained(repository: Repository, kind: Kind, names: Iterable[str],
             now: datetime | None = None) -> dict[str, datetime]:
    """The subset of ``names`` still under retention, with their retain-until times."""
    backend = retention_backend(repository)
    names = list(names)
    if backend is None or not names:
        return {}
    now = now or datetime.now(timezone.utc)
    found = _retention_of(backend, kind, names)
    return {name: until for name, until in found.items() if until is not None and until > now}


def _retention_of(backend: RetentionBackend, kind: Kind, names: list[str]) -> dict[str, datetime | None]:
    def lookup(name: str) -> tuple[str, datetime | None]:
        try:
            return name, backend.retention(kind, name)
        except ObjectNotFound:
            return name, None

    with ThreadPoolExecutor(min(LOOKUP_THREADS, len(names))) as pool:
        return dict(pool.map(lookup, names))


def packs_named_by(repository: Repository, index_names: Iterable[str]) -> dict[str, set[str]]:
    """index object name -> the pack names it lists (reads those index objects)."""
    named: dict[str, set[str]] = {}
    for name in index_names:
        document = repository.load_object(Kind.INDEX, name)
        named[name] = {pack for pack, _entries in document["packs"]}
    return named


@dataclass
class Chain:
    """What the kept snapshots need locked."""

    snapshots: list[Snapshot]
    packs: set[str]
    index_objects: list[str]
    # Packs no index object names: only possible in a damaged repository.
    unindexed_packs: set[str] = field(default_factory=set)


def chain_of(repository: Repository, snapshots: list[Snapshot]) -> Chain:
    from .check import referenced_blobs

    repository.load_index()
    packs: set[str] = set()
    for blob_id in referenced_blobs(repository, snapshots=snapshots):
        location = repository.index.lookup(blob_id)
        if location is not None:
            packs.add(location.pack)
    named = packs_named_by(repository, repository.index_names())
    # Greedy cover: most needed packs first, then fewest packs named in all. After a
    # prune the fresh index objects name every kept pack and no garbage, so they are
    # chosen and superseded ones (which may pin garbage) are left to expire.
    uncovered = set(packs)
    chosen: list[str] = []
    for name in sorted(named, key=lambda n: (-len(named[n] & packs), len(named[n]), n)):
        if not uncovered:
            break
        if named[name] & uncovered:
            chosen.append(name)
            uncovered -= named[name]
    return Chain(list(snapshots), packs, chosen, uncovered)


def repository_objects(repository: Repository) -> list[tuple[Kind, str]]:
    """The config and the key files (as listed now: removed keys are not among them)."""
    return [(Kind.CONFIG, "config")] + [(Kind.KEYS, info.name) for info in repository.backend.list(Kind.KEYS)]


def repository_objects_retention(repository: Repository) -> dict[tuple[Kind, str], datetime | None]:
    """Retain-until of the config and of every key file (None: not retained or missing)."""
    backend = retention_backend(repository)
    if backend is None:
        return {}
    result: dict[tuple[Kind, str], datetime | None] = {}
    for kind, name in repository_objects(repository):
        try:
            result[(kind, name)] = backend.retention(kind, name)
        except ObjectNotFound:
            result[(kind, name)] = None
    return result


def verdict_records_of(repository: Repository, snapshots: list[Snapshot]) -> list[str]:
    """Names of the verdict records (every one, superseded too) that judge one of ``snapshots``."""
    from .marks import record_names

    wanted = {snapshot.id for snapshot in snapshots}
    return sorted(name for name, snapshot_id in record_names(repository).items() if snapshot_id in wanted)


def verdict_records_retention(repository: Repository, snapshots: list[Snapshot]) -> dict[str, datetime | None]:
    """Retain-until of the verdict records of ``snapshots`` (None: not retained or missing); empty
    without retention."""
    backend = retention_backend(repository)
    names = verdict_records_of(repository, snapshots) if backend is not None else []
    return _retention_of(backend, Kind.VERDICTS, names) if names else {}


def forget_records_retention(repository: Repository) -> dict[str, datetime | None]:
    """Retain-until of every forget record (None: not retained or missing); empty without retention."""
    backend = retention_backend(repository)
    names = sorted(info.name for info in repository.backend.list(Kind.FORGOTTEN)) if backend is not None else []
    return _retention_of(backend, Kind.FORGOTTEN, names) if names else {}


@dataclass
class MaintenanceReport:
    snapshots_kept: int = 0
    objects_checked: int = 0
    objects_extended: dict[str, int] = field(default_factory=dict)
    retained_until: str | None = None  # the new retain-until of extended objects
    earliest_until: str | None = None  # the earliest retain-until across the chain afterwards
    missing: list[str] = field(default_factory=list)
    retention_enabled: bool = True

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def extend_retention(repository: Repository, snapshots: list[Snapshot], renew_within: timedelta | None = None,
                     now: datetime | None = None) -> MaintenanceReport:
    """Extend retention on the config, the keys, every forget record, the chain of ``snapshots``
    (the kept ones) and their verdict records where it ends within ``renew_within``.

    Objects get now + the repository's retention period. Idempotent: a second
    run right after the first extends nothing. Safe beside backups (it only
    extends), so it runs under a shared lock.
    """
    report = MaintenanceReport(snapshots_kept=len(snapshots))
    backend = retention_backend(repository)
    period = backend.retention_period if backend is not None else None
    if backend is None or period is None:
        report.retention_enabled = False
        return report
    now = now or datetime.now(timezone.utc)
    renew_within = period / 2 if renew_within is None else renew_within
    new_until = now + period
    chain = chain_of(repository, snapshots)
    # The config and the keys first: whatever the policy keeps, they are needed to read any of it.
    targets = (repository_objects(repository) + [(Kind.SNAPSHOTS, s.id) for s in chain.snapshots]
               + [(Kind.INDEX, n) for n in chain.index_objects] + [(Kind.DATA, p) for p in sorted(chain.packs)])
    # Forget records too: while one is retained its content cannot be destroyed, and it is what
    # flags a forgotten snapshot that is put back (see forgotten.py). They are small and few.
    targets += [(Kind.FORGOTTEN, name) for name in sorted(info.name for info in repository.backend.list(Kind.FORGOTTEN))]
    # Verdict records of kept snapshots: a mark deleted once its lock ends would silently change
    # which snapshot is latest-clean (marks.py), so they last as long as the snapshots they judge.
    targets += [(Kind.VERDICTS, name) for name in verdict_records_of(repository, chain.snapshots)]
    report.objects_checked = len(targets)
    earliest: datetime | None = None

    def renew(item: tuple[Kind, str]) -> tuple[Kind, str, datetime | None, bool]:
        kind, name = item
        try:
            until = backend.retention(kind, name)
        except ObjectNotFound:
            return kind, name, None, False
        if until is not None and until >= now + renew_within:
            return kind, name, until, False
        backend.extend_retention(kind, name, new_until)
        return kind, name, new_until, True

    if targets:
        with ThreadPoolExecutor(min(LOOKUP_THREADS, len(targets))) as pool:
            for kind, name, until, extended in pool.map(renew, targets):
                if until is None:
                    report.missing.append(f"{kind.value}/{name}")
                    continue
                if extended:
                    report.objects_extended[kind.value] = report.objects_extended.get(kind.value, 0) + 1
                earliest = until if earliest is None else min(earliest, until)
    if report.objects_extended:
        report.retained_until = new_until.isoformat(timespec="seconds")
    if earliest is not None:
        report.earliest_until = earliest.isoformat(timespec="seconds")
    return report


def chain_retention(repository: Repository, chain: Chain) -> dict[tuple[Kind, str], datetime | None]:
    """Retain-until of every object of the chain (None: not retained or missing)."""
    backend = retention_backend(repository)
    result: dict[tuple[Kind, str], datetime | None] = {}
    if backend is None:
        return result
    for kind, names in ((Kind.SNAPSHOTS, [s.id for s in chain.snapshots]), (Kind.INDEX, chain.index_objects),
                        (Kind.DATA, sorted(chain.packs))):
        if names:
            for name, until in _retention_of(backend, kind, names).items():
                result[(kind, name)] = until
    return result
