"""Restore jobs: a snapshot to a directory (files) or to an image file or device (images)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import errors
from ..restore.directory import DirectoryRestorer
from ..restore.image import restore_image
from .context import Context

if TYPE_CHECKING:
    from ..catalog import JobHandle
    from ..repository import Repository, Snapshot


@dataclass
class RestoreOutcome:
    snapshot_id: str
    target: str
    kind: str
    destination: str
    files: int
    bytes_written: int
    damaged: list[str]
    warnings: list[str]
    duration: float
    job_id: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def restore_snapshot(context: Context, snapshot_ref: str, destination: str, *, target: str | None = None,
                     includes: list[str] | None = None, overwrite: bool = False,
                     job_id: int | None = None) -> RestoreOutcome:
    """Restore; raises RestoreIncomplete (after restoring everything undamaged) if any data was damaged.

    ``job_id``: run as this queued job, already claimed (see engine.jobs).
    """
    with context.catalog.job("restore", target, {"snapshot": snapshot_ref, "destination": destination},
                             job_id=job_id) as job:
        return restore_in_job(context, job, snapshot_ref, destination, target=target, includes=includes,
                              overwrite=overwrite)


def find_snapshot_in_job(context: Context, repository: Repository, job: JobHandle, snapshot_ref: str,
                         target: str | None) -> Snapshot:
    """Resolve the snapshot a restore job works on and record it (and, for 'latest' without a
    target, the snapshot's target) in the job row, so history and metrics name what was restored."""
    snapshot = repository.find_snapshot(snapshot_ref, target)
    job.update(snapshot_id=snapshot.id)
    if target is None:
        context.catalog.update_job(job.id, target=snapshot.target)
    return snapshot


def restore_in_job(context: Context, job: JobHandle, snapshot_ref: str, destination: str, *,
                   target: str | None = None, includes: list[str] | None = None,
                   overwrite: bool = False) -> RestoreOutcome:
    """The restore itself, recorded in a job the caller runs (a restore, or a restore test)."""
    started = time.monotonic()
    with context.locked(purpose="restore") as repository:
        snapshot = find_snapshot_in_job(context, repository, job, snapshot_ref, target)
        total = snapshot.summary.get("bytes_total")

        def report(done: int, current: str = "") -> None:
            job.update(bytes_read=done)
            context.progress({"event": "restore", "bytes_done": done, "bytes_total": total, "current": current})

        damaged: list[str] = []
        warnings: list[str] = []
        if snapshot.kind == "files":
            restorer = DirectoryRestorer(repository, destination, includes=includes, overwrite=overwrite,
                                         threads=context.threads, on_progress=report)
            result = restorer.restore(repository.read_tree(snapshot))
            files, written = result.files, result.bytes_written
            damaged, warnings = result.damaged, result.warnings
        else:
            images = list(repository.read_tree(snapshot))
            selected = [i for i in images if not includes or os.fsdecode(i["path"]) in includes]
            if not selected:
                raise errors.PathNotInSnapshot(path=",".join(includes or []), snapshot=snapshot.short_id)
            files = written = 0
            for item in selected:
                # One image restores to the destination itself; several go into it as a directory.
                path = destination
                if len(selected) > 1:
                    os.makedirs(destination, exist_ok=True)
                    path = os.path.join(destination, os.fsdecode(item["path"]))
                result = restore_image(repository, item, path, overwrite=overwrite, threads=context.threads,
                                       on_progress=report)
                files += 1
                written += result.bytes_written
                for offset, length in result.damaged_ranges:
                    damaged.append(f"{os.fsdecode(item['path'])}: bytes {offset}-{offset + length - 1}")
        for line in warnings:
            job.log(line, level="warning")
        job.update(bytes_read=written, files=files)
        outcome = RestoreOutcome(snapshot.id, snapshot.target, snapshot.kind, destination, files, written,
                                 damaged, warnings, time.monotonic() - started, job.id)
        if damaged:
            job.details["damaged"] = damaged
            raise errors.RestoreIncomplete(count=len(damaged), paths=", ".join(damaged[:10]),
                                           outcome=outcome)
        return outcome
