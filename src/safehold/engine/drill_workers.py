"""Drill steps on workers: with ``scheduler.executor: procrastinate`` a drill restores on the queue.

The drill (``safehold drill run``, the scheduler's or the API's ``drill`` job, wherever it runs)
plans as always, then hands each ready step of a wave to the queue instead of running it in its
own process:

- each step is a catalog job of kind ``drill-step`` (target: the step's target; details: the
  step's plan, the drill's start and reference time, the drill job's id, the attempt). The
  scheduler never dispatches these rows (the drill does), and no user can queue one;
- it is deferred as ``safehold.run_job(job_id=N)`` like every queued job, on the queue of the
  step's target (``scheduler.placement``: a libvirt target's restore runs on a worker of its KVM
  host) with the target's lock (never beside another job of the target);
- the worker runs the step (``run_drill_step``: the same ``drill._run_step`` as a drill in one
  process, sandbox, check and clean-up on the worker's host) and stores the step's record
  (times, ART, check, resources made and removed, the worker's host and pid) in the step job's
  details; the drill reads those back into its report, whose format does not change;
- at most ``parallel`` steps are in flight at once (1 by default: one after the other); a wave
  waits for its steps, so ``after`` holds.

Failure, never a hang: the drill watches its steps' workers. A worker whose heartbeat stops
(SIGKILL, a lost host) for ``scheduler.worker_timeout`` has its step job recorded 'interrupted'
(and its queue job ended) by the drill itself, whether or not a scheduler runs; the step is then
retried as a new attempt per ``scheduler.retries``, or reported as an error naming the step and
the worker. Each step's wait is bounded: by its RTO (measured from the drill's start, as its ART
is) plus a grace of twice ``worker_timeout``; a step past it has missed its RTO anyway,
and is reported as an error (DrillStepLost: not taken by any worker of its queue, or still
running) rather than waited for. A step cut off this way is fenced: its late end is not recorded.

ARTs are measured by the workers against the drill's wall-clock start: the hosts' clocks must
agree (NTP), as they must for the schedule anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import errors
from .context import Context

log = logging.getLogger("safehold.drill")

STEP_KIND = "drill-step"
_POLL_SECONDS = 0.25


def on_workers(context: Context, for_real: bool) -> bool:
    """Whether a drill's steps run on the queue's workers: with the procrastinate executor, for
    sandbox drills (a --for-real recovery stays in the process an operator confirmed it in)."""
    return context.config.scheduler.executor == "procrastinate" and not for_real


def wait_grace(settings: Any) -> float:
    return 2 * settings.worker_timeout.total_seconds()


# --- the drill's side ----------------------------------------------------------------------------


class StepDispatcher:
    """Defers a drill's steps to the queue and waits for their records (one per drill run)."""

    def __init__(self, context: Context, job: Any, drill: Any, *, wall_start: float, started: float,
                 reference: dt.datetime, repository: str | None) -> None:
        from ..scheduler.queue import make_app, queue_dsn, require_shared_catalog, shown_dsn

        require_shared_catalog(context.config)
        self.context, self.job, self.drill = context, job, drill
        self.settings = context.config.scheduler
        self.wall_start, self.started, self.reference, self.repository = wall_start, started, reference, repository
        self.dsn = queue_dsn(self.settings)
        self.timeout = self.settings.worker_timeout.total_seconds()
        self.grace = wait_grace(self.settings)
        try:
            self.app = make_app(self.dsn, sync=True)
            self.app.open()
        except Exception as error:
            raise errors.QueueUnreachable(dsn=shown_dsn(self.dsn), detail=str(error).strip()) from None

    def close(self) -> None:
        self.app.close()

    def run_wave(self, ready: list[Any]) -> dict[str, dict[str, Any]]:
        """Run the ready steps of one wave on workers, at most ``drill.parallel`` at once; every
        step ends with a record (passed, failed, or an error naming what happened)."""
        limit = max(1, self.drill.parallel)
        if len(ready) > 1:
            self.job.log(f"running {', '.join(step.target for step in ready)} on workers "
                         f"(up to {limit} at once)")
        waiting = list(ready)
        flying: dict[str, dict[str, Any]] = {}  # target -> {step, attempt, job_id, queue_job}
        outcomes: dict[str, dict[str, Any]] = {}
        failing_since: float | None = None
        while waiting or flying:
            try:
                while waiting and len(flying) < limit:
                    flying[waiting[0].target] = self._defer(waiting[0], attempt=1)
                    waiting.pop(0)
                for target in list(flying):
                    outcome = self._look(flying[target])
                    if outcome is not None:
                        del flying[target]
                        outcomes[target] = outcome
            except errors.SafeholdError:
                raise
            except Exception as error:  # a database hiccup must not end the drill; a lasting outage does
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.timeout:
                    raise
                log.warning("drill %s: the catalog or the queue did not answer (%s); trying again",
                            self.drill.name, str(error).strip().splitlines()[0] if str(error).strip() else error)
            else:
                failing_since = None
            if flying or waiting:
                time.sleep(_POLL_SECONDS)
        return outcomes

    # -- one step

    def _defer(self, step: Any, attempt: int, note: str | None = None) -> dict[str, Any]:
        from ..scheduler.queue import TASK_NAME, lock_for, queue_for

        params = {"drill": self.drill.name, "drill_job": self.job.id, "step": asdict(step),
                  "wall_start": self.wall_start, "reference": self.reference.isoformat(),
                  "repository": self.repository}
        job_id = self.context.catalog.queue_job(STEP_KIND, step.target, {
            "params": params, "trigger": "drill", "attempt": attempt, "drill_job": self.job.id})
        queue = queue_for(self.settings, step.target)
        # The target's lock (not its queueing lock: a backup of the target may wait in the queue,
        # and the step then waits behind it, within its bound).
        task = self.app.configure_task(TASK_NAME, queue=queue, lock=lock_for(STEP_KIND, step.target))
        queue_job = task.defer(job_id=job_id)
        self.job.log(f"{step.target}: step queued as job {job_id} on queue {queue!r}"
                     + (f" (attempt {attempt}: {note})" if note else ""))
        return {"step": step, "attempt": attempt, "job_id": job_id, "queue_job": queue_job, "queue": queue,
                "taken": False, "stalled": False, "lost": []}

    def _look(self, flight: dict[str, Any]) -> dict[str, Any] | None:
        """The step's record once its job ended; a retry or an error record when its worker died
        or its bound passed; None while it is still on its way."""
        step, job_id = flight["step"], flight["job_id"]
        record = self.context.catalog.get_job(job_id)
        if record.status == "running" and not flight["taken"]:
            flight["taken"] = True
            self.job.log(f"{step.target}: job {job_id} taken by {record.hostname} (pid {record.pid})")
        if record.finished:
            return self._ended(flight, record)
        stalled = self._stalled_worker(flight["queue_job"])
        if stalled is not None:
            reason = (f"worker {stalled} stopped sending heartbeats (none for {self.timeout:g}s) while it ran step "
                      f"{step.target} (job {job_id}, attempt {flight['attempt']})")
            if self.context.catalog.interrupt_job(job_id, reason):
                self.context.catalog.log(job_id, reason, level="error")
            else:  # it died before it claimed the row: the row must not run later either
                self.context.catalog.cancel_job(job_id, reason)
            self._end_queue_job(flight["queue_job"])
            flight["stalled"] = True
            return self._ended(flight, self.context.catalog.get_job(job_id))
        deadline = self.started + step.rto_seconds + self.grace
        if time.monotonic() >= deadline:
            return self._give_up(flight, record)
        return None

    def _ended(self, flight: dict[str, Any], record: Any) -> dict[str, Any] | None:
        from .drill import _step_record

        step = flight["step"]
        result = (record.details or {}).get("record")
        if record.status in ("succeeded", "failed") and isinstance(result, dict):
            result = dict(result)
            result["attempt"] = flight["attempt"]
            if flight["lost"]:
                result["earlier_attempts"] = list(flight["lost"])
            self.job.log(f"{step.target}: {result['outcome']} on {result.get('worker', {}).get('host')} "
                         f"(pid {result.get('worker', {}).get('pid')}, job {record.id}), ART "
                         f"{result.get('art_seconds')}s", level="info" if result["outcome"] == "passed" else "error")
            return result
        # Interrupted (its worker died or stopped), failed before it recorded a result, or cancelled.
        what = f"job {record.id} (attempt {flight['attempt']}) ended {record.status}: {record.error or 'no result'}"
        flight["lost"].append(what)
        attempts = 1 + self.settings.retries
        lost_worker = record.status == "interrupted" or (record.status == "cancelled" and flight.get("stalled"))
        if lost_worker and flight["attempt"] < attempts \
                and time.monotonic() < self.started + step.rto_seconds + self.grace:
            self.job.log(f"{step.target}: {what}; retrying ({flight['attempt'] + 1} of {attempts})", level="warning")
            lost = flight["lost"]
            flight.update(self._defer(step, flight["attempt"] + 1, note=what), lost=lost)
            return None
        result = _step_record(step)
        result["outcome"] = "error"
        detail = what + (f"; no retry left (scheduler.retries: {self.settings.retries})" if lost_worker else "")
        result["detail"] = "DrillStepLost: " + errors.DrillStepLost(name=self.drill.name, target=step.target,
                                                                    detail=detail, queue=flight["queue"]).message
        result["attempt"] = flight["attempt"]
        result["earlier_attempts"] = flight["lost"][:-1]
        self._finish_times(result, step)
        self.job.log(f"{step.target}: error: {detail}", level="error")
        return result

    def _give_up(self, flight: dict[str, Any], record: Any) -> dict[str, Any]:
        from .drill import _step_record

        step, job_id = flight["step"], flight["job_id"]
        bound = step.rto_seconds + self.grace
        if record.status == "queued":
            self.app.job_manager.cancel_job_by_id(flight["queue_job"])
            self.context.catalog.cancel_job(job_id, f"no worker of queue {flight['queue']!r} took it within "
                                                    f"{bound:g}s of the drill's start")
            detail = (f"no worker of queue {flight['queue']!r} took job {job_id} within {bound:g}s of the drill's "
                      f"start (the step's RTO {step.rto_seconds:g}s + {self.grace:g}s)")
        else:
            # Still running on a live worker: the drill stops waiting. The row is ended now, so the
            # step's late end is fenced (not recorded) and a late restore commits nothing.
            self.context.catalog.interrupt_job(job_id, f"the drill stopped waiting after {bound:g}s")
            detail = (f"job {job_id} still ran on {record.hostname} (pid {record.pid}) {bound:g}s after the drill's "
                      f"start (the step's RTO {step.rto_seconds:g}s + {self.grace:g}s); the drill stopped waiting")
        result = _step_record(step)
        result["outcome"] = "error"
        result["detail"] = "DrillStepLost: " + errors.DrillStepLost(name=self.drill.name, target=step.target,
                                                                    detail=detail, queue=flight["queue"]).message
        result["attempt"] = flight["attempt"]
        result["earlier_attempts"] = list(flight["lost"])
        self._finish_times(result, step)
        self.job.log(f"{step.target}: error: {detail}", level="error")
        return result

    def _finish_times(self, result: dict[str, Any], step: Any) -> None:
        from .drill import _iso

        now = time.monotonic()
        result["ended"] = _iso(self.wall_start + (now - self.started))
        result["art_seconds"] = round(now - self.started, 3)
        result["rto_met"] = False
        snapshot_time = dt.datetime.fromisoformat(step.snapshot_time)
        result["rpo_seconds"] = round((self.reference - snapshot_time).total_seconds(), 3)
        result["rpo_met"] = result["rpo_seconds"] <= step.rpo_objective_seconds

    # -- the queue's view

    def _stalled_worker(self, queue_job: int) -> int | None:
        """The worker running ``queue_job`` if its heartbeat is older than worker_timeout (or it
        was removed while it ran the job: -1); None while it is healthy or the job is not running."""
        row = self._query("SELECT j.status, j.worker_id, EXTRACT(EPOCH FROM now() - w.last_heartbeat)::float8 "
                          "FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id "
                          "WHERE j.id = %(id)s", id=queue_job)
        if row is None or row[0] != "doing":
            return None
        worker, age = row[1], row[2]
        if worker is None or age is None:
            return -1
        return int(worker) if age > self.timeout else None

    def _end_queue_job(self, queue_job: int) -> None:
        """End the dead worker's queue job as failed (frees the target's lock); a scheduler's
        executor may have done it already."""
        try:
            self.app.connector.execute_query("SELECT procrastinate_finish_job_v1(%(job_id)s, 'failed', false)",
                                             job_id=queue_job)
        except Exception as error:  # noqa: BLE001 - ended by the scheduler's reaper meanwhile
            log.debug("queue job %s not ended here: %s", queue_job, error)

    def _query(self, query: str, **arguments: Any) -> tuple[Any, ...] | None:
        row = self.app.connector.execute_query_one(query, **arguments)
        return None if row is None else tuple(row.values())


