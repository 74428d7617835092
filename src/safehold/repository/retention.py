"""Retention: which snapshots ``forget`` keeps, with restic's ``forget`` semantics.

Pure logic, no I/O. Snapshots are ordered newest first and walked once:

* ``keep_last N`` keeps the N newest snapshots;
* ``keep_hourly/daily/weekly/monthly/yearly N`` keep the newest snapshot of each
  of the N most recent hours/days/ISO weeks/months/years that hold a snapshot,
  computed in each snapshot's own UTC offset (as restic does with the stored
  local time). As in restic (since 0.16), when a rule still has count left
  after the walk, the oldest snapshot is kept as well ("oldest daily snapshot")
  so that a young repository keeps its longest history.
  One deliberate difference: restic compares a snapshot's bucket with the
  previous snapshot's only, so when offsets differ (hosts in several zones,
  DST) an older snapshot can land back in an already-kept bucket and be kept
  again. Here a bucket counts once: exactly the newest snapshot of each of the
  N most recent buckets is kept. With a single offset the two agree;
* ``keep_within D`` keeps every snapshot taken within D of the newest one. The
  reference is the newest snapshot, not the clock, so a target whose backups
  stopped does not lose its history; snapshots dated after ``now`` (a skewed
  clock) are not used as that reference.

A snapshot kept by any rule stays. A policy with no rule is refused: applying
it would forget everything, which is never what a configuration meant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

__all__ = ["RetentionPolicy", "RetentionResult", "SnapshotRef", "apply_policy"]


class Timestamped(Protocol):
    """What apply_policy needs of a snapshot: any object with these attributes will do."""

    @property
    def id(self) -> str: ...

    @property
    def time(self) -> datetime: ...


S = TypeVar("S", bound=Timestamped)


@dataclass(frozen=True)
class SnapshotRef:
    """A snapshot as retention sees it: its id and when it was taken (timezone-aware)."""

    id: str
    time: datetime


@dataclass(frozen=True)
class RetentionPolicy:
    """The keep_* rules; ``None`` or 0 switches a rule off."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: timedelta | None = None

    def __post_init__(self) -> None:
        for name in _COUNT_RULES:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, not {value!r}")
        if self.keep_within is not None and (
            not isinstance(self.keep_within, timedelta) or self.keep_within < timedelta(0)
        ):
            raise ValueError(f"keep_within must be a non-negative timedelta or None, not {self.keep_within!r}")

    @classmethod
    def from_config(cls, retention: object) -> RetentionPolicy:
        """Build from any object with keep_* attributes (such as the config's Retention model)."""
        return cls(**{item.name: getattr(retention, item.name, None) for item in fields(cls)})

    def is_empty(self) -> bool:
        """True when no rule would keep anything."""
        return not any(getattr(self, name) for name in _COUNT_RULES) and not self.keep_within

    def describe(self) -> str:
        """``"keep 3 last, 7 daily and everything within 2d of the newest"`` for logs and dry runs."""
        parts = [f"{getattr(self, name)} {name.removeprefix('keep_')}" for name in _COUNT_RULES if getattr(self, name)]
        if self.keep_within:
            parts.append(f"everything within {_format_timedelta(self.keep_within)} of the newest")
        if not parts:
            return "keep nothing"
        return "keep " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0])


@dataclass(frozen=True)
class RetentionResult(Generic[S]):
    """Both lists are newest first; ``keep`` pairs each snapshot with why it stays."""

    keep: list[tuple[S, list[str]]] = field(default_factory=list)
    remove: list[S] = field(default_factory=list)

    @property
    def kept(self) -> list[S]:
        return [snapshot for snapshot, _ in self.keep]


def _hour(time: datetime) -> tuple[int, ...]:
    return (time.year, time.month, time.day, time.hour)


def _day(time: datetime) -> tuple[int, ...]:
    return (time.year, time.month, time.day)


def _week(time: datetime) -> tuple[int, ...]:
    iso = time.isocalendar()
    return (iso.year, iso.week)


def _month(time: datetime) -> tuple[int, ...]:
    return (time.year, time.month)


def _year(time: datetime) -> tuple[int, ...]:
    return (time.year,)


# (policy attribute, reason, bucket of a snapshot time); None marks keep_last,
# whose every snapshot is a bucket of its own.
_BUCKET_RULES: tuple[tuple[str, str, Callable[[datetime], tuple[int, ...]] | None], ...] = (
    ("keep_last", "last snapshot", None),
    ("keep_hourly", "hourly snapshot", _hour),
    ("keep_daily", "daily snapshot", _day),
    ("keep_weekly", "weekly snapshot", _week),
    ("keep_monthly", "monthly snapshot", _month),
    ("keep_yearly", "yearly snapshot", _year),
)
_COUNT_RULES = tuple(name for name, _, _ in _BUCKET_RULES)


def apply_policy(snapshots: Sequence[S], policy: RetentionPolicy, now: datetime) -> RetentionResult[S]:
    """Split ``snapshots`` into those ``policy`` keeps (with reasons) and those to forget.

    ``now`` only guards keep_within against snapshots dated in the future.
    Raises ValueError for an empty policy (it would forget everything) and for
    naive datetimes (a bucket needs to know its timezone).
    """
    if policy.is_empty():
        raise ValueError("refusing to apply an empty retention policy: it would forget every snapshot")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    for snapshot in snapshots:
        if snapshot.time.tzinfo is None or snapshot.time.utcoffset() is None:
            raise ValueError(f"snapshot {snapshot.id} has a naive time {snapshot.time}; times must be timezone-aware")

    # Newest first; the id breaks ties so the result does not depend on input order.
    ordered = sorted(snapshots, key=lambda snapshot: (snapshot.time, snapshot.id), reverse=True)
    result: RetentionResult[S] = RetentionResult()
    if not ordered:
        return result

    within_since: datetime | None = None
    within_reason = ""
    if policy.keep_within:
        past = [snapshot.time for snapshot in ordered if snapshot.time <= now]
        # Everything in the future: keep it all rather than guess a reference.
        within_since = (past[0] - policy.keep_within) if past else None
        within_reason = f"within {_format_timedelta(policy.keep_within)}"

    remaining = {name: getattr(policy, name) or 0 for name in _COUNT_RULES}
    seen_buckets: dict[str, set[object]] = {name: set() for name in _COUNT_RULES}
    oldest = len(ordered) - 1

    for position, snapshot in enumerate(ordered):
        reasons: list[str] = []
        if policy.keep_within and (within_since is None or snapshot.time > within_since):
            reasons.append(within_reason)
        for name, reason, bucket_of in _BUCKET_RULES:
            if remaining[name] <= 0:
                continue
            bucket = position if bucket_of is None else bucket_of(snapshot.time)
            if bucket not in seen_buckets[name]:
                seen_buckets[name].add(bucket)
                reasons.append(reason)
            elif position == oldest:
                # restic keeps the oldest snapshot while a rule has count left,
                # to keep the longest history the counts allow.
                reasons.append(f"oldest {reason}")
            else:
                continue
            remaining[name] -= 1
        if reasons:
            result.keep.append((snapshot, reasons))
        else:
            result.remove.append(snapshot)
    return result


def _format_timedelta(value: timedelta) -> str:
    """``1d12h``; the config layer has a richer formatter, which this layer must not import."""
    total = int(value.total_seconds())
    parts = []
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, seconds)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"
