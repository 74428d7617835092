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


def _aws_date(value: str) -> str:
    """moto stores retain-until as ``%Y-%m-%dT%H:%M:%SZ``; headers may carry fractions or an offset."""
    from datetime import datetime, timezone

    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


ALL = [multipart_object_lock, atomic_conditional_put]


def apply_all() -> list[str]:
    for extension in ALL:
        if extension.__name__ not in APPLIED:
            extension()
    return list(APPLIED)
