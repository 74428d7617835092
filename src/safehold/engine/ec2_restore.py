"""``safehold restore SNAPSHOT --to-ec2``: the plan ``--dry-run`` prints (the restore itself is the
one restore job, ``engine.restore.restore_snapshot`` with a destination of kind ``ec2``)."""

from __future__ import annotations

from typing import Any

from .context import Context


def ec2_restore_plan(context: Context, snapshot_ref: str, spec: dict, *, target: str | None = None) -> dict[str, Any]:
    """What a ``--to-ec2`` restore of ``snapshot_ref`` would make; asks AWS, writes nothing, records no job."""
    from ..restore.options import parse_options
    from .restore import build_destination, snapshot_info

    destination: Any = build_destination(context, parse_options(dict(spec, kind="ec2")))
    repository = context.open_repository()
    snapshot = repository.find_snapshot(snapshot_ref, target)
    items = list(repository.read_tree(snapshot)) if snapshot.kind != "files" else []
    plan = destination.plan(snapshot_info(snapshot), items)
    return dict(destination.describe(plan), snapshot=snapshot.id, target=snapshot.target)


__all__ = ["ec2_restore_plan"]
