"""Request and response bodies of the REST API (pydantic), so ``/openapi.json`` describes them exactly.

Responses are built from the engine's and the catalog's plain records; these
models only fix their shape for clients and for schemathesis' conformance checks.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..catalog.tokens import ROLES
from ..engine import params
from ..restore import options

Role = Literal["viewer", "operator", "admin"]
assert tuple(Role.__args__) == ROLES  # type: ignore[attr-defined]  # one list of roles, checked at import

JobStatus = Literal["queued", "running", "succeeded", "partial", "failed", "interrupted", "cancelled"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(BaseModel):
    """An error: the safehold error class, its message and what to do about it."""

    error: str = Field(examples=["TargetNotFound"])
    message: str
    remedy: str = ""


class InvalidField(BaseModel):
    """One reason a request was refused: where (``loc``, e.g. ["body", "params", "read_data_percent"])
    and what is wrong. The offending value itself is never echoed back."""

    loc: list[str | int]
    message: str
    type: str = Field(examples=["missing"])


class ValidationProblem(Problem):
    """A request the API could not take: not JSON (400) or not matching the schema (422)."""

    error: str = Field(examples=["InvalidRequest"])
    details: list[InvalidField] = Field(default_factory=list)


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Worker(BaseModel):
    id: int = Field(description="The worker's id in procrastinate's workers table.")
    last_heartbeat: str = Field(description="ISO 8601 time of its last heartbeat.")
    heartbeat_age_seconds: float
    alive: bool = Field(description="Its last heartbeat is within scheduler.worker_timeout.")
    hostname: str | None = Field(description="Host it runs on; null once it is gone.")
    pid: int | None
    labels: list[str] = Field(description="Its --host-label values.")
    queues: list[str]
    running_jobs: list[int] = Field(description="Catalog ids of the jobs it runs now.")


class WorkerList(BaseModel):
    executor: Literal["thread", "procrastinate"] = Field(
        description="scheduler.executor; with 'thread' jobs run in the control plane and the list is empty.")
    workers: list[Worker]


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


class ArtSample(BaseModel):
    time: dt.datetime = Field(description="When the restore test or drill ended.")
    kind: str = Field(examples=["restore-test", "drill"])
    job_id: int
    drill: str | None = Field(description="The drill's name for a drill step; null for a restore test.")
    art_seconds: float = Field(description="Actual recovery time: start to healthy (a drill step: the drill's "
                                           "start to healthy); for a failed run, to the failure.")
    rto_seconds: float = Field(description="The RTO it was judged against.")
    rto_ratio: float = Field(description="art_seconds / rto_seconds.")
    passed: bool


class ArtTrend(BaseModel):
    """The target's measured recovery times (restore tests and drills), newest first, against its RTO."""

    rto_seconds: float
    latest_seconds: float | None = Field(description="ART of the newest passing run; null if none.")
    rto_ratio: float | None = Field(description="latest_seconds / rto_seconds.")
    max_seconds: float | None = Field(description="The longest passing ART in the history.")
    state: str = Field(description="unmeasured, ok, approaching (>= 80 % of the RTO: RTOApproaching), at-risk "
                                   "(above the RTO) or could-tighten (the newest 3 or more passing ARTs all "
                                   "took at most 25 % of it).",
                       examples=["ok", "approaching"])
    trend: str | None = Field(description="rising, falling or steady (the newest passing ART against the mean "
                                          "of the older ones, 10 % of the RTO either way); null with fewer "
                                          "than two.")
    history: list[ArtSample]


class RansomwareState(BaseModel):
    snapshot: str = Field(description="The target's newest snapshot.")
    verdict: str = Field(description="Its own verdict: clean, suspicious or unknown (a first snapshot).")
    score: float = Field(description="Largest ratio of a ransomware signal to its threshold (suspicious from 1).")
    suspicious: bool = Field(description="The newest snapshot is suspicious, or follows a suspicious one that "
                                         "nobody marked clean.")
    since: str | None = Field(None, description="That suspicious snapshot.")
    latest_clean: str | None = Field(None, description="What 'latest-clean:TARGET' names; null if none.")


class VerdictReason(BaseModel):
    signal: str = Field(examples=["type_changed", "extension_churn", "ransom_notes", "random_unknown_added"])
    value: float | None
    threshold: float | None
    context: bool = Field(False, description="Reported beside a strong signal; never a verdict alone.")
    extension: str | None = None
    files: list[str] = Field(default_factory=list, description="Files that carry it (the first 10, escaped).")


