"""Queued jobs: the catalog is the job queue shared by the API, the CLI and the scheduler.

``submit_job`` validates a request and queues a catalog row; ``run_job`` claims
a queued row and runs the matching engine function *as that row* (the engine
functions take ``job_id``), so its log lines, bytes, duration and error land in
the job that was submitted; ``cancel_job`` cancels a job that has not started.

Everything here takes a :class:`Context` and plain values (kind, target name,
a JSON-able ``params`` dict, ids), never live objects: the same functions run
in the in-process worker pool or as tasks of a distributed queue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .. import errors
from .context import Context
from .params import PARAMS, QueuedPlatformRestore, restore_params_model

SUBMITTABLE_KINDS = ("backup", "restore", "restore-test", "check", "prune", "forget", "maintenance", "repair-index",
                     "repair-snapshots", "drill", "copy", "mark", "scan")
"""Kinds a user or the scheduler may queue."""

NEEDS_TARGET = ("backup", "restore-test", "mark", "scan")
"""Kinds that act on one target; check, prune and maintenance act on the whole repository."""

log = logging.getLogger("safehold.jobs")

MAX_RENEW_WITHIN_DAYS = 36500
"""S3 Object Lock allows retention of up to 100 years."""

def submit_job(
    context: Context,
    kind: str,
    target: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    trigger: str = "api",
    attempt: int = 1,
    log: str | None = None,
) -> int:
    """Validate and queue a job; returns its id. ``log``: a first line for its log, written with it.

    Raises UsageError for an unknown kind or bad params and TargetNotFound
    for a target that is not in the configuration. ``trigger`` (api,
    scheduler, cli) and ``attempt`` (retries count from 1) are recorded in the
    job's details.
    """
    if kind not in SUBMITTABLE_KINDS:
        raise errors.UsageError(f"unknown job kind {kind!r}; expected one of: {', '.join(SUBMITTABLE_KINDS)}")
    if target is not None:
        context.config.target(target)  # TargetNotFound listing the known names
    elif kind in NEEDS_TARGET:
        raise errors.UsageError(f"a {kind} job needs a target")
    checked = _check_params(kind, target, dict(params or {}))
    if kind == "drill":
        context.config.drill(checked["drill"])  # DrillNotFound listing the known names
    if kind == "copy":
        context.config.copy_named(checked["to"])  # CopyNotFound (404) listing the configured ones
    details: dict[str, Any] = {"params": checked, "trigger": trigger, "attempt": attempt}
    return context.catalog.queue_job(kind, target, details, log=log)


def cancel_job(context: Context, job_id: int) -> bool:
    """Cancel a queued job; False if it already started or ended. JobNotFound for an unknown id."""
    return context.catalog.cancel_job(job_id)


def run_job(context: Context, job_id: int, *, raise_errors: bool = False) -> Any:
    """Claim queued job ``job_id`` and run it in this thread; returns the final JobRecord.

    A failing job is recorded as failed (message, error class, log lines) and,
    unless ``raise_errors``, not raised: a worker pool keeps going. The job is
    never left 'running', also when the failure happens before the engine
    function started recording (a target removed from the configuration).
    Raises JobNotRunnable when the job is not queued (run or cancelled already).
    """
    catalog = context.catalog
    record = catalog.get_job(job_id)
    if not catalog.claim_job(job_id):
        raise errors.JobNotRunnable(job_id=job_id, detail=f"it is {catalog.get_job(job_id).status}, not queued")
    details = record.details or {}
    params = dict(details.get("params") or {})
    catalog.log(job_id, f"started ({details.get('trigger', 'api')}, attempt {details.get('attempt', 1)})")
    try:
        _dispatch(context, record.kind, record.target, params, job_id)
    except Exception as error:
        _ensure_finished(context, job_id, error)
        if raise_errors:
            raise
    except BaseException as error:  # SystemExit, KeyboardInterrupt: the process is going away
        _ensure_finished(context, job_id, error, status="interrupted")
        raise
    else:
        _ensure_finished(context, job_id, None)
    return catalog.get_job(job_id)


def _dispatch(context: Context, kind: str, target: str | None, params: dict[str, Any], job_id: int) -> None:
    if kind == "backup":
        from .backup import backup_target

        result = backup_target(context, target or "", tags=params.get("tags"), job_id=job_id)
        _forget_after_backup(context, target or "", job_id, result.snapshot_id)
        _copy_after_backup(context, target or "", job_id, result.snapshot_id)
    elif kind == "restore":
        from .restore import restore_snapshot

        restore: Any = restore_params_model(params).model_validate(params)
        if isinstance(restore, QueuedPlatformRestore):
            restore_snapshot(context, restore.snapshot, restore.to.model_dump(), target=target, job_id=job_id,
                             restore_root=restore.restore_root)
        else:
            restore_snapshot(context, restore.snapshot, restore.destination, target=target,
                             includes=restore.includes, overwrite=restore.overwrite, job_id=job_id,
                             special_files=restore.special_files, restore_root=restore.restore_root)
    elif kind == "restore-test":
        from .restore_test import run_restore_test

        run_restore_test(context, target or "", job_id=job_id)
    elif kind == "check":
        from .maintenance import check_repository

        check_repository(context, float(params.get("read_data_percent", 0.0)), job_id=job_id)
    elif kind == "prune":
        from .maintenance import prune_repository

        prune_repository(context, job_id=job_id)
    elif kind == "forget":
        from .maintenance import forget_snapshots

        forget_snapshots(context, target=target, and_prune=bool(params.get("prune")), job_id=job_id)
    elif kind == "maintenance":
        from datetime import timedelta

        from .immutability import run_maintenance

        days = params.get("renew_within_days")
        run_maintenance(context, None if days is None else timedelta(days=days), job_id=job_id)
    elif kind == "repair-index":
        from .repair import repair_index_job

        repair_index_job(context, read_all_packs=bool(params.get("read_all_packs")),
                         dry_run=bool(params.get("dry_run")), job_id=job_id)
    elif kind == "repair-snapshots":
        from .repair import repair_snapshots_job

        repair_snapshots_job(context, list(params.get("snapshots") or []) or None,
                             read_data=bool(params.get("read_data")), forget_originals=bool(params.get("forget")),
                             dry_run=bool(params.get("dry_run")), job_id=job_id)
    elif kind == "drill":
        from .drill import run_drill

        run_drill(context, str(params.get("drill", "")), job_id=job_id)
    elif kind == "drill-step":  # queued by a drill (engine.drill_workers), never by a user
        from .drill_workers import run_drill_step

        run_drill_step(context, params, job_id)
    elif kind == "copy":
        from .copy import copy_to

        context.config.copy_named(str(params.get("to")))  # queued jobs name configured copies only
        copy_to(context, params["to"], target, params.get("snapshot"), job_id=job_id)
    elif kind == "mark":
        from .verdicts import mark_snapshot

        mark_snapshot(context, str(params["snapshot"]), str(params["verdict"]), note=params.get("note"),
                      target=target, job_id=job_id)
    elif kind == "scan":
        from .verdicts import scan_snapshot

        scan_snapshot(context, str(params["snapshot"]), target, job_id=job_id)
    else:  # submit_job refuses these; a row written by a newer release could still carry one
        raise errors.UsageError(f"this safehold cannot run jobs of kind {kind!r}")


def _forget_after_backup(context: Context, target: str, backup_job_id: int, snapshot_id: str) -> None:
    """Apply the target's retention after a backup, as its own 'forget' job.

    A failing forget does not fail the backup (the data is safe); it is
    recorded in its own job and noted in the backup's log.
    """
    configured = context.config.target(target)
    if configured.retention is None or not configured.forget_after_backup:
        return
    from .maintenance import forget_snapshots

    try:
        outcome = forget_snapshots(context, target=target)
    except errors.SafeholdError as error:
        if error.bug:
            raise
        context.catalog.log(backup_job_id, f"retention not applied: {error}", level="warning")
        return
    context.catalog.log(backup_job_id, f"retention applied after snapshot {snapshot_id[:8]}: "
                                       f"forgot {len(outcome.removed)} snapshot(s)")


def _copy_after_backup(context: Context, target: str, backup_job_id: int, snapshot_id: str) -> None:
    """Copy the new snapshot to every copy with ``after_backup`` that covers the target, each as its
    own 'copy' job. A failing copy does not fail the backup (the data is safe in the repository):
    it is recorded in its own job (and the metric of its last success stops moving)."""
    from .copy import copy_to

    for configured in context.config.copies_of(target):
        if not configured.after_backup:
            continue
        try:
            copy_to(context, configured.name, target)
        except errors.SafeholdError as error:
            if error.bug:
                raise
            context.catalog.log(backup_job_id, f"copy to {configured.name} failed: {error}", level="warning")
            continue
        context.catalog.log(backup_job_id, f"snapshot {snapshot_id[:8]} copied to {configured.name}")


def _ensure_finished(context: Context, job_id: int, error: BaseException | None, status: str = "failed") -> None:
    catalog = context.catalog
    record = catalog.get_job(job_id)
    if record.status != "running":
        if isinstance(error, errors.JobFenced):  # said once on the row and in the worker's own log
            catalog.log(job_id, f"a paused attempt came back and stopped before its commit: {error}", level="warning")
            log.error("%s; this attempt is not recorded", error)
        return
    if error is None:
        # The engine function returned without recording an end: cannot happen with
        # Catalog.job, but a running row must never outlive its worker.
        catalog.finish_job(job_id, "succeeded")
        return
    catalog.log(job_id, f"{type(error).__name__}: {error}", level="error")
    catalog.finish_job(job_id, status, error=str(error) or repr(error), error_type=type(error).__name__)


def _check_params(kind: str, target: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """Validate with the kind's model (``engine.params``); each error is one line naming the parameter."""
    from pydantic import ValidationError

    model = restore_params_model(params) if kind == "restore" else PARAMS[kind]
    if kind == "restore" and "to" not in params and "destination" not in params:
        raise errors.UsageError("a restore job needs params.destination (a directory or image file) "
                                "or params.to (a platform destination)")
    try:
        checked = model.model_validate(params)
    except ValidationError as exc:
        raise errors.UsageError(_explain(kind, model, exc.errors()[0])) from None
    if kind == "restore" and target is None and checked.snapshot.startswith("latest"):
        raise errors.UsageError("a restore of 'latest' needs a target, or name a snapshot id")
    return params


def _explain(kind: str, model: Any, error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return f"unknown parameter {location!r} for a {kind} job; valid: {', '.join(model.model_fields) or 'none'}"
    if error["type"] in ("greater_than_equal", "less_than_equal"):
        bounds = {type(m).__name__: m for m in model.model_fields[error["loc"][0]].metadata}
        return f"{location} must be between {bounds['Ge'].ge:g} and {bounds['Le'].le:g}, got {value}"
    if error["type"].endswith("_type") or error["type"] in ("bool_parsing", "int_from_float"):
        return f"parameter {location!r} of a {kind} job has the wrong type: {value!r}"
    message = error["msg"].removeprefix("Value error, ")
    return message if not error["loc"] else f"parameter {location!r} of a {kind} job: {message}"
