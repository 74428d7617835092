"""The moto extensions (``moto_extensions``) make moto follow AWS's documented behaviour.

Each test runs the same calls against a vanilla moto server and the extended one:
the vanilla answer pins the gap (so a moto upgrade that fixes it is noticed and the
extension can go), the extended answer is what AWS documents.
"""

from __future__ import annotations

import json
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


# --- retention only extends -------------------------------------------------------------------


def _locked_object(client, bucket: str, mode: str) -> datetime:
    until = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    client.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode=mode, ObjectLockRetainUntilDate=until)
    return until


def test_vanilla_moto_lets_anyone_shorten_a_compliance_retention(vanilla):
    client = vanilla.client("s3")
    bucket = moto_support.make_bucket(vanilla, object_lock=True)
    _locked_object(client, bucket, "COMPLIANCE")
    sooner = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=1)
    client.put_object_retention(Bucket=bucket, Key="k", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": sooner})
    assert client.head_object(Bucket=bucket, Key="k")["ObjectLockRetainUntilDate"] == sooner  # the gap


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
def test_extended_moto_only_lets_retention_grow(moto, mode):
    client = moto.client("s3")
    bucket = moto_support.make_bucket(moto, object_lock=True)
    until = _locked_object(client, bucket, mode)
    sooner, later = until - timedelta(hours=1), until + timedelta(hours=1)
    other = "GOVERNANCE" if mode == "COMPLIANCE" else "COMPLIANCE"
    for retention in ({"Mode": mode, "RetainUntilDate": sooner}, {"Mode": other, "RetainUntilDate": later}):
        if mode == "GOVERNANCE" and retention["Mode"] == "COMPLIANCE":
            continue  # GOVERNANCE -> COMPLIANCE is a strengthening, allowed
        with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
            client.put_object_retention(Bucket=bucket, Key="k", Retention=retention)
    client.put_object_retention(Bucket=bucket, Key="k", Retention={"Mode": mode, "RetainUntilDate": later})
    assert client.head_object(Bucket=bucket, Key="k")["ObjectLockRetainUntilDate"] == later
    if mode == "GOVERNANCE":  # with the bypass header (and, under IAM, its permission) it may shrink
        client.put_object_retention(Bucket=bucket, Key="k", BypassGovernanceRetention=True,
                                    Retention={"Mode": mode, "RetainUntilDate": sooner})
        assert client.head_object(Bucket=bucket, Key="k")["ObjectLockRetainUntilDate"] == sooner


# --- IAM evaluation (pure) ---------------------------------------------------------------------


import iam_evaluation  # noqa: E402


def _policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


TAGGED = {"Effect": "Allow", "Action": "ec2:DeleteSnapshot", "Resource": "arn:aws:ec2:*::snapshot/*",
          "Condition": {"StringEquals": {"aws:ResourceTag/safehold:managed": "true"}}}
SNAPSHOT = "arn:aws:ec2:eu-west-1::snapshot/snap-1"


def test_an_allow_whose_condition_fails_does_not_apply():
    assert iam_evaluation.decide([_policy(TAGGED)], "ec2:DeleteSnapshot", SNAPSHOT,
                                 {"aws:ResourceTag/safehold:managed": ["true"]}) == "allow"
    assert iam_evaluation.decide([_policy(TAGGED)], "ec2:DeleteSnapshot", SNAPSHOT, {}) == "implicit"
    assert iam_evaluation.decide([_policy(TAGGED)], "ec2:DeleteSnapshot", SNAPSHOT,
                                 {"aws:ResourceTag/safehold:managed": ["false"]}) == "implicit"
    # moto itself passes no context and skips conditions: it allows the untagged delete (its gap).
    from moto.iam.access_control import IAMPolicy, PermissionResult

    assert IAMPolicy(json.dumps(_policy(TAGGED))).is_action_permitted("ec2:DeleteSnapshot", SNAPSHOT) \
        == PermissionResult.PERMITTED


def test_an_explicit_deny_wins_over_any_allow():
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "s3:DeleteObjectVersion", "Resource": "arn:aws:s3:::b/*"}
    assert iam_evaluation.decide([_policy(allow), _policy(deny)], "s3:DeleteObjectVersion", "arn:aws:s3:::b/k",
                                 {}) == "deny"
    assert iam_evaluation.decide([_policy(allow, deny)], "s3:GetObject", "arn:aws:s3:::b/k", {}) == "allow"
    assert iam_evaluation.decide([_policy(allow)], "S3:getobject", "arn:aws:s3:::b/k", {}) == "allow"  # actions: any case


