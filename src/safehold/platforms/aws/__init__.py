"""AWS: boto3 clients and the helpers the EBS source, the EBS restore and the engine's EBS jobs share
(tags safehold puts on its snapshots, error codes, waiting for snapshots); the EBS direct APIs are
in :mod:`.ebs_direct`.

Clients come from the standard AWS credential chain (environment, profile,
instance role); ``endpoint_url`` (or ``AWS_ENDPOINT_URL``, which boto3 reads
itself) points them elsewhere, e.g. at a test server. Retries use botocore's
"adaptive" mode: exponential backoff on throttling and 5xx, plus client-side
rate limiting, which the EBS direct APIs need (they throttle per snapshot).

boto3 is imported inside functions so that installs without the ``aws`` extra
can still import safehold.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from ...errors import UsageError

MARKER_KEY = "safehold:managed"  # present on every snapshot safehold creates; retention deletes only those
TARGET_KEY = "safehold:target"
TIER_KEY = "safehold:tier"
VOLUME_KEY = "safehold:volume"
SOURCE_SNAPSHOT_KEY = "safehold:source-snapshot"  # on a DR copy: the snapshot it was copied from
SOURCE_REGION_KEY = "safehold:source-region"


def boto3_module():
    try:
        import boto3
    except ImportError:  # pragma: no cover - the aws extra is part of the test extra
        raise UsageError("the AWS drivers need boto3: pip install 'safehold[aws]'") from None
    return boto3


def default_region() -> str | None:
    """The region boto3 would use on its own (AWS_REGION / AWS_DEFAULT_REGION, the profile), or None."""
    return boto3_module().session.Session().region_name


def client(service: str, region: str | None, endpoint_url: str | None = None, max_pool: int = 16) -> Any:
    boto3 = boto3_module()
    from botocore.config import Config

    config = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=max_pool,
                    connect_timeout=10, read_timeout=60)
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url or None, config=config)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)


def is_client_error(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


def tags_of(resource: dict) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", []) or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def describe_snapshots(ec2: Any, snapshot_ids: list[str]) -> dict[str, dict]:
    result: dict[str, dict] = {}
    paginator = ec2.get_paginator("describe_snapshots")
    for page in paginator.paginate(SnapshotIds=snapshot_ids):
        for snapshot in page["Snapshots"]:
            result[snapshot["SnapshotId"]] = snapshot
    return result


def wait_for_snapshots(ec2: Any, snapshot_ids: list[str], timeout: float,
                       on_timeout: Callable[[dict[str, dict]], Exception], on_error: Callable[[dict], Exception],
                       interval: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> dict[str, dict]:
    """Poll until every snapshot is ``completed``; raise ``on_timeout(pending)`` after ``timeout`` seconds
    and ``on_error(snapshot)`` for one in state ``error``. The interval grows to 15 s: real snapshots
    take minutes, and DescribeSnapshots is rate limited per account."""
    deadline = time.monotonic() + timeout
    while True:
        states = describe_snapshots(ec2, snapshot_ids)
        for snapshot in states.values():
            if snapshot["State"] == "error":
                raise on_error(snapshot)
        pending = {i: s for i, s in states.items() if s["State"] != "completed"}
        if not pending:
            return states
        if time.monotonic() >= deadline:
            raise on_timeout(pending)
        sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 15.0)


__all__ = ["MARKER_KEY", "SOURCE_REGION_KEY", "SOURCE_SNAPSHOT_KEY", "TARGET_KEY", "TIER_KEY", "VOLUME_KEY",
           "as_utc", "client", "default_region", "describe_snapshots", "error_code", "error_message",
           "is_client_error", "tag_list", "tags_of", "wait_for_snapshots"]