class Verdict(BaseModel):
    verdict: str = Field(description="clean, suspicious or unknown.")
    source: str = Field(description="backup (judged when written), scan, operator (a mark) or none.")
    score: float
    reasons: list[VerdictReason] = Field(default_factory=list)
    after_suspicious: str | None = Field(None, description="The unresolved suspicious snapshot this one follows.")
    clean_point: bool = Field(description="Clean and not after a suspicious snapshot: a 'latest-clean' candidate.")
    note: str | None = Field(None, description="The operator's note of a mark.")


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
    compliant: bool = Field(description="A good backup (succeeded or partial) exists and is no older than the "
                                        "tier's RPO.")
    last_restore_test: RestoreTestStatus | None
    skipped_items: int = Field(0, description="Items the newest finished backup left out or stored while they "
                                              "changed (its status is then 'partial'); 0 if it was complete.")
    copies: dict[str, dt.datetime | None] = Field(
        default_factory=dict, description="Each configured copy covering the target: when its newest copy "
                                          "succeeded (null: never).")
    art: ArtTrend | None = Field(None, description="Measured recovery times and their trend against the RTO.")
    ransomware: RansomwareState | None = Field(None, description="The ransomware verdict of the target's "
                                                                  "snapshots; null before a backup judged one.")


class TargetList(BaseModel):
    targets: list[TargetStatus]


class SkippedEntry(BaseModel):
    path: str = Field(description="Path in the snapshot, escaped: non-printable characters as \\xNN, "
                                  "backslashes doubled.")
    type: str = Field(examples=["file", "dir"])
    reason: str = Field(examples=["unreadable", "vanished", "replaced", "changed"])
    detail: str = Field(examples=["Permission denied"])


class Skipped(BaseModel):
    """What a backup could not store as it was: left out (unreadable, vanished, replaced) or stored
    while it changed (changed)."""

    count: int = Field(description="Exact number of entries; 0 for a complete snapshot.")
    reasons: dict[str, int] = Field(description="Count per reason.")
    items: list[SkippedEntry] = Field(description="The first entries in walk order (at most 100).")
    truncated: bool = Field(description="More entries were skipped than are listed.")


class ForgetRecord(BaseModel):
    """The forget record that names a snapshot present again after it was forgotten (a replay: a copy
    put back, a delete undone). Texts come from the record; a damaged record still proves the forget."""

    name: str = Field(description="The record's object name under forgotten/.")
    snapshot: str = Field(description="Id of the snapshot that was forgotten.")
    target: str | None = None
    snapshot_time: str | None = Field(None, description="The snapshot's time, as the record gives it.")
    forgotten_at: str | None = Field(None, description="When it was forgotten (ISO 8601).")
    hostname: str | None = Field(None, description="Host that forgot it.")
    reason: str | None = Field(None, examples=["retention policy", "forget by id", "repair snapshots --forget"])
    unreadable: str | None = Field(None, description="Why the record's content could not be read, if it could not.")


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
    skipped: Skipped | None = None
    original: str | None = Field(None, description="Set on a snapshot written by 'safehold repair snapshots': the "
                                                   "id of the damaged snapshot it replaces.")
    replayed: ForgetRecord | None = Field(None, description="Set when the snapshot was forgotten and is present "
                                                            "again (a rollback of the repository's history): "
                                                            "'latest' and backups skip it, and restores refuse it "
                                                            "(the CLI's 'restore --allow-replayed' overrides).")
    copied_from: dict[str, str] | None = Field(
        None, description="On a snapshot written by 'safehold copy': the source repository id, snapshot id and url.")
    copies: list[str] = Field(default_factory=list,
                              description="Copies (names or urls) this catalog's copy jobs sent the snapshot to.")
    verdict: Verdict | None = Field(None, description="The snapshot's ransomware verdict (docs/ransomware.md).")
    signals: dict[str, float] | None = Field(None, description="The counters of its ransomware signals.")


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
    id: int
    time: dt.datetime
    level: str
    message: str


class JobLog(BaseModel):
    job_id: int
    lines: list[LogLine]


#: A restore destination as the API accepts it: relative (to the server's restore root), without '..'.
RELATIVE_PATH = r"^(?!/)(?!(.*/)?\.\.(/|$))[^\x00]+$"
TARGET = Field(min_length=1, max_length=255, description="Target name from targets.yml.", examples=["web-01"])


class RestoreParams(params.PathRestoreParams):
    """The engine's path restore, narrowed to the server's restore root."""

    # The destination pattern needs look-ahead, which pydantic's default (Rust) regex engine lacks.
    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")

    destination: str = Field(
        max_length=4096, pattern=RELATIVE_PATH, examples=["web-01-2026-11-26"],
        description="Directory (files) or image file to restore into, relative to the server's restore root.")


class ApiLibvirtOptions(options.LibvirtOptions):
    """libvirt options; the images folder is relative to the server's restore root."""

    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")

    images_dir: str | None = Field(None, max_length=4096, pattern=RELATIVE_PATH,
                                   description="Folder for the restored images, relative to the restore root.")


