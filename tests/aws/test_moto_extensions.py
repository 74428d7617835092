"""The moto extensions (``moto_extensions``) make moto follow AWS's documented behaviour.

Each test runs the same calls against a vanilla moto server and the extended one:
the vanilla answer pins the gap (so a moto upgrade that fixes it is noticed and the
extension can go), the extended answer is what AWS documents.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

import moto_support


@pytest.fixture(scope="module")
def vanilla():
    with moto_support.MotoServer(vanilla=True) as server:
        yield server


def _multipart(client, bucket: str, key: str, **lock) -> None:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **lock)
    part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100)
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})


def _lock():
    until = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    return until, {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}


def test_vanilla_moto_drops_object_lock_on_multipart_uploads(vanilla):
    client = vanilla.client("s3")
    bucket = moto_support.make_bucket(vanilla, object_lock=True)
    _until, lock = _lock()
    _multipart(client, bucket, "k", **lock)
    head = client.head_object(Bucket=bucket, Key="k")
    assert "ObjectLockMode" not in head  # the gap
    client.delete_object(Bucket=bucket, Key="k", VersionId=head["VersionId"])  # an "immutable" object, deleted


def test_extended_moto_locks_multipart_uploads_like_aws(moto):
    client = moto.client("s3")
    bucket = moto_support.make_bucket(moto, object_lock=True)
    until, lock = _lock()
    _multipart(client, bucket, "k", **lock)
    head = client.head_object(Bucket=bucket, Key="k")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key="k", VersionId=head["VersionId"])
    _multipart(client, bucket, "plain")  # without lock headers nothing is locked
    assert "ObjectLockMode" not in client.head_object(Bucket=bucket, Key="plain")


def test_extended_moto_refuses_lock_headers_on_a_bucket_without_object_lock(moto):
    client = moto.client("s3")
    bucket = moto_support.make_bucket(moto, object_lock=False)
    _until, lock = _lock()
    with pytest.raises(client.exceptions.ClientError, match="InvalidRequest"):
        client.create_multipart_upload(Bucket=bucket, Key="k", **lock)
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def _race(server, rounds: int = 15, writers: int = 8) -> int:
    """Rounds in which more than one If-None-Match writer succeeded."""
    client = server.client("s3")
    bucket = moto_support.make_bucket(server)
    doubled = 0
    for round_number in range(rounds):
        barrier = threading.Barrier(writers)

        def write(n: int) -> bool:
            barrier.wait()
            try:
                client.put_object(Bucket=bucket, Key=f"lock-{round_number}", Body=b"w" * 100_000, IfNoneMatch="*")
                return True
            except client.exceptions.ClientError:
                return False

        with ThreadPoolExecutor(writers) as pool:
            doubled += sum(pool.map(write, range(writers))) > 1
    return doubled


def test_extended_moto_decides_conditional_writes_atomically(moto):
    # moto checks If-None-Match and then writes without a lock (read in its source); the race is
    # rare on a 2-core host, so there is no vanilla counterpart that would fail reliably.
    assert _race(moto) == 0


def test_vanilla_moto_reports_one_fixed_initiated_time(vanilla):
    client = vanilla.client("s3")
    bucket = moto_support.make_bucket(vanilla)
    client.create_multipart_upload(Bucket=bucket, Key="k")
    [upload] = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert upload["Initiated"] == datetime(2010, 11, 10, 20, 48, 33, tzinfo=timezone.utc)


def test_extended_moto_reports_when_each_upload_began(moto):
    client = moto.client("s3")
    bucket = moto_support.make_bucket(moto)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    client.create_multipart_upload(Bucket=bucket, Key="a")
    client.create_multipart_upload(Bucket=bucket, Key="b")
    uploads = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted(u["Key"] for u in uploads) == ["a", "b"]
    for upload in uploads:
        assert before <= upload["Initiated"] <= datetime.now(timezone.utc)
