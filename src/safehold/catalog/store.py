"""The catalog: job history and the snapshot cache, behind one small class.

``Catalog.open(url)`` returns a ready catalog: the database (and, for SQLite,
its directory) is created and migrated if needed, and jobs that a dead process
on this host left 'running' are marked 'interrupted'. Every method opens its
own short transaction, so one ``Catalog`` may be shared by threads, and several
processes may write to one SQLite file at once (WAL, a 30 s busy timeout, and
write transactions that take the write lock up front with ``BEGIN IMMEDIATE``
so they queue instead of failing on a lock upgrade).

Values handed out are frozen dataclasses of plain values (``JobRecord``,
``LogRecord``, ``SnapshotRecord``), never ORM objects bound to a session, so
they can cross threads and process boundaries (job functions take ids and
plain values; see the scale-out seam in docs/architecture.md).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Engine, case, delete, func, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased, sessionmaker

from safehold.catalog import migrate
from safehold.catalog.database import create_catalog_engine
from safehold.catalog.handle import JobHandle, run_job
from safehold.catalog.models import UTC, Job, JobLog, Snapshot
from safehold.catalog.processes import process_alive
from safehold.errors import JobNotFound

if TYPE_CHECKING:
    from safehold.catalog.lease import SchedulerLease

JOB_KINDS = ("backup", "restore", "check", "forget", "prune", "restore-test", "copy", "key", "init", "unlock",
             "catalog-rebuild", "maintenance", "audit-immutability", "repair-index", "repair-snapshots")
"""Kinds the engine records. Not enforced: a new kind needs no migration."""

ACTIVE_STATUSES = ("queued", "running")
# 'partial': a backup that wrote its snapshot but left out items it could not read (the job's
# details hold what and why). It is a good backup for the RPO, not a failure, and never retried.
FINAL_STATUSES = ("succeeded", "partial", "failed", "interrupted", "cancelled")
GOOD_BACKUP_STATUSES = ("succeeded", "partial")
# Jobs are read as plain rows, not ORM objects: building an ORM instance per row cost most of a
# /metrics scrape with thousands of targets (bench/scale.py --api).
_JOB_COLUMNS = tuple(Job.__table__.columns)
STATUSES = ACTIVE_STATUSES + FINAL_STATUSES
#: Beyond this many jobs from the oldest active one on, change_marker sums them instead of listing them.
MARKER_TAIL_ROWS = 2000
# A job's status as a number that only grows over its life (queued, running, then a final one).
_STATUS_ORDER = case({"queued": 1, "running": 2}, value=Job.status, else_=3)
LOG_LEVELS = ("debug", "info", "warning", "error")

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    kind: str
    target: str | None
    status: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    snapshot_id: str | None
    bytes_read: int
    bytes_added: int
    files: int
    error: str | None
    error_type: str | None
    details: dict[str, Any] | None
    pid: int | None
    hostname: str | None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_row(cls, row: Job) -> JobRecord:
        return cls(
            id=row.id,
            kind=row.kind,
            target=row.target,
            status=row.status,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            snapshot_id=row.snapshot_id,
            bytes_read=row.bytes_read,
            bytes_added=row.bytes_added,
            files=row.files,
            error=row.error,
            error_type=row.error_type,
            details=row.details,
            pid=row.pid,
            hostname=row.hostname,
        )


@dataclass(frozen=True, slots=True)
class LogRecord:
    id: int
    job_id: int
    time: dt.datetime
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    repository_id: str
    id: str
    target: str | None
    kind: str | None
    time: dt.datetime
    hostname: str | None
    parent: str | None
    size: int
    files: int
    added_bytes: int
    tags: list[str] | None

    @classmethod
    def from_row(cls, row: Snapshot) -> SnapshotRecord:
        return cls(
            repository_id=row.repository_id,
            id=row.id,
            target=row.target,
            kind=row.kind,
            time=row.time,
            hostname=row.hostname,
            parent=row.parent,
            size=row.size,
            files=row.files,
            added_bytes=row.added_bytes,
            tags=row.tags,
        )


class Catalog:
    """Job history and snapshot cache. Thread-safe; every method is its own transaction."""

    def __init__(self, engine: Engine, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = clock
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(**{migrate.WRITE_OPTION: True}), expire_on_commit=False)
        self.hostname = socket.gethostname()

    # --- lifecycle ----------------------------------------------------------

    def scheduler_lease(self) -> "SchedulerLease":
        """The lease a scheduler must hold to run on this catalog (see ``catalog.lease``)."""
        from safehold.catalog.lease import SchedulerLease

        return SchedulerLease(self.engine)

    @classmethod
    def open(cls, url: str | URL, *, clock: Clock = utc_now, recover: bool = True) -> Catalog:
        """Open (creating and migrating if needed) the catalog at ``url``.

        ``sqlite:////var/lib/safehold/catalog.db`` or
        ``postgresql+psycopg://user@host/safehold``. Unless ``recover`` is
        False, jobs left 'running' by dead processes on this host are marked
        'interrupted'.
        """
        engine = create_catalog_engine(url)
        try:
            if not migrate.is_current(engine):
                migrate.upgrade(engine)
            catalog = cls(engine, clock=clock)
            if recover:
                catalog.mark_interrupted()
        except BaseException:
            engine.dispose()
            raise
        return catalog

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- jobs ---------------------------------------------------------------

    def start_job(self, kind: str, target: str | None = None, details: Mapping[str, Any] | None = None) -> int:
        """Record a job that starts now in this process; returns its id."""
        now = self._clock()
        return self._insert_job(
            kind,
            target,
            details,
            status="running",
            created_at=now,
            started_at=now,
            pid=os.getpid(),
            hostname=self.hostname,
        )

    def queue_job(self, kind: str, target: str | None = None, details: Mapping[str, Any] | None = None, *,
                  log: str | None = None) -> int:
        """Record a job to run later (status 'queued'); a worker calls ``claim_job``. ``log``: the
        first line of its log, written in the same transaction (one commit instead of two: the
        scheduler queues thousands of jobs an hour at scale)."""
        return self._insert_job(kind, target, details, status="queued", created_at=self._clock(), log_line=log)

    def claim_job(self, job_id: int) -> bool:
        """Move a queued job to 'running' in this process; False if another got it first."""
        with self._write.begin() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="running", started_at=self._clock(), pid=os.getpid(), hostname=self.hostname)
            )
            claimed = bool(result.rowcount == 1)  # type: ignore[attr-defined]
        if not claimed:
            self.get_job(job_id)  # raises JobNotFound for an unknown id
        return claimed

    def log(self, job_id: int, message: str, level: str = "info") -> None:
        """Append a line to the job's log."""
        if level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        try:
            with self._write.begin() as session:
                session.execute(insert(JobLog).values(job_id=job_id, time=self._clock(), level=level, message=message))
        except IntegrityError as error:  # the foreign key: no such job
            raise JobNotFound(job_id=job_id) from error

    def update_job(
        self,
        job_id: int,
        *,
        bytes_read: int | None = None,
        bytes_added: int | None = None,
        files: int | None = None,
        snapshot_id: str | None = None,
        target: str | None = None,
    ) -> None:
        """Record progress of a running job (absolute values; None leaves a field alone).

        ``target`` fills in the target once known (a restore learns it from the snapshot).
        """
        values = {
            name: value
            for name, value in (
                ("bytes_read", bytes_read),
                ("bytes_added", bytes_added),
                ("files", files),
                ("snapshot_id", snapshot_id),
                ("target", target),
            )
            if value is not None
        }
        if values:
            self._update_job(job_id, values)

    def finish_job(
        self,
        job_id: int,
        status: str,
        *,
        snapshot_id: str | None = None,
        bytes_read: int = 0,
        bytes_added: int = 0,
        files: int = 0,
        error: str | None = None,
        error_type: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the end of a running job. ``details`` are merged into those given at start.

        Only a 'running' job ends here; returns False (and writes nothing) when the job ended
        already. That is the catalog's half of fencing: a job recorded 'interrupted' because its
        worker stopped sending heartbeats (a paused process) and retried elsewhere stays
        'interrupted' when the paused attempt comes back and finishes, so one round of a target
        never shows two successes. JobNotFound for an unknown id.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"a finished job's status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}")
        values: dict[str, Any] = {
            "status": status,
            "finished_at": self._clock(),
            "bytes_read": bytes_read,
            "bytes_added": bytes_added,
            "files": files,
            "error": error,
            "error_type": error_type,
        }
        if snapshot_id is not None:
            values["snapshot_id"] = snapshot_id
        # Read-modify-write, but inside one BEGIN IMMEDIATE (SQLite) or a
        # row lock (PostgreSQL), so a concurrent writer cannot interleave.
        with self._write.begin() as session:
            row = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
            if row is None:
                raise JobNotFound(job_id=job_id)
            if row.status != "running":
                return False
            if details:
                merged = dict(row.details or {})
                merged.update(details)
                values["details"] = merged
            session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(**values))
        return True

    def job_status(self, job_id: int) -> str:
        """The recorded status of one job (JobNotFound for an unknown id)."""
        return self.get_job(job_id).status

    def job_state(self, job_id: int) -> tuple[str, str | None]:
        """The recorded status and error of one job (JobNotFound for an unknown id): what a fence
        reads (``engine.backup.ensure_still_owned``), also offered by ``light.SqliteJobs``."""
        record = self.get_job(job_id)
        return record.status, record.error

    def get_job(self, job_id: int) -> JobRecord:
        with self._read() as session:
            row = session.get(Job, job_id)
            if row is None:
                raise JobNotFound(job_id=job_id)
            return JobRecord.from_row(row)

    def finished_jobs(self, job_ids: Iterable[int]) -> list[JobRecord]:
        """Those of ``job_ids`` that ended (any final status), in one query: what the queue
        executor polls to learn which of its jobs in flight freed their slots."""
        ids = list(job_ids)
        if not ids:
            return []
        query = select(*_JOB_COLUMNS).where(Job.id.in_(ids), Job.status.in_(sorted(FINAL_STATUSES)))
        with self._read() as session:
            return [JobRecord.from_row(row) for row in session.execute(query)]

    def list_jobs(
        self,
        target: str | None = None,
        kind: str | None = None,
        status: str | Iterable[str] | None = None,
        limit: int | None = 50,
    ) -> list[JobRecord]:
        """Jobs, newest first; ``status`` may be one status or several."""
        query = select(*_JOB_COLUMNS).order_by(Job.id.desc())
        if target is not None:
            query = query.where(Job.target == target)
        if kind is not None:
            query = query.where(Job.kind == kind)
        if isinstance(status, str):
            query = query.where(Job.status == status)
        elif status is not None:
            query = query.where(Job.status.in_(list(status)))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as session:
            return [JobRecord.from_row(row) for row in session.execute(query)]

    def latest_jobs(self, kind: str, status: str | Iterable[str] | None = None) -> dict[str | None, JobRecord]:
        """The newest job of ``kind`` (optionally in ``status``) for every target, in one query.

        Keyed by target name (None for repository-wide jobs); the scheduler
        asks this for all targets on every pass.
        """
        statuses = [status] if isinstance(status, str) else None if status is None else list(status)
        if self.engine.dialect.name == "postgresql":
            return self._latest_jobs_postgresql(kind, statuses)
        # A skip scan of ix_jobs_target_kind_id: each target's entries for the kind lie in id order
        # in the index, so its newest is the first match reading backwards. 10-20x faster than a
        # GROUP BY that reads every job of the kind (bench/scale.py --api: 150 ms to 10 ms at
        # 100,000 jobs).
        inner = aliased(Job)
        targets = select(Job.target).where(Job.kind == kind).distinct().subquery()
        newest_of_target = (select(inner.id).where(inner.target.is_not_distinct_from(targets.c.target),
                                                   inner.kind == kind)
                            .order_by(inner.id.desc()).limit(1))
        if statuses is not None:
            newest_of_target = newest_of_target.where(inner.status.in_(statuses))
        newest = select(newest_of_target.scalar_subquery()).select_from(targets)
        query = select(*_JOB_COLUMNS).where(Job.id.in_(newest.scalar_subquery()))
        with self._read() as session:
            return {row.target: JobRecord.from_row(row) for row in session.execute(query)}

    def _latest_jobs_postgresql(self, kind: str, statuses: list[str] | None) -> dict[str | None, JobRecord]:
        """``latest_jobs`` on PostgreSQL, which has no skip scan of its own (before 18): the distinct
        targets are walked through ix_jobs_target_kind_id by a recursive CTE (one index probe per
        target), then each target's newest job of the kind is one backward probe of the same index
        (LATERAL ... ORDER BY id DESC LIMIT 1). Repository-wide jobs (no target) are one more probe.
        A few ms at 1,000 targets and 100,000 jobs, against 60+ ms for a GROUP BY over the kind."""
        status_filter = "AND status = ANY(:statuses)" if statuses is not None else ""
        query = text(f"""
            WITH RECURSIVE targets(target) AS (
                SELECT min(target) FROM jobs
              UNION ALL
                SELECT (SELECT min(jobs.target) FROM jobs WHERE jobs.target > targets.target)
                FROM targets WHERE targets.target IS NOT NULL
            ), newest(id) AS (
                SELECT newest_of_target.id FROM targets CROSS JOIN LATERAL (
                    SELECT id FROM jobs WHERE jobs.target = targets.target AND kind = :kind {status_filter}
                    ORDER BY id DESC LIMIT 1) AS newest_of_target
                WHERE targets.target IS NOT NULL
              UNION ALL
                (SELECT id FROM jobs WHERE target IS NULL AND kind = :kind {status_filter} ORDER BY id DESC LIMIT 1)
            )
            SELECT {", ".join(column.name for column in _JOB_COLUMNS)} FROM jobs WHERE id IN (SELECT id FROM newest)
        """).columns(*_JOB_COLUMNS)
        parameters: dict[str, Any] = {"kind": kind}
        if statuses is not None:
            parameters["statuses"] = statuses
        with self._read() as session:
            return {row.target: JobRecord.from_row(row) for row in session.execute(query, parameters)}

    def jobs_changed_between(self, before: tuple[Any, ...], after: tuple[Any, ...]) -> list[JobRecord] | None:
        """The jobs that changed between two ``change_marker()`` values (``before`` older): those
        created since (an id above its newest), and those whose status or target differs in the two
        tails or that left the tail while active (they finished). None when the snapshot cache changed too
        (callers then read everything again). Oldest first. A job committed out of id order with
        a final status straight away (no queued or running phase) is not seen: nothing in safehold
        records jobs that way, and callers read everything again now and then."""
        if before[2] != after[2] or any(tail[:1] == ("sums",) for tail in (before[1], after[1])):
            return None
        newest = before[0] or 0
        old_rows, new_rows = set(before[1]), set(after[1])
        # A row that left the tail changed only if it was still active: a finished one leaves it
        # unchanged when the oldest active job before it ends (up to MARKER_TAIL_ROWS rows at once).
        ids = {row[0] for row in new_rows - old_rows} | ({row[0] for row in old_rows if row[1] in ACTIVE_STATUSES}
                                                          - {row[0] for row in new_rows})
        # Without ids, no OR: SQLite cannot use the primary key for "id > n OR <empty IN>" and reads
        # every job (15 ms at 100,000 jobs).
        changed = (Job.id > newest) | Job.id.in_(sorted(ids)) if ids else Job.id > newest
        query = select(*_JOB_COLUMNS).where(changed).order_by(Job.id)
        with self._read() as session:
            return [JobRecord.from_row(row) for row in session.execute(query)]

    def change_marker(self) -> tuple[Any, ...]:
        """A small value that differs whenever a job or the snapshot cache changed in a way a status,
        a metric or a scheduling decision can see (new jobs, a status or target change, snapshots
        replaced). Three cheap queries: the newest job id (the primary key), the oldest queued or
        running job (ix_jobs_status) and, from it on, each job's status and target; below the oldest
        active job every job is finished, and a finished job never changes again. Plus the count
        and newest time of the cached snapshots. Progress updates of a running job (bytes so far)
        do not change it: nothing cached from the catalog depends on them.

        Read it before reading what it guards, so the data cached under a marker is never older
        than the marker.
        """
        with self._read() as session:
            newest = session.execute(select(func.max(Job.id))).scalar()
            oldest_active = session.execute(select(func.min(Job.id)).where(Job.status.in_(ACTIVE_STATUSES))).scalar()
            tail: tuple[Any, ...] = ()
            if oldest_active is not None:
                tail = tuple(tuple(row) for row in session.execute(
                    select(Job.id, Job.status, Job.target).where(Job.id >= oldest_active).order_by(Job.id)
                    .limit(MARKER_TAIL_ROWS + 1)))
                if len(tail) > MARKER_TAIL_ROWS:
                    # A job left 'running' long ago (its host gone, nobody to mark it) would make the
                    # tail every job since. Then a sum stands for it: statuses only move forward
                    # (queued, running, a final one) and a target is only ever filled in, so any
                    # change raises it. jobs_changed_between cannot name the jobs then (None).
                    tail = ("sums",) + tuple(session.execute(
                        select(func.count(), func.sum(Job.id * _STATUS_ORDER),
                               func.sum(Job.id * func.length(func.coalesce(Job.target, ""))))
                        .where(Job.id >= oldest_active)).one())
            snapshots = tuple(session.execute(select(func.count(), func.max(Snapshot.time))).one())
        return (newest, tail, snapshots)

    def finished_backups_from(self, first_id: int) -> list[tuple[int, str | None, str, float | None, int, int]]:
        """Backup jobs with an id of at least ``first_id``: (id, target, status, seconds it took or
        None, bytes read, bytes added); status is the final one, or the active one while it runs.
        For totals kept up to date a tail at a time (engine.status.BackupTotals)."""
        query = (select(Job.id, Job.target, Job.status, Job.started_at, Job.finished_at, Job.bytes_read,
                        Job.bytes_added).where(Job.kind == "backup", Job.id >= first_id).order_by(Job.id))
        with self._read() as session:
            return [(job_id, target, status,
                     max(0.0, (finished - started).total_seconds()) if started and finished else None,
                     int(read or 0), int(added or 0))
                    for job_id, target, status, started, finished, read, added in session.execute(query)]

    def count_jobs(self, status: str, *, by_target: bool = False) -> dict[tuple[str | None, str], int]:
        """How many jobs are in ``status``, keyed by (target, kind); the target is None unless
        ``by_target`` (and for repository-wide jobs). One query."""
        columns = (Job.target, Job.kind) if by_target else (Job.kind,)
        query = select(*columns, func.count()).where(Job.status == status).group_by(*columns)
        with self._read() as session:
            rows = session.execute(query).all()
        if by_target:
            return {(target, kind): int(count) for target, kind, count in rows}
        return {(None, kind): int(count) for kind, count in rows}

    def job_logs(self, job_id: int) -> list[LogRecord]:
        """The job's log lines in the order they were written."""
        query = select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id)
        with self._read() as session:
            return [
                LogRecord(id=row.id, job_id=row.job_id, time=row.time, level=row.level, message=row.message)
                for row in session.scalars(query)
            ]

    def mark_interrupted(self) -> int:
        """Mark 'interrupted' the jobs this host left running in processes that are gone.

        Only jobs recorded by this host are judged: a pid means nothing on
        another worker host. Returns how many jobs were marked.
        """
        with self._read() as session:
            running = session.execute(
                select(Job.id, Job.pid, Job.started_at).where(
                    Job.status == "running", Job.hostname == self.hostname, Job.pid.is_not(None)
                )
            ).all()
        dead = [
            (job_id, pid)
            for job_id, pid, started_at in running
            if pid is not None and not process_alive(pid, started_at)
        ]
        marked = 0
        for job_id, pid in dead:
            with self._write.begin() as session:
                # The status guard makes this a no-op if the job finished meanwhile.
                result = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == "running")
                    .values(
                        status="interrupted",
                        finished_at=self._clock(),
                        error=f"process {pid} on {self.hostname} ended without finishing the job",
                        error_type="ProcessGone",
                    )
                )
                marked += result.rowcount  # type: ignore[attr-defined]
        return marked

    def cancel_job(self, job_id: int, reason: str = "cancelled before it started") -> bool:
        """Mark a queued job 'cancelled'; False if it is no longer queued (JobNotFound if unknown)."""
        with self._write.begin() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="cancelled", finished_at=self._clock(), error=reason, error_type="Cancelled")
            )
            cancelled = bool(result.rowcount == 1)  # type: ignore[attr-defined]
        if not cancelled:
            self.get_job(job_id)  # raises JobNotFound for an unknown id
        return cancelled

    def interrupt_job(self, job_id: int, reason: str) -> bool:
        """Mark a running job 'interrupted' (its worker is being stopped); False if it is not running."""
        with self._write.begin() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(status="interrupted", finished_at=self._clock(), error=reason, error_type="Interrupted")
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    @contextmanager
    def job(
        self,
        kind: str,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
        *,
        job_id: int | None = None,
    ) -> Iterator[JobHandle]:
        """Run a block as a recorded job.

        Without ``job_id`` a new row is started now; with it, the block runs as
        that job, which the caller has already claimed (``claim_job``: queued
        jobs run by a worker), and ``details`` are merged into its own. Normal exit marks it
        'succeeded', or the final status the block set in ``handle.status`` ('partial'); an exception marks it 'failed' with
        the message and the exception's class name, and is re-raised;
        KeyboardInterrupt or SystemExit mark it 'interrupted', asyncio
        cancellation 'cancelled'. A failure to record the outcome never hides
        the job's own exception.
        """
        with run_job(self, kind, target, details, job_id=job_id) as handle:
            yield handle

    # --- snapshot cache -----------------------------------------------------

    def replace_snapshots(self, repository_id: str, snapshots: Iterable[Mapping[str, Any]]) -> int:
        """Replace the cached snapshots of one repository with ``snapshots``; returns the count.

        Each mapping needs ``id`` and ``time`` (an aware datetime, an ISO 8601
        string or epoch seconds) and may have ``target``, ``kind``,
        ``hostname``, ``parent``, ``size``, ``files``, ``added_bytes`` and
        ``tags``; other keys are ignored, so manifests may grow new fields.
        """
        rows = [_snapshot_row(repository_id, snapshot) for snapshot in snapshots]
        with self._write.begin() as session:
            session.execute(delete(Snapshot).where(Snapshot.repository_id == repository_id))
            if rows:
                session.execute(insert(Snapshot), rows)
        return len(rows)

    def latest_snapshot_times(self) -> dict[str | None, dt.datetime]:
        """The time of the newest cached snapshot of every target (any repository), in one query."""
        query = select(Snapshot.target, func.max(Snapshot.time)).group_by(Snapshot.target)
        with self._read() as session:
            return {target: when for target, when in session.execute(query)}

    def list_snapshots(
        self,
        repository_id: str | None = None,
        target: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> list[SnapshotRecord]:
        """Cached snapshots, newest first."""
        query = select(Snapshot).order_by(Snapshot.time.desc(), Snapshot.id)
        if repository_id is not None:
            query = query.where(Snapshot.repository_id == repository_id)
        if target is not None:
            query = query.where(Snapshot.target == target)
        if kind is not None:
            query = query.where(Snapshot.kind == kind)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as session:
            return [SnapshotRecord.from_row(row) for row in session.scalars(query)]

    # --- internals ----------------------------------------------------------

    def _insert_job(self, kind: str, target: str | None, details: Mapping[str, Any] | None, *,
                    log_line: str | None = None, **values: Any) -> int:
        if not kind:
            raise ValueError("a job needs a kind")
        with self._write.begin() as session:
            job = Job(
                kind=kind,
                target=target,
                details=dict(details) if details else None,
                bytes_read=0,
                bytes_added=0,
                files=0,
                **values,
            )
            session.add(job)
            session.flush()
            if log_line is not None:
                session.execute(insert(JobLog).values(job_id=job.id, time=values["created_at"], level="info",
                                                      message=log_line))
            return job.id

    def _update_job(self, job_id: int, values: Mapping[str, Any]) -> None:
        with self._write.begin() as session:
            result = session.execute(update(Job).where(Job.id == job_id).values(**values))
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise JobNotFound(job_id=job_id)


# --- helpers ----------------------------------------------------------------


def _snapshot_row(repository_id: str, snapshot: Mapping[str, Any]) -> dict[str, Any]:
    try:
        snapshot_id = str(snapshot["id"])
        when = _as_datetime(snapshot["time"])
    except KeyError as missing:
        raise ValueError(f"a cached snapshot needs {missing.args[0]!r}: {dict(snapshot)!r}") from None
    tags = snapshot.get("tags")
    return {
        "repository_id": repository_id,
        "id": snapshot_id,
        "target": snapshot.get("target"),
        "kind": snapshot.get("kind"),
        "time": when,
        "hostname": snapshot.get("hostname"),
        "parent": snapshot.get("parent"),
        "size": int(snapshot.get("size") or 0),
        "files": int(snapshot.get("files") or 0),
        "added_bytes": int(snapshot.get("added_bytes") or 0),
        "tags": list(tags) if tags is not None else None,
    }


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        when = dt.datetime.fromisoformat(value)
    elif isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, UTC)
    else:
        raise TypeError(f"a snapshot time must be a datetime, an ISO 8601 string or epoch seconds, got {value!r}")
    if when.tzinfo is None:
        raise ValueError(f"a snapshot time must carry a timezone, got {value!r}")
    return when.astimezone(UTC)
