"""``safehold restore SNAPSHOT --to-ec2``: a VM or image snapshot as a new EC2 instance."""

from __future__ import annotations

import typer

from .app import context
from .output import print_json


def restore_to_ec2(snapshot: str, *, region: str | None, instance_type: str | None, subnet: str | None,
                   security_groups: list[str], key_name: str | None, boot_disk: str | None, architecture: str | None,
                   boot_mode: str | None, dry_run: bool, target: str | None, threads: int | None,
                   json_output: bool) -> None:
    """Called by ``safehold restore`` when --to-ec2 is given."""
    from ..engine.ec2_restore import ec2_restore_plan
    from ..engine.restore import restore_snapshot

    spec: dict = {"kind": "ec2", "region": region, "subnet": subnet, "security_groups": list(security_groups),
                  "key_name": key_name, "boot_disk": boot_disk, "architecture": architecture, "boot_mode": boot_mode}
    if instance_type:
        spec["instance_type"] = instance_type
    ctx, display = context(json_output, threads)
    if dry_run:
        plan = ec2_restore_plan(ctx, snapshot, spec, target=target)
        if json_output:
            print_json(plan)
            return
        typer.echo(f"would restore snapshot {plan['snapshot'][:8]} ({plan['target']}) to a new {plan['instance_type']} "
                   f"instance {plan['name']!r} in {plan['region']}: AMI {plan['architecture']}, "
                   f"boot mode {plan['boot_mode']}")
        for disk in plan["disks"]:
            typer.echo(f"  {disk['disk']}: {disk['bytes']} bytes -> EBS snapshot -> {disk['device']}"
                       + (" (root)" if disk["root"] else ""))
        for warning in plan["warnings"]:
            typer.echo(f"warning: {warning}", err=True)
        return
    with display:
        outcome = restore_snapshot(ctx, snapshot, spec, target=target)
    result = outcome.details
    if json_output:
        print_json(dict(result, warnings=outcome.warnings))
        return
    for warning in outcome.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"restored snapshot {outcome.snapshot_id[:8]} ({outcome.target}) to instance {result['instance_id']} "
               f"({result['state']}) of AMI {result['image_id']} in {result['region']}: "
               + ", ".join(f"{disk} as {device}" for disk, device in result["disks"].items())
               + f" in {outcome.duration:.1f}s")
