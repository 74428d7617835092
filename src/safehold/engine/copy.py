"""Repository copies (3-2-1): ``safehold copy`` and ``safehold init --copy-params-from``.

The configured repository is the source. A destination is another repository, named by its url and
where its password comes from (a :class:`~safehold.config.repository.RepositoryConfig`, the same
model as ``repository:`` in targets.yml), created with ``init --copy-params-from`` so that it shares
the source's id key and chunking parameters. The blob transfer itself is ``repository/copy.py``.

Locks: a shared lock on the source (a copy only reads it, side by side with backups, restores and
checks; a prune waits), the usual backup-style shared lock on the destination (its own prune
waits). The job is recorded in the catalog as kind ``copy``, its figures in the job's details.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import errors
from ..config.repository import RepositoryConfig
from ..repository import Repository
from ..repository.backends import open_backend
from .context import Context

# The transfer's modules (repository/copy.py and what it imports, NumPy for the indexes) load in
# copy_snapshots while the two key derivations run in their threads, not before they start: on
# an incremental copy, start-up is most of the time (docs/benchmarks.md, issue 15).


def repository_spec(url: str, password_env: str | None = None, password_file: str | None = None,
                    **options: Any) -> RepositoryConfig:
    """A destination (or parameter source) given on the command line, validated like the config's."""
    from pydantic import ValidationError

    fields: dict[str, Any] = {"url": url, **{k: v for k, v in options.items() if v is not None}}
    if password_env:
        fields["password_env"] = password_env
    if password_file:
        fields["password_file"] = password_file
    try:
        return RepositoryConfig.model_validate(fields)
    except ValidationError as exc:
        raise errors.UsageError(f"repository {url!r}: {exc.errors()[0]['msg']}") from None


def _password_source(spec: RepositoryConfig) -> str:
    return f"password file {spec.password_file}" if spec.password_file else f"${spec.password_env}"


def open_other(spec: RepositoryConfig) -> Repository:
    """Open a repository other than the configured one; a wrong password names where it came from."""
    backend = open_backend(spec.url, **spec.backend_options())
    try:
        return Repository.open(backend, spec.password())
    except errors.WrongPassword:
        raise errors.CopyDestinationPassword(password_source=_password_source(spec), url=backend.url) from None


def init_with_params_from(context: Context, source: RepositoryConfig) -> dict:
    """Create the configured repository sharing ``source``'s id key and chunking parameters."""
    with context.catalog.job("init", details={"params_from": source.url}) as job:
        parameters = open_other(source)
        repository = Repository.init(context.backend(), context.password(new=True), params_from=parameters)
        job.log(f"created repository {repository.id} at {repository.backend.url} with the chunking parameters "
                f"and id key of {parameters.id} at {parameters.backend.url}")
        return {"id": repository.id, "url": repository.backend.url, "params_from": parameters.id,
                "params_from_url": parameters.backend.url}


def resolve_destination(context: Context, to: str, password_env: str | None = None,
                        password_file: str | None = None, **options: Any) -> tuple[str, RepositoryConfig]:
    """``--to``: the name of a configured copy (``copies:`` in targets.yml), else a repository url.
    Returns (the name used in job details and metrics, the repository)."""
    configured = context.config.copy(to)
    if configured is not None:
        if password_env or password_file:
            raise errors.UsageError(f"copy {to!r} is configured in targets.yml with its own password settings; "
                                    "leave out --to-password-env/--to-password-file")
        return configured.name, configured.repository
    if "://" not in to and not to.startswith(("/", ".")) and context.config.copies:
        known = ", ".join(copy.name for copy in context.config.copies)
        raise errors.UsageError(f"--to {to!r} is neither a configured copy ({known}) nor a repository url")
    return to, repository_spec(to, password_env, password_file, **options)


def copy_to(context: Context, to: str, target: str | None = None, snapshot_ref: str | None = None,
            verify: bool | str = True, *, job_id: int | None = None, **destination: Any) -> list[dict]:
    """Copy to ``to`` (a configured copy's name or a url): one job per target for a configured copy
    (the targets it covers, or ``target``), so each target's copy has its own history and metric;
    one job for a url. Returns each job's figures."""
    name, repository = resolve_destination(context, to, **destination)
    configured = context.config.copy(to)
    retention = configured.retention if configured is not None else None
    if configured is None or snapshot_ref is not None:
        return [copy_snapshots(context, repository, target, snapshot_ref, verify, job_id=job_id,
                               destination_name=name, retention=retention)]
    if target is not None:
        context.config.target(target)
        names = [target]
    else:
        names = [t.name for t in context.config.targets if configured.targets is None or t.name in configured.targets]
    return [copy_snapshots(context, repository, each, None, verify, job_id=job_id if index == 0 else None,
                           destination_name=name, retention=retention)
            for index, each in enumerate(names)]


