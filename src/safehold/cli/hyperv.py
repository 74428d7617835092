"""``safehold hyperv ...``: Hyper-V commands beyond backup (a Hyper-V target backs up with
``safehold backup`` like any other)."""

from __future__ import annotations

from typing import Optional

import typer

from .app import context


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="hyperv", help="Hyper-V virtual machines: restore a snapshot as a new VM.",
                        no_args_is_help=True)

    @group.command("restore")
    def restore(
        snapshot: str = typer.Argument(..., help="Snapshot id (prefix) or 'latest'."),
        target: str = typer.Option(..., "--target", "-t", help="The Hyper-V target the snapshot belongs to."),
        name: str = typer.Option(..., "--name", help="Name of the new VM; an existing VM is never replaced."),
        path: str = typer.Option(..., "--path", help="Folder on the host for the VM and its disks, e.g. D:\\VMs."),
        scratch: Optional[str] = typer.Option(None, "--scratch",
                                              help="Local folder for the disks while converting (default: TMPDIR)."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Worker threads."),
        json_output: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
    ) -> None:
        """Restore a snapshot of a Hyper-V target as a new VM on the target's host."""
        from ..engine.restore import restore_snapshot
        from .output import human_bytes, print_json

        spec = {"kind": "hyperv", "name": name, "host_path": path, "scratch": scratch}
        ctx, display = context(json_output, threads)
        with display:
            outcome = restore_snapshot(ctx, snapshot, spec, target=target)
        result = {"snapshot_id": outcome.snapshot_id, "target": outcome.target, **outcome.details,
                  "duration": outcome.duration, "job_id": outcome.job_id}
        if json_output:
            print_json(result)
            return
        typer.echo(f"created VM {result['name']} ({result['vm_id']}) from snapshot {result['snapshot_id'][:8]}: "
                   f"{len(result['disks'])} disk(s), {human_bytes(result['bytes_written'])} in "
                   f"{result['duration']:.1f}s")

    app.add_typer(group)
