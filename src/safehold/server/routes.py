"""The REST API under ``/api/v1``: targets, snapshots, jobs, tokens.

Each route checks the token's role, calls the engine or the catalog, and
shapes the answer; the work itself (queuing, validation of job parameters,
status computation) lives in ``safehold.engine``. Routes are plain ``def``
functions: FastAPI runs them in its thread pool, since the engine and the
catalog block.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, status

from .. import errors
from ..catalog.store import JobRecord
from ..catalog.tokens import TokenRecord, TokenStore
from . import schemas
from .auth import require
from .strict import StrictJSONRoute

#: Every API route answers a malformed request in the documented error shape (app.py's handlers);
#: declaring it here also replaces FastAPI's own ``{"detail": [...]}`` 422 schema in /openapi.json.
MALFORMED = {
    400: {"model": schemas.ValidationProblem,
          "description": "The body is not JSON (NaN and Infinity are not JSON), or the request is not valid for "
                         "safehold"},
    422: {"model": schemas.ValidationProblem, "description": "The request does not match this schema"},
}

router = APIRouter(prefix="/api/v1", responses=MALFORMED, route_class=StrictJSONRoute)

viewer = Depends(require("viewer"))
operator = Depends(require("operator"))
admin = Depends(require("admin"))

NOT_FOUND = {404: {"model": schemas.Problem, "description": "No such object"}}
CONFLICT = {409: {"model": schemas.Problem, "description": "Not possible in the object's current state"}}
#: Ids are 32-bit on every catalog database (SQLite would overflow at 2**63, PostgreSQL's integer at 2**31).
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Job id.")]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Token id.")]

INVALID = {400: {"model": schemas.ValidationProblem,
                  "description": "The body is not JSON, or the request is well-formed but not valid for safehold"}}


def _context(request: Request) -> Any:
    return request.app.state.context


def job_dict(record: JobRecord) -> dict[str, Any]:
    return {**dataclasses.asdict(record), "duration_seconds": record.duration_seconds}


# --- targets -------------------------------------------------------------------


@router.get("/targets", response_model=schemas.TargetList, tags=["targets"])
def list_targets(request: Request, _: TokenRecord = viewer) -> dict[str, Any]:
    """Every configured target with its tier, RPO compliance and last restore test."""
    cache = getattr(request.app.state, "statuses", None)
    if cache is not None:
        return {"targets": cache.as_dicts()}
    return {"targets": [entry.as_dict() for entry in _target_statuses(request)]}


@router.get("/targets/{name}", response_model=schemas.TargetStatus, tags=["targets"], responses=NOT_FOUND)
def get_target(name: str, request: Request, _: TokenRecord = viewer) -> dict[str, Any]:
    """One target's status."""
    context = _context(request)
    context.config.target(name)  # TargetNotFound -> 404
    return next(entry.as_dict() for entry in _target_statuses(request) if entry.name == name)


def _target_statuses(request: Request) -> list[Any]:
    """The statuses the app shares with /metrics (engine.status.StatusCache), or computed now."""
    cache = getattr(request.app.state, "statuses", None)
    if cache is not None:
        return list(cache.statuses())
    from ..engine.status import target_statuses

    return target_statuses(_context(request))


# --- snapshots -----------------------------------------------------------------


@router.get("/snapshots", response_model=schemas.SnapshotList, tags=["snapshots"])
def list_snapshots(request: Request, target: str | None = Query(None, description="Only this target's."),
                   _: TokenRecord = viewer) -> dict[str, Any]:
    """Snapshots in the repository (the source of truth), oldest first."""
    from ..engine.browse import list_snapshots as snapshots_of

    return {"snapshots": snapshots_of(_context(request), target)}


# --- jobs ----------------------------------------------------------------------


@router.get("/jobs", response_model=schemas.JobList, tags=["jobs"])
def list_jobs(
    request: Request,
    # No NUL: PostgreSQL refuses it in a string literal, which would surface as a 500.
    target: str | None = Query(None, max_length=255, pattern=r"^[^\x00]*$"),
    kind: str | None = Query(None, max_length=32, pattern=r"^[^\x00]*$", examples=["backup"]),
    status_filter: schemas.JobStatus | None = Query(None, alias="status"),
    limit: int = Query(50, ge=1, le=1000),
    _: TokenRecord = viewer,
) -> dict[str, Any]:
    """Jobs, newest first."""
    records = _context(request).catalog.list_jobs(target=target, kind=kind, status=status_filter, limit=limit)
    return {"jobs": [job_dict(record) for record in records]}


@router.get("/workers", response_model=schemas.WorkerList, tags=["jobs"])
def list_workers(request: Request, _: TokenRecord = viewer) -> dict[str, Any]:
    """The workers of the job queue (scheduler.executor: procrastinate): labels, running jobs, last heartbeat."""
    settings = _context(request).config.scheduler
    if settings.executor != "procrastinate":
        return {"executor": settings.executor, "workers": []}
    from ..scheduler.queue import list_workers as queue_workers

    return {"executor": settings.executor, "workers": [entry.as_dict() for entry in queue_workers(settings)]}


@router.get("/jobs/{job_id}", response_model=schemas.Job, tags=["jobs"], responses=NOT_FOUND)
def get_job(job_id: JobId, request: Request, _: TokenRecord = viewer) -> dict[str, Any]:
    """One job."""
    return job_dict(_context(request).catalog.get_job(job_id))


