"""EBS beyond backup: where AWS is for a restore (``engine.restore`` runs it), and listing EBS snapshots.

Where AWS is: the region given, else the region of the configuration's ebs
targets (when they agree), else boto3's default (``AWS_DEFAULT_REGION``, the
profile). The endpoint comes from the ebs targets' ``endpoint_url`` or boto3's
own ``AWS_ENDPOINT_URL``; credentials always from the standard chain.
"""

from __future__ import annotations

from typing import Any, Callable

from .. import errors
from ..platforms import aws
from .context import Context


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


def clients_for(context: Context, endpoint: str | None) -> Callable[[str, str], Any]:
    """(service, region) -> a boto3 client, each made once: what the EBS destination is given."""
    cache: dict[tuple[str, str], Any] = {}

    def clients(service: str, name: str) -> Any:
        if (service, name) not in cache:
            cache[(service, name)] = aws.client(service, name, endpoint, max_pool=context.threads_or_default() * 2 + 4)
        return cache[(service, name)]

    return clients


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


__all__ = ["aws_location", "clients_for", "list_ebs_snapshots"]
