"""Scale-out on procrastinate: the queue executor, ``safehold worker``, and the worker list.

With ``scheduler.executor: procrastinate`` the one scheduler (it holds the catalog's lease as
always) still decides what is due and what may start under the limits (``max_concurrent``,
``max_per_host``, one job per target, prune alone); it then *defers* a procrastinate job
``safehold.run_job(job_id=N)`` instead of running it in a thread. Any ``safehold worker``
listening on the job's queue takes it and runs ``engine.jobs.run_job`` on the catalog row, the
same code the thread executor runs, so the catalog stays the record of every job.

Procrastinate's own tables carry what the queue needs, nothing is added to the catalog:
- queue per placement (``scheduler.placement``: target pattern to queue; ``label:<name>`` for a
  worker started with ``--host-label name``), ``default`` otherwise;
- a ``queueing_lock`` and a ``lock`` per target (``target:<name>``), per repository job kind
  (``repository:<kind>``), so never two jobs of one target are queued or run at once, even if two
  schedulers ever raced; the scheduler's barrier keeps a prune alone on the repository;
- ``procrastinate_workers`` heartbeats: a worker whose heartbeat is older than
  ``scheduler.worker_timeout`` is dead (SIGKILL, a lost host). The executor's poll thread records
  its catalog job 'interrupted', ends the procrastinate job as failed (which frees the job's lock)
  and prunes the worker; the scheduler's retry policy queues the next attempt as a new catalog job,
  which any live worker of the queue takes. The repository's write order (packs, index, snapshot
  last) means the dead attempt left only unreferenced packs, never a half snapshot.

A worker describes itself (host, pid, labels, queues) in the ``application_name`` of one idle
connection, so ``safehold workers`` reads labels from ``pg_stat_activity`` and heartbeats and
running jobs from procrastinate's tables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import errors

log = logging.getLogger("safehold.queue")

TASK_NAME = "safehold.run_job"
DEFAULT_QUEUE = "default"
_PRESENCE_PREFIX = "safehold-worker "
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,40}")
_POLL_SECONDS = 0.1  # how often the catalog rows of jobs in flight are read (what frees a slot)
_IDLE_POLL_SECONDS = 0.25  # with no job in flight: only the stall check has anything to do
_STALL_CHECK_SECONDS = 1.0
#: A dead worker stays listed (DOWN, so WorkerDown can fire) this long before it is forgotten.
FORGET_DEAD_WORKER_SECONDS = 3600.0


# --- settings ---------------------------------------------------------------


def queue_dsn(settings: Any, environ: Any = None) -> str:
    """The queue's DSN from the environment (``queue_dsn_env``) or ``queue_dsn_file``; never from YAML."""
    environ = os.environ if environ is None else environ
    value = (environ.get(settings.queue_dsn_env) or "").strip()
    if not value and settings.queue_dsn_file:
        try:
            value = Path(settings.queue_dsn_file).read_text().strip()
        except OSError as error:
            raise errors.QueueNotConfigured(detail=f"cannot read queue_dsn_file {settings.queue_dsn_file}: "
                                                   f"{error.strerror}") from None
    if not value:
        raise errors.QueueNotConfigured(detail=f"no DSN: {settings.queue_dsn_env} is unset"
                                               + ("" if not settings.queue_dsn_file else " and the file is empty"))
    # SQLAlchemy's driver suffix is not libpq's: accept the catalog's URL form too.
    return re.sub(r"^postgresql\+\w+://", "postgresql://", value)


def shown_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", dsn)


def queue_for(settings: Any, target: str | None) -> str:
    """The queue a job of ``target`` (None: a repository job) goes to."""
    if target is not None:
        for pattern, queue in settings.placement.items():
            if fnmatch.fnmatchcase(target, pattern):
                return queue
    return DEFAULT_QUEUE


def lock_for(kind: str, target: str | None) -> str:
    return f"target:{target}" if target is not None else f"repository:{kind}"


def worker_queues(queues: list[str] | None, labels: list[str]) -> list[str]:
    chosen = list(dict.fromkeys(queues or [DEFAULT_QUEUE]))
    for label in labels:
        if f"label:{label}" not in chosen:
            chosen.append(f"label:{label}")
    return chosen


def _procrastinate() -> Any:
    try:
        import procrastinate
    except ImportError:
        raise errors.QueueNotConfigured(detail="procrastinate is not installed") from None
    return procrastinate


