"""Make moto follow AWS's documented behaviour where safehold depends on it.

moto 5.2 differs from AWS in ways that would let safehold's tests pass for the
wrong reason. Each extension below patches moto *in the moto server process*
(``moto_launch.py`` applies them before serving) and is tested on its own in
``test_moto_extensions.py``. Every gap is listed in docs/testing.md.

1. ``multipart_object_lock``: AWS applies ``x-amz-object-lock-mode`` and
   ``x-amz-object-lock-retain-until-date`` sent with CreateMultipartUpload to the
   completed object (S3 API reference, CreateMultipartUpload); moto drops them,
   so a multipart pack would be stored unlocked.
2. ``atomic_conditional_put``: AWS decides ``If-None-Match: *`` atomically (one
   of racing writers wins, the rest get 412); moto checks and then writes
   without a lock, so two racing writers can both succeed.
3. ``multipart_initiated_time``: AWS's ListMultipartUploads gives each upload's
   ``Initiated`` time; moto answers 2010-11-10T20:48:33Z for every upload, so
   "abort only stale uploads" could not be tested.
4. ``s3_object_lock_actions``: AWS authorises PutObjectRetention,
   GetObjectRetention, Put/GetObjectLegalHold and Get/PutBucketObjectLockConfiguration
   as those actions; moto maps them to s3:PutObject, s3:GetObject, s3:ListBucket
   and s3:CreateBucket.
5. ``iam_policy_evaluation``: under IAM enforcement moto evaluates identity
   policies without a request context and skips every condition it has no value
   for (a tag-scoped Allow allows any snapshot, a conditional Deny denies
   everyone), evaluates bucket policies the same way on every object request,
   checks EC2 actions against Resource "*" only, and lets anyone send
   ``x-amz-bypass-governance-retention``. The
   extension evaluates as AWS documents (``iam_evaluation``) with the request
   context AWS would supply: resource ARNs per EC2 action, ``aws:ResourceTag/*``
   and ``ec2:ResourceTag/*`` from moto's tags, ``aws:RequestTag/*`` and
   ``aws:TagKeys`` from the request, ``s3:prefix``, ``s3:if-none-match``, ``aws:PrincipalArn``,
   ``aws:SecureTransport`` (true: loopback stands in for TLS), the bucket policy,
   and s3:BypassGovernanceRetention for deletes that ask to bypass. moto's own
   context-free bucket-policy check is turned
   off: bucket policies are evaluated only under IAM enforcement, here.
6. ``retention_only_extends``: AWS lets PutObjectRetention only lengthen a
   COMPLIANCE retention (never shorten it, remove it or change its mode), and
   shorten a GOVERNANCE one only with ``x-amz-bypass-governance-retention``;
   moto overwrites the retention with whatever it is sent, so anyone allowed
   s3:PutObjectRetention (safehold's maintenance needs it) could unlock anything.
7. ``s3_iam_action_names``: AWS authorises each S3 request by its IAM action: HeadObject
   and GetObject need ``s3:GetObject``, ListObjects(V2) needs ``s3:ListBucket``, a DELETE with a
   version id needs ``s3:DeleteObjectVersion`` (Service Authorization Reference for Amazon S3;
   HeadObject API reference: "To use HEAD, you must have the s3:GetObject permission"). moto 5.2.6
   checks the API operation's name instead (``s3:HeadObject``, ``s3:ListObjectsV2``: no such IAM
   actions), so a role allowed exactly what AWS asks for is refused a HEAD of an object it may
   read, and a policy naming the operations would pass moto and fail on AWS. 5.2.5 used its own
   IAM-action table (``ACTION_MAP``), which 5.2.6 still fills in for every request; the extension
   authorises by that table again.
8. ``s3_missing_key_needs_list_bucket``: AWS answers a GET or HEAD of a missing key with 404 only
   to a caller that also has ``s3:ListBucket`` on the bucket, and with 403 otherwise (HeadObject
   and GetObject API references). The ListBucket question is asked of the GET/HEAD request, which
   carries no ``s3:prefix``, so a grant conditioned on a prefix does not count (the conservative
   reading, which safehold's S3 backend must cope with either way). moto answers 404 to anyone.
"""

