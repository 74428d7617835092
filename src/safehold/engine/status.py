"""Each target's recovery posture: tier, RPO, age of its last good backup, last restore test.

Computed from the configuration and the catalog alone (no repository access),
so ``safehold status``, the API and the metrics collector can call it often.
Each target's ART history (``art_trend``) comes from the same catalog: the finished restore-test
jobs and the steps of the finished drill jobs that restored it (no table of its own), newest
first, with a verdict against the RTO (docs/design/drills.md, "ART trend").
The last good backup is the newer of the last succeeded (or partial) backup job and the
newest cached snapshot, so a catalog rebuilt from the repository
(``safehold catalog rebuild``) still knows how old each target's data is.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..catalog.store import FINAL_STATUSES, GOOD_BACKUP_STATUSES
from .context import Context
from .verdicts import target_states

if TYPE_CHECKING:
    from ..catalog.store import JobRecord
    from .catalog_view import CatalogView

UTC = dt.UTC
FINISHED_TEST_STATUSES = ("succeeded", "failed", "interrupted")
FINISHED_BACKUP_STATUSES = GOOD_BACKUP_STATUSES + ("failed", "interrupted")


@dataclass(frozen=True)
class RestoreTestStatus:
    time: dt.datetime
    passed: bool
    art_seconds: float | None
    rto_seconds: float
    rto_met: bool

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "passed": self.passed, "art_seconds": self.art_seconds,
                "rto_seconds": self.rto_seconds, "rto_met": self.rto_met}


#: How many measured ARTs per target ``status``, the API and the trend keep (newest first).
ART_HISTORY_LIMIT = 10
#: A passing ART at or above this share of the RTO is "approaching" (RTOApproaching warns).
APPROACHING_RATIO = 0.8
#: The RTO "could be tightened" when each of at least TIGHTEN_SAMPLES passing ARTs, the newest
#: included, took at most this share of it: halving the RTO would still leave ample margin.
TIGHTEN_RATIO = 0.25
TIGHTEN_SAMPLES = 3
#: A trend is "rising" or "falling" when the newest passing ART differs from the mean of the
#: older ones by more than this share of the RTO; "steady" otherwise.
TREND_RATIO = 0.1


@dataclass(frozen=True)
class ArtSample:
    """One measured actual recovery time: a restore test, or one step of a drill."""

    time: dt.datetime
    kind: str  # 'restore-test' or 'drill'
    job_id: int
    drill: str | None
    art_seconds: float
    rto_seconds: float
    passed: bool

    @property
    def ratio(self) -> float:
        return self.art_seconds / self.rto_seconds if self.rto_seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "kind": self.kind, "job_id": self.job_id, "drill": self.drill,
                "art_seconds": self.art_seconds, "rto_seconds": self.rto_seconds,
                "rto_ratio": round(self.ratio, 4), "passed": self.passed}


@dataclass(frozen=True)
class ArtTrend:
    """A target's ART history (newest first) and what it says about the RTO.

    ``state``: 'unmeasured' (no passing test or drill yet), 'at-risk' (the newest passing ART is
    above the RTO: RTOAtRisk for restore tests, DRDrillFailed for drills), 'approaching' (at or
    above APPROACHING_RATIO of it: RTOApproaching), 'could-tighten' (the newest TIGHTEN_SAMPLES or
    more passing ARTs all took at most TIGHTEN_RATIO of it) or 'ok'. Failed runs are kept in the
    history (their ART is the time to failure) but judge nothing.
    """

    rto_seconds: float
    samples: tuple[ArtSample, ...]

    @property
    def passing(self) -> list[ArtSample]:
        return [sample for sample in self.samples if sample.passed]

    @property
    def latest(self) -> ArtSample | None:
        passing = self.passing
        return passing[0] if passing else None

    @property
    def state(self) -> str:
        latest = self.latest
        if latest is None:
            return "unmeasured"
        ratio = latest.art_seconds / self.rto_seconds if self.rto_seconds > 0 else float("inf")
        if ratio > 1:
            return "at-risk"
        if ratio >= APPROACHING_RATIO:
            return "approaching"
        passing = self.passing
        if len(passing) >= TIGHTEN_SAMPLES and all(sample.art_seconds <= TIGHTEN_RATIO * self.rto_seconds
                                                   for sample in passing):
            return "could-tighten"
        return "ok"

    @property
    def trend(self) -> str | None:
        passing = self.passing
        if len(passing) < 2 or self.rto_seconds <= 0:
            return None
        older = [sample.art_seconds for sample in passing[1:]]
        change = (passing[0].art_seconds - sum(older) / len(older)) / self.rto_seconds
        return "rising" if change > TREND_RATIO else "falling" if change < -TREND_RATIO else "steady"

    def as_dict(self) -> dict[str, Any]:
        latest = self.latest
        return {
            "rto_seconds": self.rto_seconds,
            "latest_seconds": latest.art_seconds if latest else None,
            "rto_ratio": round(latest.art_seconds / self.rto_seconds, 4) if latest and self.rto_seconds > 0 else None,
            "max_seconds": max((sample.art_seconds for sample in self.passing), default=None),
            "state": self.state,
            "trend": self.trend,
            "history": [sample.as_dict() for sample in self.samples],
        }


@dataclass(frozen=True)
class TargetStatus:
    name: str
    tier: int
    source_type: str
    rpo_seconds: float
    rto_seconds: float
    last_success: dt.datetime | None
    last_attempt: dt.datetime | None
    last_status: str | None
    age_seconds: float | None
    compliant: bool
    last_restore_test: RestoreTestStatus | None
    # Items the newest finished backup left out or stored while they changed (its status is then
    # 'partial'); 0 when it was complete or failed, or there was none.
    skipped_items: int = 0
    # Each configured copy covering the target: its name -> when its newest copy succeeded (None: never).
    copies: dict[str, dt.datetime | None] = field(default_factory=dict)
    # The measured recovery times of its restore tests and drills against its RTO.
    art: ArtTrend | None = None
    # The ransomware verdict of the target's snapshots (engine/verdicts.py): {"snapshot", "verdict",
    # "score", "suspicious", "since", "latest_clean"}; None before a backup recorded one.
    ransomware: dict | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tier": self.tier,
            "source_type": self.source_type,
            "rpo_seconds": self.rpo_seconds,
            "rto_seconds": self.rto_seconds,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_attempt": self.last_attempt.isoformat() if self.last_attempt else None,
            "last_status": self.last_status,
            "age_seconds": self.age_seconds,
            "compliant": self.compliant,
            "last_restore_test": self.last_restore_test.as_dict() if self.last_restore_test else None,
            "skipped_items": self.skipped_items,
            "copies": {name: when.isoformat() if when else None for name, when in self.copies.items()},
            "art": self.art.as_dict() if self.art else None,
            "ransomware": self.ransomware,
        }


def target_statuses(context: Context, now: dt.datetime | None = None) -> list[TargetStatus]:
    """The status of every configured target, in configuration order.

    ``compliant``: a good backup exists and is no older than the tier's RPO. A
    'partial' backup is a good one: its snapshot holds everything that could be
    read, so it counts for the RPO; what it left out is in ``skipped_items``.
    ``last_status``: the outcome of the newest finished backup job
    (succeeded, partial, failed, interrupted, cancelled), or 'running'/'queued'
    while one is under way, or None when the target never had one.

    Five catalog queries whatever the number of targets (each answers for all
    of them at once): the metrics collector calls this on every scrape.
    """
    now = now or dt.datetime.now(UTC)
    catalog = context.catalog
    last_jobs = catalog.latest_jobs("backup")
    good_jobs = catalog.latest_jobs("backup", status=GOOD_BACKUP_STATUSES)
    finished_jobs = catalog.latest_jobs("backup", status=FINISHED_BACKUP_STATUSES)
    snapshot_times = catalog.latest_snapshot_times()
    tests = catalog.latest_jobs("restore-test", status=FINISHED_TEST_STATUSES)
    copied = _last_copies(context)
    histories = art_histories(context)
    verdicts = target_states(context, good_jobs)
    return [_target_status(context, target, now, last_jobs.get(target.name), good_jobs.get(target.name),
                           finished_jobs.get(target.name), snapshot_times.get(target.name), tests.get(target.name),
                           copied, histories.get(target.name, ()), verdicts.get(target.name))
            for target in context.config.targets]


def _target_status(context: Context, target: Any, now: dt.datetime, last_job: JobRecord | None,
                   succeeded: JobRecord | None, finished: JobRecord | None, snapshot_time: dt.datetime | None,
                   test: JobRecord | None, copied: dict[tuple[str, str], dt.datetime],
                   history: Any, ransomware: dict | None) -> TargetStatus:
    """One target's status from its newest jobs (target_statuses reads them all at once,
    StatusCache keeps them up to date through a CatalogView)."""
    tier = context.config.tier_of(target)
    rpo, rto = tier.rpo.total_seconds(), tier.rto.total_seconds()
    last_success = (succeeded.finished_at or succeeded.created_at) if succeeded else None
    if snapshot_time is not None and (last_success is None or snapshot_time > last_success):
        last_success = snapshot_time
    last_attempt = (last_job.started_at or last_job.created_at) if last_job else None
    age = (now - last_success).total_seconds() if last_success else None
    return TargetStatus(
        name=target.name,
        tier=target.tier,
        source_type=target.source.type,
        rpo_seconds=rpo,
        rto_seconds=rto,
        last_success=last_success,
        last_attempt=last_attempt,
        last_status=last_job.status if last_job else None,
        age_seconds=round(age, 3) if age is not None else None,
        compliant=age is not None and age <= rpo,
        last_restore_test=_restore_test_status(test, rto),
        skipped_items=skipped_count(finished),
        copies={copy.name: copied.get((target.name, copy.name)) for copy in context.config.copies_of(target.name)},
        art=ArtTrend(rto, tuple(history)),
        ransomware=ransomware,
    )


class StatusCache:
    """``target_statuses`` shared by the metrics scrape and the API, kept up to date as the catalog changes.

    At 1,000 targets a full ``target_statuses`` is ~20 queries, ~22,000 job records and most of a
    second of Python on a busy 2-core host (bench/scale.py --api); Prometheus scrapes every 15-60 s
    and dashboards poll the API. Each call reads ``Catalog.change_marker()`` (three index lookups);
    when it moved, a ``CatalogView`` reads only the jobs that changed (engine.catalog_view) and the
    statuses of the targets they touched are computed again, the others reused. Only two fields
    depend on the clock, ``age_seconds`` and ``compliant``; they are computed again on every call,
    so a cached status never reports a stale age. Everything is read again when the configuration
    changed (``context.config`` replaced) and when the marker cannot be followed; once ``max_age``
    passed, everything is read again as a safety net (jobs deleted or rewritten behind the marker's
    back) and only the targets whose data differed are computed again. Thread-safe; the metrics
    exposition shares its lock and view (``refresh``).
    """

    def __init__(self, context: Context, *, max_age: float = 300.0, clock: Any = None) -> None:
        import threading
        import time

        from .catalog_view import CatalogView

        self.context = context
        self.max_age = max_age
        self._monotonic = clock or time.monotonic
        self.lock = threading.RLock()
        self.view = CatalogView(context)
        self._config: Any = None
        self._epoch = -1
        self._seen = 0  # the view's counter when the statuses were last brought up to date
        self._read_at = 0.0
        self._statuses: dict[str, TargetStatus] = {}
        self._dicts: dict[str, tuple[TargetStatus, dict[str, Any]]] = {}  # as_dicts: (the status, its as_dict())
        self.computed = 0  # how many times statuses were computed again, in part or whole (tests, the bench)
        self.recomputed_targets = 0  # how many target statuses the last of them computed
        self.differed = 0  # how many targets the last safety-net reading found changed behind the marker
        self.background = False  # True while run_safety_net does the net: requests then never do

    def refresh(self, now: dt.datetime | None = None, fresh: CatalogView | None = None) -> CatalogView:
        """Bring the view and the statuses up to the catalog's current marker; the caller holds ``lock``
        while it reads the view. ``fresh``: a view read whole meanwhile, to verify against (``verify``)."""
        now = now or dt.datetime.now(UTC)
        view = self.view
        config = self.context.config
        if config is not self._config:
            view.reset()
        marker = self.context.catalog.change_marker()  # before the data it guards
        epoch = view.epoch
        verify = (view.epoch == self._epoch and not self.background
                  and self._monotonic() - self._read_at >= self.max_age)
        if verify or fresh is not None:
            self.differed = len(view.verify(marker, fresh))
        else:
            view.update(marker)
        if verify or view.epoch != epoch:
            self._read_at = self._monotonic()
        if view.epoch != self._epoch or config is not self._config:
            names = [target.name for target in config.targets]
            self._statuses, self._dicts = {}, {}
        else:
            changed = view.changed_since(self._seen)
            names = [target.name for target in config.targets if target.name in changed]
        if names or verify or fresh is not None or view.epoch != self._epoch:
            self._compute(names, now)
        self._config, self._epoch, self._seen = config, view.epoch, view.counter
        return view

    def _compute(self, names: list[str], now: dt.datetime) -> None:
        from .verdicts import state_of_jobs

        view, config = self.view, self.context.config
        latest = view.latest
        copied = {key: job.finished_at or job.created_at for key, job in view.copies.items()} if config.copies else {}
        by_name = {target.name: target for target in config.targets}
        for name in names:
            target = by_name[name]
            verdict = state_of_jobs(latest[kind].get(name) for kind in ("good", "mark", "scan"))
            self._statuses[name] = _target_status(
                self.context, target, now, latest["backup"].get(name), latest["good"].get(name),
                latest["finished"].get(name), view.snapshot_times.get(name), latest["test"].get(name), copied,
                view.art_history(name), verdict)
        self.computed += 1
        self.recomputed_targets = len(names)

    def statuses(self, now: dt.datetime | None = None) -> list[TargetStatus]:
        now = now or dt.datetime.now(UTC)
        with self.lock:
            self.refresh(now)
            found = [self._statuses[target.name] for target in self.context.config.targets]
        return [aged(status, now) for status in found]

    def verify(self) -> int:
        """The safety net run from outside the requests (``safehold serve`` runs it in a thread every
        ``max_age`` and sets ``background``, so no scrape waits for it): everything is read again
        without holding the lock, then, under it, compared with what was followed; returns how many
        targets differed."""
        from .catalog_view import CatalogView

        config = self.context.config
        fresh = CatalogView(self.context, self.view.art_limit)
        fresh.update(self.context.catalog.change_marker())
        with self.lock:
            if self.context.config is not config or self._config is not config:
                return 0  # targets.yml changed meanwhile: the next request reads everything anyway
            self.refresh(fresh=fresh)
            return self.differed

    def run_safety_net(self, stop: Any) -> None:
        """``verify`` every ``max_age`` until the event ``stop`` is set (a thread of ``safehold serve``)."""
        import logging

        self.background = True
        try:
            while not stop.wait(self.max_age):
                try:
                    differed = self.verify()
                except Exception:  # the next round tries again; requests still follow the catalog
                    logging.getLogger("safehold.engine.status").exception("status safety net failed")
                    continue
                if differed:
                    logging.getLogger("safehold.engine.status").warning(
                        "status safety net: %d target(s) had changed behind the catalog's change marker", differed)
        finally:
            self.background = False

    def as_dicts(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """``[status.as_dict() for status in statuses(now)]``, each target's dictionary kept while its
        status is (the API's answer: 1,000 ``as_dict`` calls were ~40 ms of a request), with the two
        fields that depend on the clock filled in for ``now``."""
        now = now or dt.datetime.now(UTC)
        with self.lock:
            self.refresh(now)
            found = []
            for target in self.context.config.targets:
                status = self._statuses[target.name]
                kept = self._dicts.get(target.name)
                if kept is None or kept[0] is not status:
                    kept = self._dicts[target.name] = (status, status.as_dict())
                found.append(kept)
        result = []
        for status, data in found:
            if status.last_success is None:
                result.append(dict(data))
                continue
            age = (now - status.last_success).total_seconds()
            result.append({**data, "age_seconds": round(age, 3), "compliant": age <= status.rpo_seconds})
        return result

    def invalidate(self) -> None:
        with self.lock:
            self.view.reset()


def aged(status: TargetStatus, now: dt.datetime) -> TargetStatus:
    """``status`` with its age and RPO compliance as of ``now`` (the only fields that depend on the clock)."""
    if status.last_success is None:
        return status
    age = (now - status.last_success).total_seconds()
    return replace(status, age_seconds=round(age, 3), compliant=age <= status.rpo_seconds)


def art_histories(context: Context, limit: int = ART_HISTORY_LIMIT) -> dict[str, list[ArtSample]]:
    """Per target: up to ``limit`` measured ARTs, newest first, from finished restore tests and drills.

    Two catalog queries, bounded (``limit`` restore tests per configured target, the newest 100
    drills), so the metrics collector can afford it on every scrape. A restore test's ART is its
    ``details.art_seconds`` (restore start to passing check); a drill step's is its
    ``art_seconds`` (the drill's start to healthy), judged against the step's own RTO. Runs
    without a measured ART (failed before the restore began) are left out. Details come from our
    own catalog but are checked for type all the same: a bad row is skipped, never fatal.
    """
    # A restore test recorded before its job stored the RTO is judged against the tier's.
    wanted = {target.name: context.config.tier_of(target).rto.total_seconds() for target in context.config.targets}
    samples: dict[str, list[ArtSample]] = {}
    catalog = context.catalog
    for job in catalog.list_jobs(kind="restore-test", status=("succeeded", "failed"),
                                 limit=limit * max(1, len(wanted))):
        sample = restore_test_sample(job, wanted)
        if sample is not None:
            samples.setdefault(job.target, []).append(sample)  # type: ignore[arg-type]
    for target, found in drill_samples(catalog.list_jobs(kind="drill", status=("succeeded", "failed"), limit=100),
                                       wanted).items():
        samples.setdefault(target, []).extend(found)
    for history in samples.values():
        history.sort(key=lambda sample: (sample.time, sample.job_id), reverse=True)
        del history[limit:]
    return samples


def restore_test_sample(job: JobRecord, wanted: dict[str, float]) -> ArtSample | None:
    """A finished restore test's measured ART, or None (an unconfigured target, no ART measured).
    ``wanted``: configured target -> its tier's RTO (for a job recorded before jobs stored theirs)."""
    details = job.details or {}
    art, rto = details.get("art_seconds"), details.get("rto_seconds")
    if job.target not in wanted or not _number(art):
        return None
    rto = rto if _number(rto) else wanted[job.target]
    return ArtSample(job.finished_at or job.created_at, "restore-test", job.id, None, float(art), float(rto),
                     job.status == "succeeded" and bool(details.get("passed", True)))


def drill_samples(jobs: list[JobRecord], wanted: dict[str, float]) -> dict[str, list[ArtSample]]:
    """The measured ARTs of the steps of finished drill ``jobs`` for the targets in ``wanted``, in
    the jobs' order (a skipped step or one without a measured ART counts for nothing)."""
    samples: dict[str, list[ArtSample]] = {}
    for job in jobs:
        details = job.details or {}
        drill = details.get("drill")
        for step in details.get("steps") or []:
            if not isinstance(step, dict) or step.get("target") not in wanted:
                continue
            art, rto = step.get("art_seconds"), step.get("rto_seconds")
            if not _number(art) or not _number(rto) or step.get("outcome") == "skipped":
                continue
            samples.setdefault(step["target"], []).append(ArtSample(
                job.finished_at or job.created_at, "drill", job.id, drill if isinstance(drill, str) else None,
                float(art), float(rto), step.get("outcome") == "passed"))
    return samples


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _last_copies(context: Context) -> dict[tuple[str, str], dt.datetime]:
    """(target, destination) -> when its newest copy job succeeded; one query, none without copies."""
    if not context.config.copies:
        return {}
    found: dict[tuple[str, str], dt.datetime] = {}
    for job in context.catalog.list_jobs(kind="copy", status="succeeded", limit=1000):  # newest first
        key = (job.target or "", str((job.details or {}).get("destination", "")))
        if key not in found:
            found[key] = job.finished_at or job.created_at
    return found


def skipped_count(job: JobRecord | None) -> int:
    """How many items a finished backup job left out or stored changing (0 unless it is 'partial')."""
    if job is None or job.status != "partial":
        return 0
    skipped = (job.details or {}).get("skipped")
    count = skipped.get("count") if isinstance(skipped, dict) else None
    return count if isinstance(count, int) and count > 0 else 1  # partial says at least one


def _restore_test_status(job: JobRecord | None, rto: float) -> RestoreTestStatus | None:
    """The newest finished (succeeded, failed, interrupted) restore test job as a status."""
    if job is None:
        return None
    details = job.details or {}
    art = details.get("art_seconds")
    passed = job.status == "succeeded" and bool(details.get("passed", True))
    return RestoreTestStatus(
        time=job.finished_at or job.created_at,
        passed=passed,
        art_seconds=float(art) if art is not None else None,
        rto_seconds=float(details.get("rto_seconds", rto)),
        rto_met=passed and art is not None and float(art) <= rto,
    )


def repository_usage(context: Context) -> dict[str, float]:
    """Snapshot count, stored bytes and (for local repositories) capacity, from object listings alone.

    Needs no password: sizes and names of objects are visible to anyone who
    can list the store, and nothing is decrypted.
    """
    from ..repository.backends import Kind

    backend = context.backend()
    stored = 0
    snapshots = 0
    for kind in Kind:
        for info in backend.list(kind):
            stored += info.size
            if kind is Kind.SNAPSHOTS:
                snapshots += 1
    values: dict[str, float] = {"snapshots": float(snapshots), "stored_bytes": float(stored)}
    local_path = context.config.repository.local_path
    if local_path is not None:
        # The repository can grow into what is free on its filesystem; other data there is not ours to count.
        values["capacity_bytes"] = float(stored + shutil.disk_usage(local_path).free)
    return values


@dataclass
class TargetBackupTotals:
    """One target's finished backups, summed: the duration histogram's cumulative bucket counts
    (the last is +Inf), the sum of durations, bytes read and added."""

    buckets: list[int]
    duration_sum: float = 0.0
    bytes_read: int = 0
    bytes_added: int = 0


class BackupTotals:
    """Totals over every finished backup job in the catalog, kept up to date a tail at a time.

    A scrape used to read every backup job ever run (a histogram and two sums over 100,000 jobs
    cost most of a /metrics request: bench/scale.py --api). A finished job never changes, so each
    ``update`` reads only the jobs from the *watermark* on: below it every backup job is finished
    and counted. Jobs above it that finished are counted once (their ids are remembered until the
    watermark passes them); the watermark stops at the oldest job still queued or running.
    Thread-safe (two scrapes may overlap)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        import threading

        self.bounds = bounds
        self._lock = threading.Lock()
        self._watermark = 0
        self._counted: set[int] = set()
        self.targets: dict[str | None, TargetBackupTotals] = {}
        self.changed: set[str | None] = set()  # the targets the last update counted a job of

    def update(self, context: Context, *, copy: bool = True) -> dict[str | None, TargetBackupTotals]:
        """Count the jobs finished since the last update; the totals of every target (copies of
        them unless ``copy`` is false: then ``targets`` itself, for a caller holding its own lock)."""
        with self._lock:
            rows = context.catalog.finished_backups_from(self._watermark)
            oldest_active = None
            self.changed = set()
            for job_id, target, status, seconds, read, added in rows:
                if status not in FINAL_STATUSES:
                    oldest_active = job_id if oldest_active is None else oldest_active
                    continue
                if job_id in self._counted:
                    continue
                self._counted.add(job_id)
                self.changed.add(target)
                totals = self.targets.get(target)
                if totals is None:
                    totals = self.targets[target] = TargetBackupTotals([0] * (len(self.bounds) + 1))
                totals.bytes_read += read
                totals.bytes_added += added
                if status in GOOD_BACKUP_STATUSES and seconds is not None:
                    totals.duration_sum += seconds
                    for index, bound in enumerate(self.bounds):
                        if seconds <= bound:
                            totals.buckets[index] += 1
                    totals.buckets[-1] += 1
            if rows:
                self._watermark = oldest_active if oldest_active is not None else rows[-1][0] + 1
                self._counted = {job_id for job_id in self._counted if job_id >= self._watermark}
            if not copy:
                return self.targets
            return {target: TargetBackupTotals(list(totals.buckets), totals.duration_sum, totals.bytes_read,
                                               totals.bytes_added) for target, totals in self.targets.items()}
