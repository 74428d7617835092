"""S3 options of the repository section: region, endpoint_url, object_lock, and what they turn into."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from safehold.config.models import RepositoryConfig


def test_backend_options_carry_region_endpoint_and_lock():
    config = RepositoryConfig.model_validate({
        "url": "s3://acme-backups/safehold", "region": "eu-central-1", "endpoint_url": "http://127.0.0.1:9000",
        "object_lock": {"mode": "COMPLIANCE", "days": 30}})
    assert config.backend_options() == {"region": "eu-central-1", "endpoint_url": "http://127.0.0.1:9000",
                                        "object_lock_mode": "COMPLIANCE", "object_lock_days": 30}


def test_s3_defaults_leave_region_and_endpoint_to_boto3():
    config = RepositoryConfig.model_validate({"url": "s3://acme-backups"})
    assert config.backend_options() == {"region": None, "endpoint_url": None}


def test_local_repositories_have_no_backend_options(tmp_path):
    assert RepositoryConfig.model_validate({"url": str(tmp_path)}).backend_options() == {}


@pytest.mark.parametrize("option", [{"region": "eu-west-1"}, {"endpoint_url": "http://localhost:9000"}])
def test_s3_options_on_a_local_repository_are_refused(tmp_path, option):
    with pytest.raises(ValidationError, match="only applies to s3:// repositories"):
        RepositoryConfig.model_validate({"url": str(tmp_path), **option})


def test_an_endpoint_must_be_a_url():
    with pytest.raises(ValidationError, match="is not an endpoint"):
        RepositoryConfig.model_validate({"url": "s3://acme-backups", "endpoint_url": "minio:9000"})
