"""The restore job: a snapshot to any destination (``restore.base.Destination``), for the CLI, the
API and queue, the scheduler and restore tests alike.

find the snapshot -> ``destination.plan`` (nothing written yet) -> ``write`` -> ``commit``; any
failure after ``plan`` calls ``rollback``. The destination is named by a spec (``{"kind": ...,
options}``, validated by ``restore.options``) or, for a directory or an image, by a plain path
whose kind follows from the snapshot. What a destination needs of the configuration (how to
reach vCenter, the Hyper-V host, AWS) is resolved here, never by the destination.
"""

from __future__ import annotations

import errno
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import errors
from ..repository.forgotten import forgotten_names, live_snapshots, replayed_records
from ..restore.base import Destination, PlatformSnapshots, RestoreReport, SnapshotInfo, destination_class
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
    #: The destination kind (directory, image, libvirt, vmware, hyperv, ebs) and its own facts.
    to: str = "directory"
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def restore_snapshot(context: Context, snapshot_ref: str, destination: str | dict, *, target: str | None = None,
                     includes: list[str] | None = None, overwrite: bool = False,
                     job_id: int | None = None, images_into_directory: bool = False,
                     special_files: bool = False, restore_root: str | None = None,
                     allow_replayed: bool = False, repository: Repository | None = None,
                     resolved: Snapshot | None = None) -> RestoreOutcome:
    """Restore; raises RestoreIncomplete (after restoring everything undamaged) if any data was damaged.

    A snapshot that was forgotten and is present again (replayed) is refused (SnapshotReplayed)
    unless ``allow_replayed``: its object was copied back, by accident or to roll history back.

    ``destination``: a path (a directory for files, an image file, or a directory for several
    images; ``includes``, ``overwrite``, ``images_into_directory`` and ``special_files`` apply to
    it) or a destination spec such as ``{"kind": "libvirt", "images_dir": ..., "define": ...}``.
    ``job_id``: run as this queued job, already claimed (see engine.jobs).
    ``restore_root``: a path destination must lie below this directory (API restores); checked
    here, when the job runs, by walking down from the root without following any link.
    ``repository``: an open repository whose lock the caller holds, index loaded ('restore --all':
    one open, one lock and one index for every target); without it the restore opens and locks its own.
    ``resolved``: the snapshot ``snapshot_ref`` names, already loaded from ``repository`` under the
    caller's lock and known not to be replayed ('restore --all' listed them all once): its listing,
    object and forget records are not read again.
    """
    spec = _spec(destination, includes, overwrite, images_into_directory, special_files)
    _refuse_secrets(spec)
    details = {"snapshot": snapshot_ref, "destination": describe(spec)}
    if "kind" in spec:
        details["to"] = spec
    with ThreadPoolExecutor(1, thread_name_prefix="safehold-open") as ahead:
        opening = _open_ahead(context, repository, ahead)
        # context.jobs: sqlite3 instead of SQLAlchemy when the SQLite catalog is current (catalog/light.py).
        with context.jobs.job("restore", target, details, job_id=job_id) as job:
            # Waited for; on an error the restore opens the repository itself and raises it again, in the job.
            opened = opening.result() if opening is not None and opening.exception() is None else None
            if opened is None:
                return restore_in_job(context, job, snapshot_ref, spec, target=target, restore_root=restore_root,
                                      allow_replayed=allow_replayed, repository=repository, resolved=resolved)
            with context.locked(purpose="restore", load_index=False, opened=opened) as locked:
                return restore_in_job(context, job, snapshot_ref, spec, target=target, restore_root=restore_root,
                                      allow_replayed=allow_replayed, repository=locked)


def _open_ahead(context: Context, repository: Repository | None, pool: ThreadPoolExecutor) -> Any:
    """Open the repository (its round trips and the key derivation) while the catalog opens and
    records the job (``Context.open_ahead``); the restore then locks this opened repository (one
    S3 client, one open) inside its job. None when a repository was given or the key is unwrapped."""
    return None if repository is not None else context.open_ahead(pool)


