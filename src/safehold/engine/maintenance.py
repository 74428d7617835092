"""Repository maintenance jobs: init, check, forget, prune, unlock, keys."""

from __future__ import annotations

from dataclasses import dataclass

from .. import errors
from ..repository import Repository
from ..repository.check import CheckReport, check
from ..repository.locks import LockInfo, remove_locks
from ..repository.prune import (
    ForgetDecision,
    PruneReport,
    forget,
    hold_retained_snapshots,
    plan_forget,
    plan_forget_ids,
    prune,
)
from ..repository.retention import RetentionPolicy
from .context import Context


def init_repository(context: Context) -> dict:
    with context.catalog.job("init") as job:
        repository = Repository.init(context.backend(), context.password(new=True))
        job.log(f"created repository {repository.id} at {repository.backend.url}")
        return {"id": repository.id, "url": repository.backend.url}


def check_repository(context: Context, read_data_percent: float = 0.0, *, job_id: int | None = None) -> CheckReport:
    """Raises CheckFailed (carrying the report) when anything is wrong."""
    with context.catalog.job("check", details={"read_data_percent": read_data_percent}, job_id=job_id) as job:
        with context.locked(purpose="check", load_index=False) as repository:
            report = check(repository, read_data_percent,
                           on_progress=lambda done, total: context.progress(
                               {"event": "check", "packs_done": done, "packs_total": total}))
        job.update(bytes_read=report.bytes_read)
        job.log(f"checked {report.snapshots} snapshot(s), {report.packs} pack(s), {report.blobs} blob(s); "
                f"read and verified {report.packs_read} pack(s), {report.bytes_read} bytes")
        for line in report.errors:
            job.log(line, level="error")
        for damaged in report.damaged_packs:
            job.log(f"damaged pack {damaged.pack}: {damaged.reason}; snapshots {', '.join(damaged.snapshots)}",
                    level="error")
        if not report.ok:
            raise errors.CheckFailed(count=len(report.errors) + len(report.damaged_packs), report=report)
        return report


def policies_from_config(context: Context, override: RetentionPolicy | None = None,
                         target: str | None = None) -> dict[str, RetentionPolicy]:
    policies: dict[str, RetentionPolicy] = {}
    for configured in context.config.targets:
        if target is not None and configured.name != target:
            continue
        if override is not None:
            policies[configured.name] = override
        elif configured.retention is not None:
            policies[configured.name] = RetentionPolicy.from_config(configured.retention)
    if target is not None and target not in policies and override is not None:
        policies[target] = override  # snapshots of a target no longer in the configuration
    return policies


@dataclass
class ForgetOutcome:
    decisions: list[ForgetDecision]
    removed: list[str]
    prune: PruneReport | None
    dry_run: bool


def forget_snapshots(context: Context, *, target: str | None = None, override: RetentionPolicy | None = None,
                     dry_run: bool = False, and_prune: bool = False, wait: float = 0.0,
                     job_id: int | None = None, snapshot_ids: list[str] | None = None) -> ForgetOutcome:
    """Forget by the retention policies, or (``snapshot_ids``: ids, prefixes) exactly the snapshots named."""
    if snapshot_ids and (target is not None or override is not None):
        raise errors.UsageError("name snapshots, or give --target/--keep-* rules, not both")
    if target is not None and override is None:
        context.config.target(target)  # a clear error for a typo
    policies = policies_from_config(context, override, target)
    details = {"dry_run": dry_run} | ({"snapshots": list(snapshot_ids)} if snapshot_ids else {})
    with context.catalog.job("forget", target, details, job_id=job_id) as job:
        exclusive = and_prune and not dry_run
        with context.locked(exclusive=exclusive, purpose="forget", wait=wait, load_index=False) as repository:
            if snapshot_ids:
                decisions = plan_forget_ids(repository, snapshot_ids)
            else:
                decisions = plan_forget(repository, policies)
            if target is not None:
                decisions = [d for d in decisions if d.snapshot.target == target]
            if dry_run:
                hold_retained_snapshots(repository, decisions)
            reason = "forget by id" if snapshot_ids else "retention policy"
            removed = [] if dry_run else [s.id for s in forget(repository, decisions, reason)]
            for snapshot_id in removed:
                job.log(f"forgot snapshot {snapshot_id[:8]}")
            report = None
            if and_prune and not dry_run:
                report = prune(repository)
        return ForgetOutcome(decisions, removed, report, dry_run)


def prune_repository(context: Context, *, dry_run: bool = False, wait: float = 0.0,
                     job_id: int | None = None) -> PruneReport:
    with context.catalog.job("prune", details={"dry_run": dry_run}, job_id=job_id) as job:
        with context.locked(exclusive=not dry_run, purpose="prune", wait=wait, load_index=False) as repository:
            report = prune(repository, dry_run=dry_run,
                           on_progress=lambda message: context.progress({"event": "prune", "message": message}))
        job.log(f"deleted {report.packs_deleted + report.unindexed_packs_deleted} pack(s), "
                f"repacked {report.packs_repacked}, freed {report.bytes_freed} bytes")
        return report


def unlock_repository(context: Context, remove_all: bool = False) -> list[LockInfo]:
    with context.catalog.job("unlock", details={"remove_all": remove_all}) as job:
        repository = context.open_repository(load_index=False)
        removed = remove_locks(repository, all_locks=remove_all)
        for lock in removed:
            job.log(f"removed lock of {lock.describe()}")
        return removed


def add_key(context: Context, new_password: bytes) -> str:
    with context.catalog.job("key", details={"action": "add"}):
        return context.open_repository(load_index=False).add_key(new_password)


def list_keys(context: Context) -> list[dict]:
    return context.open_repository(load_index=False).list_keys()


def remove_key(context: Context, key_id: str) -> str:
    return remove_key_reporting_lock(context, key_id)[0]


def remove_key_reporting_lock(context: Context, key_id: str) -> tuple[str, str | None]:
    """Remove a key file; returns its name and, under Object Lock, until when its hidden locked version
    stays stored (ISO time; None without a lock). Raises KeyRetained when these credentials may not
    delete key files."""
    with context.catalog.job("key", details={"action": "remove"}) as job:
        repository = context.open_repository(load_index=False)
        if len(repository.list_keys()) == 1:
            raise errors.LastKey(key_id=repository.key_name[:8])
        if repository.key_name.startswith(key_id):
            raise errors.UsageError(
                f"key {key_id} is the one this password opened; remove it with another key's password")
        matches = [k["id"] for k in repository.list_keys() if k["id"].startswith(key_id)]
        until = repository.key_retained_until(matches[0]) if len(matches) == 1 else None
        name = repository.remove_key(key_id)
        stays = until.isoformat(timespec="seconds") if until is not None else None
        if stays:
            job.log(f"key {name[:8]} hidden; its Object Lock keeps the stored version until {stays}")
        return name, stays


def change_password(context: Context, new_password: bytes) -> str:
    """Add a key for the new password, then remove the one the old password opened."""
    with context.catalog.job("key", details={"action": "passwd"}):
        return context.open_repository(load_index=False).change_password(new_password)
