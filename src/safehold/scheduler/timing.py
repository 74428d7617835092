"""When a job is due: cron slots, RPO-derived intervals, per-target jitter, retry backoff.

Pure functions of the configuration, the newest job of a kind and the time,
so that the scheduler's decisions can be tested with a fake clock and need no
state that a restart would lose: everything they look at is in the catalog.

Rules
- A cron target is due once for the newest slot that has passed and that no
  job was created at or after. After downtime that spans many slots it runs
  once, not once per missed slot.
- A target without cron is due every ``RPO * INTERVAL_SHARE`` after its last
  job was created, so one failed run can be retried before the RPO is missed.
- Jitter: every due time is pushed back by an offset fixed per name (a hash,
  not a random draw, so it survives restarts), spread over
  ``scheduler.jitter`` but never more than half the period. Due times that lie
  before the scheduler started count from its start, so after downtime the
  overdue targets do not all start in the same second either.
- A failed or interrupted job that the scheduler queued is retried after
  ``retry_backoff * 2**(attempt-1)``, up to ``retries`` extra attempts; until
  then the target waits (no regular run jumps in between).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from croniter import croniter

INTERVAL_SHARE = 0.5
"""Backups of a target without cron run every half RPO: room for one retry within the RPO."""


@dataclass(frozen=True)
class Decision:
    due: bool
    attempt: int = 1
    reason: str = ""
    due_at: dt.datetime | None = None


@functools.lru_cache(maxsize=65536)  # a pure function asked per target on every pass
def jitter_offset(name: str, window: dt.timedelta, period: dt.timedelta | None = None) -> dt.timedelta:
    """A fixed offset in [0, window) for ``name``; at most half of ``period`` when given."""
    if period is not None:
        window = min(window, period / 2)
    if window <= dt.timedelta(0):
        return dt.timedelta(0)
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    return dt.timedelta(seconds=round(window.total_seconds() * fraction, 3))


def latest_slot(expression: str, now: dt.datetime, timezone: dt.tzinfo) -> tuple[dt.datetime, dt.timedelta]:
    """The newest cron slot at or before ``now`` (in UTC) and the period that follows it.

    Cron fields are read in ``timezone`` (local time by default, as cron does).
    """
    local = now.astimezone(timezone)
    iterator = croniter(expression, local + dt.timedelta(microseconds=1))
    slot = iterator.get_prev(dt.datetime)
    following = croniter(expression, slot).get_next(dt.datetime)
    return slot.astimezone(dt.UTC), following - slot


def _attempt(job: Any) -> int:
    details = job.details or {}
    try:
        return int(details.get("attempt", 1))
    except (TypeError, ValueError):
        return 1


def retry_decision(last: Any, now: dt.datetime, retries: int, backoff: dt.timedelta) -> Decision | None:
    """The retry of a failed scheduled job, or None when no retry is pending."""
    if last is None or last.status not in ("failed", "interrupted"):
        return None
    if (last.details or {}).get("trigger") != "scheduler":
        return None  # someone else's job failing does not start a retry chain
    attempt = _attempt(last)
    if attempt > retries:
        return None
    ended = last.finished_at or last.created_at
    due_at = ended + backoff * (2 ** (attempt - 1))
    return Decision(now >= due_at, attempt + 1, f"retry {attempt} of {retries} after {last.status}", due_at)


def cron_decision(name: str, expression: str, last: Any, now: dt.datetime, *, started_at: dt.datetime,
                  jitter: dt.timedelta, timezone: dt.tzinfo) -> Decision:
    slot, period = latest_slot(expression, now, timezone)
    if last is not None and last.created_at >= slot:
        # Nothing before the next slot (its jitter only adds to it): when a scheduler may look again.
        return Decision(False, reason=f"slot {slot:%Y-%m-%d %H:%M} done", due_at=slot + period)
    due_at = max(slot, started_at) + jitter_offset(name, jitter, period)
    return Decision(now >= due_at, 1, f"cron slot {slot:%Y-%m-%d %H:%M}", due_at)


def interval_decision(name: str, interval: dt.timedelta, last: Any, now: dt.datetime, *,
                      started_at: dt.datetime, jitter: dt.timedelta) -> Decision:
    natural = last.created_at + interval if last is not None else started_at
    due_at = max(natural, started_at) + jitter_offset(name, jitter, interval)
    reason = "never ran" if last is None else f"every {interval}"
    return Decision(now >= due_at, 1, reason, due_at)