class ApiHypervOptions(options.HypervOptions):
    """Hyper-V options; disks are converted in the server's TMPDIR."""

    model_config = ConfigDict(extra="forbid", strict=True)

    scratch: None = Field(None, description="Not taken over the API (the CLI on the host takes it).")


class PlatformRestoreParams(params.PlatformRestoreParams):
    to: Annotated[ApiLibvirtOptions | options.VmwareOptions | ApiHypervOptions | options.EbsOptions,
                  Field(discriminator="kind")] = Field(description="The platform destination and its options.")


NoParams = params.NoParams
BackupParams = params.BackupParams
CheckParams = params.CheckParams
ForgetParams = params.ForgetParams
MaintenanceParams = params.MaintenanceParams
RepairIndexParams = params.RepairIndexParams
RepairSnapshotsParams = params.RepairSnapshotsParams
DrillParams = params.DrillParams
CopyParams = params.CopyParams
MarkParams = params.MarkParams
ScanParams = params.ScanParams


class BackupJob(_Body):
    """Back up a target into a new snapshot (retention applied after it when configured)."""

    kind: Literal["backup"]
    target: str = TARGET
    params: BackupParams = Field(default_factory=BackupParams)


class RestoreJob(_Body):
    """Restore a target's snapshot: into the server's restore root (`params.destination`), or to a
    platform (`params.to`: libvirt, vmware, hyperv or ebs; a libvirt images_dir lies in the restore root)."""

    kind: Literal["restore"]
    target: str = TARGET
    params: RestoreParams | PlatformRestoreParams


class RestoreTestJob(_Body):
    """Restore the target's newest snapshot into a sandbox, run its health check, record the ART."""

    kind: Literal["restore-test"]
    target: str = TARGET
    params: NoParams = Field(default_factory=NoParams)


class CheckJob(_Body):
    """Verify the repository's structure and, optionally, a share of its data."""

    kind: Literal["check"]
    params: CheckParams = Field(default_factory=CheckParams)


class PruneJob(_Body):
    """Remove data no snapshot references."""

    kind: Literal["prune"]
    params: NoParams = Field(default_factory=NoParams)


class ForgetJob(_Body):
    """Apply retention: one target's, or every target's with retention when no target is given."""

    kind: Literal["forget"]
    target: str | None = Field(None, min_length=1, max_length=255, description="Target name; all when omitted.")
    params: ForgetParams = Field(default_factory=ForgetParams)


class MaintenanceJob(_Body):
    """Extend S3 Object Lock retention on what the kept snapshots need (nothing to do without object_lock)."""

    kind: Literal["maintenance"]
    params: MaintenanceParams = Field(default_factory=MaintenanceParams)


class RepairIndexJob(_Body):
    """Rebuild the index from the pack headers (a lost or damaged index object), under the exclusive lock."""

    kind: Literal["repair-index"]
    params: RepairIndexParams = Field(default_factory=RepairIndexParams)


class RepairSnapshotsJob(_Body):
    """Write damaged snapshots again without the files whose data is missing (or, with read_data, damaged);
    the originals are kept unless params.forget."""

    kind: Literal["repair-snapshots"]
    params: RepairSnapshotsParams = Field(default_factory=RepairSnapshotsParams)


class DrillJob(_Body):
    """Run a disaster-recovery drill (``drills:`` in targets.yml) in sandboxes and write its evidence report."""

    kind: Literal["drill"]
    params: DrillParams


class CopyJob(_Body):
    """Copy a target's snapshots (every target the copy covers when no target is given) to a copy
    named under 'copies:' in targets.yml: only what the destination lacks is sent."""

    kind: Literal["copy"]
    target: str | None = Field(None, min_length=1, max_length=255, description="Target name; all covered when omitted.")
    params: CopyParams


class MarkJob(_Body):
    """Record an operator's ransomware judgement of a snapshot (clean or suspicious): it overrides the
    computed verdict, feeds the target's baseline, and 'clean' ends an alarm. Snapshots are immutable:
    the mark is a record beside it."""

    kind: Literal["mark"]
    target: str = TARGET
    params: MarkParams


class ScanJob(_Body):
    """Recompute a snapshot's ransomware signals and verdict from its data against its parent, and record it."""

    kind: Literal["scan"]
    target: str = TARGET
    params: ScanParams


JobRequest = Annotated[BackupJob | RestoreJob | RestoreTestJob | CheckJob | PruneJob | ForgetJob | MaintenanceJob
                       | RepairIndexJob | RepairSnapshotsJob | DrillJob | CopyJob | MarkJob | ScanJob,
                       Field(discriminator="kind")]


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
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]*[^\s\x00-\x1f][^\x00-\x1f]*$",
                      description="Who or what uses the token (not blank, no control characters).",
                      examples=["grafana"])
    role: Role


class CreatedToken(BaseModel):
    token: Token
    secret: str = Field(description="The token itself. Shown only now: the server keeps only its hash.")
