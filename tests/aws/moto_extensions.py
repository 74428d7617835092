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
"""

from __future__ import annotations

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


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _aws_date(value: str) -> str:
    """moto stores retain-until as ``%Y-%m-%dT%H:%M:%SZ``; headers may carry fractions or an offset."""
    from datetime import datetime, timezone

    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


ALL = [multipart_object_lock, atomic_conditional_put, multipart_initiated_time]


def apply_all() -> list[str]:
    for extension in ALL:
        if extension.__name__ not in APPLIED:
            extension()
    return list(APPLIED)
