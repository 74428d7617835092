"""The timing rules on their own: jitter offsets, cron slots in local time, retry backoff."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from safehold.scheduler import timing

UTC = dt.UTC


def job(created: dt.datetime, status: str = "succeeded", attempt: int = 1, trigger: str = "scheduler"):
    return SimpleNamespace(created_at=created, finished_at=created, status=status,
                           details={"attempt": attempt, "trigger": trigger})


def test_jitter_is_fixed_per_name_bounded_and_spread() -> None:
    window = dt.timedelta(minutes=5)
    offsets = [timing.jitter_offset(f"web-{index:03d}", window) for index in range(100)]
    assert offsets == [timing.jitter_offset(f"web-{index:03d}", window) for index in range(100)]
    assert all(dt.timedelta(0) <= offset < window for offset in offsets)
    per_second = Counter(int(offset.total_seconds()) for offset in offsets)
    assert max(per_second.values()) <= 3  # a hundred targets never share a start second more than 3 at a time
    assert max(offsets) - min(offsets) > dt.timedelta(minutes=4)
    # Never more than half the period, so a slot's jittered run comes before the next slot.
    assert all(timing.jitter_offset(f"t{index}", window, dt.timedelta(minutes=1)) < dt.timedelta(seconds=30)
               for index in range(50))
    assert timing.jitter_offset("x", dt.timedelta(0)) == dt.timedelta(0)


def test_latest_slot_reads_cron_in_the_given_time_zone() -> None:
    now = dt.datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    slot, period = timing.latest_slot("0 9 * * *", now, ZoneInfo("Europe/Berlin"))  # 09:00 CEST = 07:00 UTC
    assert slot == dt.datetime(2026, 7, 1, 7, 0, tzinfo=UTC) and period == dt.timedelta(days=1)
    slot, _ = timing.latest_slot("0 */6 * * *", dt.datetime(2026, 7, 1, 6, 0, tzinfo=UTC), UTC)
    assert slot == dt.datetime(2026, 7, 1, 6, 0, tzinfo=UTC)  # a slot at exactly now counts


def test_cron_decision_once_per_slot() -> None:
    started = dt.datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    kwargs = dict(started_at=started, jitter=dt.timedelta(0), timezone=UTC)
    last = job(dt.datetime(2026, 7, 1, 2, 0, tzinfo=UTC))
    due = timing.cron_decision("web", "0 * * * *", last, started, **kwargs)
    assert due.due and due.reason == "cron slot 2026-07-01 12:00"
    done = timing.cron_decision("web", "0 * * * *", job(started), started + dt.timedelta(minutes=20), **kwargs)
    assert not done.due


def test_retry_backoff_doubles_and_stops() -> None:
    failed_at = dt.datetime(2026, 7, 1, tzinfo=UTC)
    backoff = dt.timedelta(minutes=1)
    first = timing.retry_decision(job(failed_at, "failed", 1), failed_at, 2, backoff)
    assert first is not None and not first.due and first.due_at == failed_at + backoff and first.attempt == 2
    second = timing.retry_decision(job(failed_at, "failed", 2), failed_at + 2 * backoff, 2, backoff)
    assert second is not None and second.due and second.attempt == 3
    assert timing.retry_decision(job(failed_at, "failed", 3), failed_at, 2, backoff) is None  # exhausted
    assert timing.retry_decision(job(failed_at, "succeeded"), failed_at, 2, backoff) is None
    assert timing.retry_decision(job(failed_at, "failed", trigger="api"), failed_at, 2, backoff) is None
    interrupted = timing.retry_decision(job(failed_at, "interrupted"), failed_at + backoff, 2, backoff)
    assert interrupted is not None and interrupted.due
