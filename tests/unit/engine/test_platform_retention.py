"""The engine's retention of snapshots a driver keeps on its platform (EBS snapshots and their DR
copies): the decision is the engine's, the driver only lists and deletes. A run's own snapshot
counts as the newest even when its StartTime ties with older ones (EBS reports it to the second or
millisecond; several runs fit in one tick)."""
from datetime import datetime, timedelta, timezone

from safehold.config.models import Retention
from safehold.engine.backup import _newest_first, apply_platform_retention
from safehold.repository.retention import RetentionPolicy, apply_policy
from safehold.sources.base import KeepsPlatformSnapshots, PlatformSnapshot

TICK = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)


class FakePlatform:
    """Lists what it holds and deletes what it is told, recording the calls."""

    def __init__(self, snapshots: list[PlatformSnapshot]) -> None:
        self.snapshots = snapshots
        self.deletions: list[tuple[str, list[str]]] = []

    def platform_snapshots(self) -> list[PlatformSnapshot]:
        return list(self.snapshots)

    def delete_platform_snapshots(self, location: str, ids: list[str]) -> list[str]:
        self.deletions.append((location, ids))
        return ids


def test_just_made_snapshot_wins_a_tie_whatever_its_id():
    # ids chosen so that the id tie-break alone would put the new one last
    snapshots = [PlatformSnapshot("snap-ffff", "r", "vol", TICK), PlatformSnapshot("snap-eeee", "r", "vol", TICK),
                 PlatformSnapshot("snap-0000", "r", "vol", TICK, current=True)]
    ordered = _newest_first(snapshots)
    assert ordered[0].id == "snap-0000"
    result = apply_policy(ordered, RetentionPolicy(keep_last=2), TICK)
    assert [ref.id for ref in result.remove] == ["snap-eeee"]


def test_older_current_snapshot_is_not_moved():
    older = datetime(2026, 11, 25, tzinfo=timezone.utc)
    snapshots = [PlatformSnapshot("snap-a", "r", "vol", TICK), PlatformSnapshot("snap-b", "r", "vol", older, True)]
    assert [(ref.id, ref.time) for ref in _newest_first(snapshots)] == [("snap-a", TICK), ("snap-b", older)]


def test_retention_applies_per_location_and_group_and_never_deletes_the_current_run():
    def snap(id_: str, region: str, volume: str, hours: int, current: bool = False) -> PlatformSnapshot:
        return PlatformSnapshot(id_, region, volume, TICK - timedelta(hours=hours), current)

    platform = FakePlatform([
        snap("a1", "eu-west-1", "vol-a", 0, current=True), snap("a2", "eu-west-1", "vol-a", 1),
        snap("a3", "eu-west-1", "vol-a", 2), snap("b1", "eu-west-1", "vol-b", 5),
        snap("c1", "us-east-1", "vol-a", 0, current=True), snap("c2", "us-east-1", "vol-a", 3),
    ])
    assert isinstance(platform, KeepsPlatformSnapshots)
    deleted = apply_platform_retention(platform, Retention(keep_last=1), now=TICK)
    assert deleted == {"eu-west-1": ["a2", "a3"], "us-east-1": ["c2"]}
    assert platform.deletions == [("eu-west-1", ["a2", "a3"]), ("us-east-1", ["c2"])]


def test_a_driver_without_platform_snapshots_is_not_asked():
    class Plain:
        def open(self, parent_token):  # pragma: no cover - never called
            raise AssertionError

    assert not isinstance(Plain(), KeepsPlatformSnapshots)
