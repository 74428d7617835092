"""EBS jobs: restore to an EC2 instance (from an EBS snapshot or a repository snapshot), list EBS snapshots.

Where AWS is: the region given, else the region of the configuration's ebs
targets (when they agree), else boto3's default (``AWS_DEFAULT_REGION``, the
profile). The endpoint comes from the ebs targets' ``endpoint_url`` or boto3's
own ``AWS_ENDPOINT_URL``; credentials always from the standard chain.
"""

from __future__ import annotations

import time
from typing import Any

from .. import errors
from ..restore.ebs import EbsRestoreResult, image_to_ebs_snapshot, restore_to_instance
from ..platforms import aws
from .context import Context
from .restore import find_snapshot_in_job


def _ebs_sources(context: Context) -> list[Any]:
    return [t.source for t in context.config.targets if t.source.type == "ebs"]


def aws_location(context: Context, region: str | None) -> tuple[str, str | None]:
    sources = _ebs_sources(context)
    endpoints = {s.endpoint_url for s in sources if s.endpoint_url}
    endpoint = endpoints.pop() if len(endpoints) == 1 else None
    if region:
        return region, endpoint
    regions = {s.region for s in sources}
    if len(regions) == 1:
        return regions.pop(), endpoint
    default = aws.default_region()
    if not default:
        raise errors.UsageError("no AWS region: pass --region, or set AWS_DEFAULT_REGION")
    return default, endpoint


def restore_ebs(context: Context, snapshot_ref: str, instance_id: str, *, device: str | None = None,
                region: str | None = None, target: str | None = None, include: str | None = None,
                timeout: float = 3600.0) -> EbsRestoreResult:
    """Restore ``snapshot_ref`` to a new volume attached to ``instance_id``.

    ``snap-…``: an EBS snapshot (or, for an instance in another region, its safehold DR copy there).
    Anything else names a repository snapshot: its image (``include`` picks one of several) is
    first written into a new EBS snapshot in the instance's region."""
    region, endpoint = aws_location(context, region)
    cache: dict[tuple[str, str], Any] = {}

    def clients(service: str, name: str) -> Any:
        if (service, name) not in cache:
            cache[(service, name)] = aws.client(service, name, endpoint, max_pool=context.threads_or_default() * 2 + 4)
        return cache[(service, name)]

    started = time.monotonic()
    details = {"snapshot": snapshot_ref, "destination": f"instance {instance_id}", "device": device, "region": region}
    with context.catalog.job("restore", target, details) as job:
        if snapshot_ref.startswith("snap-"):
            result = restore_to_instance(clients, snapshot_ref, instance_id, region=region, device=device,
                                         timeout=timeout)
        else:
            from ..restore.ebs import find_instance

            instance, instance_region = find_instance(clients, instance_id, region)
            with context.locked(purpose="restore") as repository:
                snapshot = find_snapshot_in_job(context, repository, job, snapshot_ref, target)
                images = [i for i in repository.read_tree(snapshot) if i["type"] == "image"]
                chosen = [i for i in images if include is None or i["path"].decode(errors="replace") == include]
                names = ", ".join(i["path"].decode(errors="replace") for i in images) or "(none)"
                if include is None and len(images) > 1:
                    raise errors.UsageError(f"snapshot {snapshot.short_id} holds {len(images)} images ({names}); "
                                            "name one with --include")
                if not chosen:
                    raise errors.PathNotInSnapshot(path=include or "(an image)", snapshot=snapshot.short_id)
                item = chosen[0]
                written = 0

                def report(length: int) -> None:
                    nonlocal written
                    written += length
                    job.update(bytes_read=written)
                    context.progress({"event": "restore", "bytes_done": written, "bytes_total": item["size"],
                                      "current": item["path"].decode(errors="replace")})

                tags = {aws.MARKER_KEY: "true", aws.TARGET_KEY: snapshot.target,
                        "safehold:repository-snapshot": snapshot.id}
                ebs_snapshot, blocks = image_to_ebs_snapshot(
                    clients, repository, item, region=instance_region, tags=tags,
                    description=f"safehold restore of {snapshot.short_id} {item['path'].decode(errors='replace')}",
                    threads=context.threads_or_default() * 2, timeout=timeout, on_block=report)
            result = restore_to_instance(clients, ebs_snapshot, instance["InstanceId"], region=instance_region,
                                         device=device, timeout=timeout, source_snapshot_id=snapshot.id)
            result.blocks_written = blocks
        result.duration = time.monotonic() - started
        job.log(f"volume {result.volume_id} from {result.snapshot_id} attached to {instance_id} as "
                f"{result.device} in {result.availability_zone}")
        job.details.update(result.as_dict())
        return result


def list_ebs_snapshots(context: Context, target: str | None = None, region: str | None = None) -> list[dict]:
    """The safehold-made EBS snapshots of ebs targets (or one target), in their regions and DR regions."""
    rows: list[dict] = []
    for config_target in context.config.targets:
        source = config_target.source
        if source.type != "ebs" or (target and config_target.name != target):
            continue
        regions = [source.region, *[copy.region for copy in source.dr_copies]]
        for name in regions:
            if region and name != region:
                continue
            ec2 = aws.client("ec2", name, source.endpoint_url)
            filters = [{"Name": f"tag:{aws.MARKER_KEY}", "Values": ["true"]},
                       {"Name": f"tag:{aws.TARGET_KEY}", "Values": [config_target.name]}]
            for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=filters):
                for snapshot in page["Snapshots"]:
                    tags = aws.tags_of(snapshot)
                    rows.append({"target": config_target.name, "region": name, "snapshot_id": snapshot["SnapshotId"],
                                 "volume_id": tags.get(aws.VOLUME_KEY, snapshot.get("VolumeId")),
                                 "state": snapshot["State"], "time": aws.as_utc(snapshot["StartTime"]).isoformat(),
                                 "copy_of": tags.get(aws.SOURCE_SNAPSHOT_KEY),
                                 "encrypted": snapshot.get("Encrypted", False),
                                 "kms_key_id": snapshot.get("KmsKeyId")})
    rows.sort(key=lambda row: (row["target"], row["region"], row["time"]))
    return rows


__all__ = ["aws_location", "list_ebs_snapshots", "restore_ebs"]
