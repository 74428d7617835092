"""The scheduler: queues due jobs and runs queued jobs within the limits.

Each ``tick(now)``
1. reaps the jobs it dispatched that have ended;
2. queues what is due (see ``timing``): per target a backup, or else a restore
   test; for the repository a prune, a check and (with S3 Object Lock) a
   maintenance on their cron schedules.
   Nothing is queued for a target that already has a queued or running job;
3. dispatches queued jobs, oldest first, whoever queued them (the API, the
   CLI, step 2), to the executor while the limits allow: at most
   ``max_concurrent`` at once, ``max_per_host`` per source host, one per
   target, and a prune alone (it takes the repository's exclusive lock).

``start()`` runs ticks in a background thread; ``stop(timeout)`` (SIGTERM)
stops queuing and dispatching, waits up to ``timeout`` for running jobs and
records those still running as 'interrupted', so no job stays 'running'.
A job left 'running' by a process that died (SIGKILL, power loss) is marked
'interrupted' when the catalog is next opened on that host, and again by
``start()``. One scheduler per catalog: two would both queue due jobs.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent import futures
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from ..catalog.latest import LatestJobs
from ..catalog.store import ACTIVE_STATUSES, GOOD_BACKUP_STATUSES
from ..engine.context import Context
from ..engine.jobs import run_job, submit_job
from . import timing
from .executor import Executor

log = logging.getLogger("safehold.scheduler")

Clock = Callable[[], dt.datetime]
LOCAL_HOST = "localhost"
REPOSITORY_KINDS = ("check", "prune", "maintenance")
#: The longest a scheduler goes without a pass over every target, even when nothing changed.
IDLE_RECHECK = dt.timedelta(seconds=60)
#: The longest it goes without reading every target's newest jobs whole (between two readings it
#: follows the jobs that changed): a safety net against a change the marker could not see.
FULL_READ_EVERY = dt.timedelta(minutes=5)
EXCLUSIVE_KINDS = ("prune",)
#: Queued by a drill, which defers them to its workers and waits for them (engine.drill_workers).
DRILL_OWNED_KINDS = ("drill-step",)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def local_timezone() -> dt.tzinfo:
    zone = dt.datetime.now().astimezone().tzinfo
    return zone if zone is not None else dt.UTC


@dataclass
class Running:
    job_id: int
    kind: str
    target: str | None
    host: str | None
    future: Future[Any]


@dataclass
class TickReport:
    """What one tick did: ids of the jobs it queued and dispatched, and why they were queued."""

    queued: list[int] = field(default_factory=list)
    dispatched: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)


class Scheduler:
    def __init__(self, context: Context, *, clock: Clock = utc_now, executor: Executor | None = None,
                 timezone: dt.tzinfo | None = None, poll_interval: float = 5.0,
                 jitter: dt.timedelta | None = None) -> None:
        self.context = context
        self.settings = context.config.scheduler
        # Overridable for one-shot runs (--once), where spreading start times means nothing.
        self.jitter = self.settings.jitter if jitter is None else jitter
        self.clock = clock
        if executor is None:
            from .queue import make_executor

            executor = make_executor(context)
        self.executor: Executor = executor
        self.timezone = timezone or local_timezone()
        self.poll_interval = poll_interval
        self.started_at: dt.datetime | None = None
        self._running: dict[int, Running] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        # Set when a dispatched job ends (or on stop): the loop ticks at once instead of at its next
        # poll, so a freed slot is filled within milliseconds, not poll_interval seconds later.
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease: Any = None
        # Idle ticks: the catalog's change marker when the last full pass began, and the earliest
        # time one of its "not due" decisions becomes due (see _idle).
        self._seen_marker: Any = None
        self._seen_marker_time = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._wake_at: dt.datetime | None = None
        self._dispatch_marker: Any = None
        # Each target's newest backup, newest good backup and newest restore test, kept up to date
        # from the jobs that changed between two markers (_latest_jobs).
        self._latest = LatestJobs({"backup": ("backup", None), "good": ("backup", GOOD_BACKUP_STATUSES),
                                   "restore-test": ("restore-test", None)})
        # When each target's decisions of the last pass that looked at it come due (datetime.max:
        # only a change can make it due); a target is looked at again when that time comes or a
        # job of it changed. Emptied whenever everything is read again.
        self._target_due: dict[str, dt.datetime] = {}
        self._hosts: dict[str, str] | None = None
        self.full_passes = 0  # how many ticks looked at every target (tests, bench --scheduler-overhead)

    # --- lifecycle ----------------------------------------------------------

    def acquire_lease(self) -> None:
        """Take the catalog's scheduler lease (one scheduler per catalog); raises SchedulerRunning,
        naming the holder, when another scheduler has it. Idempotent; ``stop()`` gives it back."""
        if self._lease is None:
            self._lease = self.context.catalog.scheduler_lease()
        self._lease.acquire()

    def release_lease(self) -> None:
        if self._lease is not None:
            self._lease.release()

    def start(self) -> None:
        """Take the lease, recover, then tick every ``poll_interval`` seconds in a background thread."""
        self.acquire_lease()
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="safehold-scheduler", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the background loop started by ``start()`` is alive (False before, after
        ``stop()``, or if the thread died)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def recover(self) -> None:
        """Mark jobs of dead processes interrupted; remove sandboxes a killed restore test left."""
        from ..engine.restore_test import remove_stale_sandboxes

        catalog = self.context.catalog
        catalog.mark_interrupted()
        if not catalog.list_jobs(kind="restore-test", status="running", limit=1):
            for sandbox in remove_stale_sandboxes(self.context):
                log.warning("removed sandbox %s left by an interrupted restore test", sandbox)

    def stop(self, timeout: float | None = 30.0) -> list[int]:
        """Stop; running jobs get ``timeout`` seconds (None: all the time they need) to finish,
        the rest are recorded interrupted.

        Returns the ids of the jobs recorded as interrupted. Queued jobs stay
        queued for the next start.
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.poll_interval, 1.0) + 5)
        with self._lock:
            running = list(self._running.values())
        if getattr(self.executor, "runs_elsewhere", False):
            running = []  # jobs run on workers, which keep running them while no scheduler runs
        deadline = None if timeout is None else time.monotonic() + timeout
        for entry in running:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            futures.wait([entry.future], timeout=remaining)
        if any(not entry.future.done() for entry in running):
            from ..engine.restore_test import abort_health_checks

            # Health checks are the one part of a job that can be ended cleanly
            # from outside; their jobs record 'interrupted' and remove their sandboxes.
            if abort_health_checks():
                futures.wait([entry.future for entry in running], timeout=5)
        for entry in running:
            if not entry.future.done():
                reason = f"safehold stopped before the job finished (waited {timeout:g}s)"
                self.context.catalog.interrupt_job(entry.job_id, reason)
        interrupted = [entry.job_id for entry in running
                       if self.context.catalog.get_job(entry.job_id).status == "interrupted"]
        for job_id in interrupted:
            log.warning("job %s recorded as interrupted", job_id)
        self.executor.shutdown(wait=False)
        self.release_lease()
        return interrupted

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # one bad tick (a database hiccup) must not end scheduling
                log.exception("scheduler tick failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()  # ends that arrive during the next tick set it again: none is missed

    # --- one step -----------------------------------------------------------

    def tick(self, now: dt.datetime | None = None) -> TickReport:
        now = now or self.clock()
        report = TickReport()
        with self._lock:
            if self.started_at is None:
                self.started_at = now
            reaped = self._reap()
            if self._stopping.is_set():
                return report
            marker = self.context.catalog.change_marker()
            if not self._idle(now, marker):
                if self._wake_at is None or now >= self._seen_marker_time + FULL_READ_EVERY:
                    self._latest.reset()  # read everything again now and then
                    self._seen_marker_time = now
                self._seen_marker, self._wake_at = marker, now + IDLE_RECHECK
                self.full_passes += 1
                self._queue_due(now, report, marker)
            if report.queued or reaped or marker != self._dispatch_marker:
                self._dispatch_marker = marker
                self._dispatch(report)
        return report

    def _idle(self, now: dt.datetime, marker: Any) -> bool:
        """True when a pass over every target would queue nothing: the catalog has not changed since
        the last pass (``Catalog.change_marker``: no job queued, started, finished or recorded, no
        snapshot cached) and none of that pass's "not yet" decisions has come due. Decisions are
        functions of the configuration, the catalog and the time alone (``timing``), so nothing else
        can make a target due. At 1,000 targets a pass is ~20 queries and thousands of decisions;
        an idle tick is the marker's three index lookups (docs/benchmarks.md, scheduler overhead).
        A pass still runs at least every IDLE_RECHECK, as a safety net."""
        return marker == self._seen_marker and self._wake_at is not None and now < self._wake_at

    def _note(self, decision: timing.Decision) -> timing.Decision:
        """Remember when a decision that is not due yet will be, for ``_idle``."""
        if not decision.due and decision.due_at is not None and self._wake_at is not None:
            self._wake_at = min(self._wake_at, decision.due_at)
        return decision

    def run_until_idle(self, timeout: float | None = None) -> TickReport:
        """Tick and wait for what was dispatched, again and again, until a tick starts nothing.

        For one-shot runs (``safehold scheduler run --once``, a systemd timer):
        a job held back by a limit runs in a later round, and a restore test
        that became due because its first backup just succeeded runs too.
        """
        total = TickReport()
        while True:
            report = self.tick()
            total.queued += report.queued
            total.dispatched += report.dispatched
            total.reasons.update(report.reasons)
            with self._lock:
                pending = [entry.future for entry in self._running.values()]
            if not report.dispatched and not pending:
                return total
            # The first end frees a slot: tick again then, not when every dispatched job has ended
            # (a long job held the other slots idle until it finished).
            futures.wait(pending, timeout=timeout, return_when=futures.FIRST_COMPLETED)

    def running_jobs(self) -> list[int]:
        with self._lock:
            self._reap()
            return sorted(self._running)

    def _reap(self) -> bool:
        """Forget the dispatched jobs that ended; True when there were any."""
        done = [job_id for job_id, entry in self._running.items() if entry.future.done()]
        for job_id in done:
            entry = self._running.pop(job_id)
            error = entry.future.exception()
            if error is not None:
                log.error("job %s ended with %s: %s", job_id, type(error).__name__, error)
        return bool(done)

    # --- what is due ----------------------------------------------------------

    def _latest_jobs(self, marker: Any) -> tuple[dict, dict, dict, set[str | None] | None]:
        """Every target's newest backup, newest good (succeeded or partial) backup and newest restore
        test, and the targets whose jobs changed (None: everything was read). Read whole (three
        ``latest_jobs``: 3,000 rows at 1,000 targets, most of a pass's cost) the first time, after
        the snapshot cache changed, and once per IDLE_RECHECK; otherwise updated from the few jobs
        that changed since the previous marker (catalog.latest.LatestJobs, shared with the read
        side's status and metrics)."""
        changed = self._latest.update(self.context.catalog, marker)
        changed_targets = None if changed is None else {job.target for job in changed}
        return self._latest["backup"], self._latest["good"], self._latest["restore-test"], changed_targets

    def _queue_due(self, now: dt.datetime, report: TickReport, marker: Any = None) -> None:
        # A handful of queries per pass whatever the number of targets: the
        # newest job of each kind for every target at once.
        catalog = self.context.catalog
        config = self.context.config
        settings = self.settings
        assert self.started_at is not None
        active = catalog.list_jobs(status=ACTIVE_STATUSES, limit=None)
        busy = {job.target for job in active if job.target is not None}
        busy_kinds = {job.kind for job in active if job.target is None}
        if marker is None:
            marker = catalog.change_marker()
        last_backups, good_backups, last_tests, changed_targets = self._latest_jobs(marker)
        if changed_targets is None:
            self._target_due.clear()
        never = dt.datetime.max.replace(tzinfo=dt.UTC)
        for target in config.targets:
            if target.name in busy:
                continue  # never two jobs of one target
            due_at = self._target_due.get(target.name)
            if due_at is not None and now < due_at and target.name not in (changed_targets or ()):
                self._wake_at = min(self._wake_at, due_at) if self._wake_at is not None else due_at
                continue  # nothing of it changed and nothing of it came due: the same decisions
            backup = self._note(self._backup_decision(target, last_backups.get(target.name), now))
            decision, kind = backup, "backup"
            if not decision.due and target.restore_test is not None:
                has_data = target.name in good_backups or bool(catalog.list_snapshots(target=target.name, limit=1))
                decision = self._restore_test_decision(target, last_tests.get(target.name), has_data, now)
                kind = "restore-test"
            if self._note(decision).due:
                self._target_due.pop(target.name, None)
                self._queue(kind, target.name, {}, decision, report)
            else:
                times = [each.due_at for each in (backup, decision) if each.due_at is not None]
                self._target_due[target.name] = min(times) if times else never
        self._queue_copies(now, report, busy)
        # Maintenance extends Object Lock retention: without a lock there is nothing to extend.
        locked = config.repository.object_lock is not None
        for kind, expression, params in (
            ("prune", settings.prune_schedule, {}),
            ("check", settings.check_schedule, {"read_data_percent": settings.check_read_data_percent}),
            ("maintenance", settings.maintenance_schedule if locked else None, {}),
        ):
            if expression is None or kind in busy_kinds:
                continue
            last = catalog.latest_jobs(kind).get(None)
            decision = timing.retry_decision(last, now, settings.retries, settings.retry_backoff) or \
                timing.cron_decision(f"repository:{kind}", expression, last, now, started_at=self.started_at,
                                     jitter=self.jitter, timezone=self.timezone)
            if self._note(decision).due:
                self._queue(kind, None, params, decision, report)
        self._queue_due_drills(now, busy_kinds, good_backups, report)

    def _queue_due_drills(self, now: dt.datetime, busy_kinds: set[str], good_backups: dict[Any, Any],
                          report: TickReport) -> None:
        """Drills with ``every:``, one at a time (they compete for the same sandboxes and cores), once
        each of their targets has data; a failed drill is not retried before its next interval: it is
        evidence, and alerts."""
        scheduled = [drill for drill in self.context.config.drills if drill.every is not None]
        if not scheduled or "drill" in busy_kinds:
            return
        assert self.started_at is not None
        last: dict[str, Any] = {}
        for job in self.context.catalog.list_jobs(kind="drill", limit=None):  # newest first
            name = (job.details or {}).get("drill") or (job.details or {}).get("params", {}).get("drill")
            if isinstance(name, str):
                last.setdefault(name, job)
        catalog = self.context.catalog
        for drill in scheduled:
            if not all(step.target in good_backups or catalog.list_snapshots(target=step.target, limit=1)
                       for step in drill.steps):
                continue  # nothing to restore yet
            decision = timing.interval_decision(f"drill:{drill.name}", drill.every, last.get(drill.name), now,
                                                started_at=self.started_at, jitter=self.jitter)
            if self._note(decision).due:
                self._queue("drill", None, {"drill": drill.name}, decision, report)
                return

    def _queue_copies(self, now: dt.datetime, report: TickReport, busy: set[Any]) -> None:
        """Copies with a schedule: one job per (copy, covered target), due by the copy's cron. Copies
        after each backup are run by the backup job itself (engine.jobs)."""
        settings = self.settings
        assert self.started_at is not None
        if not self.context.config.copies:
            return
        # Never two jobs of one target: a backup queued in this pass goes first (it copies itself
        # when after_backup is set), the scheduled copy comes at a later pass.
        busy = busy | {self.context.catalog.get_job(job_id).target for job_id in report.queued} - {None}
        for configured in self.context.config.copies:
            if configured.schedule is None:
                continue
            for target in self.context.config.targets:
                if target.name in busy or (configured.targets is not None and target.name not in configured.targets):
                    continue
                history = self.context.catalog.list_jobs(kind="copy", target=target.name, limit=50)
                last = next((job for job in history if (job.details or {}).get("destination") == configured.name
                             or ((job.details or {}).get("params") or {}).get("to") == configured.name), None)
                decision = timing.retry_decision(last, now, settings.retries, settings.retry_backoff) or \
                    timing.cron_decision(f"{target.name}:copy:{configured.name}", configured.schedule, last, now,
                                         started_at=self.started_at, jitter=self.jitter, timezone=self.timezone)
                if self._note(decision).due:
                    self._queue("copy", target.name, {"to": configured.name}, decision, report)
                    busy.add(target.name)

    def _backup_decision(self, target: Any, last: Any, now: dt.datetime) -> timing.Decision:
        settings = self.settings
        assert self.started_at is not None
        retry = timing.retry_decision(last, now, settings.retries, settings.retry_backoff)
        if retry is not None:
            return retry
        if target.schedule is not None:
            return timing.cron_decision(target.name, target.schedule, last, now, started_at=self.started_at,
                                        jitter=self.jitter, timezone=self.timezone)
        interval = self.context.config.tier_of(target).rpo * timing.INTERVAL_SHARE
        return timing.interval_decision(target.name, interval, last, now, started_at=self.started_at,
                                        jitter=self.jitter)

    def _restore_test_decision(self, target: Any, last: Any, has_data: bool, now: dt.datetime) -> timing.Decision:
        settings = self.settings
        assert self.started_at is not None
        if not has_data:
            return timing.Decision(False, reason="nothing to restore yet")
        retry = timing.retry_decision(last, now, settings.retries, settings.retry_backoff)
        if retry is not None:
            return retry
        return timing.interval_decision(f"{target.name}:restore-test", target.restore_test.every, last, now,
                                        started_at=self.started_at, jitter=self.jitter)

    def _queue(self, kind: str, target: str | None, params: dict[str, Any], decision: timing.Decision,
               report: TickReport) -> None:
        job_id = submit_job(self.context, kind, target, params, trigger="scheduler", attempt=decision.attempt,
                            log=f"queued by the scheduler: {decision.reason}")
        report.queued.append(job_id)
        report.reasons[job_id] = decision.reason
        log.info("queued job %s: %s %s (%s)", job_id, kind, target or "", decision.reason)

    # --- what runs ------------------------------------------------------------

    def _dispatch(self, report: TickReport) -> None:
        catalog = self.context.catalog
        if len(self._running) >= self.settings.max_concurrent:
            return
        queued = sorted(catalog.list_jobs(status="queued", limit=None), key=lambda job: job.id)
        if not queued:
            return
        # Running anywhere (other processes too: a CLI backup), read once for this pass.
        running_elsewhere = [job for job in catalog.list_jobs(status="running", limit=None)
                             if job.id not in self._running]
        busy_elsewhere = {job.target for job in running_elsewhere if job.target is not None}
        if self._hosts is None:  # the configuration does not change under a running scheduler
            self._hosts = {target.name: getattr(target.source, "host", None) or LOCAL_HOST
                           for target in self.context.config.targets}
        hosts = self._hosts
        large, large_slots = self._large_targets()
        for job in queued:
            if len(self._running) >= self.settings.max_concurrent:
                return
            if any(entry.kind in EXCLUSIVE_KINDS for entry in self._running.values()):
                return
            if job.kind in DRILL_OWNED_KINDS:
                self._cancel_orphaned_step(job)
                continue
            if job.id in self._running:
                continue
            if job.kind in EXCLUSIVE_KINDS:
                if self._running or running_elsewhere:
                    return  # a barrier: nothing starts before the prune, which waits for a quiet repository
            busy_key = job.target if job.target is not None else f"repository:{job.kind}"
            if any(self._key(entry) == busy_key for entry in self._running.values()):
                continue
            if job.target in busy_elsewhere:
                continue  # run by another process (a CLI backup)
            if job.target in large and sum(entry.target in large for entry in self._running.values()) >= large_slots:
                continue  # fair share: the slots large targets may not take stay for the others
            host = self._host(job.target, hosts)
            if host is not None and sum(entry.host == host for entry in self._running.values()) \
                    >= self.settings.max_per_host:
                continue
            submit_job = getattr(self.executor, "submit_job", None)
            if submit_job is not None:  # a queue of workers: the job runs elsewhere, by id
                try:
                    future = submit_job(job.id, job.kind, job.target)
                except errors.JobNotRunnable as error:  # the queue holds another job of this target
                    log.warning("%s", error)
                    self._dispatch_marker = None  # try it again next tick, changed catalog or not
                    continue
            else:
                future = self.executor.submit(self._run, job.id)
            self._running[job.id] = Running(job.id, job.kind, job.target, host, future)
            future.add_done_callback(self._job_ended)
            report.dispatched.append(job.id)

    def _job_ended(self, _future: Any) -> None:
        self._wake.set()

    def _cancel_orphaned_step(self, job: Any) -> None:
        """A drill step still queued after its drill ended (the drill was killed before a worker took
        the step) would hold its target's next backups back forever: cancelled, and a worker that
        takes its queue job later skips it."""
        drill_job = (job.details or {}).get("drill_job")
        try:
            ended = drill_job is None or self.context.catalog.get_job(int(drill_job)).finished
        except errors.JobNotFound:
            ended = True
        if ended and self.context.catalog.cancel_job(job.id, f"its drill (job {drill_job}) ended before a worker "
                                                             "took it"):
            log.warning("drill step %s cancelled: its drill (job %s) ended before a worker took it", job.id, drill_job)

    def _large_targets(self) -> tuple[set[str], int]:
        """Targets whose last good backup took longer than ``large_after``, and how many slots they
        may hold together: ``max_concurrent`` less a quarter of it, at least one kept for the rest
        (none when only one job runs at a time: nothing to share). One catalog query."""
        limit = self.settings.max_concurrent
        if self.settings.large_after is None or limit < 2:
            return set(), limit
        threshold = self.settings.large_after.total_seconds()
        good = self._latest["good"] if self._latest.marker is not None else \
            self.context.catalog.latest_jobs("backup", GOOD_BACKUP_STATUSES)
        large = {target for target, job in good.items()
                 if target is not None and (job.duration_seconds or 0.0) > threshold}
        return large, limit - max(1, limit // 4)

    def _run(self, job_id: int) -> Any:
        return run_job(self.context, job_id)

    @staticmethod
    def _key(entry: Running) -> str:
        return entry.target if entry.target is not None else f"repository:{entry.kind}"

    @staticmethod
    def _host(target_name: str | None, hosts: dict[str, str]) -> str | None:
        """The host a target's source reads from (its ``host`` field, else this host); None for the repository."""
        if target_name is None:
            return None
        return hosts.get(target_name, LOCAL_HOST)
