"""Each target's newest job of a few selections (kind, statuses), kept up to date from change markers.

Read whole (one ``latest_jobs`` per selection: 1,000 rows each at 1,000 targets) the first time and
whenever the caller resets it; otherwise updated from the jobs that changed between the previous
``Catalog.change_marker()`` and the new one (``Catalog.jobs_changed_between``: the new ids and the
tail rows that differ): a newer job of a selection replaces the one kept, a job's new status
replaces its old record. Used by the scheduler (what is due) and by the read side's status and
metrics (engine.catalog_view), so both follow the catalog the same way.

What it cannot follow, it reads again: a marker whose tail is summed (a job left running long
ago), a newest id that went back (jobs deleted, another catalog), and, unless the caller follows
the snapshot cache itself, a change of the snapshot cache. A kept job that left its selection
(only possible for a selection of active statuses: final statuses never change) is read again
too. Deleted old jobs leave the newest id alone and are not seen: callers reset now and then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Catalog, JobRecord


class LatestJobs:
    """``selections``: name -> (kind, statuses or None for any status). Not thread-safe: callers
    hold their own lock. ``kept[name]`` is target -> newest JobRecord of that selection (None for
    repository-wide jobs), as ``Catalog.latest_jobs(kind, statuses)`` would answer now."""

    def __init__(self, selections: Mapping[str, tuple[str, tuple[str, ...] | None]]) -> None:
        self.selections = dict(selections)
        self.marker: Any = None
        self.kept: dict[str, dict[str | None, JobRecord]] = {}
        self.full_reads = 0  # how many times everything was read (tests, the bench)

    def reset(self) -> None:
        """Read everything again at the next ``update``."""
        self.marker = None

    def __getitem__(self, name: str) -> dict[str | None, JobRecord]:
        return self.kept[name]

    def update(self, catalog: Catalog, marker: tuple[Any, ...], *,
               follow_snapshots: bool = False) -> list[JobRecord] | None:
        """Bring every selection up to ``marker``. Returns the jobs that changed (oldest first), or
        None when everything was read again. ``follow_snapshots``: a change of the snapshot cache
        alone does not force a full read (the caller reads what it needs of the cache itself)."""
        changed = self._changes(catalog, marker, follow_snapshots)
        if changed is not None and not all(self._apply(job) for job in changed):
            changed = None
        if changed is None:
            self.kept = {name: catalog.latest_jobs(kind, statuses)
                         for name, (kind, statuses) in self.selections.items()}
            self.full_reads += 1
        self.marker = marker
        return changed

    def _changes(self, catalog: Catalog, marker: tuple[Any, ...], follow_snapshots: bool) -> list[JobRecord] | None:
        before = self.marker
        if before is None or (marker[0] or 0) < (before[0] or 0):
            return None
        if follow_snapshots:
            before = (before[0], before[1], marker[2])
        return catalog.jobs_changed_between(before, marker)

    def _apply(self, job: JobRecord) -> bool:
        """Apply one changed job; False when it cannot be followed (a kept job left its selection)."""
        for name, (kind, statuses) in self.selections.items():
            if job.kind != kind:
                continue
            kept = self.kept[name]
            current = kept.get(job.target)
            if statuses is None or job.status in statuses:
                if current is None or current.id <= job.id:
                    kept[job.target] = job
            elif current is not None and current.id == job.id:
                return False
        return True
