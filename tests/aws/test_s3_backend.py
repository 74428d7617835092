"""S3Backend beyond the shared contract (tests/contract): the credential chain and
endpoint from the environment, multipart uploads with Object Lock, conditional
multipart writes, retries on throttling and 5xx, error mapping, stale uploads."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from safehold import errors
from safehold.repository.backends import Kind, ObjectExists, ObjectRetained, RetentionBackend, open_backend
from safehold.repository.backends import s3 as s3_module
from safehold.repository.backends.s3 import MIB, S3Backend, S3RequestFailed

NAME = "ab" * 32


def backend(moto, bucket: str, **options) -> S3Backend:
    return S3Backend(f"s3://{bucket}/repo", client=moto.client("s3"), **options)


def test_open_backend_uses_the_standard_credential_chain_and_endpoint_variables(moto, plain_bucket, monkeypatch):
    # No client handed in: boto3 finds credentials, region and endpoint in the environment as on a host.
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)
    store = open_backend(f"s3://{plain_bucket}/from-env")
    assert isinstance(store, S3Backend) and store.url == f"s3://{plain_bucket}/from-env"
    assert store.client.meta.region_name == "eu-west-1"
    store.put(Kind.DATA, NAME, b"via the environment")
    assert moto.client("s3").get_object(Bucket=plain_bucket, Key=f"from-env/data/{NAME}")["Body"].read() \
        == b"via the environment"


def test_one_client_per_process_settings_and_credentials(moto, plain_bucket, aws_env, monkeypatch):
    # A worker opened a boto3 Session and client per job (0.1-0.26 s of CPU each, docs/benchmarks.md).
    first = open_backend(f"s3://{plain_bucket}/a", endpoint_url=moto.url)
    second = open_backend(f"s3://{plain_bucket}/b", endpoint_url=moto.url)
    assert first.client is second.client
    assert open_backend(f"s3://{plain_bucket}/a", endpoint_url=moto.url, region="eu-central-1").client \
        is not first.client
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated")  # other credentials: another client
    assert open_backend(f"s3://{plain_bucket}/a", endpoint_url=moto.url).client is not first.client
    assert s3_module.make_client(endpoint_url=moto.url, shared=False) is not first.client


def test_configured_region_and_endpoint_win(moto, plain_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # nothing listens there
    store = open_backend(f"s3://{plain_bucket}", region="eu-central-1", endpoint_url=moto.url)
    assert store.client.meta.region_name == "eu-central-1"
    store.put(Kind.DATA, NAME, b"x")
    assert store.get(Kind.DATA, NAME) == b"x"


def test_large_objects_go_up_in_parts_and_keep_their_retention(moto, lock_bucket, s3):
    store = backend(moto, lock_bucket, object_lock_mode="COMPLIANCE", object_lock_days=1,
                    multipart_threshold=5 * MIB, part_size=5 * MIB)
    assert isinstance(store, RetentionBackend)
    data = [os.urandom(3 * MIB) for _ in range(4)]  # 12 MiB in parts that do not align with S3's parts
    until = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    store.put(Kind.DATA, NAME, data, retain_until=until)
    head = s3.head_object(Bucket=lock_bucket, Key=f"repo/data/{NAME}")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    assert store.get(Kind.DATA, NAME) == b"".join(data)
    assert store.get(Kind.DATA, NAME, 5 * MIB - 3, 6) == b"".join(data)[5 * MIB - 3 : 5 * MIB + 3]
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert store.retention(Kind.DATA, NAME) == until
    with pytest.raises(Exception) as denied:  # the locked version cannot be removed, whoever asks
        s3.delete_object(Bucket=lock_bucket, Key=f"repo/data/{NAME}", VersionId=head["VersionId"])
    assert "AccessDenied" in str(denied.value)
    assert not s3.list_multipart_uploads(Bucket=lock_bucket).get("Uploads")


def test_exclusive_multipart_put_refuses_an_existing_object(moto, plain_bucket, s3):
    store = backend(moto, plain_bucket, multipart_threshold=5 * MIB, part_size=5 * MIB)
    store.put(Kind.LOCKS, NAME, b"a" * (6 * MIB), exclusive=True)
    with pytest.raises(ObjectExists):
        store.put(Kind.LOCKS, NAME, b"b" * (6 * MIB), exclusive=True)
    assert store.get(Kind.LOCKS, NAME, 0, 4) == b"aaaa"
    assert not s3.list_multipart_uploads(Bucket=plain_bucket).get("Uploads")  # the losing upload was aborted


def test_retention_is_ignored_without_a_lock_mode(moto, plain_bucket, s3):
    store = backend(moto, plain_bucket)
    assert store.supports_retention is False and store.retention_period is None
    store.put(Kind.DATA, NAME, b"x", retain_until=datetime.now(timezone.utc) + timedelta(days=1))
    assert "ObjectLockMode" not in s3.head_object(Bucket=plain_bucket, Key=f"repo/data/{NAME}")


def test_delete_of_a_retained_object_raises_object_retained(moto, lock_bucket, s3):
    store = backend(moto, lock_bucket, object_lock_mode="GOVERNANCE", object_lock_days=1)
    until = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    # A bucket policy denying delete markers on data/ (as deploy/iam's does) makes S3 refuse the delete.
    s3.put_bucket_policy(Bucket=lock_bucket, Policy='{"Version":"2012-10-17","Statement":[{"Effect":"Deny",'
                         '"Principal":"*","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::%s/repo/data/*"}]}'
                         % lock_bucket)
    store.put(Kind.DATA, NAME, b"x", retain_until=until)
    # moto does not evaluate bucket policies without IAM enforcement, so check the mapping directly:
    error = type("Denied", (Exception,), {"response": {"Error": {"Code": "AccessDenied"}}})()
    store.client = _Failing(store.client, "delete_object", error)
    with pytest.raises(ObjectRetained) as caught:
        store.delete(Kind.DATA, NAME)
    assert caught.value.until == until


class _Failing:
    """Wraps a client so that one call raises ``error`` (the S3 answer moto cannot produce here)."""

    def __init__(self, client, method: str, error: Exception) -> None:
        self._client, self._method, self._error = client, method, error

    def __getattr__(self, name: str):
        if name == self._method:
            def fail(**kwargs):
                raise self._error
            return fail
        return getattr(self._client, name)


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError"), (503, "ServiceUnavailable")])
def test_throttling_and_server_errors_are_retried_with_backoff(moto, plain_bucket, status, code, aws_env):
    from botocore.awsrequest import AWSResponse

    store = backend(moto, plain_bucket)
    store.client = s3_module.make_client("eu-west-1", moto.url, max_attempts=4, shared=False)
    attempts: list[float] = []

    def answer_with_error(request, **kwargs):
        # Runs for every HTTP attempt: the first two get the error as S3 would send it.
        if request.method == "PUT":
            attempts.append(time.monotonic())
            if len(attempts) <= 2:
                body = f"<Error><Code>{code}</Code><Message>please slow down</Message></Error>".encode()
                return AWSResponse(request.url, status, {}, _Raw(body))
        return None

    store.client.meta.events.register("before-send.s3.PutObject", answer_with_error)
    store.put(Kind.DATA, NAME, b"after two refusals")
    assert len(attempts) == 3
    assert attempts[2] > attempts[0]  # time passed between attempts (jittered exponential backoff)
    assert store.get(Kind.DATA, NAME) == b"after two refusals"


def test_errors_after_the_last_retry_become_backend_errors(moto, plain_bucket, aws_env):
    from botocore.awsrequest import AWSResponse

    store = backend(moto, plain_bucket)
    store.client = s3_module.make_client("eu-west-1", moto.url, max_attempts=2, shared=False)
    count = []

    def always_busy(request, **kwargs):
        count.append(1)
        return AWSResponse(request.url, 503, {}, _Raw(b"<Error><Code>SlowDown</Code></Error>"))

    store.client.meta.events.register("before-send.s3.HeadObject", always_busy)
    with pytest.raises(S3RequestFailed) as caught:
        store.stat(Kind.DATA, NAME)
    assert len(count) == 2 and "SlowDown" in str(caught.value)
    mapped = errors.from_os_error(caught.value, "reading data")
    assert isinstance(mapped, errors.BackendError) and "SlowDown" in str(mapped)


def test_missing_bucket_is_a_clear_error(moto):
    store = S3Backend("s3://no-such-bucket-here/repo", client=moto.client("s3"))
    with pytest.raises(S3RequestFailed, match="bucket does not exist"):
        store.create()


def test_create_refuses_object_lock_on_a_bucket_without_it(moto, plain_bucket):
    store = backend(moto, plain_bucket, object_lock_mode="COMPLIANCE", object_lock_days=7)
    with pytest.raises(errors.BackendError, match="without Object Lock"):
        store.create()


def test_prune_aborts_stale_multipart_uploads(moto, plain_bucket, s3, monkeypatch):
    store = backend(moto, plain_bucket)
    s3.create_multipart_upload(Bucket=plain_bucket, Key=f"repo/data/{NAME}")
    s3.create_multipart_upload(Bucket=plain_bucket, Key="other-prefix/data/x")
    assert store.remove_temporary_files() == 0  # young: a writer may still be at it
    monkeypatch.setattr(s3_module, "STALE_UPLOAD_AGE", timedelta(seconds=-60))
    assert store.remove_temporary_files() == 1
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=plain_bucket)["Uploads"]] == ["other-prefix/data/x"]


class _Raw:
    """The minimal raw body botocore reads from an injected response."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kwargs):
        yield self._body

    def read(self, *args):
        body, self._body = self._body, b""
        return body