def _refuse_secrets(spec: dict) -> None:
    """A password in a destination DSN is refused before anything records the spec (the job row)."""
    if spec.get("kind") == "postgres" and isinstance(spec.get("to_dsn"), str):
        from ..platforms.postgres.connection import dsn_has_password

        if dsn_has_password(spec["to_dsn"]):
            raise errors.UsageError("the destination DSN holds a password; remove it and pass the password in "
                                    "the environment variable named by --password-env (or a libpq passfile)")


def _spec(destination: str | dict, includes: list[str] | None, overwrite: bool, images_into_directory: bool,
          special_files: bool) -> dict:
    if isinstance(destination, dict):
        return dict(destination)
    if destination.startswith("ssh://"):
        return {"kind": "ssh", "url": destination, "includes": list(includes or []), "overwrite": overwrite,
                "special_files": special_files}
    return {"path": destination, "includes": list(includes or []), "overwrite": overwrite,
            "special_files": special_files, "into_directory": images_into_directory}


def describe(spec: dict) -> str:
    """The destination in one phrase, for the job row and messages."""
    kind = spec.get("kind")
    if kind in (None, "directory", "image"):
        return spec["path"]
    if kind == "libvirt":
        return f"libvirt:{spec.get('define') or spec.get('replace') or spec.get('images_dir')}"
    if kind == "vmware":
        return f"vmware:{spec.get('new_vm') or spec.get('vm')}"
    if kind == "hyperv":
        return f"hyperv:{spec.get('name')}"
    if kind == "ebs":
        return f"instance {spec.get('instance')}"
    if kind == "ec2":
        return f"a new EC2 instance in {spec.get('region') or 'the default region'}"
    if kind == "postgres":
        if spec.get("data_dir"):
            return f"postgres data directory {spec['data_dir']}"
        return f"postgres:{spec.get('to_dsn')}" + (f" database {spec['database']}" if spec.get("database") else "")
    if kind == "command":
        return f"command:{spec.get('run')}"
    if kind == "ssh":
        return str(spec.get("url"))
    return str(kind)


def find_snapshot_in_job(context: Context, repository: Repository, job: JobHandle, snapshot_ref: str,
                         target: str | None, allow_replayed: bool = False,
                         resolved: Snapshot | None = None) -> Snapshot:
    """Resolve the snapshot a restore job works on and record it (and, for 'latest' without a
    target, the snapshot's target) in the job row, so history and metrics name what was restored.
    ``resolved``: see ``restore_snapshot`` (taken only when it is the snapshot ``snapshot_ref`` names)."""
    if resolved is not None and resolved.id == snapshot_ref and (target is None or resolved.target == target):
        snapshot, replayed = resolved, {}  # listed without the replayed ones, under the same lock
    else:
        snapshot = repository.find_snapshot(snapshot_ref, target)
        replayed = replayed_records(repository, [snapshot])
    if snapshot.id in replayed:
        record = replayed[snapshot.id]
        if not allow_replayed:
            raise errors.SnapshotReplayed(snapshot=snapshot.short_id, record=record.describe())
        job.log(f"snapshot {snapshot.short_id} was forgotten and is present again (replayed): {record.describe()}; "
                "restored because --allow-replayed was given", level="warning")
    job.update(snapshot_id=snapshot.id)
    if target is None:
        job.catalog.update_job(job.id, target=snapshot.target)  # the job's own recorder
    return snapshot


def snapshot_info(snapshot: Snapshot) -> SnapshotInfo:
    return SnapshotInfo(id=snapshot.id, short_id=snapshot.short_id, target=snapshot.target, kind=snapshot.kind,
                        source=dict(snapshot.source or {}), summary=dict(snapshot.summary or {}))