from __future__ import annotations

import re
import threading

APPLIED: list[str] = []
_request = threading.local()


def multipart_object_lock() -> None:
    from moto.s3.models import S3Backend
    from moto.s3.responses import S3Response

    original_post = S3Response._key_response_post
    original_create = S3Backend.create_multipart_upload
    original_complete = S3Backend.complete_multipart_upload

    def key_response_post(self, request, body, bucket_name, query, key_name):
        headers = request.headers
        _request.lock = (headers.get("x-amz-object-lock-mode"),
                         headers.get("x-amz-object-lock-retain-until-date"),
                         headers.get("x-amz-object-lock-legal-hold"))
        try:
            return original_post(self, request, body, bucket_name, query, key_name)
        finally:
            _request.lock = None

    def create_multipart_upload(self, bucket_name, key_name, *args, **kwargs):
        multipart = original_create(self, bucket_name, key_name, *args, **kwargs)
        mode, until, legal_hold = getattr(_request, "lock", None) or (None, None, None)
        bucket = self.get_bucket(bucket_name)
        if (mode or legal_hold) and not bucket.object_lock_enabled:
            from moto.s3.exceptions import InvalidRequest

            del bucket.multiparts[multipart.id]
            raise InvalidRequest("CreateMultipartUpload")  # AWS refuses lock headers on a bucket without Object Lock
        multipart.safehold_lock = (mode, _aws_date(until) if until else None, legal_hold)
        return multipart

    def complete_multipart_upload(self, bucket_name, multipart_id, body):
        multipart = self.get_bucket(bucket_name).multiparts.get(multipart_id)
        key = original_complete(self, bucket_name, multipart_id, body)
        lock = getattr(multipart, "safehold_lock", None)
        if key is not None and lock is not None:
            mode, until, legal_hold = lock
            if mode:
                key.lock_mode, key.lock_until = mode, until
            if legal_hold:
                key.lock_legal_status = legal_hold
        return key

    S3Response._key_response_post = key_response_post
    S3Backend.create_multipart_upload = create_multipart_upload
    S3Backend.complete_multipart_upload = complete_multipart_upload
    APPLIED.append("multipart_object_lock")


def atomic_conditional_put() -> None:
    from moto.s3.responses import S3Response

    original_put = S3Response._key_response_put
    original_post = S3Response._key_response_post
    write_lock = threading.Lock()

    # Serialising conditional writes (PUT, CompleteMultipartUpload) makes moto's
    # check-then-write atomic, as S3 is.
    def key_response_put(self, query, key_name):
        if self.headers.get("If-None-Match") == "*":
            with write_lock:
                return original_put(self, query, key_name)
        return original_put(self, query, key_name)

    def key_response_post(self, request, body, bucket_name, query, key_name):
        if request.headers.get("If-None-Match") == "*":
            with write_lock:
                return original_post(self, request, body, bucket_name, query, key_name)
        return original_post(self, request, body, bucket_name, query, key_name)

    S3Response._key_response_put = key_response_put
    S3Response._key_response_post = key_response_post
    APPLIED.append("atomic_conditional_put")


def multipart_initiated_time() -> None:
    import re

    from moto.s3.models import S3Backend
    from moto.s3.responses import S3Response

    original_create = S3Backend.create_multipart_upload
    original_list = S3Response.list_multipart_uploads

    def create_multipart_upload(self, *args, **kwargs):
        multipart = original_create(self, *args, **kwargs)
        multipart.safehold_initiated = _now()
        return multipart

    def list_multipart_uploads(self):
        status, headers, body = original_list(self)
        uploads = self.backend.list_multipart_uploads(self.bucket_name)
        text = body.decode() if isinstance(body, bytes) else body

        def fix(match: re.Match) -> str:
            block = match.group(0)
            upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", block)
            upload = uploads.get(upload_id.group(1)) if upload_id else None
            initiated = getattr(upload, "safehold_initiated", None)
            if initiated is None:
                return block
            return re.sub(r"<Initiated>[^<]*</Initiated>", f"<Initiated>{initiated}</Initiated>", block)

        text = re.sub(r"<Upload>.*?</Upload>", fix, text, flags=re.S)
        return status, headers, text.encode() if isinstance(body, bytes) else text

    S3Backend.create_multipart_upload = create_multipart_upload
    S3Response.list_multipart_uploads = list_multipart_uploads
    APPLIED.append("multipart_initiated_time")