# --- the worker's side -----------------------------------------------------------------------------


class _MirroredJob:
    """The step job's handle, whose log lines also go to the drill job (one log tells the drill)."""

    def __init__(self, handle: Any, drill_job: int | None) -> None:
        self._handle, self._drill_job = handle, drill_job

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def log(self, message: str, level: str = "info") -> None:
        self._handle.log(message, level)
        if self._drill_job is not None:
            try:
                self._handle.catalog.log(self._drill_job, message, level)
            except errors.JobNotFound:
                pass


def run_drill_step(context: Context, params: dict[str, Any], job_id: int) -> dict[str, Any]:
    """Run one drill step as catalog job ``job_id`` (claimed: ``engine.jobs``) on this host; the
    step's record goes into the job's details (``record``) for the drill to collect."""
    from . import boot_check
    from .drill import StepPlan, _run_step, drill_context, drill_sandbox_root

    drill = context.config.drill(str(params["drill"]))
    context = drill_context(context, drill, params.get("repository"))
    step = StepPlan(**params["step"])
    # Checked again here, on the worker: the row was written by the drill's host, from its
    # targets.yml, and this worker reads its own (a step it does not know is not run).
    if step.target not in {configured.target for configured in drill.steps}:
        raise errors.DrillNotReady(name=drill.name, detail=(
            f"step {step.target!r} is not a step of this drill in the targets.yml of worker "
            f"{socket.gethostname()} (pid {os.getpid()}): its configuration differs from the drill's host"))
    wall_start = float(params["wall_start"])
    # The drill's start on this process's monotonic clock: ARTs count from the disaster.
    started = time.monotonic() - (time.time() - wall_start)
    reference = dt.datetime.fromisoformat(str(params["reference"]))
    root = drill_sandbox_root(context, drill)
    root.mkdir(parents=True, exist_ok=True)
    drill_job = params.get("drill_job")
    with context.catalog.job(STEP_KIND, step.target, job_id=job_id) as handle:
        job = _MirroredJob(handle, int(drill_job) if drill_job is not None else None)
        for removed in boot_check.remove_leftover_folders(Path(root)):  # what a killed step left on this host
            job.log(f"removed the leftover of a run that ended: {removed}", level="warning")
        record = _run_step(context, job, drill, step, Path(root), started, wall_start, reference)
        record["worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id}
        handle.details["record"] = record
        if record["outcome"] != "passed":
            handle.status = "failed"
    return record
