"""``safehold ebs ...`` and the EBS side of ``safehold restore --destination-instance``."""

from __future__ import annotations

from typing import Optional

import typer

from .app import context
from .output import print_json, print_table

ebs_app = typer.Typer(help="EBS snapshots that safehold made for ebs targets.", no_args_is_help=True)


def restore_to_instance(snapshot: str, instance_id: str, *, device: str | None, region: str | None,
                        target: str | None, include: list[str], threads: int | None, json_output: bool) -> None:
    """Called by ``safehold restore`` when --destination-instance is given."""
    from ..engine.restore import restore_snapshot
    from ..errors import UsageError

    if len(include) > 1:
        raise UsageError("an instance restore takes one image: give --include once")
    spec = {"kind": "ebs", "instance": instance_id, "device": device, "region": region,
            "include": include[0] if include else None}
    ctx, display = context(json_output, threads)
    with display:
        result = restore_snapshot(ctx, snapshot, spec, target=target).details
    if json_output:
        print_json(result)
        return
    origin = f"{result['snapshot_id']} (DR copy in {result['region']})" if result["from_copy"] else result["snapshot_id"]
    typer.echo(f"restored {result['source_snapshot_id']} to volume {result['volume_id']} from {origin}, attached to "
               f"{result['instance_id']} as {result['device']} in {result['availability_zone']} in "
               f"{result['duration']:.1f}s")


@ebs_app.command("snapshots")
def snapshots(
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only this target."),
    region: Optional[str] = typer.Option(None, "--region", help="Only this region."),
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
) -> None:
    """List the EBS snapshots safehold made (and their DR copies), per target and region."""
    from ..engine.ebs import list_ebs_snapshots

    ctx, _ = context(json_output, progress=False)
    rows = list_ebs_snapshots(ctx, target=target, region=region)
    if json_output:
        print_json(rows)
        return
    print_table(["target", "region", "snapshot", "volume", "state", "time", "copy of"],
                [[r["target"], r["region"], r["snapshot_id"], r["volume_id"] or "", r["state"], r["time"],
                  r["copy_of"] or ""] for r in rows])


def register(app: typer.Typer) -> None:
    app.add_typer(ebs_app, name="ebs")
