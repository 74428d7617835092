"""Retention policy: restic forget semantics, by example and by property."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from safehold.repository.retention import RetentionPolicy, RetentionResult, SnapshotRef, apply_policy

UTC = timezone.utc
PLUS_2 = timezone(timedelta(hours=2))
NOW = datetime(2024, 6, 30, 23, 0, tzinfo=UTC)


def at(text: str, tz: timezone = UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def snaps(*times: str, tz: timezone = UTC) -> list[SnapshotRef]:
    return [SnapshotRef(f"s{index:03d}", at(time, tz)) for index, time in enumerate(times)]


def kept_ids(result: RetentionResult[SnapshotRef]) -> list[str]:
    return [snapshot.id for snapshot, _ in result.keep]


def reasons_by_id(result: RetentionResult[SnapshotRef]) -> dict[str, list[str]]:
    return {snapshot.id: reasons for snapshot, reasons in result.keep}


# --- examples -------------------------------------------------------------------


def test_keep_last() -> None:
    snapshots = snaps(
        "2024-06-01T10:00", "2024-06-02T10:00", "2024-06-03T10:00", "2024-06-04T10:00", "2024-06-05T10:00"
    )
    result = apply_policy(snapshots, RetentionPolicy(keep_last=3), NOW)
    assert kept_ids(result) == ["s004", "s003", "s002"]
    assert [snapshot.id for snapshot in result.remove] == ["s001", "s000"]
    assert all(reasons == ["last snapshot"] for _, reasons in result.keep)


def test_keep_daily_keeps_the_newest_of_each_day() -> None:
    snapshots = snaps(
        "2024-06-01T08:00", "2024-06-01T20:00",
        "2024-06-02T08:00", "2024-06-02T20:00",
        "2024-06-03T08:00", "2024-06-03T20:00",
        "2024-06-04T08:00", "2024-06-04T20:00",
    )  # fmt: skip
    result = apply_policy(snapshots, RetentionPolicy(keep_daily=3), NOW)
    assert kept_ids(result) == ["s007", "s005", "s003"]
    assert reasons_by_id(result)["s005"] == ["daily snapshot"]


def test_oldest_snapshot_kept_while_a_rule_has_count_left() -> None:
    # Two days of snapshots and keep_daily 7: restic keeps the oldest too, so the
    # longest available history survives until there are enough days.
    snapshots = snaps("2024-06-01T08:00", "2024-06-01T20:00", "2024-06-02T08:00", "2024-06-02T20:00")
    result = apply_policy(snapshots, RetentionPolicy(keep_daily=7), NOW)
    assert kept_ids(result) == ["s003", "s001", "s000"]
    assert reasons_by_id(result)["s000"] == ["oldest daily snapshot"]
    assert [snapshot.id for snapshot in result.remove] == ["s002"]


def test_reasons_combine() -> None:
    snapshots = snaps("2024-06-01T08:00", "2024-06-02T08:00", "2024-06-02T09:00", "2024-06-03T08:00")
    result = apply_policy(snapshots, RetentionPolicy(keep_last=2, keep_daily=2), NOW)
    assert reasons_by_id(result) == {
        "s003": ["last snapshot", "daily snapshot"],
        "s002": ["last snapshot", "daily snapshot"],
    }
    assert [snapshot.id for snapshot in result.remove] == ["s001", "s000"]


def test_keep_hourly() -> None:
    snapshots = snaps(
        "2024-06-01T10:05", "2024-06-01T10:45", "2024-06-01T11:15", "2024-06-01T12:00", "2024-06-01T12:59"
    )
    result = apply_policy(snapshots, RetentionPolicy(keep_hourly=2), NOW)
    assert kept_ids(result) == ["s004", "s002"]


def test_keep_weekly_uses_iso_weeks_across_the_new_year() -> None:
    # 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 2020-W53.
    snapshots = snaps("2020-12-21T12:00", "2020-12-31T12:00", "2021-01-03T12:00", "2021-01-04T12:00")
    result = apply_policy(snapshots, RetentionPolicy(keep_weekly=3), NOW)
    assert kept_ids(result) == ["s003", "s002", "s000"]
    assert [snapshot.id for snapshot in result.remove] == ["s001"]


def test_keep_monthly_and_yearly() -> None:
    snapshots = snaps(
        "2022-03-01T00:00", "2022-12-31T00:00",
        "2023-01-15T00:00", "2023-06-10T00:00", "2023-06-20T00:00",
        "2024-01-02T00:00", "2024-01-30T00:00",
    )  # fmt: skip
    monthly = apply_policy(snapshots, RetentionPolicy(keep_monthly=3), NOW)
    assert kept_ids(monthly) == ["s006", "s004", "s002"]
    yearly = apply_policy(snapshots, RetentionPolicy(keep_yearly=5), NOW)
    # Three years only: the oldest snapshot is kept as well.
    assert kept_ids(yearly) == ["s006", "s004", "s001", "s000"]
    assert reasons_by_id(yearly)["s000"] == ["oldest yearly snapshot"]


def test_buckets_use_the_snapshot_s_own_offset() -> None:
    # 23:30 and 00:30 next day at +02:00 are the same UTC day, but two local days.
    local = snaps("2024-06-01T23:30", "2024-06-02T00:30", tz=PLUS_2)
    assert kept_ids(apply_policy(local, RetentionPolicy(keep_daily=1), NOW)) == ["s001"]
    assert len(apply_policy(local, RetentionPolicy(keep_daily=2), NOW).keep) == 2
    same_instants_in_utc = [SnapshotRef(s.id, s.time.astimezone(UTC)) for s in local]
    # In UTC both fall on June 1st; keep_daily=2 keeps the oldest only by the oldest rule.
    result = apply_policy(same_instants_in_utc, RetentionPolicy(keep_daily=2), NOW)
    assert reasons_by_id(result) == {"s001": ["daily snapshot"], "s000": ["oldest daily snapshot"]}


def test_keep_within_is_relative_to_the_newest_snapshot_not_now() -> None:
    snapshots = snaps("2024-01-01T00:00", "2024-01-05T00:00", "2024-01-09T00:00", "2024-01-10T00:00")
    # Backups stopped months before NOW; keep_within still keeps the recent history.
    result = apply_policy(snapshots, RetentionPolicy(keep_within=timedelta(days=6)), NOW)
    assert kept_ids(result) == ["s003", "s002", "s001"]
    assert reasons_by_id(result)["s003"] == ["within 6d"]
    # Exactly keep_within before the newest is outside (restic: strictly after).
    result = apply_policy(snapshots, RetentionPolicy(keep_within=timedelta(days=9)), NOW)
    assert kept_ids(result) == ["s003", "s002", "s001"]


def test_keep_within_ignores_snapshots_from_the_future() -> None:
    snapshots = snaps("2024-06-01T00:00", "2024-06-28T00:00", "2025-01-01T00:00")  # the last one: a skewed clock
    result = apply_policy(snapshots, RetentionPolicy(keep_within=timedelta(days=7)), NOW)
    assert kept_ids(result) == ["s002", "s001"]
    everything_ahead = snaps("2030-01-01T00:00", "2031-01-01T00:00")
    assert len(apply_policy(everything_ahead, RetentionPolicy(keep_within=timedelta(days=1)), NOW).keep) == 2


def test_snapshots_across_offsets_are_ordered_by_instant() -> None:
    early_in_plus2 = SnapshotRef("a", at("2024-06-01T11:00", PLUS_2))  # 09:00 UTC
    later_in_utc = SnapshotRef("b", at("2024-06-01T10:00"))
    result = apply_policy([early_in_plus2, later_in_utc], RetentionPolicy(keep_last=1), NOW)
    assert result.kept == [later_in_utc]


def test_result_does_not_depend_on_input_order() -> None:
    snapshots = snaps("2024-06-01T08:00", "2024-06-01T08:00", "2024-06-02T08:00", "2024-06-03T08:00")
    policy = RetentionPolicy(keep_last=1, keep_daily=2)
    assert apply_policy(snapshots, policy, NOW) == apply_policy(list(reversed(snapshots)), policy, NOW)


def test_no_snapshots() -> None:
    result = apply_policy([], RetentionPolicy(keep_last=1), NOW)
    assert result.keep == [] and result.remove == []


@pytest.mark.parametrize(
    "policy", [RetentionPolicy(), RetentionPolicy(keep_last=0, keep_daily=0, keep_within=timedelta(0))]
)
def test_empty_policy_is_refused(policy: RetentionPolicy) -> None:
    assert policy.is_empty()
    with pytest.raises(ValueError, match="empty retention policy"):
        apply_policy(snaps("2024-06-01T08:00"), policy, NOW)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        apply_policy([SnapshotRef("x", datetime(2024, 1, 1))], RetentionPolicy(keep_last=1), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        apply_policy(snaps("2024-06-01T08:00"), RetentionPolicy(keep_last=1), datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "arguments", [{"keep_last": -1}, {"keep_daily": 1.5}, {"keep_weekly": True}, {"keep_within": timedelta(days=-1)}]
)
def test_invalid_policies(arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(**arguments)


def test_from_config_is_duck_typed() -> None:
    from safehold.config import Retention

    policy = RetentionPolicy.from_config(Retention(keep_last=3, keep_daily=7, keep_within="2d"))
    assert policy == RetentionPolicy(keep_last=3, keep_daily=7, keep_within=timedelta(days=2))
    assert RetentionPolicy.from_config(SimpleNamespace(keep_monthly=12)) == RetentionPolicy(keep_monthly=12)


def test_describe() -> None:
    assert RetentionPolicy(keep_last=3).describe() == "keep 3 last"
    assert (
        RetentionPolicy(keep_last=3, keep_daily=7, keep_within=timedelta(days=2)).describe()
        == "keep 3 last, 7 daily and everything within 2d of the newest"
    )


def test_returns_the_caller_s_own_objects() -> None:
    @dataclasses.dataclass
    class Snapshot:  # like the repository's, with more fields
        id: str
        time: datetime
        target: str

    snapshots = [Snapshot("a", at("2024-06-01T08:00"), "web"), Snapshot("b", at("2024-06-02T08:00"), "web")]
    result = apply_policy(snapshots, RetentionPolicy(keep_last=1), NOW)
    assert result.keep[0][0] is snapshots[1] and result.remove[0] is snapshots[0]


# --- properties -------------------------------------------------------------------

OFFSETS = [UTC, PLUS_2, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]

moments = st.builds(
    lambda seconds, offset: (datetime(2019, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).astimezone(offset),
    st.integers(min_value=0, max_value=6 * 366 * 86400),
    st.sampled_from(OFFSETS),
)


@st.composite
def snapshot_lists(draw: st.DrawFn) -> list[SnapshotRef]:
    # Mostly spread over years, sometimes packed into hours, so every bucket size matters.
    span = draw(st.sampled_from([3600 * 6, 86400 * 10, 86400 * 120, 6 * 366 * 86400]))
    start = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 366 * 86400)))
    offsets = draw(st.lists(st.integers(0, span), max_size=40))
    zones = st.sampled_from(OFFSETS)
    return [
        SnapshotRef(f"s{index:03d}", (start + timedelta(seconds=offset)).astimezone(draw(zones)))
        for index, offset in enumerate(offsets)
    ]


counts = st.one_of(st.none(), st.integers(min_value=0, max_value=12))
withins = st.one_of(st.none(), st.integers(min_value=0, max_value=400 * 86400).map(lambda s: timedelta(seconds=s)))
policies = st.builds(
    RetentionPolicy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
    keep_within=withins,
)
nows = st.one_of(st.just(datetime(2030, 1, 1, tzinfo=UTC)), moments)


def newest_first(snapshots: list[SnapshotRef]) -> list[SnapshotRef]:
    return sorted(snapshots, key=lambda snapshot: (snapshot.time, snapshot.id), reverse=True)


@given(snapshot_lists(), policies, nows)
def test_keep_and_remove_partition_the_input(
    snapshots: list[SnapshotRef], policy: RetentionPolicy, now: datetime
) -> None:
    assume(not policy.is_empty())
    result = apply_policy(snapshots, policy, now)
    kept = [snapshot.id for snapshot in result.kept]
    removed = [snapshot.id for snapshot in result.remove]
    assert sorted(kept + removed) == sorted(snapshot.id for snapshot in snapshots)
    assert not set(kept) & set(removed)
    assert all(reasons for _, reasons in result.keep)
    assert result.kept == newest_first(result.kept) and result.remove == newest_first(result.remove)


@given(snapshot_lists(), st.integers(min_value=1, max_value=50), nows)
def test_keep_last_keeps_exactly_the_newest(snapshots: list[SnapshotRef], count: int, now: datetime) -> None:
    result = apply_policy(snapshots, RetentionPolicy(keep_last=count), now)
    assert result.kept == newest_first(snapshots)[:count]


@given(snapshot_lists(), policies, nows)
def test_newest_is_always_kept(snapshots: list[SnapshotRef], policy: RetentionPolicy, now: datetime) -> None:
    assume(not policy.is_empty() and snapshots)
    result = apply_policy(snapshots, policy, now)
    assert newest_first(snapshots)[0] in result.kept


RULES = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within"]


@given(snapshot_lists(), policies, nows, st.sampled_from(RULES), st.integers(min_value=1, max_value=10))
def test_raising_a_rule_never_removes_a_kept_snapshot(
    snapshots: list[SnapshotRef], policy: RetentionPolicy, now: datetime, rule: str, more: int
) -> None:
    assume(not policy.is_empty())
    current = getattr(policy, rule)
    if rule == "keep_within":
        raised = (current or timedelta(0)) + timedelta(days=more)
    else:
        raised = (current or 0) + more
    bigger = dataclasses.replace(policy, **{rule: raised})
    before = {snapshot.id for snapshot in apply_policy(snapshots, policy, now).kept}
    after = {snapshot.id for snapshot in apply_policy(snapshots, bigger, now).kept}
    assert before <= after


BUCKETS: dict[str, Callable[[datetime], object]] = {
    "keep_hourly": lambda time: (time.date(), time.hour),
    "keep_daily": lambda time: time.date(),
    "keep_weekly": lambda time: time.isocalendar()[:2],
    "keep_monthly": lambda time: (time.year, time.month),
    "keep_yearly": lambda time: time.year,
}


@given(snapshot_lists(), st.sampled_from(sorted(BUCKETS)), st.integers(min_value=1, max_value=12), nows)
def test_bucket_rules_match_a_reference(snapshots: list[SnapshotRef], rule: str, count: int, now: datetime) -> None:
    """The newest snapshot of each of the N most recent buckets, plus the oldest while fewer than N buckets exist."""
    bucket_of = BUCKETS[rule]
    ordered = newest_first(snapshots)
    newest_per_bucket: dict[object, SnapshotRef] = {}
    for snapshot in ordered:
        newest_per_bucket.setdefault(bucket_of(snapshot.time), snapshot)
    expected = {snapshot.id for snapshot in list(newest_per_bucket.values())[:count]}
    if ordered and len(newest_per_bucket) < count:
        expected.add(ordered[-1].id)
    result = apply_policy(snapshots, RetentionPolicy(**{rule: count}), now)
    assert {snapshot.id for snapshot in result.kept} == expected
