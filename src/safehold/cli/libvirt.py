"""``safehold libvirt ...``: restore a KVM/libvirt snapshot as a new domain or into a domain's disks,
and show the checkpoints safehold keeps on a domain. Backups run through ``safehold backup``."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from .app import JsonOption, ThreadsOption, context


def register(app: typer.Typer) -> None:
    from .output import error_console, human_bytes, print_json, print_table

    libvirt_app = typer.Typer(help="KVM/libvirt domains: restore as a new domain or into a disk; checkpoints.",
                              no_args_is_help=True)
    app.add_typer(libvirt_app, name="libvirt")

    @libvirt_app.command("restore")
    def restore(
        snapshot: str = typer.Argument(..., help="Snapshot id (prefix), 'latest' or 'latest:TARGET'."),
        target: Optional[str] = typer.Option(None, "--target", "-t", help="With 'latest': the target's newest."),
        images_dir: Optional[str] = typer.Option(None, "--images-dir", help="Folder for the restored disk images."),
        image_format: str = typer.Option("qcow2", "--format", help="Image format: qcow2 or raw."),
        define: Optional[str] = typer.Option(None, "--define", metavar="NAME",
                                             help="Define a new domain of this name from the saved domain XML."),
        replace: Optional[str] = typer.Option(None, "--replace", metavar="DOMAIN",
                                              help="Overwrite the disk images of this shut-off domain."),
        uri: Optional[str] = typer.Option(None, "--uri", help="libvirt URI (default: the one the backup used)."),
        disk: list[str] = typer.Option([], "--disk", help="Restore only this disk, e.g. vda (repeatable)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing image files in --images-dir."),
        vcpus: Optional[int] = typer.Option(None, "--vcpus", help="EBS snapshot (no saved XML): vCPUs of the "
                                            "new domain (default 2)."),
        memory: Optional[int] = typer.Option(None, "--memory", metavar="MIB", help="EBS snapshot: memory of the "
                                             "new domain in MiB (default 2048)."),
        boot_disk: Optional[str] = typer.Option(None, "--boot-disk", metavar="VOLUME", help="EBS snapshot: the "
                                                "volume that becomes vda (default: the instance's root device)."),
        network: Optional[str] = typer.Option(None, "--network", help="EBS snapshot: libvirt network of one "
                                              "virtio interface (default: none)."),
        firmware: Optional[str] = typer.Option(None, "--firmware", help="EBS snapshot: bios (default) or efi."),
        domain_type: Optional[str] = typer.Option(None, "--domain-type", help="EBS snapshot: kvm (default) or "
                                                  "qemu (emulated)."),
        threads: Optional[int] = ThreadsOption,
        json_output: bool = JsonOption,
    ) -> None:
        """Restore a libvirt snapshot's disks (as qcow2 or raw), and define a new domain or replace disks.

        An EBS target's snapshot (copy_blocks) comes back on-premise too: its volumes as images, and
        with --define a domain built from --vcpus/--memory/--network, the volumes as virtio disks."""
        from ..engine.restore import restore_snapshot
        from ..errors import RestoreIncomplete

        if image_format not in ("qcow2", "raw"):
            raise UsageError(f"--format {image_format!r}: use one of qcow2, raw")
        if firmware not in (None, "bios", "efi"):
            raise UsageError(f"--firmware {firmware!r}: use one of bios, efi")
        if domain_type not in (None, "kvm", "qemu"):
            raise UsageError(f"--domain-type {domain_type!r}: use one of kvm, qemu")
        spec = {"kind": "libvirt", "images_dir": images_dir, "format": image_format, "define": define,
                "replace": replace, "uri": uri, "disks": list(disk), "overwrite": overwrite}
        minimal = {"vcpus": vcpus, "memory_mib": memory, "boot_disk": boot_disk, "network": network,
                   "firmware": firmware, "domain_type": domain_type}
        spec |= {key: value for key, value in minimal.items() if value is not None}
        ctx, display = context(json_output, threads)
        try:
            with display:
                outcome = restore_snapshot(ctx, snapshot, spec, target=target)
        except RestoreIncomplete as exc:
            if exc.fields.get("outcome") is not None and json_output:
                print_json(_as_json(exc.fields["outcome"]))
            raise
        if json_output:
            print_json(_as_json(outcome))
            return
        result = outcome.details
        typer.echo(f"restored snapshot {outcome.snapshot_id[:8]} ({outcome.target}): "
                   f"{len(result['disks'])} disk(s), {human_bytes(result['bytes_written'])} in {outcome.duration:.1f}s")
        for name, path in result["disks"].items():
            typer.echo(f"  {name}: {path}")
        if result["action"] == "define":
            devices = result.get("devices") or {}
            if devices:
                typer.echo("  as " + ", ".join(f"{device}={name}" for name, device in devices.items()))
            typer.echo(f"defined domain {result['domain']} (not started; 'virsh start {result['domain']}')")
        elif result["action"] == "replace":
            typer.echo(f"replaced the disk(s) of domain {result['domain']}; its next backup is a full one")
        for line in result["damaged_ranges"]:
            error_console.print(f"[red]damaged[/]: {line}")

    def _as_json(outcome) -> dict:
        return {"snapshot_id": outcome.snapshot_id, "target": outcome.target, **outcome.details,
                "duration": outcome.duration, "job_id": outcome.job_id}

    @libvirt_app.command("checkpoints")
    def checkpoints(
        domain: str = typer.Argument(..., help="Domain name."),
        uri: str = typer.Option("qemu:///system", "--uri", help="libvirt URI."),
        json_output: bool = JsonOption,
    ) -> None:
        """List a domain's checkpoints (safehold's are named safehold-<time>)."""
        from ..engine.libvirt import list_checkpoints

        rows = list_checkpoints(uri, domain)
        if json_output:
            print_json(rows)
            return
        print_table(["name", "created", "parent", "disks"],
                    [[row["name"], row["created"], row["parent"] or "", ",".join(row["disks"])] for row in rows])