def init_copy_destination(context: Context, name: str) -> dict:
    """Create the destination repository of the configured copy ``name`` (``copies:``) with the
    configured repository's id key and chunking parameters: one configuration file for both."""
    spec = context.config.copy_named(name).repository
    with context.catalog.job("init", details={"copy": name, "url": spec.url}) as job:
        source = context.open_repository(load_index=False)
        backend = open_backend(spec.url, **spec.backend_options())
        repository = Repository.init(backend, spec.password(), params_from=source)
        job.log(f"created repository {repository.id} at {backend.url} for copy {name}, with the chunking "
                f"parameters and id key of {source.id}")
        return {"id": repository.id, "url": backend.url, "params_from": source.id, "params_from_url": source.backend.url,
                "copy": name}


#: Seconds the copy's retention waits for the destination's exclusive lock (another target's copy
#: job may hold it shared); when it cannot get it, the copy stands and the next job applies it.
RETENTION_LOCK_WAIT = 30.0


def copy_snapshots(context: Context, destination: RepositoryConfig, target: str | None = None,
                   snapshot_ref: str | None = None, verify: bool | str = True, *, job_id: int | None = None,
                   destination_name: str | None = None, retention: Any = None) -> dict:
    """Copy the live snapshots of the configured repository (of ``target``, or only ``snapshot_ref``)
    that the destination does not hold yet, and not those whose copies the destination's retention
    dropped. Idempotent: a rerun (after success or a kill) sends only what is missing. With
    ``retention`` (the copy's ``retention:``), it is then applied on the destination to the targets
    copied, under its exclusive lock, and the destination is pruned when a copy was forgotten.
    Returns the figures also stored in the job's details (``destination``: the configured copy's
    name, else the url)."""
    details: dict[str, Any] = {"destination": destination_name or destination.url,
                               "destination_url": destination.url, "snapshot": snapshot_ref}
    # Both repositories open at once (two Argon2id derivations, outside the GIL: on two cores they
    # cost one) while the job is recorded; an error of either is raised inside the job.
    with ThreadPoolExecutor(2, thread_name_prefix="safehold-open") as ahead:
        opening_source = context.open_ahead(ahead)
        opening_destination = ahead.submit(open_other, destination)
        with context.jobs.job("copy", target=target, details=details, job_id=job_id) as job:
            _load_transfer_modules()
            return _copy_in_job(context, job, details, destination, opening_source, opening_destination, target,
                                snapshot_ref, verify, retention)