def make_app(dsn: str, *, sync: bool = False) -> Any:
    procrastinate = _procrastinate()
    connector = (procrastinate.SyncPsycopgConnector(conninfo=dsn) if sync
                 else procrastinate.PsycopgConnector(conninfo=dsn))
    return procrastinate.App(connector=connector)


def apply_schema(dsn: str) -> bool:
    """Create procrastinate's tables in the queue database unless they exist; True if it created them."""
    import psycopg

    with psycopg.connect(dsn) as connection:
        exists = connection.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
    if exists and exists[0]:
        return False
    app = make_app(dsn, sync=True)
    with app.open():
        app.schema_manager.apply_schema()
    return True


# --- the executor -------------------------------------------------------------


class ProcrastinateExecutor:
    """Defers catalog jobs to the queue; each Future completes when its catalog row is final.

    Besides ``submit``/``shutdown`` (the Executor protocol, not usable here: a bound callable
    cannot cross to another host), it offers ``submit_job``, which the scheduler uses. One
    background thread runs an asyncio loop with the procrastinate app: it defers, polls the
    catalog rows of the jobs in flight, and handles workers whose heartbeat stopped.
    """

    runs_elsewhere = True

    def __init__(self, context: Any, dsn: str | None = None) -> None:
        self.context = context
        self.settings = context.config.scheduler
        self.dsn = dsn or queue_dsn(self.settings)
        self._app = make_app(self.dsn)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run_loop, name="safehold-queue", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise errors.QueueUnreachable(dsn=shown_dsn(self.dsn), detail=str(self._error)) from self._error

    # Executor protocol: only for interface completeness.
    def submit(self, function: Any, /, *args: Any) -> Future[Any]:
        raise RuntimeError("the procrastinate executor runs catalog jobs only: use submit_job")

    def submit_job(self, job_id: int, kind: str, target: str | None) -> Future[Any]:
        """Defer catalog job ``job_id`` (queued) to its queue; thread-safe."""
        deferred = asyncio.run_coroutine_threadsafe(self._defer(job_id, kind, target), self._loop)
        deferred.result(timeout=30)
        with self._lock:
            future = self._pending.get(job_id)
            if future is None:  # one Future per catalog job, however often it is handed over
                future = self._pending[job_id] = Future()
                future.set_running_or_notify_cancel()
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Stop polling. Jobs already deferred stay in the queue and still run on workers."""
        self._stop.set()
        if wait:
            self._thread.join(timeout=10)

    async def _defer(self, job_id: int, kind: str, target: str | None) -> None:
        lock = lock_for(kind, target)
        task = self._app.configure_task(TASK_NAME, queue=queue_for(self.settings, target), lock=lock,
                                        queueing_lock=lock)
        from procrastinate.exceptions import AlreadyEnqueued

        try:
            await task.defer_async(job_id=job_id)
        except AlreadyEnqueued:
            # Deferred already, by this scheduler before a restart: still waiting, nothing to add.
            waiting = await self._app.job_manager.list_jobs_async(queueing_lock=lock, status="todo")
            if any(int(job.task_kwargs.get("job_id", 0)) == job_id for job in waiting):
                return
            # Another catalog job of this target waits in the queue: that one goes first.
            raise errors.JobNotRunnable(job_id=job_id, detail=f"the queue already holds a job for {lock}") from None

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as error:  # reported to the constructor, or logged once running
            self._error = error
            self._ready.set()
            log.exception("the queue executor stopped")

    async def _main(self) -> None:
        async with self._app.open_async():
            self._ready.set()
            checked = 0.0
            while not self._stop.is_set():
                try:
                    if time.monotonic() - checked >= _STALL_CHECK_SECONDS:
                        checked = time.monotonic()
                        await self._reap_dead_workers()
                    self._complete_finished()
                except Exception:  # a database hiccup must not end the executor
                    log.exception("queue poll failed")
                await asyncio.sleep(_POLL_SECONDS if self._pending else _IDLE_POLL_SECONDS)

    def _complete_finished(self) -> None:
        """One query for every job in flight (it runs ten times a second while any is)."""
        with self._lock:
            pending = dict(self._pending)
        if not pending:
            return
        for record in self.context.catalog.finished_jobs(pending):
            with self._lock:
                self._pending.pop(record.id, None)
            pending[record.id].set_result(record)

    async def _reap_dead_workers(self) -> None:
        timeout = self.settings.worker_timeout.total_seconds()
        manager = self._app.job_manager
        for job in await manager.get_stalled_jobs(task_name=TASK_NAME, seconds_since_heartbeat=timeout):
            job_id = int(job.task_kwargs.get("job_id", 0))
            reason = (f"worker {job.worker_id} stopped sending heartbeats (none for {timeout:g}s) while it ran "
                      f"this job" if job.worker_id is not None else "its worker was removed while it ran this job")
            if job_id and self.context.catalog.interrupt_job(job_id, reason):
                self.context.catalog.log(job_id, reason, level="error")
                log.warning("job %s recorded as interrupted: %s", job_id, reason)
            from procrastinate.jobs import Status

            # Failed, not retried by procrastinate: the catalog's retry policy queues the next
            # attempt as a job of its own (with its own log and attempt number).
            await manager.finish_job(job, status=Status.FAILED, delete_job=False)
        await manager.prune_stalled_workers(max(timeout, FORGET_DEAD_WORKER_SECONDS))


def require_shared_catalog(config: Any) -> None:
    """Workers on other hosts record jobs in the catalog: a SQLite file on one host cannot be it."""
    if config.catalog_url.startswith("sqlite"):
        raise errors.QueueNotConfigured(detail="scheduler.executor is procrastinate but the catalog is SQLite "
                                               f"({config.catalog_url}); set catalog.url to a PostgreSQL database "
                                               "that the scheduler and every worker reach")


def make_executor(context: Any) -> Any:
    """The executor ``scheduler.executor`` names, sized by ``max_concurrent``."""
    settings = context.config.scheduler
    if settings.executor == "procrastinate":
        require_shared_catalog(context.config)
        return ProcrastinateExecutor(context)
    from .executor import ThreadExecutor

    return ThreadExecutor(settings.max_concurrent)


# --- the worker ---------------------------------------------------------------


def run_worker(context: Any, *, queues: list[str] | None = None, concurrency: int = 1,
               labels: list[str] | None = None, apply: bool = False) -> None:
    """Run jobs from the queue until SIGTERM/SIGINT (procrastinate's handlers: finish running jobs, stop).

    Each job runs ``engine.jobs.run_job`` in a thread of this process. Raises QueueNotConfigured
    or QueueUnreachable before taking any work.
    """
    labels = list(labels or [])
    for name in [*labels, *(queues or [])]:
        # Names travel in a space- and comma-separated application_name: keep them plain.
        if not _NAME.fullmatch(name):
            raise errors.UsageError(f"queue or label {name!r}: use letters, digits and . _ : - only, "
                                    "at most 40 characters")
    require_shared_catalog(context.config)
    dsn = queue_dsn(context.config.scheduler)
    chosen = worker_queues(queues, labels)
    try:
        if apply:
            apply_schema(dsn)
        app = make_app(dsn)
    except errors.SafeholdError:
        raise
    except Exception as error:
        raise errors.QueueUnreachable(dsn=shown_dsn(dsn), detail=str(error)) from None

    from ..engine.jobs import run_job
    from .diagnostics import WorkerDiagnostics

    from procrastinate import RetryStrategy

    diagnostics = WorkerDiagnostics()  # SAFEHOLD_WORKER_PROFILE / _SQL_TIMES: benchmarks only
    diagnostics.attach(context.catalog.engine)
    diagnostics.start_profile()

    # run_job records every failure of the job itself in the catalog and returns; what escapes it
    # is the catalog failing (claiming or recording). Procrastinate retries those, here or on
    # another worker, while the queue job keeps its lock.
    @app.task(name=TASK_NAME, retry=RetryStrategy(max_attempts=5, wait=2, exponential_wait=2))
    def run_catalog_job(job_id: int) -> str:
        try:
            record = run_job(context, job_id)
        except errors.JobNotRunnable as error:  # cancelled meanwhile, or a duplicate delivery
            log.warning("%s", error)
            return "skipped"
        return str(record.status)

    timeout = context.config.scheduler.worker_timeout.total_seconds()
    try:
        asyncio.run(_work(app, dsn, chosen, labels, concurrency, timeout, context))
    finally:
        diagnostics.write()


async def _watch_catalog(context: Any, worker: Any, timeout: float, lost: list[str]) -> None:
    """Stop taking work when the catalog stops answering for ``timeout`` seconds: a job run then
    could not be recorded. Running jobs finish (or fail to record, and are retried)."""
    failing_since: float | None = None
    while True:
        await asyncio.sleep(max(0.5, timeout / 6))
        try:
            await asyncio.to_thread(context.catalog.list_jobs, limit=1)
        except Exception as error:  # any database error: the catalog is what must answer
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since >= timeout:
                lost.append(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
                log.error("the catalog has not answered for %.0fs; this worker stops taking work", timeout)
                worker.stop()
                return
        else:
            failing_since = None


async def _work(app: Any, dsn: str, queues: list[str], labels: list[str], concurrency: int, timeout: float,
                context: Any) -> None:
    import psycopg
    from procrastinate.worker import Worker

    try:
        await app.open_async()
    except Exception as error:
        raise errors.QueueUnreachable(dsn=shown_dsn(dsn), detail=str(error)) from None
    try:
        worker = Worker(app, queues=queues, concurrency=concurrency, name=f"safehold-{socket.gethostname()}",
                        update_heartbeat_interval=max(0.5, timeout / 10),
                        stalled_worker_timeout=max(timeout, FORGET_DEAD_WORKER_SECONDS),
                        shutdown_graceful_timeout=None, listen_notify=True)
        running = asyncio.ensure_future(worker.run())
        presence = None
        while worker.worker_id is None and not running.done():
            await asyncio.sleep(0.05)
        if worker.worker_id is not None:
            presence = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name=_presence_name(worker.worker_id, labels, queues))
            log.info("worker %s takes queues %s", worker.worker_id, ", ".join(queues))
        lost: list[str] = []
        watch = asyncio.ensure_future(_watch_catalog(context, worker, timeout, lost))
        try:
            await running
        finally:
            watch.cancel()
            if presence is not None:
                await presence.close()
        if lost:
            raise errors.WorkerCatalogLost(seconds=f"{timeout:g}", detail=lost[0])
    finally:
        await app.close_async()


def _presence_name(worker_id: int, labels: list[str], queues: list[str]) -> str:
    # application_name keeps 63 bytes; the id and host come first, so a cut keeps them.
    text = f"{_PRESENCE_PREFIX}{worker_id} {socket.gethostname()} {os.getpid()} " \
           f"{','.join(labels) or '-'} {','.join(queues)}"
    return text.encode()[:63].decode(errors="ignore")


# --- the worker list ------------------------------------------------------------


@dataclass
class WorkerInfo:
    id: int
    last_heartbeat: dt.datetime
    heartbeat_age_seconds: float
    alive: bool
    hostname: str | None = None
    pid: int | None = None
    labels: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    running_jobs: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_heartbeat"] = self.last_heartbeat.isoformat()
        return data


def list_workers(settings: Any, dsn: str | None = None) -> list[WorkerInfo]:
    """Every worker procrastinate knows, with its labels, the catalog jobs it runs and its last heartbeat."""
    import psycopg

    dsn = dsn or queue_dsn(settings)
    timeout = settings.worker_timeout.total_seconds()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as connection:
            rows = connection.execute(
                "SELECT w.id, w.last_heartbeat, EXTRACT(EPOCH FROM now() - w.last_heartbeat)::float8, "
                "COALESCE(array_agg((j.args->>'job_id')::bigint ORDER BY j.id) "
                "FILTER (WHERE j.status = 'doing' AND j.task_name = %s), '{}') "
                "FROM procrastinate_workers w LEFT JOIN procrastinate_jobs j ON j.worker_id = w.id "
                "GROUP BY w.id ORDER BY w.id", (TASK_NAME,)).fetchall()
            names = [row[0] for row in connection.execute(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s "
                "AND datname = current_database()",  # the server's other queues number workers from 1 too
                (_PRESENCE_PREFIX + "%",)).fetchall()]
    except psycopg.Error as error:
        raise errors.QueueUnreachable(dsn=shown_dsn(dsn), detail=str(error).strip().splitlines()[0]) from None
    described: dict[int, list[str]] = {}
    for name in names:
        parts = name.removeprefix(_PRESENCE_PREFIX).split(" ")
        if parts and parts[0].isdigit():
            described[int(parts[0])] = parts[1:]
    workers = []
    for worker_id, heartbeat, age, jobs in rows:
        info = WorkerInfo(id=worker_id, last_heartbeat=heartbeat, heartbeat_age_seconds=round(age, 3),
                          alive=age <= timeout, running_jobs=[job for job in jobs if job is not None])
        parts = described.get(worker_id)
        if parts:
            info.hostname = parts[0]
            info.pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            info.labels = [] if len(parts) < 3 or parts[2] == "-" else parts[2].split(",")
            info.queues = parts[3].split(",") if len(parts) > 3 and parts[3] else []
        workers.append(info)
    return workers
