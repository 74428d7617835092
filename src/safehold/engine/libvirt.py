"""libvirt restore jobs: a snapshot of a domain back to images, a new domain, or a replaced disk."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .. import errors
from ..restore.directory import valid_name
from ..restore.libvirt import (
    FORMATS,
    DomainRestoreResult,
    define_domain,
    drop_checkpoints,
    new_domain_xml,
    replaceable_disks,
    restore_disk,
)
from ..text import printable
from .context import Context
from .restore import find_snapshot_in_job


@dataclass
class DomainRestoreOutcome:
    snapshot_id: str
    target: str
    result: DomainRestoreResult
    duration: float
    job_id: int

    def as_dict(self) -> dict:
        return {"snapshot_id": self.snapshot_id, "target": self.target, **self.result.as_dict(),
                "duration": self.duration, "job_id": self.job_id}


def restore_domain(context: Context, snapshot_ref: str, *, target: str | None = None, images_dir: str | None = None,
                   image_format: str = "qcow2", define: str | None = None, replace: str | None = None,
                   uri: str | None = None, disks: list[str] | None = None,
                   overwrite: bool = False) -> DomainRestoreOutcome:
    """Restore the disks of a libvirt snapshot.

    ``define``: write the images into ``images_dir`` and define a new domain of that name from the
    saved XML. ``replace``: overwrite the image files of that existing, shut-off domain. Neither:
    only write the images into ``images_dir``. ``uri`` defaults to the one the backup used.
    """
    if define and replace:
        raise errors.UsageError("--define and --replace exclude each other: restore as a new domain or into one")
    if image_format not in FORMATS:
        raise errors.UsageError(f"--format {image_format!r}: use one of {', '.join(FORMATS)}")
    if not replace and not images_dir:
        raise errors.UsageError("name the folder for the restored images with --images-dir")
    started = time.monotonic()
    details = {"snapshot": snapshot_ref, "define": define, "replace": replace, "images_dir": images_dir}
    with context.catalog.job("restore", target, details) as job:
        with context.locked(purpose="restore") as repository:
            snapshot = find_snapshot_in_job(context, repository, job, snapshot_ref, target)
            token = snapshot.source or {}
            if "domain_xml" not in token:
                raise errors.UsageError(f"snapshot {snapshot.short_id} is not of a libvirt domain; "
                                        "restore it with 'safehold restore'")
            uri = uri or token.get("uri") or "qemu:///system"
            items = {os.fsdecode(item["path"]): item for item in repository.read_tree(snapshot)}
            wanted = list(disks or items)
            unknown = [name for name in wanted if name not in items]
            if unknown:
                raise errors.PathNotInSnapshot(path=", ".join(unknown), snapshot=snapshot.short_id)
            result = DomainRestoreResult(domain=define or replace, action="define" if define else
                                         "replace" if replace else "images")
            # Destination paths, decided (and a running domain refused) before any data is written.
            if replace:
                current = replaceable_disks(uri, replace, wanted)
                # Written beside the old image and renamed over it at the end: a failure leaves the old disk.
                places = {name: (f"{path}.safehold-restore", disk_format) for name, (path, disk_format) in current.items()}
                final = {name: path for name, (path, _format) in current.items()}
            else:
                assert images_dir is not None
                os.makedirs(images_dir, exist_ok=True)
                prefix = define or token.get("domain") or snapshot.target
                for name in wanted:
                    # Disk names and the domain name come from the snapshot: each file must be one
                    # name inside images_dir, never a path that climbs out of it.
                    if not valid_name(os.fsencode(f"{prefix}-{name}.{image_format}")):
                        raise errors.DestinationError(destination=printable(f"{prefix}-{name}.{image_format}"),
                                                      detail="a disk or domain name in the snapshot is not a "
                                                             "single file name")
                places = {name: (os.path.join(os.path.abspath(images_dir), f"{prefix}-{name}.{image_format}"),
                                 image_format) for name in wanted}
                final = {name: path for name, (path, _format) in places.items()}

            def report(done: int) -> None:
                job.update(bytes_read=result.bytes_written + done)
                context.progress({"event": "restore", "bytes_done": result.bytes_written + done,
                                  "bytes_total": snapshot.summary.get("bytes_total")})

            try:
                for name in wanted:
                    path, disk_format = places[name]
                    written, damaged = restore_disk(repository, items[name], path, disk_format,
                                                    overwrite=overwrite or bool(replace), threads=context.threads,
                                                    on_progress=report)
                    result.bytes_written += written
                    result.damaged_ranges += [f"{name}: bytes {offset}-{offset + length - 1}"
                                              for offset, length in damaged]
                    result.disks[name] = final[name]
                if result.damaged_ranges and replace:
                    raise errors.RestoreIncomplete(count=len(result.damaged_ranges),
                                                   paths=", ".join(result.damaged_ranges[:10]), outcome=None)
            except BaseException:
                if replace:  # the old disks stay as they were
                    for path, _format in places.values():
                        if os.path.exists(path):
                            os.unlink(path)
                raise
            if result.damaged_ranges:
                # Nothing is defined or replaced from damaged data; the images stay for inspection.
                job.details["damaged"] = result.damaged_ranges
                outcome = DomainRestoreOutcome(snapshot.id, snapshot.target, result, time.monotonic() - started,
                                               job.id)
                raise errors.RestoreIncomplete(count=len(result.damaged_ranges),
                                               paths=", ".join(result.damaged_ranges[:10]), outcome=outcome)
            if replace:
                for name in wanted:
                    os.replace(places[name][0], final[name])
                dropped = drop_checkpoints(uri, replace)
                job.log(f"replaced disk(s) {', '.join(wanted)} of domain {replace}; dropped {dropped} checkpoint(s)")
            elif define:
                xml = new_domain_xml(token["domain_xml"], define,
                                     {name: (final[name], image_format) for name in wanted})
                define_domain(uri, xml, define)
                job.log(f"defined domain {define} with disk(s) {', '.join(wanted)}")
            job.update(bytes_read=result.bytes_written, files=len(wanted))
            return DomainRestoreOutcome(snapshot.id, snapshot.target, result, time.monotonic() - started, job.id)


def list_checkpoints(uri: str, domain_name: str) -> list[dict]:
    """The domain's checkpoints, oldest first: name, creation time (ISO 8601, UTC), parent, disks with a bitmap."""
    import xml.etree.ElementTree as ET
    from datetime import datetime, timezone

    from ..platforms.libvirt.connection import connect, lookup_domain

    connection = connect(uri)
    try:
        rows = []
        for checkpoint in lookup_domain(connection, domain_name, uri).listAllCheckpoints():
            root = ET.fromstring(checkpoint.getXMLDesc(0))
            created = int(root.findtext("creationTime", "0"))
            rows.append({
                "name": root.findtext("name"), "created_epoch": created,
                "created": datetime.fromtimestamp(created, timezone.utc).isoformat(),
                "parent": root.findtext("parent/name"),
                "disks": [d.get("name") for d in root.iterfind("disks/disk") if d.get("checkpoint") == "bitmap"],
            })
        return sorted(rows, key=lambda row: (row["created_epoch"], row["name"]))
    finally:
        connection.close()