def restore_in_job(context: Context, job: JobHandle, snapshot_ref: str, destination: str | dict, *,
                   target: str | None = None, restore_root: str | None = None, allow_replayed: bool = False,
                   repository: Repository | None = None, resolved: Snapshot | None = None,
                   **path_options: Any) -> RestoreOutcome:
    """The restore itself, recorded in a job the caller runs (a restore, or a restore test)."""
    from ..restore.options import parse_options

    started = time.monotonic()
    spec = _spec(destination, path_options.get("includes"), path_options.get("overwrite", False),
                 path_options.get("images_into_directory", False), path_options.get("special_files", False))
    built: Destination | None = None
    if "kind" in spec:
        built = build_destination(context, parse_options(spec), restore_root)
        platform = built.platform_snapshot(snapshot_ref, target) if isinstance(built, PlatformSnapshots) else None
        if platform is not None:  # kept on the platform (an EBS snapshot id): the repository is not needed
            return _run(context, job, built, platform, [], None, spec, started)
    with _restore_lock(context, repository) as repository:
        # The index loads while the snapshot is found (both under the lock, each a chain of round
        # trips on S3: the index listing and objects; the snapshot listing, object and forget
        # records); the tree is read only after both.
        with ThreadPoolExecutor(1, thread_name_prefix="safehold-index") as loader:
            index = loader.submit(repository.load_index)
            try:
                snapshot = find_snapshot_in_job(context, repository, job, snapshot_ref, target, allow_replayed,
                                                resolved)
            finally:
                index.exception()  # waited for either way: the thread uses the repository
            index.result()
        info = snapshot_info(snapshot)
        needs_data = ("directory", "image", "ec2", "libvirt")
        if info.source.get("blocks_copied") is False and spec.get("kind", "image") in needs_data:
            raise errors.UsageError(
                f"snapshot {info.short_id} of {info.target} holds no data in the repository: its EBS snapshots "
                "are not copied into it (copy_blocks: false); restore it to an instance with 'safehold restore "
                "--snapshot-id snap-... --destination-instance i-...', or set copy_blocks: true")
        if built is None:
            spec["kind"] = "directory" if snapshot.kind == "files" else "image"
            if spec["kind"] == "directory":
                spec.pop("into_directory", None)
            built = build_destination(context, parse_options(spec), restore_root)
        items: Any = repository.read_tree(snapshot)  # a stream for files; a list of disks for images
        if snapshot.kind != "files":
            items = list(items)
        reader = _reader(repository, snapshot, spec, items)
        try:
            return _run(context, job, built, info, items, reader, spec, started)
        finally:
            if reader is not repository:
                reader.close()


@contextmanager
def _restore_lock(context: Context, shared: Repository | None) -> Iterator[Repository]:
    """The repository a restore reads: ``shared`` (its lock held by the caller), or one opened and
    locked for this restore alone (index not loaded yet: ``restore_in_job`` loads it)."""
    if shared is not None:
        yield shared
        return
    with context.locked(purpose="restore", load_index=False) as repository:
        yield repository


