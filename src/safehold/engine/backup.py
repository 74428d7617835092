"""Backup jobs: one target, or all of them (continuing past failures).

A backup whose snapshot left items out (``summary['skipped']``) ends 'partial': a good backup
with items missing, exit code 4 for the CLI unless another target failed (3: a failure wins).
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterator

from .. import errors
from ..repository import Repository, Snapshot
from ..repository.archiver import Archiver, Progress
from ..repository.forgotten import live_snapshots
from ..repository.marks import assess, baseline_history, load_records
from ..repository.verdict import describe_reasons
from ..text import printable
from .verdicts import STATE_KEY, state_of
from ..repository.retention import RetentionPolicy, SnapshotRef, apply_policy
from ..sources import open_source
from ..sources.base import Extent, KeepsPlatformSnapshots, PlatformSnapshot
from .browse import skipped_dict
from .context import Context

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor


#: Skipped entries written one per line into the job's log (all of them, bounded, are in its details).
SKIPPED_LOG_LINES = 10

#: Targets of one ``backup --all`` backed up side by side (``--parallel``; docs/architecture.md).
DEFAULT_PARALLEL_TARGETS = 2

# The progress display is called from the archivers of targets backed up side by side.
_PROGRESS_GUARD = threading.Lock()


@dataclass
class BackupResult:
    target: str
    snapshot_id: str
    parent_id: str | None
    kind: str
    summary: dict  # the snapshot's summary, with ``skipped`` as ``browse.skipped_dict`` gives it
    job_id: int
    duration: float
    status: str = "succeeded"  # or 'partial': the snapshot left out (or stored changing) summary['skipped']

    @property
    def skipped(self) -> dict:
        return self.summary.get("skipped") or skipped_dict(None)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BackupRun:
    results: list[BackupResult] = field(default_factory=list)
    failures: dict[str, errors.SafeholdError] = field(default_factory=dict)

    @property
    def partial(self) -> list[BackupResult]:
        return [result for result in self.results if result.status == "partial"]

    def error(self) -> errors.SafeholdError | None:
        """What the run as a whole ends with: None when every target succeeded; a failed target wins
        over partial ones (its own error for a run of one target, else PartialFailure, exit 3); when
        none failed but some left items out, BackupPartial (exit 4)."""
        total = len(self.results) + len(self.failures)
        if self.failures:
            if total == 1:
                return next(iter(self.failures.values()))
            return errors.PartialFailure(failed=len(self.failures), total=total, names=", ".join(self.failures))
        partial = self.partial
        if partial:
            return errors.BackupPartial(
                partial=len(partial), total=total, count=sum(result.skipped["count"] for result in partial),
                names=", ".join(f"{result.target} (job {result.job_id})" for result in partial))
        return None


def backup_target(context: Context, target_name: str, *, tags: list[str] | None = None,
                  changed: list[Extent] | None = None, job_id: int | None = None,
                  session: "BackupSession | None" = None, force_read: bool = False) -> BackupResult:
    """Back up one target into a new snapshot and record the job.

    ``changed``: for image targets, extents known to have changed since the
    target's latest snapshot; chunks outside them are taken from it unread.
    ``job_id``: run as this queued job, already claimed (see engine.jobs).
    ``session``: the open repository, lock and history shared by the targets of one run
    (``backup_targets``); None: this target opens, locks and reads them itself.
    ``force_read``: read every file and image file whole, even those whose metadata match the
    parent's (restic's ``--force``; for an image source as ``force_read: true`` in targets.yml);
    a platform's change tracking (VMware CBT, libvirt bitmaps, EBS) is still used.

    Entries the source could not read do not fail the target: the snapshot holds everything
    readable, and when its summary lists skipped items the job ends 'partial' (details
    ``skipped``, bounded, paths escaped) and the result's ``status`` says so; the caller decides
    what that means for its exit (``BackupRun.error``).
    """
    target = context.config.target(target_name)
    started = time.monotonic()
    owned = session is None
    session = session if session is not None else BackupSession(context, f"backup {target.name}")
    session.open_ahead()  # the key derivation and the open's round trips while the job is recorded
    try:
        return _backup_in_job(context, target, session, owned, started, tags, changed, job_id, force_read)
    finally:
        if owned:
            session.close()  # also when the job could not even be recorded: no thread left opening


def _backup_in_job(context: Context, target: Any, session: "BackupSession", owned: bool, started: float,
                   tags: list[str] | None, changed: list[Extent] | None, job_id: int | None,
                   force_read: bool = False) -> BackupResult:
    # context.jobs: with a current SQLite catalog the job is recorded through sqlite3 without
    # importing SQLAlchemy (catalog/light.py), the same rows; a queued job (job_id) runs in a
    # process whose catalog is open, and then the catalog records it.
    with context.jobs.job("backup", target.name, {"tier": target.tier, "source": target.source.type},
                          job_id=job_id) as job:
        with session.target(target.name, job.log, close=owned) as (repository, parents, records):
            parent: Snapshot | None = parents[-1] if parents else None
            history = baseline_history(parents, assess(parents, records))
            job.log(f"parent snapshot: {parent.short_id if parent else 'none (full backup)'}")
            source_config = target.source
            if force_read and "force_read" in type(source_config).model_fields:
                source_config = source_config.model_copy(update={"force_read": True})
            source = open_source(source_config, target)

            def report(progress: Progress) -> None:
                job.update(bytes_read=progress.bytes_done, files=progress.files_done)
                with _PROGRESS_GUARD:
                    context.progress({"event": "backup", "target": target.name, "bytes_done": progress.bytes_done,
                                      "bytes_total": progress.bytes_total, "files_done": progress.files_done,
                                      "current": progress.current})

            archiver = Archiver(repository, threads=context.threads, on_progress=report, force_read=force_read)
            open_arguments = {"changed": changed} if changed is not None else {}
            with source.open(parent.source if parent else None, **open_arguments) as view:
                chunk_size = getattr(target.source, "chunk_size", None)
                kwargs = {"chunk_size": chunk_size} if chunk_size else {}
                snapshot = archiver.snapshot(view, target.name, parent, tags=tags, history=history,
                                             before_commit=lambda: ensure_still_owned(job.catalog, job.id),
                                             **kwargs)
            session.committed(snapshot)
            for note in view.notes:
                job.log(note)
            if isinstance(source, KeepsPlatformSnapshots) and target.retention is not None:
                # A failure here must not fail a backup that is already stored; the next run
                # applies retention again.
                try:
                    deleted = apply_platform_retention(source, target.retention)
                except errors.SourceError as exc:
                    job.log(f"retention of the platform's snapshots skipped: {exc}", level="warning")
                else:
                    for location, ids in deleted.items():
                        if ids:
                            job.log(f"retention deleted {len(ids)} snapshot(s) in {location}: {', '.join(ids)}")
            summary = dict(snapshot.summary, skipped=skipped_dict(snapshot.summary.get("skipped")))
            job.update(bytes_read=summary["bytes_read"], bytes_added=summary["bytes_added"],
                       files=summary["files"], snapshot_id=snapshot.id)
            for warning in summary.get("warnings", []):
                job.log(warning, level="warning")
            job.log(f"snapshot {snapshot.short_id}: read {summary['bytes_read']} bytes, "
                    f"added {summary['bytes_added']} bytes in {summary['blobs_added']} new blob(s)")
            job.details[STATE_KEY] = state_of(parents + [snapshot], records)
            verdict = summary.get("verdict") or {}
            if verdict.get("verdict") == "suspicious":
                job.log(f"snapshot {snapshot.short_id} is SUSPICIOUS (possible ransomware): "
                        + printable(describe_reasons(verdict.get("reasons", []))) + "; 'safehold snapshots --target "
                        f"{target.name}' lists the last clean one, 'safehold mark {snapshot.short_id} clean' "
                        "records a false alarm", level="warning")
                job.details["verdict"] = verdict
            if summary["skipped"]["count"]:
                _record_partial(job, snapshot.short_id, summary["skipped"])
        return BackupResult(target.name, snapshot.id, parent.id if parent else None, snapshot.kind, summary,
                            job.id, time.monotonic() - started, status=job.status)


def read_history(repository: Repository, target_name: str | None,
                 log: Any) -> tuple[list[Snapshot], dict[str, dict[str, dict]]]:
    """What a backup reads before its first byte: the target's live snapshots (its parent; None:
    every target's, for a run of several), the
    verdict records (the ransomware baseline) and the index, under the caller's lock.

    Side by side: on S3 each starts with a listing (snapshots, forget records, verdicts, index),
    a round trip each that does not depend on the others; one after the other they were four
    serial round trips per backup before the data (docs/benchmarks.md). Warnings go to ``log``
    from this thread. Never a replayed (forgotten) snapshot; a damaged snapshot object (of any
    target: its target cannot be read) must not stop the backups that keep the RPO: named and
    skipped; a damaged verdict record is ignored, named."""
    from concurrent.futures import ThreadPoolExecutor

    from ..repository.forgotten import forgotten_names

    damaged_records: list[tuple[str, Exception]] = []
    with ThreadPoolExecutor(3, thread_name_prefix="safehold-history") as pool:
        index = pool.submit(repository.load_index)
        forgotten = pool.submit(forgotten_names, repository)
        verdicts = pool.submit(load_records, repository,
                               on_error=lambda name, exc: damaged_records.append((name, exc)))
        try:
            parents = live_snapshots(repository, target_name, on_error=lambda name, exc: log(
                f"snapshot {name[:8]} cannot be read and is not considered as a parent: {exc}; 'safehold check' "
                f"names it and 'safehold forget {name[:8]}' removes it", level="warning"),
                forgotten=forgotten.result)
            records = verdicts.result()
            index.result()
        finally:
            for future in (index, forgotten, verdicts):
                future.cancel()
    for name, exc in damaged_records:
        log(f"verdict record {name[:16]} cannot be read and is ignored: {exc}", level="warning")
    return parents, records


def ensure_still_owned(recorder: Any, job_id: int) -> None:
    """The fence before a visible commit: raise JobFenced unless catalog job ``job_id`` is still
    'running', i.e. still this attempt's. ``recorder``: what records the job (a ``Catalog`` or a
    ``catalog.light.SqliteJobs``, both read the same row), or a ``Context``, whose ``jobs`` it takes.

    A worker that missed its heartbeats (SIGSTOP, a long pause, a partition from the catalog) had
    its job recorded 'interrupted' and retried elsewhere; when it comes back it must not add a
    second snapshot of the round. The job id is the attempt's identity (a retry is a new catalog
    job), and the row leaves 'running' only once, so the check needs no column of its own. A
    catalog that does not answer raises too: no commit that could not be recorded. What is left
    unguarded is the snapshot's own put after this read (docs/architecture.md, fencing).
    """
    if isinstance(recorder, Context):
        recorder = recorder.jobs
    status, error = recorder.job_state(job_id)
    if status != "running":
        raise errors.JobFenced(job_id=job_id, status=status, detail=error or "ended by another process")


def _record_partial(job: Any, short_id: str, skipped: dict) -> None:
    """Mark the job 'partial' and keep what was skipped (bounded, paths escaped) in its details."""
    job.status = "partial"
    job.details["skipped"] = skipped
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped["reasons"].items()))
    job.log(f"snapshot {short_id} is partial: {skipped['count']} item(s) left out or changed while read "
            f"({reasons}); it holds everything that could be read", level="warning")
    for entry in skipped["items"][:SKIPPED_LOG_LINES]:
        job.log(f"{entry['reason']}: {entry['path']} ({entry['type']}): {entry['detail']}", level="warning")
    if skipped["count"] > SKIPPED_LOG_LINES:
        job.log(f"... and {skipped['count'] - SKIPPED_LOG_LINES} more (the job's details list the first "
                f"{len(skipped['items'])})", level="warning")


def apply_platform_retention(source: KeepsPlatformSnapshots, retention: Any,
                             now: datetime | None = None) -> dict[str, list[str]]:
    """Apply the target's retention (a ``config.Retention``) to the snapshots a driver keeps on its
    platform, per location and group (EBS: per region and volume). The snapshots of the run that
    just finished are never deleted. Returns {location: [deleted ids]}."""
    policy = RetentionPolicy.from_config(retention)
    now = now or datetime.now(timezone.utc)
    groups: dict[tuple[str, str], list[PlatformSnapshot]] = {}
    for snapshot in source.platform_snapshots():
        groups.setdefault((snapshot.location, snapshot.group), []).append(snapshot)
    deleted: dict[str, list[str]] = {}
    for (location, _group), snapshots in groups.items():
        current = {snapshot.id for snapshot in snapshots if snapshot.current}
        remove = [ref.id for ref in apply_policy(_newest_first(snapshots), policy, now).remove if ref.id not in current]
        deleted.setdefault(location, [])
        if remove:
            deleted[location] += source.delete_platform_snapshots(location, remove)
    return deleted


def _newest_first(snapshots: list[PlatformSnapshot]) -> list[SnapshotRef]:
    """The snapshots the run just made are the newest by construction, but EBS reports StartTime
    to the second (moto) or millisecond (AWS): several runs within one tick tie, and the policy's id
    tie-break would then count an older snapshot as the newest and keep one too many. Place the
    just-made ones a microsecond after everything else."""
    if not snapshots:
        return []
    latest = max(snapshot.time for snapshot in snapshots)
    refs = [SnapshotRef(s.id, latest + timedelta(microseconds=1) if s.current and s.time >= latest else s.time)
            for s in snapshots]
    return sorted(refs, key=lambda ref: (ref.time, ref.id), reverse=True)


def backup_targets(context: Context, names: list[str], parallel: int | None = None,
                   force_read: bool = False) -> BackupRun:
    """Back up several targets; one failing does not stop the others.

    One open, one shared lock and one reading of the history (the snapshot, forget-record,
    verdict and index listings and their objects) serve every target of the run (issue 19: on S3
    each target repeated the open's config GET, the lock's three round trips and release, the four
    listings and every object behind them, all before its first byte). Each target is still its
    own job, with its own snapshot committed in the write order (packs, index, snapshot).

    ``parallel`` targets at most are backed up side by side (None: ``DEFAULT_PARALLEL_TARGETS``),
    each in a thread with its own archiver, job and pack writer (``Repository.writer``), so one
    target's round trips overlap the other's reading and chunking; a target named twice runs
    once the first finished (it backs up on that snapshot). A target that fails retires the
    session: the targets that start after it open and lock afresh, and the retired session (its
    lock) is closed when the last target still running under it ends, so a failure never
    carries a lost lock or half-written state into a target that starts later, and never stops
    or corrupts a target running beside it (its pack writer is its own). Results keep the order
    of ``names``. ``force_read``: as for ``backup_target``, for every target."""
    from concurrent.futures import Future, ThreadPoolExecutor

    limit = max(1, parallel if parallel is not None else DEFAULT_PARALLEL_TARGETS)
    sessions = _Sessions(context, _lock_purpose(names))
    results: dict[int, BackupResult] = {}
    failures: dict[int, tuple[str, errors.SafeholdError]] = {}
    fatal: list[BaseException] = []

    def one(position: int, name: str) -> None:
        session = sessions.start()
        failed = True
        try:
            results[position] = backup_target(context, name, session=session, force_read=force_read)
            failed = False
        except errors.SafeholdError as exc:
            if exc.bug:
                raise
            failures[position] = (name, exc)
        finally:
            sessions.end(session, failed)

    try:
        if limit == 1 or len(names) == 1:
            for position, name in enumerate(names):  # in this thread: Ctrl-C stops it at once
                one(position, name)
        else:
            try:
                context.jobs  # opened once here, not by two threads at once
            except Exception:
                pass  # each target's job raises it again, where it is recorded
            sessions.open_ahead()
            waiting = list(enumerate(names))
            running: dict[Future, str] = {}
            with ThreadPoolExecutor(limit, thread_name_prefix="safehold-target") as pool:
                try:
                    _schedule(pool, one, waiting, running, limit, fatal)
                except BaseException:
                    # Ctrl-C (in this thread only): the targets running in the others stop at
                    # their next chunk, their jobs recorded interrupted, before the lock is released.
                    sessions.stop.set()
                    raise
            if fatal:
                raise fatal[0]
    finally:
        sessions.close()
    run = BackupRun()
    run.results = [results[position] for position in sorted(results)]
    run.failures = {name: exc for _, (name, exc) in sorted(failures.items())}
    return run


def _schedule(pool: Any, one: Any, waiting: list, running: dict, limit: int, fatal: list) -> None:
    """Start the waiting targets, ``limit`` at once and never one whose name is running, until all
    ended (or a bug ended one: then no more start)."""
    from concurrent.futures import FIRST_COMPLETED, wait

    while waiting or running:
        for entry in list(waiting):
            if fatal or len(running) >= limit:
                break
            if entry[1] not in running.values():
                waiting.remove(entry)
                running[pool.submit(one, *entry)] = entry[1]
        if not running:
            break
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            del running[future]
            if future.exception() is not None:
                fatal.append(future.exception())  # a bug: no new target starts


class _Sessions:
    """The sessions of one ``backup_targets`` run: the current one, which every target that starts
    uses, and those a failure retired, each closed when its last target ends."""

    def __init__(self, context: Context, purpose: str) -> None:
        self._context, self._purpose = context, purpose
        self._guard = threading.Lock()
        self._family: list[BackupSession] = []
        self.stop = threading.Event()  # set on Ctrl-C: every target's writer stops at its next chunk
        self._current = self._new()
        self._users: dict[int, int] = {}

    def _new(self) -> "BackupSession":
        session = BackupSession(self._context, self._purpose, family=self._family, stop=self.stop)
        self._family.append(session)
        return session

    def open_ahead(self) -> None:
        self._current.open_ahead()

    def start(self) -> "BackupSession":
        with self._guard:
            session = self._current
            self._users[id(session)] = self._users.get(id(session), 0) + 1
            return session

    def end(self, session: "BackupSession", failed: bool) -> None:
        with self._guard:
            self._users[id(session)] -= 1
            if failed and session is self._current:
                self._current = self._new()
            retired = session is not self._current and not self._users[id(session)]
            if retired:
                self._family.remove(session)
        if retired:
            session.close()

    def close(self) -> None:
        with self._guard:
            family, self._family[:] = list(self._family), []
        for session in family:
            session.close()


def _lock_purpose(names: list[str]) -> str:
    """What the shared lock says it is for (shown to whoever finds the repository locked)."""
    shown = ", ".join(names[:3])
    return f"backup {shown}" + (f" and {len(names) - 3} more target(s)" if len(names) > 3 else "")


class BackupSession:
    """The repository, opened and locked (shared) once, and its history read once, for the targets
    of one backup run. Opened lazily by the first target, inside its job, so an error opening or
    locking is recorded in that target's job as it always was.

    Why one lock for the whole run is safe: it is the same shared lock each target took, held
    longer; its heartbeat thread refreshes it however long the run takes, every commit still
    proves it (``Repository.verify_before_commit``), and prune's exclusive lock is excluded for
    the run's whole length (it was only between targets before, which gained nothing: prune
    waits or fails either way). Why one reading of the history is enough: a target's parents are
    its own snapshots, which only this run adds to under our lock (another host backing up the
    same target at the same moment chose its parent as independently before); the index in
    memory has every pack an earlier target of the run wrote (``add_pack``), so the next target
    deduplicates against them as it would after reading the index again."""

    def __init__(self, context: Context, purpose: str, family: "list[BackupSession] | None" = None,
                 stop: threading.Event | None = None) -> None:
        self.context = context
        self.purpose = purpose
        self._stop = stop  # given to each target's writer (Repository.stop)
        # Sessions of the same run (one retired by a failure, the next): each learns the others'
        # commits (``committed``), so a target named again backs up on its newest snapshot.
        self._family = family if family is not None else [self]
        self._guard = threading.RLock()  # targets side by side open, and learn commits, through it
        self._stack: ExitStack | None = None
        self.repository: Repository | None = None
        self._parents: dict[str, list[Snapshot]] = {}
        self._records: dict[str, dict[str, dict]] = {}
        self._warnings: list[str] = []
        self._ahead: "ThreadPoolExecutor | None" = None
        self._opening: "Future[Repository] | None" = None

    def open_ahead(self) -> None:
        """Start opening the repository in a thread (``Context.open_ahead``: the open's round trips
        and the key derivation, which leaves the GIL free) while the caller records the job and
        opens the source; the first target then locks what it opened. On an error there, the target
        opens the repository itself, in its job, and the error is raised (and recorded) there."""
        with self._guard:
            if self.repository is not None or self._opening is not None:
                return
            from concurrent.futures import ThreadPoolExecutor

            self._ahead = ThreadPoolExecutor(1, thread_name_prefix="safehold-open")
            self._opening = self.context.open_ahead(self._ahead)

    def _opened(self) -> Repository | None:
        with self._guard:
            opening, self._opening = self._opening, None
            if self._ahead is not None:
                self._ahead.shutdown(wait=True)
                self._ahead = None
        if opening is None or opening.exception() is not None:
            return None
        return opening.result()

    @contextmanager
    def target(self, name: str, log: Any, close: bool = False
               ) -> Iterator[tuple[Repository, list[Snapshot], dict[str, dict[str, dict]]]]:
        """(repository, the target's live snapshots oldest first, the verdict records) under the
        shared lock; the history's warnings go to ``log`` (each target's job names them, as each
        read them before). ``close``: release everything when the target ends (a run of one)."""
        try:
            with self._guard:
                if self.repository is None:
                    self._open()
                assert self.repository is not None
                # A pack writer of the target's own (Repository.writer): its statistics, its
                # packs (the proof before each commit checks these, not the other targets'),
                # and no reference to a blob another target's thread has not stored.
                writer = self.repository.writer()
                writer.stop = self._stop
                parents, records, warnings = list(self._parents.get(name, [])), self._records, self._warnings
            for warning in warnings:
                log(warning, level="warning")
            yield writer, parents, records
        finally:
            if close:
                self.close()

    def _open(self) -> None:
        stack = ExitStack()
        try:
            warnings: list[str] = []
            history: list = []
            # The history is read while the lock is acquired (after our claim is stored: see
            # Lock.acquire), two round trips fewer before the first byte.
            def read(repository: Repository) -> None:
                history.append(read_history(repository, None,
                                            lambda message, level="info": warnings.append(message)))

            repository = stack.enter_context(self.context.locked(purpose=self.purpose, load_index=False,
                                                                 opened=self._opened(), meanwhile=read))
            parents, records = history[0]
        except BaseException:
            stack.close()
            raise
        self._stack, self.repository, self._records, self._warnings = stack, repository, records, warnings
        self._parents = {}
        for snapshot in parents:  # oldest first, kept per target
            self._parents.setdefault(snapshot.target, []).append(snapshot)

    def committed(self, snapshot: Snapshot) -> None:
        """A target of the run committed ``snapshot``: it is that target's newest (a target named
        twice in one run backs up on it the second time)."""
        for session in list(self._family):
            with session._guard:
                if session.repository is not None:
                    session._parents.setdefault(snapshot.target, []).append(snapshot)

    def close(self) -> None:
        """Release the lock (if held); the next target, if any, opens again."""
        self._opened()  # never leave a thread opening behind
        with self._guard:
            stack, self._stack, self.repository = self._stack, None, None
            self._parents, self._records, self._warnings = {}, {}, []
        if stack is not None:
            stack.close()
