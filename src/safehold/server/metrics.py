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

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__

if TYPE_CHECKING:
    from ..engine.context import Context
    from ..engine.status import StatusCache

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

        config = self.context.config
        found = self.statuses.statuses() if self.statuses is not None else target_statuses(self.context)
        statuses = {status.name: status for status in found}
        labels = {target.name: (target.name, str(target.tier), target.source.type) for target in config.targets}
        test_intervals = {target.name: target.restore_test.every.total_seconds()
                          for target in config.targets if target.restore_test is not None}

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

        outcomes = self._last_backup_outcomes()
        passed_tests = self._last_passed_restore_tests()
        tiers = {target.name: config.tier_of(target) for target in config.targets}  # by name: N lookups, not N²
        for name, values in labels.items():
            tier = tiers[name]
            rpo.add_metric(values, tier.rpo.total_seconds())
            rto.add_metric(values, tier.rto.total_seconds())
            status = statuses.get(name)
            latest_art = status.art.latest if status and status.art else None
            if latest_art is not None:
                last_art.add_metric(values, latest_art.art_seconds)
            last_success.add_metric(values, _timestamp(status.last_success if status else None))
            last_attempt.add_metric(values, _timestamp(status.last_attempt if status else None))
            state = status.ransomware if status else None
            if isinstance(state, dict):
                suspicious.add_metric(values, 1.0 if state.get("suspicious") else 0.0)
                score.add_metric(values, float(state.get("score") or 0.0))
            if name in outcomes:
                last_status.add_metric(values, 1.0 if outcomes[name] in GOOD_OUTCOMES else 0.0)
                skipped_items.add_metric(values, float(status.skipped_items if status else 0))
            if name not in test_intervals:
                # No restore_test: configured: nothing to be overdue or failed, so no restore-test series
                # at all (a 0 timestamp would read as "never passed" to RestoreTestOverdue).
                continue
            test_interval.add_metric(values, test_intervals[name])
            test = status.last_restore_test if status else None
            if test is not None:
                test_status.add_metric(values, 1.0 if test.passed else 0.0)
            passed = passed_tests.get(name)
            test_success.add_metric(values, passed[0] if passed else 0.0)
            if passed and passed[1] is not None:
                test_duration.add_metric(values, passed[1])
        yield from (rpo, rto, last_success, last_attempt, last_status, skipped_items, test_success, test_status,
                    test_duration, test_interval, last_art, suspicious, score)
        yield from self._backup_totals(labels)

    def _drills(self) -> Iterator[Metric]:
        drills = self.context.config.drills
        if not drills:
            return
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
        # Newest first; drills are rare (monthly, say), so reading all their jobs is cheap.
        for job in self.context.catalog.list_jobs(kind="drill", status=("succeeded", "failed"), limit=None):
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
        yield from (success, duration, status, art, interval)

    def _backup_totals(self, labels: dict[str, tuple[str, str, str]]) -> Iterator[Metric]:
        duration = HistogramMetricFamily("safehold_backup_duration_seconds",
                                         "Duration of succeeded (and partial) backup jobs", labels=TARGET_LABELS)
        bytes_read = CounterMetricFamily("safehold_backup_bytes_read", "Bytes read from sources by finished backups",
                                         labels=TARGET_LABELS)
        bytes_added = CounterMetricFamily(
            "safehold_backup_bytes_added", "Bytes added to the repository (after deduplication) by finished backups",
            labels=TARGET_LABELS)
        from ..engine.status import TargetBackupTotals

        totals = self._backup_totals_kept.update(self.context)
        empty = TargetBackupTotals([0] * (len(DURATION_BUCKETS) + 1))
        for name, values in labels.items():
            kept = totals.get(name, empty)
            buckets = [(repr(bound), float(count)) for bound, count in zip(DURATION_BUCKETS, kept.buckets)]
            duration.add_metric(values, buckets + [("+Inf", float(kept.buckets[-1]))], kept.duration_sum)
            bytes_read.add_metric(values, float(kept.bytes_read))
            bytes_added.add_metric(values, float(kept.bytes_added))
        yield from (duration, bytes_read, bytes_added)

    def _jobs(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("safehold_jobs_running", "Jobs running now, by kind", labels=("kind",))
        failures = CounterMetricFamily("safehold_job_failures", "Jobs that ended failed, by target and kind",
                                       labels=("target", "kind"))
        counts: dict[str, int] = dict.fromkeys(RUNNING_KINDS, 0)
        counts |= {kind: count for (_target, kind), count in self.context.catalog.count_jobs("running").items()}
        failed = [(target, kind, count) for (target, kind), count
                  in self.context.catalog.count_jobs("failed", by_target=True).items()]
        for kind, count in sorted(counts.items()):
            running.add_metric((kind,), float(count))
        for target, kind, count in sorted(failed, key=lambda row: (row[0] or "", row[1])):
            # Repository-wide jobs (check, prune) have no target: an empty label value.
            failures.add_metric((target or "", kind), float(count))
        yield from (running, failures)

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
        """Per (target, destination): when its newest copy succeeded and what that copy sent. Every
        configured copy's targets appear (0 before the first copy, so an alert can tell "never");
        copies to a url given on the command line appear once they succeeded."""
        success = GaugeMetricFamily(
            "safehold_copy_last_success_timestamp_seconds",
            "Unix time the newest successful copy of the target's snapshots to the destination finished; 0 if none",
            labels=("target", "destination"))
        sent = GaugeMetricFamily(
            "safehold_copy_last_bytes_sent",
            "Stored bytes the newest successful copy sent to the destination (0: it had everything already)",
            labels=("target", "destination"))
        newest: dict[tuple[str, str], tuple[float, float]] = {}
        for copy in self.context.config.copies:
            for target in self.context.config.targets:
                if copy.targets is None or target.name in copy.targets:
                    newest[(target.name, copy.name)] = (0.0, 0.0)
        # Newest first: the first job seen for a (target, destination) is its newest.
        seen: set[tuple[str, str]] = set()
        for job in self.context.catalog.list_jobs(kind="copy", status="succeeded", limit=1000):
            details = job.details or {}
            key = (job.target or "", str(details.get("destination", "")))
            if key in seen or not key[1]:
                continue
            seen.add(key)
            newest[key] = (_timestamp(job.finished_at or job.created_at), float(details.get("bytes_sent") or 0))
        for (target, destination), (when, size) in sorted(newest.items()):
            success.add_metric((target, destination), when)
            sent.add_metric((target, destination), size)
        yield success
        yield sent

    # --- queries --------------------------------------------------------------

    def _last_backup_outcomes(self) -> dict[str, str]:
        """The status of each target's newest finished (succeeded, partial, failed, interrupted) backup job."""
        latest = self.context.catalog.latest_jobs("backup", status=GOOD_OUTCOMES + FAILED_OUTCOMES)
        return {target: job.status for target, job in latest.items() if target is not None}

    def _last_passed_restore_tests(self) -> dict[str, tuple[float, float | None]]:
        """Per target: (finish time, ART seconds) of the newest passed restore test.

        A restore test whose health check fails ends 'failed' (RestoreTestFailed), so the newest
        'succeeded' job is the newest passed test; ``details.passed`` is checked all the same.
        """
        result: dict[str, tuple[float, float | None]] = {}
        for target, job in self.context.catalog.latest_jobs("restore-test", status="succeeded").items():
            details = job.details or {}
            if target is None or not details.get("passed", True):
                continue
            art = details.get("art_seconds")
            result[target] = (_timestamp(job.finished_at or job.created_at),
                              float(art) if art is not None else job.duration_seconds)
        return result

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


def create_registry(context: Context, **options: Any) -> CollectorRegistry:
    """A registry holding only safehold's collector (no process or Python metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SafeholdCollector(context, **options))
    return registry


class MetricsExposition:
    """The text of ``/metrics``, with the catalog's part rendered again only when the catalog changed.

    Rendering ~16,000 samples at 1,000 targets (17 histogram buckets per target) is most of a
    second of pure Python in prometheus-client on a busy host, and the catalog rarely changes
    between two scrapes of a quiet night. Each scrape reads ``Catalog.change_marker()`` (three
    index lookups) and reuses the bytes rendered under the same marker; the repository and worker
    families, and build info, are rendered on every scrape. ``max_age`` bounds the reuse as in
    ``engine.status.StatusCache``. Thread-safe: concurrent scrapes wait for one rendering.
    """

    def __init__(self, context: Context, *, statuses: StatusCache | None = None, max_age: float = 300.0,
                 **options: Any) -> None:
        self.context = context
        self.collector = SafeholdCollector(context, statuses=statuses, **options)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._cached: tuple[Any, float, bytes] | None = None
        self.rendered = 0  # how many times the catalog part was rendered (tests, the bench)

    def render(self) -> bytes:
        from prometheus_client.exposition import generate_latest

        with self._lock:
            marker = self.context.catalog.change_marker()  # before the data it guards
            cached = self._cached
            if cached is None or cached[0] != marker or time.monotonic() - cached[1] >= self.max_age:
                families = list(self.collector.catalog_families())
                body = generate_latest(_Families(lambda: iter(families)))  # type: ignore[arg-type]
                cached = self._cached = (marker, time.monotonic(), body)
                self.rendered += 1
        head = generate_latest(_Families(self.collector._build_info))  # type: ignore[arg-type]
        tail = generate_latest(_Families(self.collector.live_families))  # type: ignore[arg-type]
        return head + cached[2] + tail


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

