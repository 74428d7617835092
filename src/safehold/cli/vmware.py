"""``safehold vmware ...``: the VMs a target selects, and restoring VM disks to vSphere.

Backups of vmware targets run through ``safehold backup`` like any other target.
"""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOption, ThreadsOption, context


def register(app: typer.Typer) -> None:

    group = typer.Typer(help="VMware vSphere: list the VMs a target selects; restore VM disks.",
                        no_args_is_help=True)

    @group.command("vms")
    def vms(target: str = typer.Argument(..., help="A target of type vmware."),
            json_output: bool = JsonOption) -> None:
        """List the VMs a vmware target selects now (by name, folder or tag)."""
        from ..engine.vmware import list_target_vms
        from .output import print_json, print_table

        ctx, _display = context(json_output, progress=False)
        found = list_target_vms(ctx, target)
        if json_output:
            print_json(found)
            return
        print_table(["name", "id", "power", "CBT", "tools"],
                    [[v["name"], v["id"], v["power_state"], "on" if v["cbt"] else "off", v["tools"]] for v in found])

    @group.command("restore")
    def restore(
        snapshot: str = typer.Argument(..., help="Snapshot id (prefix), 'latest' or 'latest:TARGET'."),
        target: Optional[str] = typer.Option(None, "--target", "-t", help="With 'latest': the target's newest."),
        new_vm: Optional[str] = typer.Option(None, "--new-vm", help="Create a VM of this name with the saved disks."),
        vm: Optional[str] = typer.Option(None, "--vm", help="Overwrite a disk of this existing, powered-off VM."),
        disk: Optional[str] = typer.Option(None, "--disk", help="With --vm: the disk label (e.g. 'Hard disk 1')."),
        source_vm: Optional[str] = typer.Option(None, "--source-vm", help="The VM to take when the snapshot holds several."),
        datacenter: Optional[str] = typer.Option(None, "--datacenter", help="With --new-vm (default: the first)."),
        folder: Optional[str] = typer.Option(None, "--folder", help="With --new-vm: VM folder inventory path."),
        resource_pool: Optional[str] = typer.Option(None, "--resource-pool", help="With --new-vm: inventory path."),
        datastore: Optional[str] = typer.Option(None, "--datastore", help="With --new-vm (default: most free space)."),
        power_on: bool = typer.Option(False, "--power-on", help="With --new-vm: power the VM on afterwards."),
        threads: Optional[int] = ThreadsOption,
        json_output: bool = JsonOption,
    ) -> None:
        """Restore a VM from a vmware snapshot: as a new VM, or onto an existing VM's disk."""
        from ..engine.restore import restore_snapshot
        from .output import human_bytes, print_json

        spec = {"kind": "vmware", "new_vm": new_vm, "vm": vm, "disk": disk, "source_vm": source_vm,
                "datacenter": datacenter, "folder": folder, "resource_pool": resource_pool, "datastore": datastore,
                "power_on": power_on}
        ctx, display = context(json_output, threads)
        with display:
            outcome = restore_snapshot(ctx, snapshot, spec, target=target)
        result = outcome.details
        if json_output:
            print_json({"snapshot_id": outcome.snapshot_id, "target": outcome.target, **result,
                        "duration": outcome.duration, "job_id": outcome.job_id})
            return
        kind = "new VM" if result["created"] else "VM"
        typer.echo(f"restored snapshot {outcome.snapshot_id[:8]} ({outcome.target}) to {kind} {result['vm']}: "
                   f"{len(result['disks'])} disk(s), {human_bytes(result['bytes_written'])} in {outcome.duration:.1f}s")

    app.add_typer(group, name="vmware")