def s3_object_lock_actions() -> None:
    from moto.s3.responses import ACTION_MAP

    ACTION_MAP["KEY"]["PUT"].update({"retention": "PutObjectRetention", "legal-hold": "PutObjectLegalHold"})
    ACTION_MAP["KEY"]["GET"].update({"retention": "GetObjectRetention", "legal-hold": "GetObjectLegalHold"})
    ACTION_MAP["BUCKET"]["GET"]["object-lock"] = "GetBucketObjectLockConfiguration"
    ACTION_MAP["BUCKET"]["PUT"]["object-lock"] = "PutBucketObjectLockConfiguration"
    APPLIED.append("s3_object_lock_actions")


def iam_policy_evaluation() -> None:
    import json

    from moto.iam.access_control import IAMPolicy, IAMRequestBase
    from moto.s3.models import FakeBucket

    import iam_evaluation

    def check_action_permitted(self, resource: str) -> None:
        if self._action == "sts:GetCallerIdentity":
            return
        policies = [IAMPolicy(policy)._policy_json for policy in self._access_key.collect_policies()]
        principal = _principal_arn(self._access_key)
        checks = list(_requests(self, resource))
        for action, arn, context, bucket_policy in checks:
            base = {"aws:PrincipalArn": [principal], "aws:SecureTransport": ["true"],
                    "aws:PrincipalAccount": [self.account_id]}
            bucket_policy = json.loads(bucket_policy) if bucket_policy else None
            decision = iam_evaluation.decide(policies, action, arn, dict(context, **base), bucket_policy,
                                             principal, self.account_id)
            if decision != "allow":
                self._raise_access_denied()
            if action in ("s3:GetObject", "s3:GetObjectVersion") and "/" in arn.split(":::", 1)[-1]:
                # Whether a missing key answers 404 or 403 (s3_missing_key_needs_list_bucket): the
                # ListBucket question of this very request, which has no s3:prefix.
                bucket_arn = arn.split("/", 1)[0]
                _request.may_list = iam_evaluation.decide(policies, "s3:ListBucket", bucket_arn, base,
                                                          bucket_policy, principal, self.account_id) == "allow"

    def get_permission(self, action: str, resource: str):
        # moto's own bucket-policy check (before every object GET/HEAD/PUT/DELETE, signed or
        # not) has no request context, so any conditional Deny statement denies everyone. The bucket policy is
        # evaluated above instead, with the caller and the context, when IAM is enforced.
        from moto.iam.access_control import PermissionResult

        return PermissionResult.NEUTRAL

    IAMRequestBase.check_action_permitted = check_action_permitted
    FakeBucket.get_permission = get_permission
    APPLIED.append("iam_policy_evaluation")


def _principal_arn(access_key) -> str:
    # For an assumed role, policies name the role (aws:PrincipalArn is the role's ARN).
    arn = access_key.arn
    match = re.match(r"arn:aws:sts::(\d+):assumed-role/([^/]+)/", arn)
    return f"arn:aws:iam::{match.group(1)}:role/{match.group(2)}" if match else arn


def _requests(request, resource: str):
    """(action, resource ARN, context, bucket policy) for every authorisation AWS makes for this request."""
    action = request._action
    service = action.split(":")[0]
    if service == "s3":
        yield from _s3_requests(request, action, resource)
    elif service == "ec2":
        yield from _ec2_requests(request, action)
    else:
        yield action, resource, {}, None