def _reader(repository: Repository, snapshot: Snapshot, spec: dict, items: Any) -> Any:
    """The blob reader of a directory or image restore: a ``PrefetchReader`` that fetches, ahead of
    the destination, the blobs it will ask for (many merged range requests in flight; see
    ``repository/prefetch.py``). Other kinds, and local repositories, read blob by blob. ``SAFEHOLD_RESTORE_CONNECTIONS``
    (default 16; 0 turns prefetching off), ``SAFEHOLD_RESTORE_MEMORY_MIB`` (default 128) and
    ``SAFEHOLD_RESTORE_REQUEST_MIB`` (the largest range request, default 8) tune it."""
    from ..repository.prefetch import DEFAULT_CONNECTIONS, DEFAULT_MAX_REQUEST, DEFAULT_MEMORY, PrefetchReader

    kind = spec.get("kind")
    connections = _environment_int("SAFEHOLD_RESTORE_CONNECTIONS", DEFAULT_CONNECTIONS)
    memory = _environment_int("SAFEHOLD_RESTORE_MEMORY_MIB", DEFAULT_MEMORY // 2**20) * 2**20
    if connections <= 0 or memory <= 0 or kind not in ("directory", "image"):
        return repository
    from ..repository.backends.local import LocalBackend

    if isinstance(repository.backend, LocalBackend):
        # Measured (docs/benchmarks.md, issue 19): on a local disk the chunk-by-chunk reads keep
        # pace already; prefetching kept the wall time and raised the peak RSS 2.4x.
        return repository
    includes = list(spec.get("includes") or [])
    if kind == "directory" and snapshot.kind == "files":
        plan = _file_blob_order(repository.read_tree(snapshot), includes)
    elif kind == "image" and snapshot.kind != "files":
        plan = _image_blob_order(items, includes)
    else:
        return repository
    max_request = _environment_int("SAFEHOLD_RESTORE_REQUEST_MIB", DEFAULT_MAX_REQUEST // 2**20) * 2**20
    return PrefetchReader(repository, plan, connections=connections, memory=memory,
                          max_request=max(2**20, max_request))


def _file_blob_order(items: Any, includes: list[str]) -> Any:
    """The chunks a directory restore reads, in the order it reads them (a second stream of the
    tree: nothing of the snapshot is held). Only a hint: a blob read out of this order is read
    directly. With ``includes``, a FLUSH follows each selected file: the destination reaches it
    while the rest of a large tree is still being walked, and its chunks are fetched at once
    instead of after the walk (they were read blob by blob meanwhile)."""
    from ..repository.prefetch import FLUSH
    from ..restore.directory import selected

    wanted = [os.fsencode(include).strip(b"/") for include in includes]
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "file":
            continue
        path, chunks = item.get("path"), item.get("chunks")
        if not isinstance(path, bytes) or not isinstance(chunks, bytes) or not selected(path, wanted):
            continue
        for start in range(0, len(chunks) - 31, 32):
            yield chunks[start : start + 32]
        if wanted:
            yield FLUSH


def _image_blob_order(items: list, includes: list[str]) -> Any:
    from ..items import HOLE

    for item in items:
        if not isinstance(item, dict) or (includes and os.fsdecode(item.get("path", b"")) not in includes):
            continue
        chunks = item.get("chunks")
        if not isinstance(chunks, bytes):
            continue
        for start in range(0, len(chunks) - 31, 32):
            blob_id = chunks[start : start + 32]
            if blob_id != HOLE:
                yield blob_id


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise errors.UsageError(f"{name}={value!r} is not a whole number") from None


def _run(context: Context, job: JobHandle, destination: Destination, snapshot: SnapshotInfo, items: Any,
         reader: Any, spec: dict, started: float) -> RestoreOutcome:
    total = snapshot.summary.get("bytes_total")

    def report(done: int, current: str = "") -> None:
        job.update(bytes_read=done)
        context.progress({"event": "restore", "target": snapshot.target, "bytes_done": done,
                          "bytes_total": total, "current": current})

    try:
        plan = destination.plan(snapshot, items)
        result: RestoreReport = destination.write(reader, plan, report)
        destination.commit()
    except errors.DestinationError as exc:
        destination.rollback()
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT) \
                and not isinstance(exc, errors.DestinationFull):
            raise errors.DestinationFull(destination=exc.fields.get("destination", describe(spec)),
                                         detail=exc.fields.get("detail", cause.strerror)) from cause
        raise
    except BaseException:
        destination.rollback()
        raise
    # Names come from the snapshot: escaped, so no control sequence reaches a terminal via the log.
    for line in result.warnings + result.special:
        job.log(printable(line), level="warning")
    for line in result.log:
        job.log(printable(line))
    job.update(bytes_read=result.bytes_written, files=result.files)
    if result.details:
        job.details["result"] = result.details
    outcome = RestoreOutcome(snapshot.id, snapshot.target, snapshot.kind, describe(spec), result.files,
                             result.bytes_written, result.damaged, result.warnings, time.monotonic() - started,
                             job.id, result.special, spec["kind"], result.details)
    if result.special:
        job.details["special"] = result.special
    if result.damaged:
        job.details["damaged"] = result.damaged
        raise errors.RestoreIncomplete(count=len(result.damaged), paths=printable(", ".join(result.damaged[:10])),
                                       outcome=outcome)
    return outcome


def build_destination(context: Context, options: Any, restore_root: str | None = None) -> Destination:
    """The destination for validated ``options``, with what it needs of the configuration."""
    cls = destination_class(options.kind)
    threads = context.threads
    if options.kind in ("directory", "image"):
        return cls(options, threads=threads, restore_root=restore_root)
    if options.kind == "libvirt":
        if restore_root is not None and options.images_dir is not None:
            # An API restore: the images folder lies below the root, with no symlink on the way
            # (checked here, before plan; the destination writes through the same walk).
            from ..restore.local import Place

            place = Place(options.images_dir, restore_root)
            try:
                place.check()
            finally:
                place.close()
        return cls(options, threads=threads, restore_root=restore_root)
    if options.kind in ("vmware", "hyperv"):
        return cls(options, connect=_connector(context, options.kind), threads=threads)
    if options.kind == "postgres":
        # The password is read here, from the environment, and handed over as a value: never from
        # the spec (which is stored in the job row) and never on a command line.
        password = os.environ.get(options.password_env) if options.password_env else None
        if options.password_env and password is None:
            raise errors.UsageError(f"the environment variable {options.password_env} (--password-env) is not set")
        return cls(options, password=password, threads=threads)
    if options.kind == "command":
        return cls(options, threads=threads)
    if options.kind == "ssh":
        if restore_root is not None:
            raise errors.UsageError("a restore under a restore root cannot go to another host over SSH")
        settings, path = ssh_settings(context, options.url)
        return cls(options, settings=settings, path=path)
    from .ebs import aws_location, clients_for

    region, endpoint = aws_location(context, options.region)
    if options.kind == "ec2":
        from .ec2_check import owner_gone, owner_tag

        return cls(options, clients=clients_for(context, endpoint), region=region, owner=owner_tag(None),
                   owner_gone=owner_gone, threads=context.threads_or_default())
    return cls(options, clients=clients_for(context, endpoint), region=region,
               threads=context.threads_or_default())


def ssh_settings(context: Context, url: str) -> tuple[Any, str]:
    """How to reach the host of an ssh:// restore URL: the keys and trusted host key of an ssh target
    of the configuration for the same host (and user, when the URL names one), else the user's
    defaults (~/.ssh keys and known_hosts). Returns (SshSettings, absolute path)."""
    import getpass

    from ..platforms.ssh import SshSettings
    from ..restore.ssh import parse_url

    host, user, port, path = parse_url(url)
    sources = [t.source for t in context.config.targets if t.source.type == "ssh" and t.source.host == host]
    match = next((s for s in sources if user in (None, s.user)), None)
    if match is None:
        return SshSettings(host=host, user=user or getpass.getuser(), port=port or 22), path
    return SshSettings(host=host, user=user or match.user, port=port or match.port,
                       identity_file=match.identity_file, identity_env=match.identity_env,
                       known_hosts=match.known_hosts, host_key=match.host_key), path


def _connector(context: Context, kind: str) -> Callable[[str], Any]:
    """connect(target name) -> the platform session of that target, as its backups connect."""

    def connect(target_name: str) -> Any:
        from ..sources import open_source

        configured = context.config.target(target_name)
        if configured.source.type != kind:
            raise errors.UsageError(f"target {target_name!r} is a {configured.source.type} target, not {kind}")
        driver: Any = open_source(configured.source)
        connected = driver.connect()
        return connected[0] if kind == "vmware" else connected  # vmware: (session, password)

    return connect


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
    started = time.monotonic()
    run = RestoreRun(destination=os.path.abspath(destination))
    for name in names:
        context.config.target(name)  # unknown names fail before anything is written
    if os.path.exists(destination) and not os.path.isdir(destination):
        raise errors.DestinationError(destination=destination, detail="exists and is not a directory")
    # One open, one lock and one index for every target: each target opening the repository again
    # cost its own round trips (config, lock, the index listing and every index object) before its
    # first data byte. The lock is shared (restores and backups run beside it) and kept alive by
    # its heartbeat however long the targets take.
    # What records the jobs (``context.jobs``: sqlite3 for a current SQLite catalog, else the
    # catalog, whose SQLAlchemy import is ~0.3 s of CPU) opens while the repository opens, locks
    # and loads its index: those are round trips and the key derivation, which leave the GIL free.
    # Nothing else touches it before _restore_each waits for this; the targets' threads then share
    # it (both recorders are thread-safe).
    # The index, the snapshot listing and the forget records are read side by side while the lock
    # is acquired (after our claim is stored: Lock.acquire's rules; a conflict drops them), two
    # round trips of the lock and one listing fewer before the first data byte (issue 19, sixth round).
    newest: dict[str, Snapshot] = {}

    def read(repository: Repository) -> None:
        with ThreadPoolExecutor(2, thread_name_prefix="safehold-index") as loader:
            index = loader.submit(repository.load_index)
            forgotten = loader.submit(forgotten_names, repository)
            try:
                # One listing for every target (each 'latest:NAME' would list all snapshots again).
                for snapshot in live_snapshots(repository, forgotten=forgotten.result):  # never a replayed one
                    newest[snapshot.target] = snapshot
            finally:
                index.exception()
                forgotten.exception()
            index.result()

    with ThreadPoolExecutor(1, thread_name_prefix="safehold-catalog") as catalog_pool:
        catalog = catalog_pool.submit(lambda: context.jobs)
        try:
            with context.locked(purpose="restore", load_index=False, meanwhile=read) as repository:
                catalog.exception()  # raised by the first use below, in the job that needs it
                _restore_each(context, repository, run, destination, names, newest, overwrite, concurrent,
                              special_files)
        finally:
            catalog.exception()  # never leave the thread opening it behind
    run.duration = time.monotonic() - started
    return run


def _restore_each(context: Context, repository: Repository, run: RestoreRun, destination: str, names: list[str],
                  newest: dict[str, Snapshot], overwrite: bool, concurrent: int, special_files: bool) -> None:
    wanted = []
    for name in names:
        snapshot = newest.get(name)
        if snapshot is None:
            run.skipped[name] = "no snapshot yet"
        elif (snapshot.source or {}).get("blocks_copied") is False:
            run.skipped[name] = ("its EBS snapshots are not copied into the repository (copy_blocks: false); "
                                 "restore one with 'safehold restore --snapshot-id snap-... --destination-instance i-...'")
        else:
            wanted.append((name, snapshot))
    context.jobs  # opened here (or ahead, by restore_targets), not by the first two threads at once

    def one(name: str, snapshot: Snapshot) -> RestoreOutcome:
        return restore_snapshot(context, snapshot.id, os.path.join(destination, name), target=name,
                                overwrite=overwrite, images_into_directory=True, special_files=special_files,
                                repository=repository, resolved=snapshot)

    with ThreadPoolExecutor(max(1, concurrent), thread_name_prefix="safehold-target") as pool:
        futures = {name: pool.submit(one, name, snapshot) for name, snapshot in wanted}
        for name, future in futures.items():
            try:
                run.results.append(future.result())
            except errors.SafeholdError as exc:
                if exc.bug:
                    raise
                run.failures[name] = exc

