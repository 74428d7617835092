"""engine.status.BackupTotals: the totals behind /metrics' duration histogram and byte counters,
read a tail of the catalog at a time (a scrape used to read every backup job ever run)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

from safehold.catalog import Catalog
from safehold.engine.status import BackupTotals


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


def test_totals_count_each_finished_backup_once_and_read_only_the_tail(tmp_path: Path) -> None:
    clock = Clock()
    catalog = Catalog.open(f"sqlite:///{tmp_path}/catalog.db", clock=clock)
    context = SimpleNamespace(catalog=catalog)
    totals = BackupTotals((10.0, 100.0))

    def backup(target: str, seconds: float, status: str = "succeeded", read: int = 5) -> int:
        job_id = catalog.start_job("backup", target)
        clock.now += dt.timedelta(seconds=seconds)
        catalog.finish_job(job_id, status, bytes_read=read, bytes_added=1)
        return job_id

    backup("a", 5)
    backup("a", 50)
    backup("b", 500, status="failed", read=7)
    slow = catalog.start_job("backup", "b")  # still running: the watermark stops here
    catalog.finish_job(catalog.start_job("check"), "succeeded")  # other kinds never count
    first = totals.update(context)
    assert first["a"].buckets == [1, 2, 2] and first["a"].duration_sum == 55.0
    assert (first["a"].bytes_read, first["a"].bytes_added) == (10, 2)
    assert first["b"].buckets == [0, 0, 0] and first["b"].bytes_read == 7  # a failure reads bytes, takes no time

    backup("a", 1)  # finished after the running one started, counted now and never again
    assert totals.update(context)["a"].buckets == [2, 3, 3]
    clock.now += dt.timedelta(seconds=20)
    catalog.finish_job(slow, "partial", bytes_read=3)  # the older job finishes last: counted once
    again = totals.update(context)
    assert again["b"].buckets == [0, 1, 1] and again["b"].bytes_read == 10
    assert totals.update(context)["a"].buckets == [2, 3, 3]

    # Everything is final now: a scrape reads only the jobs it has not seen.
    backup("c", 2)
    seen: list[tuple] = []
    original = catalog.finished_backups_from

    def spy(first_id: int):
        found = original(first_id)
        seen.append((first_id, len(found)))
        return found

    catalog.finished_backups_from = spy
    assert totals.update(context)["c"].buckets == [1, 1, 1]
    assert totals.update(context)["c"].buckets == [1, 1, 1]
    assert [count for _, count in seen] == [1, 0], seen
    catalog.close()
