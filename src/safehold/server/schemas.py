"""Request and response bodies of the REST API (pydantic), so ``/openapi.json`` describes them exactly.

Responses are built from the engine's and the catalog's plain records; these
models only fix their shape for clients and for schemathesis' conformance checks.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..catalog.tokens import ROLES

Role = Literal["viewer", "operator", "admin"]
assert tuple(Role.__args__) == ROLES  # type: ignore[attr-defined]  # one list of roles, checked at import

JobStatus = Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled"]
SubmittableKind = Literal["backup", "restore", "restore-test", "check", "prune", "forget"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An error: the safehold error class, its message and what to do about it."""

    error: str = Field(examples=["TargetNotFound"])
    message: str
    remedy: str = ""


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    catalog: bool = Field(description="The catalog database answers.")
    scheduler: bool | None = Field(description="The in-process scheduler runs (null when started without one).")


class RestoreTestStatus(BaseModel):
    time: dt.datetime
    passed: bool
    art_seconds: float | None = Field(description="Actual recovery time: restore start to passing health check.")
    rto_seconds: float
    rto_met: bool


class TargetStatus(BaseModel):
    name: str
    tier: int
    source_type: str
    rpo_seconds: float
    rto_seconds: float
    last_success: dt.datetime | None = Field(description="Newest good backup (succeeded job or snapshot).")
    last_attempt: dt.datetime | None
    last_status: str | None = Field(description="Status of the newest backup job, null if none.")
    age_seconds: float | None = Field(description="Age of the newest good backup; null if there is none.")
    compliant: bool = Field(description="A good backup exists and is no older than the tier's RPO.")
    last_restore_test: RestoreTestStatus | None


class TargetList(BaseModel):
    targets: list[TargetStatus]


class Snapshot(BaseModel):
    id: str
    short_id: str
    time: dt.datetime
    target: str | None
    kind: str | None
    hostname: str | None
    paths: list[str] | None = None
    parent: str | None
    tags: list[str] | None = None
    files: int
    bytes_total: int
    bytes_read: int
    bytes_added: int


class SnapshotList(BaseModel):
    snapshots: list[Snapshot]


class Job(BaseModel):
    id: int
    kind: str
    target: str | None
    status: JobStatus
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_seconds: float | None
    snapshot_id: str | None
    bytes_read: int
    bytes_added: int
    files: int
    error: str | None
    error_type: str | None
    details: dict[str, Any] | None


class JobList(BaseModel):
    jobs: list[Job]


class LogLine(BaseModel):
    time: dt.datetime
    level: str
    message: str


class JobLog(BaseModel):
    job_id: int
    lines: list[LogLine]


class JobRequest(_Body):
    """A job to queue. ``params`` depend on the kind (unknown names are refused):
    backup ``tags``; restore ``destination`` (required; relative paths land under the server's
    restore root, absolute ones must lie inside it), ``snapshot`` (default latest), ``overwrite``,
    ``includes``; check ``read_data_percent``; forget ``prune``."""

    kind: SubmittableKind
    target: str | None = Field(None, description="Target name; required for backup and restore-test.",
                               examples=["web-01"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"destination": "web-01-2026-11-26"}])


class Token(BaseModel):
    id: int
    name: str
    role: Role
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    active: bool


class TokenList(BaseModel):
    tokens: list[Token]


class TokenRequest(_Body):
    name: str = Field(min_length=1, max_length=255, description="Who or what uses the token.",
                      examples=["grafana"])
    role: Role


class CreatedToken(BaseModel):
    token: Token
    secret: str = Field(description="The token itself. Shown only now: the server keeps only its hash.")