@router.get("/jobs/{job_id}/log", response_model=schemas.JobLog, tags=["jobs"], responses=NOT_FOUND)
def get_job_log(job_id: JobId, request: Request,
                after: int = Query(0, ge=0, description="Only lines with a greater id (to follow a running job)."),
                _: TokenRecord = viewer) -> dict[str, Any]:
    """A job's log lines in the order they were written."""
    catalog = _context(request).catalog
    catalog.get_job(job_id)  # JobNotFound -> 404 rather than an empty log
    lines = [{"id": line.id, "time": line.time, "level": line.level, "message": line.message}
             for line in catalog.job_logs(job_id) if line.id > after]
    return {"job_id": job_id, "lines": lines}


@router.post("/jobs", response_model=schemas.Job, status_code=status.HTTP_202_ACCEPTED, tags=["jobs"],
             responses={**NOT_FOUND, **INVALID})
def submit_job(request: Request, body: schemas.JobRequest = Body(), _: TokenRecord = operator) -> dict[str, Any]:
    """Queue a backup, restore, restore-test, check, prune, forget, maintenance, repair-index,
    repair-snapshots, drill, copy, mark (an operator's ransomware verdict of a snapshot) or scan; a
    worker runs it.

    Answers 202 with the queued job; follow it with ``GET /api/v1/jobs/{id}``.
    """
    from ..engine.jobs import submit_job as submit

    context = _context(request)
    params = body.params.model_dump(exclude_defaults=True)
    if isinstance(body, schemas.RestoreJob):
        # Checked now for a quick answer, and again when the job runs: a restore queued earlier may
        # plant a symlink on the way by then, so the engine walks down from the root itself.
        # Files this host writes for a platform restore (libvirt images) stay in the root too.
        if isinstance(body.params, schemas.PlatformRestoreParams):
            to = body.params.to
            params["to"] = {**to.model_dump(exclude_defaults=True), "kind": to.kind}
            if isinstance(to, schemas.ApiLibvirtOptions) and to.images_dir is not None:
                params["to"]["images_dir"] = str(_inside_restore_root(request, to.images_dir, "params.to.images_dir"))
        else:
            params["destination"] = str(_inside_restore_root(request, body.params.destination))
        params["restore_root"] = str(request.app.state.restore_root)
    job_id = submit(context, body.kind, getattr(body, "target", None), params, trigger="api")
    return job_dict(context.catalog.get_job(job_id))


@router.post("/jobs/{job_id}/cancel", response_model=schemas.Job, tags=["jobs"], responses={**NOT_FOUND, **CONFLICT})
def cancel_job(job_id: JobId, request: Request, _: TokenRecord = operator) -> dict[str, Any]:
    """Cancel a queued job. A job that already started or ended gives 409."""
    from ..engine.jobs import cancel_job as cancel

    context = _context(request)
    if not cancel(context, job_id):
        current = context.catalog.get_job(job_id).status
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"job {job_id} is {current}; only a queued job can be cancelled")
    return job_dict(context.catalog.get_job(job_id))


def _inside_restore_root(request: Request, destination: str, name: str = "params.destination") -> FilePath:
    root: FilePath = request.app.state.restore_root
    lexical = FilePath(os.path.normpath(root / destination))  # an absolute destination replaces root here
    path = lexical.resolve()
    if (path != root and root not in path.parents) or (lexical != root and root not in lexical.parents):
        raise errors.UsageError(
            f"{name} must lie inside the server's restore root {root}; got {destination!r} "
            "(use a relative path, or restore outside it with the CLI on the host)")
    # The lexical path: what the engine walks below the root (without following links) when the job runs.
    return lexical


# --- tokens --------------------------------------------------------------------


def _tokens(request: Request) -> TokenStore:
    return request.app.state.tokens


@router.get("/tokens", response_model=schemas.TokenList, tags=["tokens"])
def list_tokens(request: Request, include_revoked: bool = Query(False), _: TokenRecord = admin) -> dict[str, Any]:
    """API tokens (never the tokens themselves: the server keeps only their hashes)."""
    return {"tokens": [token.as_dict() for token in _tokens(request).list(include_revoked=include_revoked)]}


@router.post("/tokens", response_model=schemas.CreatedToken, status_code=status.HTTP_201_CREATED, tags=["tokens"],
             responses=INVALID)
def create_token(body: schemas.TokenRequest, request: Request, _: TokenRecord = admin) -> dict[str, Any]:
    """Create a token; the answer holds the token itself, shown this once."""
    record, secret = _tokens(request).create(body.name, body.role)
    return {"token": record.as_dict(), "secret": secret}


@router.delete("/tokens/{token_id}", response_model=schemas.Token, tags=["tokens"],
               responses={**NOT_FOUND, **CONFLICT})
def revoke_token(token_id: TokenId, request: Request, caller: TokenRecord = admin) -> dict[str, Any]:
    """Revoke a token. An admin cannot revoke the token it is calling with (409), so it cannot lock itself out."""
    if token_id == caller.id:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail="refusing to revoke the token this request uses; revoke it with another admin "
                                   "token or with 'safehold token revoke' on the host")
    return _tokens(request).revoke(token_id).as_dict()
