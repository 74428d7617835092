"""Hyper-V jobs beyond backup (which is the ordinary backup job): restore as a new VM."""

from __future__ import annotations

import time

from .. import errors
from .context import Context


def restore_hyperv_vm(context: Context, snapshot_ref: str, *, target: str, name: str, host_path: str,
                      scratch: str | None = None) -> dict:
    """Restore a snapshot of Hyper-V target ``target`` as new VM ``name`` in folder ``host_path``
    on the target's host, connected as the target's backups are."""
    from ..restore.hyperv import restore_vm
    from ..sources import open_source

    started = time.monotonic()
    config = context.config.target(target)
    if config.source.type != "hyperv":
        raise errors.UsageError(f"target {target} is a {config.source.type} target, not hyperv")
    with context.catalog.job("restore", target, {"snapshot": snapshot_ref, "destination": f"hyperv:{name}"}) as job:
        with context.locked(purpose="restore") as repository:
            snapshot = repository.find_snapshot(snapshot_ref, target)
            job.update(snapshot_id=snapshot.id)
            driver = open_source(config.source)
            shell = driver.connect()
            try:
                result = restore_vm(repository, list(repository.read_tree(snapshot)), snapshot.source, shell,
                                    name=name, host_path=host_path, scratch=scratch, threads=context.threads,
                                    on_progress=lambda done: job.update(bytes_read=done))
            finally:
                shell.close()
            job.update(bytes_read=result.bytes_written, files=len(result.disks))
            job.log(f"created VM {name} ({result.vm_id}) with {len(result.disks)} disk(s)")
    return {"snapshot_id": snapshot.id, "target": target, **result.as_dict(),
            "duration": time.monotonic() - started, "job_id": job.id}
