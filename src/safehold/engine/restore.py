"""Restore jobs: a snapshot to a directory (files) or to an image file or device (images)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import errors
from ..restore.directory import DirectoryRestorer, safe_relative_path
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
                     job_id: int | None = None, images_into_directory: bool = False) -> RestoreOutcome:
    """Restore; raises RestoreIncomplete (after restoring everything undamaged) if any data was damaged.

    ``job_id``: run as this queued job, already claimed (see engine.jobs).
    """
    with context.catalog.job("restore", target, {"snapshot": snapshot_ref, "destination": destination},
                             job_id=job_id) as job:
        return restore_in_job(context, job, snapshot_ref, destination, target=target, includes=includes,
                              overwrite=overwrite, images_into_directory=images_into_directory)


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
                   overwrite: bool = False, images_into_directory: bool = False) -> RestoreOutcome:
    """The restore itself, recorded in a job the caller runs (a restore, or a restore test).

    An image snapshot with one disk restores to ``destination`` itself, unless
    ``images_into_directory``; several disks (or that flag) go into it as a directory."""
    started = time.monotonic()
    with context.locked(purpose="restore") as repository:
        snapshot = find_snapshot_in_job(context, repository, job, snapshot_ref, target)
        total = snapshot.summary.get("bytes_total")

        def report(done: int, current: str = "") -> None:
            job.update(bytes_read=done)
            context.progress({"event": "restore", "target": snapshot.target, "bytes_done": done,
                              "bytes_total": total, "current": current})

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
                if len(selected) > 1 or images_into_directory:
                    name = os.fsdecode(item["path"])
                    if not safe_relative_path(item["path"]):  # a crafted snapshot must not write outside
                        damaged.append(f"{name}: unsafe disk name, not restored")
                        continue
                    os.makedirs(destination, exist_ok=True)
                    path = os.path.join(destination, name)
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


@dataclass
class RestoreRun:
    """What ``restore_targets`` did: an outcome per restored target, the failures, and the
    targets that had no snapshot to restore."""

    destination: str
    results: list[RestoreOutcome] = field(default_factory=list)
    failures: dict[str, errors.SafeholdError] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # target -> why nothing was restored
    duration: float = 0.0

    def as_dict(self) -> dict:
        return {"destination": self.destination, "results": [r.as_dict() for r in self.results],
                "failures": {name: _failure(exc) for name, exc in self.failures.items()},
                "skipped": self.skipped, "duration": self.duration}


def _failure(exc: errors.SafeholdError) -> dict:
    found = exc.as_dict()
    if isinstance(exc, errors.RestoreIncomplete):  # what did restore is worth knowing too
        found["outcome"] = exc.fields["outcome"].as_dict()
    return found


def restore_targets(context: Context, destination: str, names: list[str], *, overwrite: bool = False,
                    concurrent: int = 2) -> RestoreRun:
    """Restore the newest snapshot of each named target into ``destination/<target>``.

    This is the disaster-recovery case, "bring the whole estate back", in one process: the key
    is derived once, and up to ``concurrent`` targets restore side by side, each with its own
    pool of ``context.threads`` workers, so the cores stay busy while one target's main thread
    walks its tree between files. Every target is its own restore job in the catalog. A target
    that fails (damaged data, a full disk) does not stop the others; a target without any
    snapshot, or whose snapshots hold no data in the repository (EBS with ``copy_blocks: false``),
    is reported as skipped, with the reason, not as an error.
    """
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    run = RestoreRun(destination=os.path.abspath(destination))
    for name in names:
        context.config.target(name)  # unknown names fail before anything is written
    if os.path.exists(destination) and not os.path.isdir(destination):
        raise errors.DestinationError(destination=destination, detail="exists and is not a directory")
    with context.locked(purpose="restore", load_index=False) as repository:
        # One listing for every target (each 'latest:NAME' would list all snapshots again); this
        # also derives the key, once, before the threads start.
        newest: dict[str, Snapshot] = {}
        for snapshot in repository.list_snapshots():
            newest[snapshot.target] = snapshot
    wanted = []
    for name in names:
        snapshot = newest.get(name)
        if snapshot is None:
            run.skipped[name] = "no snapshot yet"
        elif (snapshot.source or {}).get("blocks_copied") is False:
            run.skipped[name] = ("its EBS snapshots are not copied into the repository (copy_blocks: false); "
                                 "restore one with 'safehold restore --snapshot-id snap-... --destination-instance i-...'")
        else:
            wanted.append((name, snapshot.id))
    context.catalog  # opened here, not by the first two threads at once

    def one(name: str, snapshot_id: str) -> RestoreOutcome:
        return restore_snapshot(context, snapshot_id, os.path.join(destination, name), target=name,
                                overwrite=overwrite, images_into_directory=True)

    with ThreadPoolExecutor(max(1, concurrent), thread_name_prefix="safehold-target") as pool:
        futures = {name: pool.submit(one, name, snapshot_id) for name, snapshot_id in wanted}
        for name, future in futures.items():
            try:
                run.results.append(future.result())
            except errors.SafeholdError as exc:
                if exc.bug:
                    raise
                run.failures[name] = exc
    run.duration = time.monotonic() - started
    return run
