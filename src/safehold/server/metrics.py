"""``/metrics``: the Prometheus metrics of docs/architecture.md, computed from the catalog at scrape time.

Nothing is counted in process memory: every scrape reads the catalog (and,
at most once per ``REPOSITORY_TTL_SECONDS``, lists the repository's objects),
so a restart of ``safehold serve`` loses nothing and several control planes
on one PostgreSQL catalog report the same numbers.

The names and labels are a contract with the alert rules and dashboards
(``monitoring/``): the target is labelled ``target``, never ``job`` (that
collides with Prometheus's own label), per-target metrics also carry ``tier``
and ``source``. Timestamps of things that never happened are exported as 0
rather than left out, so a rule can tell "never backed up" from "no data".
A 'partial' backup (its snapshot left out items it could not read) is a good
backup: ``safehold_backup_last_status`` is 1 and its time is the last success,
so BackupJobFailed and RPOViolated stay quiet; ``safehold_backup_skipped_items``
carries how many items it left out, which is what BackupPartial alerts on.
The restore-test families exist only for targets with ``restore_test:``
configured (with their interval), so a target that is not meant to be
tested never looks "never tested" to RestoreTestOverdue.
``safehold_target_last_art_seconds`` is the newest passing ART of a target from restore tests
and drills alike (RTOApproaching compares it with the RTO); exists once one was measured.
The drill families (labels ``drill`` and ``scenario``; the per-target ART also ``target``) exist
only for the drills configured under ``drills:``, read from the 'drill' jobs' details.
Only safehold's own families are exported (a private registry, no process or
Python collectors), so the exposition is exactly the documented set.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__
from ..engine.status import TargetBackupTotals

if TYPE_CHECKING:
    from ..catalog.store import JobRecord
    from ..engine.context import Context
    from ..engine.status import StatusCache, TargetStatus

log = logging.getLogger("safehold.server.metrics")

#: Upper bounds (seconds) of the backup duration histogram: a second to a day.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
                    86400.0)

#: How long a listing of the repository's objects is reused (listing S3 costs requests and time).
REPOSITORY_TTL_SECONDS = 60.0

#: Kinds always reported by safehold_jobs_running, also at 0, so a dashboard has a line for each.
RUNNING_KINDS = ("backup", "restore", "restore-test", "check", "prune", "forget", "maintenance", "copy")

#: Finished backup outcomes that count as a failed last attempt (cancelled jobs never ran and say nothing).
FAILED_OUTCOMES = ("failed", "interrupted")
#: Finished backup outcomes that wrote a snapshot: 'partial' left items out, but its snapshot is good.
GOOD_OUTCOMES = ("succeeded", "partial")

TARGET_LABELS = ("target", "tier", "source")


class SafeholdCollector(Collector):
    """A prometheus-client collector reading the catalog and configuration of ``context`` on each scrape."""

    def __init__(self, context: Context, *, repository_ttl: float = REPOSITORY_TTL_SECONDS,
                 statuses: StatusCache | None = None) -> None:
        self.context = context
        self.repository_ttl = repository_ttl
        self.statuses = statuses  # shared with the API; None: computed on every scrape
        self._repository_lock = threading.Lock()
        self._repository_cache: tuple[float, dict[str, float] | None] | None = None
        from ..engine.status import BackupTotals

        self._backup_totals_kept = BackupTotals(DURATION_BUCKETS)  # read a tail of the jobs per scrape

    def collect(self) -> Iterator[Metric]:
        yield from self._build_info()
        yield from self.catalog_families()
        yield from self.live_families()

    def catalog_families(self) -> Iterator[Metric]:
        """The families computed from the catalog and configuration alone. None of them depends on
        the clock (times are exported as timestamps, never as ages), so their rendering stays
        right for as long as the catalog does not change (MetricsExposition)."""
        yield from self._targets()
        yield from self._drills()
        yield from self._jobs()
        yield from self._copies()

    def live_families(self) -> Iterator[Metric]:
        """The families read from elsewhere on each scrape: the repository (cached for
        ``repository_ttl``) and the queue's workers (their heartbeats age)."""
        yield from self._repository()
        yield from self._workers()

    # --- families -------------------------------------------------------------

    def _build_info(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("safehold_build_info", "safehold version and Python it runs on; always 1",
                                 labels=("version", "python"))
        info.add_metric((__version__, platform.python_version()), 1.0)
        yield info

    def _targets(self) -> Iterator[Metric]:
        from ..engine.status import target_statuses

        found = self.statuses.statuses() if self.statuses is not None else target_statuses(self.context)
        statuses = {status.name: status for status in found}
        outcomes = self.context.catalog.latest_jobs("backup", status=GOOD_OUTCOMES + FAILED_OUTCOMES)
        passed_tests = self.context.catalog.latest_jobs("restore-test", status="succeeded")
        totals = self._backup_totals_kept.update(self.context)
        families = target_families()
        for target in self.context.config.targets:
            add_target(families, self.context.config, target, statuses.get(target.name),
                       outcomes.get(target.name), passed_tests.get(target.name), totals.get(target.name))
        yield from families

    def _drills(self) -> Iterator[Metric]:
        if not self.context.config.drills:
            return
        drills = self.context.config.drills
        # Newest first; drills are rare (monthly, say), so reading all their jobs is cheap.
        jobs = self.context.catalog.list_jobs(kind="drill", status=("succeeded", "failed"), limit=None)
        yield from drill_families(drills, jobs)

    def _jobs(self) -> Iterator[Metric]:
        running = {kind: count for (_target, kind), count in self.context.catalog.count_jobs("running").items()}
        yield from job_families(running, self.context.catalog.count_jobs("failed", by_target=True))

    def _workers(self) -> Iterator[Metric]:
        """Workers of the job queue (only with scheduler.executor: procrastinate). A dead worker stays
        listed, with up 0, for an hour (scheduler.queue.FORGET_DEAD_WORKER_SECONDS): WorkerDown fires on it."""
        settings = self.context.config.scheduler
        if settings.executor != "procrastinate":
            return
        from ..errors import SafeholdError
        from ..scheduler.queue import list_workers

        try:
            found = list_workers(settings)
        except SafeholdError as error:  # the rest of the scrape still answers; SafeholdDown covers us
            log.warning("workers not listed: %s", error)
            return
        labels = ("worker", "host")
        up = GaugeMetricFamily("safehold_worker_up", "1 while the worker's heartbeat is within "
                               "scheduler.worker_timeout, 0 once it stopped answering", labels=labels)
        heartbeat = GaugeMetricFamily("safehold_worker_last_heartbeat_timestamp_seconds",
                                      "Unix time of the worker's last heartbeat", labels=labels)
        running = GaugeMetricFamily("safehold_worker_jobs_running", "Jobs the worker runs now", labels=labels)
        for entry in found:
            values = (str(entry.id), entry.hostname or "")
            up.add_metric(values, 1.0 if entry.alive else 0.0)
            heartbeat.add_metric(values, entry.last_heartbeat.timestamp())
            running.add_metric(values, float(len(entry.running_jobs)))
        yield from (up, heartbeat, running)

    def _repository(self) -> Iterator[Metric]:
        values = self._repository_values()
        if values is None:
            return
        yield _gauge("safehold_repository_snapshots", "Snapshots in the repository", values["snapshots"])
        yield _gauge("safehold_repository_stored_bytes", "Bytes the repository's objects occupy in storage",
                     values["stored_bytes"])
        if "capacity_bytes" in values:
            yield _gauge("safehold_repository_capacity_bytes",
                         "Bytes the repository could occupy: its own plus the free space of its filesystem "
                         "(absent for object stores without a limit)", values["capacity_bytes"])

    def _copies(self) -> Iterator[Metric]:
        from ..engine.catalog_view import COPY_JOBS_READ, copy_key

        newest: dict[tuple[str, str], Any] = {}
        for job in self.context.catalog.list_jobs(kind="copy", status="succeeded", limit=COPY_JOBS_READ):
            newest.setdefault(copy_key(job), job)  # newest first: the first job seen for a key is its newest
        yield from copy_families(self.context.config, newest)

    def _repository_values(self) -> dict[str, float] | None:
        with self._repository_lock:
            now = time.monotonic()
            if self._repository_cache is not None and now - self._repository_cache[0] < self.repository_ttl:
                return self._repository_cache[1]
            from ..engine.status import repository_usage

            try:
                values: dict[str, float] | None = repository_usage(self.context)
            except Exception as error:  # an unreachable repository must not break the whole scrape
                log.warning("repository metrics unavailable: %s", error)
                values = None
            self._repository_cache = (now, values)
            return values



# --- the catalog's families, built from their inputs (the collector reads them at once, the
# --- exposition keeps them in a CatalogView; both build the families here, so both give the same text)


def target_families() -> list[Metric]:
    """The per-target families, empty, in the order they are exported."""
    rpo = GaugeMetricFamily("safehold_target_rpo_seconds", "Recovery point objective of the target's tier",
                            labels=TARGET_LABELS)
    rto = GaugeMetricFamily("safehold_target_rto_seconds", "Recovery time objective of the target's tier",
                            labels=TARGET_LABELS)
    last_success = GaugeMetricFamily(
        "safehold_backup_last_success_timestamp_seconds",
        "Unix time of the newest good backup (succeeded job or cached snapshot); 0 if none", labels=TARGET_LABELS)
    last_attempt = GaugeMetricFamily(
        "safehold_backup_last_attempt_timestamp_seconds",
        "Unix time the newest backup job started (or was queued); 0 if none", labels=TARGET_LABELS)
    last_status = GaugeMetricFamily(
        "safehold_backup_last_status",
        "Outcome of the newest finished backup: 1 succeeded or partial (a snapshot was written), 0 failed or "
        "interrupted; absent before the first", labels=TARGET_LABELS)
    skipped_items = GaugeMetricFamily(
        "safehold_backup_skipped_items",
        "Items the newest finished backup left out (unreadable, vanished, replaced) or stored while they "
        "changed; 0 when it was complete (or failed); absent before the first", labels=TARGET_LABELS)
    test_success = GaugeMetricFamily(
        "safehold_restore_test_last_success_timestamp_seconds",
        "Unix time of the newest passed restore test; 0 if none", labels=TARGET_LABELS)
    test_status = GaugeMetricFamily(
        "safehold_restore_test_last_status",
        "Outcome of the newest restore test: 1 passed, 0 failed; absent before the first", labels=TARGET_LABELS)
    test_duration = GaugeMetricFamily(
        "safehold_restore_test_last_duration_seconds",
        "Actual recovery time (restore start to passing health check) of the newest passed restore test",
        labels=TARGET_LABELS)
    last_art = GaugeMetricFamily(
        "safehold_target_last_art_seconds",
        "Actual recovery time of the newest passing restore test or drill step of the target (its ART "
        "history is in the catalog); absent before the first", labels=TARGET_LABELS)
    test_interval = GaugeMetricFamily(
        "safehold_restore_test_interval_seconds",
        "Configured interval between restore tests (restore_test.every); only targets with restore tests",
        labels=TARGET_LABELS)

    suspicious = GaugeMetricFamily(
        "safehold_snapshot_suspicious",
        "1 when the target's newest snapshot is suspicious (possible ransomware) or follows a suspicious one "
        "nobody marked clean; 0 otherwise; absent before a backup judged one", labels=TARGET_LABELS)
    score = GaugeMetricFamily(
        "safehold_snapshot_suspicion_score",
        "Ransomware score of the target's newest snapshot: largest ratio of a signal to its threshold "
        "(suspicious from 1)", labels=TARGET_LABELS)

    duration = HistogramMetricFamily("safehold_backup_duration_seconds",
                                     "Duration of succeeded (and partial) backup jobs", labels=TARGET_LABELS)
    bytes_read = CounterMetricFamily("safehold_backup_bytes_read", "Bytes read from sources by finished backups",
                                     labels=TARGET_LABELS)
    bytes_added = CounterMetricFamily(
        "safehold_backup_bytes_added", "Bytes added to the repository (after deduplication) by finished backups",
        labels=TARGET_LABELS)
    return [rpo, rto, last_success, last_attempt, last_status, skipped_items, test_success, test_status,
            test_duration, test_interval, last_art, suspicious, score, duration, bytes_read, bytes_added]


def add_target(families: list[Metric], config: Any, target: Any, status: TargetStatus | None,
               outcome: JobRecord | None, passed_test: JobRecord | None, totals: TargetBackupTotals | None) -> None:
    """Add ``target``'s samples to ``families`` (``target_families()``). ``outcome``: its newest finished
    (succeeded, partial, failed, interrupted) backup job; ``passed_test``: its newest succeeded restore
    test; ``totals``: its finished backups summed (engine.status.BackupTotals)."""
    (rpo, rto, last_success, last_attempt, last_status, skipped_items, test_success, test_status, test_duration,
     test_interval, last_art, suspicious, score, duration, bytes_read, bytes_added) = families
    values = (target.name, str(target.tier), target.source.type)
    tier = config.tier_of(target)
    rpo.add_metric(values, tier.rpo.total_seconds())
    rto.add_metric(values, tier.rto.total_seconds())
    latest_art = status.art.latest if status and status.art else None
    if latest_art is not None:
        last_art.add_metric(values, latest_art.art_seconds)
    last_success.add_metric(values, _timestamp(status.last_success if status else None))
    last_attempt.add_metric(values, _timestamp(status.last_attempt if status else None))
    state = status.ransomware if status else None
    if isinstance(state, dict):
        suspicious.add_metric(values, 1.0 if state.get("suspicious") else 0.0)
        score.add_metric(values, float(state.get("score") or 0.0))
    if outcome is not None:
        last_status.add_metric(values, 1.0 if outcome.status in GOOD_OUTCOMES else 0.0)
        skipped_items.add_metric(values, float(status.skipped_items if status else 0))
    if target.restore_test is not None:
        # Without restore_test: nothing is overdue or failed, so no restore-test series at all
        # (a 0 timestamp would read as "never passed" to RestoreTestOverdue).
        test_interval.add_metric(values, target.restore_test.every.total_seconds())
        test = status.last_restore_test if status else None
        if test is not None:
            test_status.add_metric(values, 1.0 if test.passed else 0.0)
        passed = _passed_test(passed_test)
        test_success.add_metric(values, passed[0] if passed else 0.0)
        if passed and passed[1] is not None:
            test_duration.add_metric(values, passed[1])
    kept = totals if totals is not None else TargetBackupTotals([0] * (len(DURATION_BUCKETS) + 1))
    buckets = [(repr(bound), float(count)) for bound, count in zip(DURATION_BUCKETS, kept.buckets)]
    duration.add_metric(values, buckets + [("+Inf", float(kept.buckets[-1]))], kept.duration_sum)
    bytes_read.add_metric(values, float(kept.bytes_read))
    bytes_added.add_metric(values, float(kept.bytes_added))


def _passed_test(job: JobRecord | None) -> tuple[float, float | None] | None:
    """(finish time, ART seconds) of a target's newest succeeded restore test, if it passed.

    A restore test whose health check fails ends 'failed' (RestoreTestFailed), so the newest
    'succeeded' job is the newest passed test; ``details.passed`` is checked all the same.
    """
    if job is None:
        return None
    details = job.details or {}
    if not details.get("passed", True):
        return None
    art = details.get("art_seconds")
    return (_timestamp(job.finished_at or job.created_at), float(art) if art is not None else job.duration_seconds)


def drill_families(drills: Any, jobs: list[JobRecord]) -> list[Metric]:
    """The drill families of the configured ``drills`` from their finished jobs (newest first)."""
    labels = ("drill", "scenario")
    success = GaugeMetricFamily("safehold_drill_last_success_timestamp_seconds",
                                "Unix time the newest passed drill ended; 0 if none", labels=labels)
    duration = GaugeMetricFamily("safehold_drill_last_duration_seconds",
                                 "Duration of the newest passed drill (its start to its last step's end)",
                                 labels=labels)
    status = GaugeMetricFamily("safehold_drill_last_status",
                               "Outcome of the newest finished drill: 1 every step passed within its RTO, 0 "
                               "otherwise; absent before the first", labels=labels)
    art = GaugeMetricFamily("safehold_drill_target_art_seconds",
                            "Actual recovery time of each target in the newest passed drill (drill start to "
                            "healthy)", labels=(*labels, "target"))
    interval = GaugeMetricFamily("safehold_drill_interval_seconds",
                                 "Configured interval between drills (every:); only drills the scheduler runs",
                                 labels=labels)
    newest: dict[str, Any] = {}
    newest_passed: dict[str, Any] = {}
    for job in jobs:
        name = (job.details or {}).get("drill")
        if not isinstance(name, str):
            continue
        newest.setdefault(name, job)
        if job.status == "succeeded" and (job.details or {}).get("passed"):
            newest_passed.setdefault(name, job)
    for drill in drills:
        values = (drill.name, drill.scenario)
        if drill.every is not None:
            interval.add_metric(values, drill.every.total_seconds())
        if drill.name in newest:
            status.add_metric(values, 1.0 if newest[drill.name].status == "succeeded" else 0.0)
        passed = newest_passed.get(drill.name)
        success.add_metric(values, _timestamp(passed.finished_at) if passed else 0.0)
        if passed is None:
            continue
        duration.add_metric(values, float(passed.details.get("duration_seconds") or passed.duration_seconds or 0))
        for step in passed.details.get("steps") or []:
            if isinstance(step, dict) and isinstance(step.get("target"), str) and step.get("art_seconds") is not None:
                art.add_metric((*values, step["target"]), float(step["art_seconds"]))
    return [success, duration, status, art, interval]


def job_families(running: dict[str, int], failed: dict[tuple[str | None, str], int]) -> list[Metric]:
    """Running jobs per kind (every RUNNING_KINDS, also at 0) and failed jobs per (target, kind)."""
    gauge = GaugeMetricFamily("safehold_jobs_running", "Jobs running now, by kind", labels=("kind",))
    failures = CounterMetricFamily("safehold_job_failures", "Jobs that ended failed, by target and kind",
                                   labels=("target", "kind"))
    counts: dict[str, int] = dict.fromkeys(RUNNING_KINDS, 0) | running
    for kind, count in sorted(counts.items()):
        gauge.add_metric((kind,), float(count))
    for (target, kind), count in sorted(failed.items(), key=lambda row: (row[0][0] or "", row[0][1])):
        # Repository-wide jobs (check, prune) have no target: an empty label value.
        failures.add_metric((target or "", kind), float(count))
    return [gauge, failures]


def copy_families(config: Any, newest_jobs: dict[tuple[str, str], JobRecord]) -> list[Metric]:
    """Per (target, destination): when its newest copy succeeded and what that copy sent. Every
    configured copy's targets appear (0 before the first copy, so an alert can tell "never");
    copies to a url given on the command line appear once they succeeded. ``newest_jobs``: the
    newest succeeded copy job per (target, destination)."""
    success = GaugeMetricFamily(
        "safehold_copy_last_success_timestamp_seconds",
        "Unix time the newest successful copy of the target's snapshots to the destination finished; 0 if none",
        labels=("target", "destination"))
    sent = GaugeMetricFamily(
        "safehold_copy_last_bytes_sent",
        "Stored bytes the newest successful copy sent to the destination (0: it had everything already)",
        labels=("target", "destination"))
    newest: dict[tuple[str, str], tuple[float, float]] = {}
    for copy in config.copies:
        for target in config.targets:
            if copy.targets is None or target.name in copy.targets:
                newest[(target.name, copy.name)] = (0.0, 0.0)
    for key, job in newest_jobs.items():
        if key[1]:
            newest[key] = (_timestamp(job.finished_at or job.created_at),
                           float((job.details or {}).get("bytes_sent") or 0))
    for (target, destination), (when, size) in sorted(newest.items()):
        success.add_metric((target, destination), when)
        sent.add_metric((target, destination), size)
    return [success, sent]

def create_registry(context: Context, **options: Any) -> CollectorRegistry:
    """A registry holding only safehold's collector (no process or Python metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SafeholdCollector(context, **options))
    return registry


class MetricsExposition:
    """The text of ``/metrics``, the catalog's part kept up to date one target at a time.

    Rendering ~35,000 samples at 1,000 targets (the duration histogram's 17 buckets per target) is
    a large part of a second of pure Python in prometheus-client on a busy host, and a change of
    the catalog (a job queued, started, finished) touches one target or a few. The exposition
    shares the StatusCache's CatalogView (engine.catalog_view: only the changed jobs are read) and
    keeps each per-target family's text as one chunk of bytes per target: after a change, the
    families of the touched targets are built again for those targets alone and rendered by
    prometheus-client's ``generate_latest`` (the chunk is its output after the family's HELP and
    TYPE lines, which must match the cached ones); the other targets' chunks are reused. A full
    rendering (the first scrape, the configuration changed, the view read everything again)
    renders each family whole with ``generate_latest`` and cuts its text into the targets' chunks
    by its samples (one line each; if a family ever renders otherwise, it is rendered whole on
    every change instead). The drill, job-count and copy families are rendered again when their
    inputs changed. Build info, the repository and the workers (whose heartbeats age) are
    rendered on every scrape. Nothing cached depends on the clock (times are timestamps).
    Thread-safe: scrapes and status reads serialize on the StatusCache's lock.
    """

    def __init__(self, context: Context, *, statuses: StatusCache | None = None, max_age: float = 300.0,
                 **options: Any) -> None:
        if statuses is None:
            from ..engine.status import StatusCache

            statuses = StatusCache(context, max_age=max_age)
        self.context = context
        self.statuses = statuses
        self.collector = SafeholdCollector(context, statuses=statuses, **options)
        self._key: Any = None  # (config, view epoch) of the cached rendering
        self._seen = -1  # the view's counter when it was last brought up to date
        self._headers: list[bytes] = []
        self._chunks: dict[str, list[bytes]] = {}  # target -> its text in each per-target family
        self._texts: list[bytes] = []  # each per-target family's text
        self._split = True  # False: a family did not render one line per sample; render whole
        self._parts: dict[str, tuple[Any, bytes]] = {}  # drills, jobs, copies: (inputs' version, text)
        self._body = b""
        self.rendered = 0  # how many scrapes rendered part of the catalog's families again (tests, the bench)
        self.rendered_targets = 0  # how many targets the last of them rendered again

    def render(self) -> bytes:
        with self.statuses.lock:
            view = self.statuses.refresh()
            if (self.context.config, view.epoch) != self._key or view.counter != self._seen:
                self._update(view)
            body = self._body
        head = generate_latest(_Families(self.collector._build_info))  # type: ignore[arg-type]
        tail = generate_latest(_Families(self.collector.live_families))  # type: ignore[arg-type]
        return head + body + tail

    def _update(self, view: Any) -> None:
        config = self.context.config
        totals_kept = self.collector._backup_totals_kept
        totals_kept.update(self.context, copy=False)
        if (config, view.epoch) != self._key or not self._split:
            self._render_all(view)
            names: list[str] = [target.name for target in config.targets]
        else:
            touched = view.changed_since(self._seen) | totals_kept.changed
            names = [target.name for target in config.targets if target.name in touched]
            self._render_targets(view, names)
        self.rendered_targets = len(names)
        self._key, self._seen = (config, view.epoch), view.counter
        parts = (("drills", (view.versions["drills"], view.epoch),
                  lambda: drill_families(config.drills, view.drills) if config.drills else []),
                 ("jobs", (view.versions["running"], view.versions["failures"], view.epoch),
                  lambda: job_families(view.running, view.failures)),
                 ("copies", (view.versions["copies"], view.epoch), lambda: copy_families(config, view.copies)))
        for name, version, build in parts:
            kept = self._parts.get(name)
            if kept is None or kept[0] != version:
                families = build()
                self._parts[name] = (version, generate_latest(_Families(lambda: iter(families))))  # type: ignore[arg-type]
        self._body = b"".join(self._texts) + b"".join(self._parts[name][1] for name, _, _ in parts)
        self.rendered += 1

    def _families_of(self, view: Any, targets: list[Any]) -> list[Metric]:
        statuses = self.statuses._statuses
        latest, totals = view.latest, self.collector._backup_totals_kept.targets
        families = target_families()
        for target in targets:
            add_target(families, self.context.config, target, statuses.get(target.name),
                       latest["finished"].get(target.name), latest["passed_test"].get(target.name),
                       totals.get(target.name))
        return families

    def _render_all(self, view: Any) -> None:
        targets = list(self.context.config.targets)
        self._headers, self._texts, self._split = [], [], True
        self._chunks = {target.name: [] for target in targets}
        for family in self._families_of(view, targets):
            text = generate_latest(_Families(lambda family=family: iter([family])))  # type: ignore[arg-type]
            self._texts.append(text)
            lines = text.splitlines(keepends=True)
            if len(lines) != 2 + len(family.samples):
                self._split = False
                continue
            self._headers.append(b"".join(lines[:2]))
            by_target: dict[str, list[bytes]] = {}
            for line, sample in zip(lines[2:], family.samples):
                by_target.setdefault(sample.labels["target"], []).append(line)
            for name, chunks in self._chunks.items():
                chunks.append(b"".join(by_target.get(name, ())))

    def _render_targets(self, view: Any, names: list[str]) -> None:
        if not names:
            return
        by_name = {target.name: target for target in self.context.config.targets}
        changed: set[int] = set()
        for name in names:
            families = self._families_of(view, [by_name[name]])
            for index, family in enumerate(families):
                text = generate_latest(_Families(lambda family=family: iter([family])))  # type: ignore[arg-type]
                header = self._headers[index]
                if not text.startswith(header):  # the library renders a family otherwise: everything again
                    self._render_all(view)
                    return
                chunk = text[len(header):]
                if self._chunks[name][index] != chunk:
                    self._chunks[name][index] = chunk
                    changed.add(index)
        order = [target.name for target in self.context.config.targets]
        for index in changed:
            self._texts[index] = self._headers[index] + b"".join(self._chunks[name][index] for name in order)


class _Families:
    """What generate_latest needs of a registry: ``collect()``."""

    def __init__(self, families: Any) -> None:
        self.collect = families


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric((), value)
    return family


def _timestamp(moment: Any) -> float:
    return moment.timestamp() if moment is not None else 0.0

