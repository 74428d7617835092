"""EBS retention must count the snapshot a run just made as the newest, even when its StartTime
ties with older ones (EBS reports it to the second or millisecond; several runs fit in one tick)."""
from datetime import datetime, timezone

from safehold.repository.retention import RetentionPolicy, SnapshotRef, apply_policy
from safehold.sources.ebs import _newest_first

TICK = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)


def test_just_made_snapshot_wins_a_tie_whatever_its_id():
    # ids chosen so that the id tie-break alone would put the new one last
    refs = [SnapshotRef("snap-ffff", TICK), SnapshotRef("snap-eeee", TICK), SnapshotRef("snap-0000", TICK)]
    ordered = _newest_first(refs, keep={"snap-0000"})
    assert ordered[0].id == "snap-0000"
    result = apply_policy(ordered, RetentionPolicy(keep_last=2), TICK)
    assert [ref.id for ref in result.remove] == ["snap-eeee"]


def test_older_kept_snapshot_is_not_moved():
    older = datetime(2026, 11, 25, tzinfo=timezone.utc)
    refs = [SnapshotRef("snap-a", TICK), SnapshotRef("snap-b", older)]
    ordered = _newest_first(refs, keep={"snap-b"})
    assert [(ref.id, ref.time) for ref in ordered] == [("snap-a", TICK), ("snap-b", older)]
