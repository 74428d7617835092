"""The ebs source in targets.yml: what it accepts, and the errors it gives."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from safehold.config.models import Config


def config(source: dict) -> Config:
    return Config.model_validate({"repository": {"url": "/srv/repo"},
                                  "targets": [{"name": "db", "tier": 1, "source": {"type": "ebs", **source}}]})


def test_defaults_and_values():
    source = config({"region": "us-east-1", "instance_ids": ["i-0123456789abcdef0"],
                     "dr_copies": [{"region": "eu-west-1", "kms_key_id": "alias/dr"}], "wait_timeout": "30m"}
                    ).targets[0].source
    assert source.wait_timeout == timedelta(minutes=30) and source.copy_blocks and source.threads == 8
    assert source.dr_copies[0].kms_key_id == "alias/dr"


@pytest.mark.parametrize(("source", "message"), [
    ({"region": "us-east-1"}, "selects no volume"),
    ({"region": "Virginia", "tags": {"a": "b"}}, "not an AWS region"),
    ({"region": "us-east-1", "volume_ids": ["disk-1"]}, "not an EBS volume id"),
    ({"region": "us-east-1", "instance_ids": ["vm-1"]}, "not an EC2 instance id"),
    ({"region": "us-east-1", "tags": {"a": "b"}, "dr_copies": [{"region": "us-east-1"}]}, "is the source region"),
    ({"region": "us-east-1", "tags": {"a": "b"}, "threads": 0}, "greater than or equal to 1"),
])
def test_invalid_sources_say_what_is_wrong(source: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        config(source)


def test_registry_offers_ebs_with_its_restore_kind():
    from safehold.sources import REGISTRY

    assert REGISTRY["ebs"] == ("safehold.sources.ebs", "EbsSource", "ebs")