def _s3_requests(request, action: str, resource: str):
    from moto.s3.models import s3_backends

    bucket_name = resource.split(":::", 1)[1].split("/", 1)[0] if ":::" in resource else ""
    policy = None
    try:
        bucket = s3_backends[request.account_id]["aws"].buckets.get(bucket_name)
        policy = bucket.policy.decode() if bucket is not None and bucket.policy else None
    except KeyError:
        pass
    context: dict[str, list[str]] = {}
    prefix = request._data.get("prefix")
    if prefix is not None:
        context["s3:prefix"] = _as_list(prefix)
    headers = {k.lower(): v for k, v in request._headers.items()}
    if "x-amz-object-lock-mode" in headers:
        context["s3:object-lock-mode"] = [headers["x-amz-object-lock-mode"]]
    if "if-none-match" in headers:  # a conditional write (a policy can demand one)
        context["s3:if-none-match"] = [headers["if-none-match"]]
    yield action, resource, context, policy
    if action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention") and \
            headers.get("x-amz-bypass-governance-retention", "").lower() == "true":
        yield "s3:BypassGovernanceRetention", resource, context, policy
    if action == "s3:PutObject" and ("x-amz-object-lock-mode" in headers
                                     or "x-amz-object-lock-retain-until-date" in headers):
        yield "s3:PutObjectRetention", resource, context, policy  # writing a locked object sets its retention
    if action == "s3:PutObject" and "x-amz-object-lock-legal-hold" in headers:
        yield "s3:PutObjectLegalHold", resource, context, policy