def test_condition_operators():
    holds = iam_evaluation.condition_holds
    context = {"s3:prefix": ["repo/data/"], "aws:TagKeys": ["a", "b"], "aws:SecureTransport": ["true"]}
    assert holds("StringLike", "s3:prefix", ["repo/*"], context)
    assert not holds("StringLike", "s3:prefix", ["other/*"], context)
    assert not holds("StringLike", "s3:prefix", ["repo/*"], {})  # missing key: no match
    assert holds("StringLikeIfExists", "s3:prefix", ["repo/*"], {})
    assert holds("StringNotEquals", "aws:PrincipalArn", ["x"], {})  # negated: holds when missing
    assert holds("ArnNotEquals", "aws:PrincipalArn", ["arn:a"], {"aws:PrincipalArn": ["arn:b"]})
    assert not holds("ArnNotEquals", "aws:PrincipalArn", ["arn:a", "arn:b"], {"aws:PrincipalArn": ["arn:b"]})
    assert holds("Bool", "aws:SecureTransport", ["true"], context)
    assert not holds("Bool", "aws:SecureTransport", ["false"], context)
    assert holds("Null", "aws:RequestTag/x", ["true"], context)
    assert not holds("Null", "s3:prefix", ["true"], context)
    assert holds("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b", "c"], context)
    assert not holds("ForAllValues:StringEquals", "aws:TagKeys", ["a"], context)
    assert holds("ForAnyValue:StringEquals", "aws:TagKeys", ["a"], context)
    assert holds("NumericLessThanEquals", "s3:object-lock-remaining-retention-days", ["30"],
                 {"s3:object-lock-remaining-retention-days": ["7"]})
    assert holds("StringEquals", "AWS:REQUESTTAG/k", ["v"], {"aws:RequestTag/k": ["v"]})  # key names: any case


def test_resource_and_principal_matching():
    statement = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                 "Resource": "arn:aws:s3:::b/repo/*",
                 "Condition": {"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/backup"}}}
    bucket_policy = _policy(statement)
    allow = _policy({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"})
    who = {"aws:PrincipalArn": ["arn:aws:iam::1:role/intruder"]}
    assert iam_evaluation.decide([allow], "s3:PutObject", "arn:aws:s3:::b/repo/x", who, bucket_policy,
                                 "arn:aws:iam::1:role/intruder", "1") == "deny"
    backup = {"aws:PrincipalArn": ["arn:aws:iam::1:role/backup"]}
    assert iam_evaluation.decide([allow], "s3:PutObject", "arn:aws:s3:::b/repo/x", backup, bucket_policy,
                                 "arn:aws:iam::1:role/backup", "1") == "allow"
    assert iam_evaluation.decide([allow], "s3:PutObject", "arn:aws:s3:::b/other/x", who, bucket_policy,
                                 "arn:aws:iam::1:role/intruder", "1") == "allow"
    granting = _policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:role/backup"},
                        "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"})
    assert iam_evaluation.decide([], "s3:GetObject", "arn:aws:s3:::b/k", {}, granting,
                                 "arn:aws:iam::1:role/backup", "1") == "allow"
    assert iam_evaluation.decide([], "s3:GetObject", "arn:aws:s3:::b/k", {}, granting,
                                 "arn:aws:iam::1:role/other", "1") == "implicit"


def test_extensions_are_all_applied_in_the_server(moto):
    # The launcher applies every extension; a quick probe of two of them through the wire.
    client = moto.client("s3")
    bucket = moto_support.make_bucket(moto, object_lock=True)
    until = _locked_object(client, bucket, "COMPLIANCE")
    with pytest.raises(client.exceptions.ClientError):
        client.put_object_retention(Bucket=bucket, Key="k",
                                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=1)})
    from moto.s3.responses import ACTION_MAP  # this process is vanilla: the mapping gap is visible here

    assert "retention" not in ACTION_MAP["KEY"]["PUT"]


