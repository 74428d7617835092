"""AWS EBS source: ``EbsSource`` (volumes by id, instance or tag) and ``EbsCopy`` (a DR copy in another region)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from safehold.config.common import _invalid, _Model
from safehold.config.fields import Duration

__all__ = ["EbsCopy", "EbsSource"]

_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


def _check_region(value: str) -> str:
    if not _AWS_REGION.fullmatch(value):
        raise _invalid(f"{value!r} is not an AWS region name; expected e.g. us-east-1, eu-west-2")
    return value


class EbsCopy(_Model):
    """A copy of every EBS snapshot in another region (disaster recovery)."""

    region: str = Field(description="Region the snapshots are copied to.", examples=["us-west-2"])
    kms_key_id: str | None = Field(
        None,
        description="KMS key (id, alias or ARN in the destination region) to re-encrypt the copies with; "
        "without it a copy keeps the source's encryption.",
        examples=["alias/safehold-dr"],
    )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_region(value)


class EbsSource(_Model):
    """EBS volumes: EBS snapshots in the account (with DR copies and retention), and their blocks
    read into the repository through the EBS direct APIs, incrementally with ListChangedBlocks."""

    type: Literal["ebs"] = Field(description="Source kind.", examples=["ebs"])
    region: str = Field(description="Region of the volumes.", examples=["us-east-1"])
    volume_ids: list[str] = Field(
        default_factory=list, description="Volumes to back up, by id.", examples=[["vol-0123456789abcdef0"]]
    )
    instance_ids: list[str] = Field(
        default_factory=list,
        description="Instances whose attached EBS volumes are backed up.",
        examples=[["i-0123456789abcdef0"]],
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Back up every volume carrying all of these tags.",
        examples=[{"backup": "tier1"}],
    )
    dr_copies: list[EbsCopy] = Field(
        default_factory=list,
        description="Regions each EBS snapshot is copied to; the target's retention applies there too.",
        examples=[[{"region": "us-west-2", "kms_key_id": "alias/safehold-dr"}]],
    )
    endpoint_url: str | None = Field(
        None,
        description="EC2 and EBS endpoint to use instead of AWS's (a test server, a VPC endpoint). "
        "Credentials always come from the standard AWS chain.",
        examples=["http://127.0.0.1:5000"],
    )
    wait_timeout: Duration = Field(
        timedelta(hours=1),
        description="How long to wait for EBS snapshots and their copies to complete before the backup "
        "fails (and deletes what it created).",
        examples=["1h", "30m"],
    )
    copy_blocks: bool = Field(
        True,
        description="Also read the snapshot's blocks into the repository (a copy that survives losing the "
        "account or the region). Off: the backup is the EBS snapshots alone.",
        examples=[True],
    )
    threads: int = Field(
        8, ge=1, le=64, description="Parallel GetSnapshotBlock calls per volume.", examples=[8]
    )

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_region(value)

    @field_validator("volume_ids")
    @classmethod
    def _volume_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _VOLUME_ID.fullmatch(item):
                raise _invalid(f"{item!r} is not an EBS volume id; expected vol- and hex digits")
        return value

    @field_validator("instance_ids")
    @classmethod
    def _instance_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _INSTANCE_ID.fullmatch(item):
                raise _invalid(f"{item!r} is not an EC2 instance id; expected i- and hex digits")
        return value

    @model_validator(mode="after")
    def _selects_something(self) -> EbsSource:
        if not (self.volume_ids or self.instance_ids or self.tags):
            raise _invalid("an ebs source selects no volume: set volume_ids, instance_ids or tags")
        if any(copy.region == self.region for copy in self.dr_copies):
            raise _invalid(f"a dr_copies region is the source region {self.region}; name another region")
        return self
