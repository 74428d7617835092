"""What the read side (``safehold serve``: target statuses and ``/metrics``) needs of the catalog,
kept up to date from the jobs that changed instead of read again after every change.

A ``CatalogView`` holds, for every target: its newest backup, good backup, finished backup, finished
and passed restore test, mark and scan (catalog.latest.LatestJobs, as the scheduler keeps its own),
its newest cached snapshot time, its newest successful copy per destination, the restore tests of
its ART history, and the counts of failed jobs per (target, kind); plus the finished drills and the
running jobs per kind. ``update(marker)`` reads only the jobs that changed since the previous
``Catalog.change_marker()`` (one query, a few rows) and stamps each target whose data changed with
a counter, so each consumer (engine.status.StatusCache, server.metrics.MetricsExposition) computes
again only the targets stamped after what it last saw. Everything is read again (a new ``epoch``)
the first time, when the marker cannot be followed (catalog.latest), and whenever the caller resets
it: StatusCache does on a configuration change and every ``max_age`` as a safety net.

The result is, by construction and by test (tests/unit/engine/test_catalog_view.py), what a
from-scratch computation (``status.target_statuses``, ``server.metrics.create_registry``) gives.
Not thread-safe: StatusCache's lock guards it.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from ..catalog.latest import LatestJobs
from ..catalog.store import GOOD_BACKUP_STATUSES

if TYPE_CHECKING:
    from ..catalog.store import JobRecord
    from .context import Context
    from .status import ArtSample

#: Copy jobs read for each (target, destination)'s newest copy when everything is read.
COPY_JOBS_READ = 1000
#: Drills whose steps count in the ART histories (newest first).
DRILLS_IN_ART = 100
ART_STATUSES = ("succeeded", "failed")
DRILL_STATUSES = ("succeeded", "failed")


class CatalogView:
    """See the module docstring. ``stamps[target]``: the ``counter`` value of the last update that
    changed something of ``target``; ``versions[part]`` the same for the parts that are not per
    target ('drills', 'running', 'failures', 'copies', 'snapshots')."""

    def __init__(self, context: Context, art_limit: int | None = None) -> None:
        from .status import ART_HISTORY_LIMIT, FINISHED_BACKUP_STATUSES, FINISHED_TEST_STATUSES

        self.context = context
        self.art_limit = art_limit or ART_HISTORY_LIMIT
        self.latest = LatestJobs({
            "backup": ("backup", None),
            "good": ("backup", GOOD_BACKUP_STATUSES),
            "finished": ("backup", FINISHED_BACKUP_STATUSES),
            "test": ("restore-test", FINISHED_TEST_STATUSES),
            "passed_test": ("restore-test", ("succeeded",)),
            "mark": ("mark", ("succeeded", "partial")),
            "scan": ("scan", ("succeeded", "partial")),
        })
        self.epoch = 0
        self.counter = 0
        self.stamps: dict[str | None, int] = {}
        self.versions: dict[str, int] = {}
        self.snapshot_times: dict[str | None, Any] = {}
        self.copies: dict[tuple[str, str], JobRecord] = {}
        self.drills: list[JobRecord] = []  # every finished drill, newest first
        self.running: dict[str, int] = {}
        self.failures: dict[tuple[str | None, str], int] = {}
        # The ART history's restore tests: the newest art_limit per configured target of all finished
        # restore tests (as status.art_histories reads them), by id; and each one's sample.
        self._window: list[int] = []
        self._window_cap = 0
        self._tests: dict[int, str | None] = {}  # id -> target
        self._by_target: dict[str | None, dict[int, ArtSample]] = {}  # the measured ones
        self._drill_samples: dict[str, list[ArtSample]] = {}
        self._wanted: dict[str, float] = {}

    # --- reading ------------------------------------------------------------------

    def reset(self) -> None:
        """Read everything again at the next ``update``."""
        self.latest.reset()

    def update(self, marker: tuple[Any, ...]) -> None:
        catalog = self.context.catalog
        before = self.latest.marker
        if before is not None and before == marker:
            return
        self.counter += 1
        changed = self.latest.update(catalog, marker, follow_snapshots=True)
        if changed is None:
            self._read_everything()
            return
        if before[2] != marker[2]:
            self.snapshot_times = catalog.latest_snapshot_times()
            self.versions["snapshots"] = self.counter
            for target in self.context.config.targets:  # a handful of rows; every target may have moved
                self.stamps[target.name] = self.counter
        if not changed:
            return
        old_status = {row[0]: row[1] for row in before[1]}
        newest_before = before[0] or 0
        drills_changed = copies_changed = failures_changed = False
        for job in changed:
            self.stamps[job.target] = self.counter
            if job.kind == "drill":
                drills_changed = True
            elif job.kind == "copy" and job.status == "succeeded":
                copies_changed |= self._note_copy(job)
            elif job.kind == "restore-test" and job.status in ART_STATUSES:
                self._note_test(job)
            if job.status == "failed" and (job.id > newest_before or old_status.get(job.id, "failed") != "failed"):
                key = (job.target, job.kind)
                self.failures[key] = self.failures.get(key, 0) + 1
                failures_changed = True
        if drills_changed:
            self._read_drills()
            for target in self.context.config.targets:  # a drill's steps name any targets
                self.stamps[target.name] = self.counter
        if copies_changed:
            self.versions["copies"] = self.counter
        if failures_changed:
            self.versions["failures"] = self.counter
        running = _running_counts(catalog)
        if running != self.running:
            self.running = running
            self.versions["running"] = self.counter

    def verify(self, marker: tuple[Any, ...], fresh: CatalogView | None = None) -> set[str | None]:
        """The safety net: everything read again (``fresh``, a view read whole, perhaps at an older
        marker and outside the caller's lock; read here when None), brought to ``marker`` as this
        view is, and adopted; only the targets (and parts) whose data differs from what this view
        followed (jobs deleted or rewritten behind the marker's back) are stamped, and the epoch
        stays, so consumers compute and render only those again. Returns the targets that differed."""
        if fresh is None:
            fresh = CatalogView(self.context, self.art_limit)
        fresh.update(marker)  # from its own marker on, as any view follows
        self.update(marker)
        self.counter += 1
        differed: set[str | None] = set()
        for name, kept in fresh.latest.kept.items():
            old = self.latest.kept.get(name, {})
            differed |= {target for target in kept.keys() | old.keys() if kept.get(target) != old.get(target)}
        for new, old in ((fresh.snapshot_times, self.snapshot_times), (fresh._by_target, self._by_target),
                         (fresh._drill_samples, self._drill_samples)):
            differed |= {target for target in new.keys() | old.keys() if new.get(target) != old.get(target)}
        copies = {key for key in fresh.copies.keys() | self.copies.keys() if fresh.copies.get(key) != self.copies.get(key)}
        differed |= {target for target, _ in copies}
        for target in differed:
            self.stamps[target] = self.counter
        if copies:
            self.versions["copies"] = self.counter
        for part in ("drills", "running", "failures"):
            if getattr(fresh, part) != getattr(self, part):
                self.versions[part] = self.counter
        self.latest.kept = fresh.latest.kept
        for name in ("snapshot_times", "copies", "drills", "running", "failures", "_window", "_window_cap",
                     "_tests", "_by_target", "_drill_samples", "_wanted"):
            setattr(self, name, getattr(fresh, name))
        return differed

    def _read_everything(self) -> None:
        catalog = self.context.catalog
        self.epoch += 1
        self.stamps.clear()
        self.versions = dict.fromkeys(("drills", "running", "failures", "copies", "snapshots"), self.counter)
        self.snapshot_times = catalog.latest_snapshot_times()
        self.copies = {}
        for job in catalog.list_jobs(kind="copy", status="succeeded", limit=COPY_JOBS_READ):  # newest first
            self.copies.setdefault(copy_key(job), job)
        self.running = _running_counts(catalog)
        self.failures = {key: count for key, count in catalog.count_jobs("failed", by_target=True).items()}
        config = self.context.config
        self._wanted = {target.name: config.tier_of(target).rto.total_seconds() for target in config.targets}
        self._read_drills()
        self._window_cap = self.art_limit * max(1, len(self._wanted))
        self._tests, self._by_target = {}, {}
        tests = catalog.list_jobs(kind="restore-test", status=ART_STATUSES, limit=self._window_cap)
        for job in tests:
            self._add_test(job)
        self._window = sorted(self._tests)

    def _read_drills(self) -> None:
        from .status import drill_samples

        self.drills = self.context.catalog.list_jobs(kind="drill", status=DRILL_STATUSES, limit=None)
        self._drill_samples = drill_samples(self.drills[:DRILLS_IN_ART], self._wanted)
        self.versions["drills"] = self.counter

    def _note_copy(self, job: JobRecord) -> bool:
        key = copy_key(job)
        kept = self.copies.get(key)
        if kept is not None and kept.id >= job.id:
            return False
        self.copies[key] = job
        return True

    def _note_test(self, job: JobRecord) -> None:
        """A restore test that finished: into the ART window (the newest ``_window_cap`` by id)."""
        if job.id in self._tests:
            return
        if len(self._window) >= self._window_cap and job.id < self._window[0]:
            return
        bisect.insort(self._window, job.id)
        self._add_test(job)
        while len(self._window) > self._window_cap:
            dropped = self._window.pop(0)
            target = self._tests.pop(dropped)
            self._by_target.get(target, {}).pop(dropped, None)
            self.stamps[target] = self.counter

    def _add_test(self, job: JobRecord) -> None:
        from .status import restore_test_sample

        self._tests[job.id] = job.target
        sample = restore_test_sample(job, self._wanted)
        if sample is not None:
            self._by_target.setdefault(job.target, {})[job.id] = sample

    # --- per target -------------------------------------------------------------------

    def art_history(self, target: str) -> list[ArtSample]:
        """The target's ART history as status.art_histories gives it (newest first, bounded)."""
        tests = self._by_target.get(target, {})
        history = [tests[job_id] for job_id in sorted(tests, reverse=True)] + self._drill_samples.get(target, [])
        history.sort(key=lambda sample: (sample.time, sample.job_id), reverse=True)
        return history[:self.art_limit]

    def changed_since(self, counter: int) -> set[str | None]:
        """The targets stamped after ``counter``."""
        return {target for target, stamp in self.stamps.items() if stamp > counter}


def copy_key(job: JobRecord) -> tuple[str, str]:
    return (job.target or "", str((job.details or {}).get("destination", "")))


def _running_counts(catalog: Any) -> dict[str, int]:
    return {kind: count for (_target, kind), count in catalog.count_jobs("running").items()}


__all__ = ["CatalogView", "copy_key"]