def _copy_in_job(context: Context, job: Any, details: dict, destination: RepositoryConfig, opening_source: Any,
                 opening_destination: Any, target: str | None, snapshot_ref: str | None, verify: bool | str,
                 retention: Any) -> dict:
    from ..repository.copy import CopyStats, copy_snapshot, dropped_sources, verify_mode
    from ..repository.forgotten import live_snapshots, replayed_records
    from ..repository.marks import copy_records
    from ..repository.repository import same_params

    started = time.monotonic()
    # The source opened ahead is locked here; if its open failed (a password to prompt for), the
    # context opens it again and raises or prompts as before.
    opened = opening_source.result() if opening_source is not None and opening_source.exception() is None else None
    with context.locked(purpose="copy", load_index=False, opened=opened) as source:
        target_repository = opening_destination.result()
        if target_repository.id == source.id:
            raise errors.CopySameRepository(url=target_repository.backend.url, repository_id=source.id)
        if not same_params(source, target_repository):
            raise errors.CopyParamsDiffer(source=source.backend.url, destination=target_repository.backend.url,
                                          source_id=source.id[:8], destination_id=target_repository.id[:8])
        if snapshot_ref is not None:
            wanted = [source.find_snapshot(snapshot_ref, target)]
            # A snapshot forget removed and someone put back (a rollback) is not spread further.
            replayed = replayed_records(source, wanted)
            if wanted[0].id in replayed:
                raise errors.SnapshotReplayed(snapshot=wanted[0].short_id,
                                              record=replayed[wanted[0].id].describe())
        else:
            wanted = live_snapshots(source, target)
        lock = target_repository.lock(purpose="copy")
        try:
            # The two indexes load side by side (their reads overlap; the destination's under
            # its lock, so a prune that just finished is seen), with the copies already made.
            with ThreadPoolExecutor(1, thread_name_prefix="safehold-index") as loader:
                loading = loader.submit(_destination_state, target_repository, source.id)
                source.load_index()
                done = loading.result()
            # Copies the destination's retention dropped on purpose are not sent again.
            dropped = dropped_sources(target_repository, source.id, [s.id for s in wanted if s.id not in done])
            stats = CopyStats(verify=verify_mode(verify))
            for snapshot in wanted:
                if snapshot.id in done:
                    stats.snapshots_skipped += 1
                    continue
                if snapshot.id in dropped:
                    stats.snapshots_dropped += 1
                    job.log(f"snapshot {snapshot.short_id} ({snapshot.target}) not copied: the copy's retention "
                            "dropped its copy before")
                    continue
                copy = copy_snapshot(
                    source, target_repository, snapshot, stats,
                    parent_id=done.get(snapshot.parent) if snapshot.parent else None,
                    source_url=source.backend.url, threads=context.threads_or_default(), verify=verify,
                    on_progress=context.progress)
                done[snapshot.id] = copy.id
                job.log(f"copied snapshot {snapshot.short_id} ({snapshot.target}) to {copy.short_id}")
            # Marks and scans (verdicts/) of the snapshots copied now or before, so latest-clean
            # on the copy names the copy of the source's latest-clean (newer marks follow).
            target_repository.ensure_lock()
            carried = copy_records(source, target_repository,
                                   {s.id: done[s.id] for s in wanted if s.id in done})
            stats.verdict_records_copied += len(carried)
            if carried:
                job.log(f"carried {len(carried)} verdict record(s) (marks, scans) to the copies")
        finally:
            lock.release()
    retention_outcomes = []
    if retention is not None:
        covered = [target] if target is not None else sorted({snapshot.target for snapshot in wanted})
        retention_outcomes = _apply_retention(context, job, target_repository, covered, retention)
    result = {"source": source.backend.url, "source_id": source.id, "destination": details["destination"],
              "destination_url": target_repository.backend.url, "destination_id": target_repository.id,
              "duration": round(time.monotonic() - started, 3), **stats.as_dict()}
    if retention is not None:
        result["retention"] = retention_outcomes
    job.update(bytes_added=stats.bytes_sent)
    job.details.update(result)  # merged into the job's details when it finishes
    return result


def _load_transfer_modules() -> None:
    """Import what the copy needs next (pure Python and NumPy: under the GIL) while the derivations
    run outside it in the opening threads."""
    from ..repository import copy, forgotten, marks  # noqa: F401
    from ..repository.lazy_numpy import numpy

    numpy()


def _destination_state(destination: Repository, source_id: str) -> dict[str, str]:
    from ..repository.copy import copied_ids

    destination.load_index()
    return copied_ids(destination, source_id)


def _apply_retention(context: Context, job: Any, destination: Any, targets: list[str], retention: Any) -> list[dict]:
    """The copy's own retention on the destination, per target, under its exclusive lock (waited for
    a while: another target's copy job may hold it shared). A lock that stays busy leaves the
    retention to the next copy job (logged, the copy itself stands)."""
    from ..repository.copy import apply_copy_retention
    from ..repository.retention import RetentionPolicy

    policy = RetentionPolicy.from_config(retention)
    try:
        lock = destination.lock(exclusive=True, purpose="copy retention", wait=RETENTION_LOCK_WAIT)
    except errors.RepositoryLocked as exc:
        job.log(f"the copy's retention was not applied (the next copy job applies it): {exc.message}",
                level="warning")
        return [{"skipped": exc.message}]
    results = []
    try:
        for name in targets:
            outcome = apply_copy_retention(
                destination, name, policy,
                on_progress=lambda message: context.progress({"event": "prune", "message": message}))
            for forgotten in outcome.forgotten:
                job.log(f"{name}: the copy's retention ({outcome.policy}) forgot copy {forgotten['copy'][:8]}"
                        + (f" of {forgotten['source'][:8]}" if forgotten["source"] else ""))
            results.append(outcome.as_dict())
    finally:
        lock.release()
    return results