# --- S3 authorisation by IAM action; 404 or 403 for a missing key -------------------------

READER_STATEMENTS = {
    # Exactly what AWS asks for: s3:GetObject for GET and HEAD, s3:ListBucket for listings.
    "get-only": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/repo/*"}],
    "get-and-prefix-list": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/repo/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::BUCKET",
         "Condition": {"StringLike": {"s3:prefix": ["repo/*"]}}}],
    "get-and-list": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/repo/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::BUCKET"}],
}


def _readers(server: moto_support.MotoServer) -> tuple[str, dict]:
    """A bucket holding repo/present, and an S3 client per entry of READER_STATEMENTS, IAM enforced."""
    server.enforce_iam(1_000_000)  # reset the free-call budget before setting up
    admin_s3 = server.client("s3")
    bucket = moto_support.make_bucket_with(admin_s3)
    admin_s3.put_object(Bucket=bucket, Key="repo/present", Body=b"x")
    iam = server.client("iam")
    clients = {}
    for name, statements in READER_STATEMENTS.items():
        user = f"reader-{name}-{bucket[-6:]}"
        iam.create_user(UserName=user)
        document = json.dumps({"Version": "2012-10-17", "Statement": statements}).replace("BUCKET", bucket)
        iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=document)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        clients[name] = server.client("s3", aws_access_key_id=key["AccessKeyId"],
                                      aws_secret_access_key=key["SecretAccessKey"])
    server.enforce_iam(0)
    return bucket, clients


def _status(call) -> int:
    from botocore.exceptions import ClientError

    try:
        call()
        return 200
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def test_vanilla_moto_authorises_s3_by_operation_name_not_iam_action():
    # Its own server: IAM enforcement is process-wide. moto 5.2.6 refuses a HEAD (and a listing) to a
    # caller allowed exactly what AWS asks for; 5.2.5 did not. A moto release that fixes it fails
    # this test, and the extension s3_iam_action_names can go.
    with moto_support.MotoServer(vanilla=True) as server:
        bucket, clients = _readers(server)
        reader = clients["get-and-list"]
        assert _status(lambda: reader.get_object(Bucket=bucket, Key="repo/present")) == 200
        assert _status(lambda: reader.head_object(Bucket=bucket, Key="repo/present")) == 403
        assert _status(lambda: reader.list_objects_v2(Bucket=bucket, Prefix="repo/")) == 403


def test_extended_moto_authorises_s3_by_iam_action_and_hides_missing_keys_like_aws():
    with moto_support.MotoServer() as server:
        bucket, clients = _readers(server)
        head = {name: (lambda c=c, key="repo/present": c.head_object(Bucket=bucket, Key=key))
                for name, c in clients.items()}
        missing = {name: (lambda c=c: c.head_object(Bucket=bucket, Key="repo/missing")) for name, c in clients.items()}
        get_missing = {name: (lambda c=c: c.get_object(Bucket=bucket, Key="repo/missing"))
                       for name, c in clients.items()}
        # HEAD needs s3:GetObject, nothing else.
        assert {name: _status(call) for name, call in head.items()} == dict.fromkeys(clients, 200)
        # A missing key: 404 only with ListBucket that applies to this request (no s3:prefix in a HEAD/GET).
        expected = {"get-only": 403, "get-and-prefix-list": 403, "get-and-list": 404}
        assert {name: _status(call) for name, call in missing.items()} == expected
        assert {name: _status(call) for name, call in get_missing.items()} == expected
        # Listings need s3:ListBucket, and the prefix condition applies to them.
        lister = clients["get-and-prefix-list"]
        assert _status(lambda: lister.list_objects_v2(Bucket=bucket, Prefix="repo/missing")) == 200
        assert _status(lambda: lister.list_objects_v2(Bucket=bucket, Prefix="other/")) == 403
        assert _status(lambda: clients["get-only"].list_objects_v2(Bucket=bucket, Prefix="repo/")) == 403