def _ec2_requests(request, action: str):
    from moto.ec2.models import ec2_backends

    region, account, data = request._region, request.account_id, request._data

    def values(key: str) -> list[str]:
        return _as_list(data.get(key))

    def tags_of(resource_id: str, region_name: str = region) -> dict[str, str]:
        return dict(ec2_backends[account][region_name].tags.get(resource_id, {}))

    def arn(resource_id: str, region_name: str = region) -> str:
        kind = {"snap": "snapshot", "vol": "volume", "i": "instance", "ami": "image"}.get(
            resource_id.split("-")[0], "resource")
        owner = "" if kind in ("snapshot", "image") else account
        return f"arn:aws:ec2:{region_name}:{owner}:{kind}/{resource_id}"

    def resource_context(tags: dict[str, str]) -> dict[str, list[str]]:
        context = {}
        for key, value in tags.items():
            context[f"aws:ResourceTag/{key}"] = [value]
            context[f"ec2:ResourceTag/{key}"] = [value]
        return context

    request_tags: dict[str, str] = {}
    for key in data:
        found = re.fullmatch(r"(TagSpecification\.\d+\.)?Tag\.(\d+)\.Key", key)
        if found:
            request_tags[values(key)[0]] = (values(key.replace(".Key", ".Value")) or [""])[0]
    request_context: dict[str, list[str]] = {f"aws:RequestTag/{k}": [v] for k, v in request_tags.items()}
    if request_tags:
        request_context["aws:TagKeys"] = list(request_tags)

    name = action.split(":")[1]
    if request_tags and name in ("CreateSnapshot", "CopySnapshot", "CreateVolume"):
        # Tagging on create is also authorised as ec2:CreateTags with ec2:CreateAction set.
        kind = "volume" if name == "CreateVolume" else "snapshot"
        owner = account if kind == "volume" else ""
        yield "ec2:CreateTags", f"arn:aws:ec2:{region}:{owner}:{kind}/*", {
            **request_context, "ec2:CreateAction": [name]}, None
    if name == "CreateSnapshot":
        volume = values("VolumeId")[0]
        yield action, arn(volume), {**resource_context(tags_of(volume)), **request_context}, None
        yield action, f"arn:aws:ec2:{region}::snapshot/*", request_context, None
    elif name == "CopySnapshot":
        source_region = (values("SourceRegion") or [region])[0]
        source = values("SourceSnapshotId")[0]
        yield action, arn(source, source_region), {**resource_context(tags_of(source, source_region)),
                                                   **request_context}, None
        yield action, f"arn:aws:ec2:{region}::snapshot/*", request_context, None
    elif name in ("DeleteSnapshot", "ModifySnapshotAttribute", "DeleteVolume"):
        resource_id = (values("SnapshotId") or values("VolumeId"))[0]
        yield action, arn(resource_id), resource_context(tags_of(resource_id)), None
    elif name in ("CreateTags", "DeleteTags"):
        for key in sorted(k for k in data if re.fullmatch(r"ResourceId\.\d+", k)):
            resource_id = values(key)[0]
            yield action, arn(resource_id), {**resource_context(tags_of(resource_id)), **request_context}, None
    elif name == "CreateVolume":
        yield action, f"arn:aws:ec2:{region}:{account}:volume/*", request_context, None
        if values("SnapshotId"):
            snapshot = values("SnapshotId")[0]
            yield action, arn(snapshot), {**resource_context(tags_of(snapshot)), **request_context}, None
    elif name in ("AttachVolume", "DetachVolume"):
        for resource_id in values("InstanceId") + values("VolumeId"):
            yield action, arn(resource_id), resource_context(tags_of(resource_id)), None
    elif name in ("TerminateInstances", "StopInstances", "StartInstances"):
        for key in sorted(k for k in data if re.fullmatch(r"InstanceId\.\d+", k)):
            resource_id = values(key)[0]
            yield action, arn(resource_id), resource_context(tags_of(resource_id)), None
    else:  # Describe* and the rest: AWS authorises these against "*"
        yield action, "*", request_context, None


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def retention_only_extends() -> None:
    from datetime import datetime, timezone

    from moto.s3.exceptions import AccessDeniedByLock
    from moto.s3.responses import S3Response

    original = S3Response.put_object_retention

    def when(value: str | None) -> datetime | None:
        return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)

    def put_object_retention(self):
        key = self.backend.get_object(self.bucket_name, self.parse_key_name(),
                                      version_id=self._get_param("versionId"))
        current = when(getattr(key, "lock_until", None)) if key is not None else None
        if current is not None and current > datetime.now(timezone.utc) and key.lock_mode:
            mode, until = self._mode_until_from_body()
            weaker = mode != key.lock_mode or when(until) is None or when(until) < current
            bypass = self.headers.get("x-amz-bypass-governance-retention", "").lower() == "true"
            if weaker and (key.lock_mode == "COMPLIANCE" or not bypass):
                raise AccessDeniedByLock()
        return original(self)

    S3Response.put_object_retention = put_object_retention
    APPLIED.append("retention_only_extends")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _aws_date(value: str) -> str:
    """moto stores retain-until as ``%Y-%m-%dT%H:%M:%SZ``; headers may carry fractions or an offset."""
    from datetime import datetime, timezone

    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def s3_iam_action_names() -> None:
    from moto.iam.access_control import S3IAMRequest

    original = S3IAMRequest.__init__

    def __init__(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        # S3Response._set_action puts the request's IAM action (from moto's ACTION_MAP, with the
        # object-lock actions of s3_object_lock_actions) into the request data before authorising.
        action = self._data.get("Action") if isinstance(self._data, dict) else None
        if isinstance(action, list):
            action = action[0] if action else None
        if action:
            self._action = f"s3:{action}"

    S3IAMRequest.__init__ = __init__
    APPLIED.append("s3_iam_action_names")


def s3_missing_key_needs_list_bucket() -> None:
    from moto.s3.exceptions import MissingKey, S3AccessDeniedError
    from moto.s3.responses import S3Response

    original_key_response = S3Response._key_response
    original_head = S3Response.head_object
    original_get = S3Response.get_object

    def key_response(self, *args, **kwargs):
        # Every object request starts here; its authorisation (iam_policy_evaluation) then says
        # whether this caller may list the bucket. A thread can serve several requests (keep-alive).
        _request.may_list = None
        return original_key_response(self, *args, **kwargs)

    def head_object(self, *args, **kwargs):
        status, headers, body = original_head(self, *args, **kwargs)
        if status == 404 and getattr(_request, "may_list", None) is False:
            return 403, {}, ""
        return status, headers, body

    def get_object(self, *args, **kwargs):
        try:
            return original_get(self, *args, **kwargs)
        except MissingKey:
            if getattr(_request, "may_list", None) is False:
                raise S3AccessDeniedError() from None
            raise

    S3Response._key_response = key_response
    S3Response.head_object = head_object
    S3Response.get_object = get_object
    APPLIED.append("s3_missing_key_needs_list_bucket")


ALL = [multipart_object_lock, atomic_conditional_put, multipart_initiated_time, s3_object_lock_actions,
       iam_policy_evaluation, retention_only_extends, s3_iam_action_names, s3_missing_key_needs_list_bucket]


def apply_all() -> list[str]:
    for extension in ALL:
        if extension.__name__ not in APPLIED:
            extension()
    return list(APPLIED)
