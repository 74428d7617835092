"""Jobs that keep an Object Lock repository immutable: maintenance and the audit.

``run_maintenance`` extends retention on the chains of the snapshots the
retention policies keep (``repository.immutability``). ``audit_immutability``
checks the store's settings, the configured lock against the retention
policies, and that every kept snapshot's chain is locked for long enough; each
finding says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .. import errors
from ..repository.backends import ImmutabilityFactsBackend
from ..repository.immutability import (
    MaintenanceReport,
    chain_of,
    chain_retention,
    extend_retention,
    forget_records_retention,
    repository_objects_retention,
    verdict_records_retention,
)
from ..repository.prune import plan_forget
from ..repository.retention import RetentionPolicy
from .context import Context
from .maintenance import policies_from_config

DEFAULT_MIN_REMAINING = timedelta(days=1)


def run_maintenance(context: Context, renew_within: timedelta | None = None, *,
                    job_id: int | None = None) -> MaintenanceReport:
    """Extend retention where it ends within ``renew_within`` (default: half the lock period).

    ``job_id``: run as that queued job, already claimed (``engine.jobs.run_job``).
    """
    with context.catalog.job("maintenance", details={"renew_within_s": renew_within and renew_within.total_seconds()},
                             job_id=job_id) as job:
        # Shared lock: extending retention never conflicts with backups; prune waits for us.
        with context.locked(purpose="maintenance", load_index=False) as repository:
            decisions = plan_forget(repository, policies_from_config(context))
            kept = [d.snapshot for d in decisions if d.keep]
            report = extend_retention(repository, kept, renew_within)
        if not report.retention_enabled:
            job.log("the repository has no object_lock: nothing to extend")
        else:
            extended = sum(report.objects_extended.values())
            job.log(f"checked {report.objects_checked} object(s) of {report.snapshots_kept} kept snapshot(s); "
                    f"extended {extended} to {report.retained_until or '-'}")
            for name in report.missing:
                job.log(f"{name} is missing (run 'safehold check')", level="error")
        # The outcome in the job's row too, so API clients read it without parsing log lines.
        job.details.update({key: value for key, value in report.as_dict().items() if key != "missing"})
        return report


@dataclass
class Finding:
    level: str  # "error" (the audit fails), "warning" (weaker than it should be) or "info"
    check: str
    message: str
    fix: str = ""


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    snapshots_kept: int = 0
    objects_checked: int = 0
    earliest_until: str | None = None

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def add(self, level: str, check: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(level, check, message, fix))

    def as_dict(self) -> dict:
        return {"ok": self.ok, "snapshots_kept": self.snapshots_kept, "objects_checked": self.objects_checked,
                "earliest_until": self.earliest_until, "findings": [dict(f.__dict__) for f in self.findings]}


def policy_horizon(policy: RetentionPolicy) -> timedelta | None:
    """About how long the policy keeps a snapshot; None when only keep_last bounds it (no time limit)."""
    spans = [timedelta(hours=policy.keep_hourly or 0), timedelta(days=policy.keep_daily or 0),
             timedelta(weeks=policy.keep_weekly or 0), timedelta(days=31 * (policy.keep_monthly or 0)),
             timedelta(days=366 * (policy.keep_yearly or 0)), policy.keep_within or timedelta(0)]
    longest = max(spans)
    return longest if longest > timedelta(0) else None


def audit_immutability(context: Context, min_remaining: timedelta = DEFAULT_MIN_REMAINING,
                       now: datetime | None = None) -> AuditReport:
    """Raises ImmutabilityAuditFailed (carrying the report) when any finding is an error."""
    now = now or datetime.now(timezone.utc)
    report = AuditReport()
    configured = context.config.repository
    with context.catalog.job("audit-immutability") as job:
        if configured.scheme != "s3":
            report.add("error", "store", f"{configured.url} is a local repository: nothing stops its files from "
                       "being deleted by anyone who can write there",
                       "keep a copy in an S3 bucket with Object Lock (repository.url: s3://bucket/prefix with "
                       "object_lock)")
            return _finish(report, job)
        lock = configured.object_lock
        if lock is None:
            report.add("error", "configuration", "repository.object_lock is not set: objects are written without "
                       "retention and safehold's own credentials could delete every backup",
                       "add 'object_lock: {mode: COMPLIANCE, days: 30}' under repository in targets.yml, then run "
                       "'safehold maintenance' to lock what is already stored")
        repository = context.open_repository(load_index=False)
        backend = repository.backend
        facts = backend.immutability_facts() if isinstance(backend, ImmutabilityFactsBackend) else {}
        bucket = backend.bucket if isinstance(backend, ImmutabilityFactsBackend) else "BUCKET"
        if not facts.get("object_lock_enabled"):
            report.add("error", "bucket", f"{facts.get('store', 'the store')} does not have Object Lock enabled, "
                       "so retention cannot be set",
                       f"aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled && "
                       f"aws s3api put-object-lock-configuration --bucket {bucket} --object-lock-configuration "
                       "ObjectLockEnabled=Enabled")
        if facts.get("versioning") != "Enabled":
            report.add("error", "bucket", f"versioning of {facts.get('store', 'the store')} is "
                       f"{facts.get('versioning', 'unknown')}: overwritten or deleted objects are lost",
                       f"aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled")
        if lock is not None and lock.mode == "GOVERNANCE":
            report.add("warning", "mode", "GOVERNANCE mode: any credential allowed s3:BypassGovernanceRetention can "
                       "delete locked backups", "set object_lock.mode: COMPLIANCE, and deny "
                       "s3:BypassGovernanceRetention in the bucket policy (deploy/iam/repository-bucket-policy.json)")
        if facts and facts.get("noncurrent_version_expiration_days") is None:
            report.add("warning", "lifecycle", "no lifecycle rule expires noncurrent versions: objects prune deletes "
                       "stay stored (and billed) forever as hidden versions",
                       "add a lifecycle rule with NoncurrentVersionExpiration (e.g. 7 days) and "
                       f"AbortIncompleteMultipartUpload to bucket {bucket}")
        if lock is not None:
            _audit_policies(context, report, timedelta(days=lock.days), min_remaining)
        with context.locked(purpose="audit-immutability", load_index=False) as locked:
            decisions = plan_forget(locked, policies_from_config(context))
            kept = [d.snapshot for d in decisions if d.keep]
            report.snapshots_kept = len(kept)
            chain = chain_of(locked, kept)
            retention = chain_retention(locked, chain) if lock is not None else {}
            essentials = repository_objects_retention(locked) if lock is not None else {}
            records = forget_records_retention(locked) if lock is not None else {}
            verdicts = verdict_records_retention(locked, kept) if lock is not None else {}
        report.objects_checked = len(retention) + len(essentials) + len(records) + len(verdicts)
        if chain.unindexed_packs:
            report.add("error", "chain", f"{len(chain.unindexed_packs)} pack(s) used by kept snapshots are in no "
                       "index object", "run 'safehold check' and repair the repository")
        if lock is not None:
            _audit_repository_objects(report, essentials, now, min_remaining, lock.days)
            _audit_chains(report, chain, retention, now, min_remaining, lock.days)
            _audit_forget_records(report, records, now, min_remaining, lock.days)
            _audit_verdict_records(report, verdicts, now, min_remaining, lock.days)
        return _finish(report, job)


def _audit_policies(context: Context, report: AuditReport, lock_period: timedelta, min_remaining: timedelta) -> None:
    policies = policies_from_config(context)
    for target in context.config.targets:
        policy = policies.get(target.name)
        horizon = None if policy is None else policy_horizon(policy)
        if horizon is None:
            report.add("info", "policy", f"target {target.name}: snapshots are kept without a time limit, so "
                       "their data stays locked only while 'safehold maintenance' keeps extending it",
                       f"schedule 'safehold maintenance' at least every {_days(lock_period - min_remaining)}")
        elif horizon > lock_period:
            report.add("info", "policy", f"target {target.name}: snapshots are kept up to about {_days(horizon)}, "
                       f"longer than the {_days(lock_period)} lock; 'safehold maintenance' must extend it",
                       f"schedule 'safehold maintenance' at least every {_days(lock_period - min_remaining)}, or "
                       f"raise object_lock.days to {horizon.days + 1}")
        else:
            report.add("info", "policy", f"target {target.name}: the {_days(lock_period)} lock covers the retention "
                       f"policy (snapshots kept up to about {_days(horizon)}); forgotten snapshots stay until their "
                       "lock ends")


def _audit_repository_objects(report: AuditReport, retention: dict, now: datetime, min_remaining: timedelta,
                              days: int) -> None:
    """The config and the key files: without them no locked object can be read, so an unlocked one
    lets stolen credentials destroy every backup (delete it, wait for the old version to expire)."""
    unlocked = sorted(_object_label(kind, name) for (kind, name), until in retention.items()
                      if until is None or until <= now)
    short = sorted(_object_label(kind, name) for (kind, name), until in retention.items()
                   if until is not None and now < until < now + min_remaining)
    if unlocked:
        report.add("error", "keys", f"{len(unlocked)} object(s) every backup needs to be read are not locked: "
                   f"{', '.join(unlocked[:10])}" + (" ..." if len(unlocked) > 10 else "")
                   + "; deleting them would make every locked backup unreadable once their old versions expire",
                   "run 'safehold maintenance' now (it locks them for object_lock.days) and schedule it daily")
    if short:
        report.add("error", "keys", f"the config or key files are locked for less than {_days(min_remaining)}: "
                   f"{', '.join(short[:10])}",
                   f"run 'safehold maintenance' and schedule it at least every {max(1, days // 2)} day(s)")
    if retention and not unlocked and not short:
        earliest = min(until for until in retention.values() if until is not None)
        report.add("info", "keys", f"the config and {len(retention) - 1} key file(s) are locked until at least "
                   f"{earliest.isoformat(timespec='seconds')}")


def _audit_forget_records(report: AuditReport, retention: dict[str, datetime | None], now: datetime,
                          min_remaining: timedelta, days: int) -> None:
    """Forget records flag a forgotten snapshot that is put back (a rollback); deleting one hides the
    replay, so each must stay locked (maintenance extends them all, whatever the policy keeps)."""
    _audit_record_locks(report, retention, now, min_remaining, days, check="forgotten", records="forget record(s)",
                        unlocked_risk="deleting one would let a forgotten snapshot put back pass as live (a "
                                      "rollback nobody notices)", locked="forget record(s)")


def _audit_verdict_records(report: AuditReport, retention: dict[str, datetime | None], now: datetime,
                           min_remaining: timedelta, days: int) -> None:
    """Verdict records of kept snapshots (marks, scans) decide latest-clean; deleting one could make
    an encrypted snapshot a restore point again, so each must stay locked as long as its snapshot."""
    _audit_record_locks(report, retention, now, min_remaining, days, check="verdicts",
                        records="verdict record(s) of kept snapshots",
                        unlocked_risk="deleting an operator's 'mark suspicious' would make that snapshot a restore "
                                      "point again", locked="verdict record(s)")


def _audit_record_locks(report: AuditReport, retention: dict[str, datetime | None], now: datetime,
                        min_remaining: timedelta, days: int, *, check: str, records: str, unlocked_risk: str,
                        locked: str) -> None:
    """One audit of the object locks of a folder of small records (``check`` is the folder)."""
    if not retention:
        return
    unlocked = sorted(name for name, until in retention.items() if until is None or until <= now)
    short = sorted(name for name, until in retention.items() if until is not None and now < until < now + min_remaining)

    def listed(names: list[str]) -> str:
        return ", ".join(f"{check}/{name[:8]}" for name in names[:10]) + (" ..." if len(names) > 10 else "")

    if unlocked:
        report.add("error", check, f"{len(unlocked)} {records} are not locked: {listed(unlocked)}; {unlocked_risk}",
                   "run 'safehold maintenance' now (it locks them for object_lock.days) and schedule it daily")
    if short:
        report.add("warning", check, f"{len(short)} {locked} are locked for less than {_days(min_remaining)}: "
                   + listed(short), f"run 'safehold maintenance' and schedule it at least every {max(1, days // 2)} "
                   "day(s)")
    if not unlocked and not short:
        earliest = min(until for until in retention.values() if until is not None)
        report.add("info", check, f"{len(retention)} {records} are locked until at least "
                   f"{earliest.isoformat(timespec='seconds')}")


def _object_label(kind, name: str) -> str:
    return "config" if kind.value == "config" else f"{kind.value}/{name[:8]}"


def _audit_chains(report: AuditReport, chain, retention: dict, now: datetime, min_remaining: timedelta,
                  days: int) -> None:
    short: dict[str, int] = {}
    unlocked: dict[str, int] = {}
    earliest: datetime | None = None
    for (kind, _name), until in retention.items():
        if until is None or until <= now:
            unlocked[kind.value] = unlocked.get(kind.value, 0) + 1
        elif until < now + min_remaining:
            short[kind.value] = short.get(kind.value, 0) + 1
        if until is not None:
            earliest = until if earliest is None else min(earliest, until)
    report.earliest_until = earliest.isoformat(timespec="seconds") if earliest else None
    if unlocked:
        report.add("error", "chain", "objects that kept snapshots need are not locked: "
                   + ", ".join(f"{count} {kind}" for kind, count in sorted(unlocked.items())),
                   "run 'safehold maintenance' now (it locks them for object_lock.days) and schedule it daily")
    if short:
        report.add("error", "chain", f"objects that kept snapshots need are locked for less than "
                   f"{_days(min_remaining)}: " + ", ".join(f"{count} {kind}" for kind, count in sorted(short.items())),
                   f"run 'safehold maintenance' and schedule it at least every {max(1, days // 2)} day(s)")
    if not unlocked and not short and retention:
        report.add("info", "chain", f"every object of {len(chain.snapshots)} kept snapshot(s) is locked until at "
                   f"least {report.earliest_until}")


def _finish(report: AuditReport, job) -> AuditReport:
    for finding in report.findings:
        job.log(f"{finding.check}: {finding.message}", level=finding.level)
    if not report.ok:
        raise errors.ImmutabilityAuditFailed(count=sum(f.level == "error" for f in report.findings), report=report)
    return report


def _days(value: timedelta) -> str:
    days = value.total_seconds() / 86400
    return f"{days:g} day(s)" if days >= 1 else f"{value.total_seconds() / 3600:g} hour(s)"
