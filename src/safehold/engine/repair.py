"""Repair jobs: rebuild the index from pack headers, write damaged snapshots again without their damaged files."""

from __future__ import annotations

from ..repository.reindex import RepairIndexReport, repair_index
from ..repository.repair import RepairSnapshotsReport, repair_snapshots
from .context import Context


def repair_index_job(context: Context, *, read_all_packs: bool = False, dry_run: bool = False, wait: float = 0.0,
                     job_id: int | None = None) -> RepairIndexReport:
    """``safehold repair index``: under the exclusive lock (a dry run: shared), read the headers of
    packs no index names and write an index naming every readable pack."""
    details = {"read_all_packs": read_all_packs, "dry_run": dry_run}
    with context.catalog.job("repair-index", details=details, job_id=job_id) as job:
        with context.locked(exclusive=not dry_run, purpose="repair index", wait=wait,
                            load_index=False) as repository:
            report = repair_index(repository, read_all_packs=read_all_packs, dry_run=dry_run,
                                  threads=context.threads_or_default() * 4,
                                  on_progress=lambda message: context.progress(
                                      {"event": "repair-index", "message": message}))
        for damaged in report.index_objects_damaged:
            job.log(f"damaged index object {damaged['name']}: {damaged['reason']}", level="warning")
        for pack in report.packs_added:
            job.log(f"pack {pack} indexed from its header")
        for removed in report.packs_removed:
            job.log(f"pack {removed['pack']}: {removed['reason']}", level="warning")
        for unreadable in report.packs_unreadable:
            job.log(f"pack {unreadable['pack']}: {unreadable['reason']}", level="warning")
        job.log(f"{report.packs_stored} pack(s) stored, {len(report.packs_added)} added to the index, "
                f"{len(report.packs_removed)} removed from it; {report.index_objects_written} index object(s) written, "
                f"{report.index_objects_removed} replaced" + (" (dry run)" if dry_run else ""))
        return report


def repair_snapshots_job(context: Context, snapshot_refs: list[str] | None = None, *, read_data: bool = False,
                         forget_originals: bool = False, dry_run: bool = False, wait: float = 0.0,
                         job_id: int | None = None) -> RepairSnapshotsReport:
    """``safehold repair snapshots``: under a shared lock, like a backup."""
    details = {"snapshots": list(snapshot_refs or []), "read_data": read_data, "forget": forget_originals,
               "dry_run": dry_run}
    with context.catalog.job("repair-snapshots", details=details, job_id=job_id) as job:
        with context.locked(purpose="repair snapshots", wait=wait, load_index=False) as repository:
            chosen = None
            if snapshot_refs:
                chosen, seen = [], set()
                for ref in snapshot_refs:  # every ref resolves before anything is written
                    snapshot = repository.find_snapshot(ref)
                    if snapshot.id not in seen:
                        seen.add(snapshot.id)
                        chosen.append(snapshot)
            report = repair_snapshots(repository, chosen, read_data=read_data, forget_originals=forget_originals,
                                      dry_run=dry_run, threads=context.threads_or_default(),
                                      on_progress=lambda message: context.progress(
                                          {"event": "repair-snapshots", "message": message}))
        for record in report.repaired:
            written = f"as {record.repaired[:8]}" if record.repaired else "(dry run)"
            job.log(f"snapshot {record.original[:8]} repaired {written}: {len(record.dropped)} file(s) dropped"
                    + (f"; {record.stream_damaged}" if record.stream_damaged else ""), level="warning")
            for path in record.dropped:
                job.log(f"  dropped {path}", level="warning")
        for record in report.nothing_left:
            job.log(f"snapshot {record.original[:8]}: {record.note}", level="error")
        job.log(f"{report.snapshots_checked} snapshot(s) checked: {len(report.intact)} intact, "
                f"{len(report.repaired)} repaired, {len(report.nothing_left)} with nothing left, "
                f"{len(report.already_repaired)} repaired before")
        return report
