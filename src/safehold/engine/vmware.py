"""VMware jobs beyond backup (which ``engine.backup`` runs like any source): restoring a
snapshot's VM disks to vSphere, and listing the VMs a target selects."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .. import errors
from .context import Context
from .restore import find_snapshot_in_job


@dataclass
class VmRestoreOutcome:
    snapshot_id: str
    target: str
    vm: str
    created: bool
    disks: list[dict] = field(default_factory=list)
    bytes_written: int = 0
    duration: float = 0.0
    job_id: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _vmware_source(context: Context, target_name: str):
    from ..sources.vmware import VmwareSource

    target = context.config.target(target_name)
    if target.source.type != "vmware":
        raise errors.UsageError(f"target {target_name!r} is a {target.source.type} target, not vmware")
    return VmwareSource(**target.source.model_dump(exclude={"type"}))


def list_target_vms(context: Context, target_name: str) -> list[dict]:
    """The VMs a vmware target selects right now (name, id, power state, CBT, tools)."""
    return _vmware_source(context, target_name).list_vms()


def restore_vm(context: Context, snapshot_ref: str, *, target: str | None = None, new_vm: str | None = None,
               onto_vm: str | None = None, disk: str | None = None, source_vm: str | None = None,
               datacenter: str | None = None, folder: str | None = None, resource_pool: str | None = None,
               datastore: str | None = None, power_on: bool = False) -> VmRestoreOutcome:
    """Restore the disks of one VM of a vmware snapshot: as VM ``new_vm``, or onto a disk of ``onto_vm``.

    The vSphere connection is the one of the snapshot's target in the configuration."""
    from ..restore.vmware import restore_new_vm, restore_onto_disk

    if (new_vm is None) == (onto_vm is None):
        raise errors.UsageError("give exactly one of --new-vm NAME (create a VM) or --vm NAME (overwrite its disk)")
    started = time.monotonic()
    details = {"snapshot": snapshot_ref, "destination": f"vmware:{new_vm or onto_vm}"}
    with context.catalog.job("restore", target, details) as job:
        with context.locked(purpose="restore") as repository:
            snapshot = find_snapshot_in_job(context, repository, job, snapshot_ref, target)
            source = _vmware_source(context, snapshot.target)
            items = [item for item in repository.read_tree(snapshot) if item.get("type") == "image"]
            vms = sorted({(item.get("metadata") or {}).get("vm", {}).get("name", "") for item in items})
            if source_vm is None and len(vms) > 1:
                raise errors.UsageError(f"snapshot {snapshot.short_id} holds VMs {', '.join(vms)}: pick one with --source-vm")
            chosen = source_vm or (vms[0] if vms else "")
            items = [item for item in items if (item.get("metadata") or {}).get("vm", {}).get("name", "") == chosen]
            if not items:
                raise errors.PathNotInSnapshot(path=f"VM {chosen}", snapshot=snapshot.short_id)
            job.log(f"restoring {len(items)} disk(s) of VM {chosen} from snapshot {snapshot.short_id}")

            def report(done: int) -> None:
                job.update(bytes_read=done)
                context.progress({"event": "restore", "bytes_done": done, "bytes_total": snapshot.summary.get("bytes_total"),
                                  "current": chosen})

            session, _password = source.connect()
            try:
                threads = context.threads or os.cpu_count() or 1
                if new_vm is not None:
                    result = restore_new_vm(session, repository, items, new_vm, datacenter=datacenter, folder=folder,
                                            resource_pool=resource_pool, datastore=datastore, power_on=power_on,
                                            threads=threads, on_progress=report)
                else:
                    item = items[0]
                    if disk is None and len(items) > 1:
                        labels = ", ".join(i["metadata"].get("label", "?") for i in items)
                        raise errors.UsageError(f"VM {chosen} had disks {labels}: pick the one to restore with --disk")
                    if disk is not None:
                        item = next((i for i in items if i["metadata"].get("label") == disk), None) or items[0]
                    result = restore_onto_disk(session, repository, item, onto_vm, disk, threads=threads,
                                               on_progress=report)
            finally:
                session.logout()
            job.update(bytes_read=result.bytes_written, files=len(result.disks))
            job.log(f"restored to VM {result.vm} ({'new' if result.created else 'existing'}): "
                    f"{len(result.disks)} disk(s), {result.bytes_written} bytes")
            return VmRestoreOutcome(snapshot.id, snapshot.target, result.vm, result.created, result.disks,
                                    result.bytes_written, time.monotonic() - started, job.id)
