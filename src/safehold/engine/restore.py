"""Restore jobs: a snapshot to a directory (files) or to an image file or device (images)."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import errors
from ..restore.directory import DirectoryRestorer, open_directory_below, valid_name
from ..restore.image import restore_image
from ..text import printable
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
    #: Device nodes not created and setuid/setgid bits removed (restore with ``special_files`` to keep them).
    special: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def restore_snapshot(context: Context, snapshot_ref: str, destination: str, *, target: str | None = None,
                     includes: list[str] | None = None, overwrite: bool = False,
                     job_id: int | None = None, images_into_directory: bool = False,
                     special_files: bool = False, restore_root: str | None = None) -> RestoreOutcome:
    """Restore; raises RestoreIncomplete (after restoring everything undamaged) if any data was damaged.

    ``job_id``: run as this queued job, already claimed (see engine.jobs).
    ``special_files``: create device nodes and keep setuid/setgid bits (off: skipped and listed).
    ``restore_root``: ``destination`` must lie below this directory (API restores); checked here,
    when the job runs, by walking down from the root without following any link.
    """
    with context.catalog.job("restore", target, {"snapshot": snapshot_ref, "destination": destination},
                             job_id=job_id) as job:
        return restore_in_job(context, job, snapshot_ref, destination, target=target, includes=includes,
                              overwrite=overwrite, images_into_directory=images_into_directory,
                              special_files=special_files, restore_root=restore_root)


def find_snapshot_in_job(context: Context, repository: Repository, job: JobHandle, snapshot_ref: str,
                         target: str | None) -> Snapshot:
    """Resolve the snapshot a restore job works on and record it (and, for 'latest' without a
    target, the snapshot's target) in the job row, so history and metrics name what was restored."""
    snapshot = repository.find_snapshot(snapshot_ref, target)
    job.update(snapshot_id=snapshot.id)
    if target is None:
        context.catalog.update_job(job.id, target=snapshot.target)
    return snapshot


class _Place:
    """Where a restore writes: the directory holding the destination, opened as a descriptor.

    Without a restore root the destination is the operator's own path and is opened as given.
    With one (API restores), the root is opened and every component of the destination below it
    is opened with O_NOFOLLOW|O_DIRECTORY (made if missing): the queue-time check of the API
    cannot see a symlink that an earlier queued restore planted, so the check is this walk, done
    when the job runs, and the restorers write relative to the descriptor it ends on (no
    resolve()-then-use window).
    """

    def __init__(self, destination: str, restore_root: str | None) -> None:
        self.destination = destination
        self.parts: list[bytes] | None = None
        self.root_fd: int | None = None
        if restore_root is not None:
            root = os.path.abspath(restore_root)
            path = os.path.normpath(os.path.join(root, destination))
            relative = os.path.relpath(path, root)
            parts = [] if relative == "." else os.fsencode(relative).split(b"/")
            if not all(valid_name(part) for part in parts):
                raise errors.DestinationError(destination=destination,
                                              detail=f"does not lie inside the restore root {root}")
            try:
                os.makedirs(root, exist_ok=True)
                self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise errors.DestinationError(destination=root, detail=exc.strerror or str(exc)) from exc
            self.parts = parts

    def directory(self) -> int | None:
        """The destination as an open directory below the root (None: use the path)."""
        if self.root_fd is None:
            return None
        return self._walk(self.parts)

    def parent_and_name(self) -> tuple[int | None, str]:
        """For one image: the directory that will hold it (None: use the path) and its name there."""
        if self.root_fd is None:
            return None, self.destination
        if not self.parts:
            raise errors.DestinationError(destination=self.destination, detail="is a directory; give a file name")
        return self._walk(self.parts[:-1]), os.fsdecode(self.parts[-1])

    def _walk(self, parts: list[bytes]) -> int:
        try:
            return open_directory_below(self.root_fd, parts)
        except OSError as exc:
            detail = exc.strerror or str(exc)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                detail = "a component below the restore root is a symlink or not a directory"
            raise errors.DestinationError(destination=self.destination, detail=detail) from exc

    def close(self) -> None:
        if self.root_fd is not None:
            os.close(self.root_fd)


def restore_in_job(context: Context, job: JobHandle, snapshot_ref: str, destination: str, *,
                   target: str | None = None, includes: list[str] | None = None,
                   overwrite: bool = False, images_into_directory: bool = False,
                   special_files: bool = False, restore_root: str | None = None) -> RestoreOutcome:
    """The restore itself, recorded in a job the caller runs (a restore, or a restore test).

    An image snapshot with one disk restores to ``destination`` itself, unless
    ``images_into_directory``; several disks (or that flag) go into it as a directory."""
    started = time.monotonic()
    place = _Place(destination, restore_root)
    try:
        with context.locked(purpose="restore") as repository:
            return _restore(context, job, repository, place, snapshot_ref, target, includes, overwrite,
                            images_into_directory, special_files, started)
    finally:
        place.close()


def _restore(context: Context, job: JobHandle, repository: Repository, place: _Place, snapshot_ref: str,
             target: str | None, includes: list[str] | None, overwrite: bool, images_into_directory: bool,
             special_files: bool, started: float) -> RestoreOutcome:
    destination = place.destination
    snapshot = find_snapshot_in_job(context, repository, job, snapshot_ref, target)
    total = snapshot.summary.get("bytes_total")

    def report(done: int, current: str = "") -> None:
        job.update(bytes_read=done)
        context.progress({"event": "restore", "target": snapshot.target, "bytes_done": done,
                          "bytes_total": total, "current": current})

    damaged: list[str] = []
    warnings: list[str] = []
    special: list[str] = []
    if snapshot.kind == "files":
        directory_fd = place.directory()
        try:
            restorer = DirectoryRestorer(repository, destination, includes=includes, overwrite=overwrite,
                                         threads=context.threads, on_progress=report,
                                         special_files=special_files, destination_fd=directory_fd)
            result = restorer.restore(repository.read_tree(snapshot))
        finally:
            if directory_fd is not None:
                os.close(directory_fd)
        files, written = result.files, result.bytes_written
        damaged, warnings, special = result.damaged, result.warnings, result.special
    else:
        images = list(repository.read_tree(snapshot))
        selected = [i for i in images if not includes or os.fsdecode(i["path"]) in includes]
        if not selected:
            raise errors.PathNotInSnapshot(path=",".join(includes or []), snapshot=snapshot.short_id)
        files = written = 0
        if len(selected) > 1 or images_into_directory:
            directory_fd = _image_directory(place, overwrite)
        else:
            directory_fd = None
        try:
            for item in selected:
                name = os.fsdecode(item["path"])
                if directory_fd is None:  # one image restores to the destination itself
                    parent_fd, path = place.parent_and_name()
                else:
                    # Several go into it as a directory, each under a single-component name: a
                    # crafted snapshot must not write outside it or into a subdirectory of it.
                    if not valid_name(item["path"]):
                        damaged.append(f"{name}: unsafe disk name, not restored")
                        continue
                    parent_fd, path = os.dup(directory_fd), name
                try:
                    result = restore_image(repository, item, path, overwrite=overwrite, threads=context.threads,
                                           on_progress=report, dir_fd=parent_fd, special_files=special_files)
                except errors.DestinationError as exc:
                    if directory_fd is None:
                        raise
                    damaged.append(f"{name}: not restored: {exc.fields.get('detail', exc)}")
                    continue
                finally:
                    if parent_fd is not None:
                        os.close(parent_fd)
                files += 1
                written += result.bytes_written
                special += result.special
                for offset, length in result.damaged_ranges:
                    damaged.append(f"{name}: bytes {offset}-{offset + length - 1}")
        finally:
            if directory_fd is not None:
                os.close(directory_fd)
    # Names come from the snapshot: escaped, so no control sequence reaches a terminal via the log.
    for line in warnings:
        job.log(printable(line), level="warning")
    for line in special:
        job.log(printable(line), level="warning")
    job.update(bytes_read=written, files=files)
    outcome = RestoreOutcome(snapshot.id, snapshot.target, snapshot.kind, destination, files, written,
                             damaged, warnings, time.monotonic() - started, job.id, special)
    if special:
        job.details["special"] = special
    if damaged:
        job.details["damaged"] = damaged
        raise errors.RestoreIncomplete(count=len(damaged), paths=printable(", ".join(damaged[:10])),
                                       outcome=outcome)
    return outcome


def _image_directory(place: _Place, overwrite: bool) -> int:
    """The directory several disk images go into, open; a non-empty one needs ``overwrite``."""
    fd = place.directory()
    if fd is None:
        try:
            os.makedirs(place.destination, exist_ok=True)
            fd = os.open(place.destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise errors.DestinationError(destination=place.destination, detail=exc.strerror or str(exc)) from exc
    if not overwrite and os.listdir(fd):
        os.close(fd)
        raise errors.DestinationError(destination=place.destination, detail="directory is not empty")
    return fd


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
                    concurrent: int = 2, special_files: bool = False) -> RestoreRun:
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
                                overwrite=overwrite, images_into_directory=True, special_files=special_files)

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
