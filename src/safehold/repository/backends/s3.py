"""S3 backend: ``s3://bucket/prefix`` through boto3, with Object Lock retention.

Layout under the prefix: ``config``, ``keys/<name>``, ``locks/<name>``,
``snapshots/<name>``, ``index/<name>``, ``data/<name>`` (S3 needs no fan-out
directories). Credentials come from boto3's standard chain (environment,
shared files, instance or task role); region and endpoint come from the
repository configuration or boto3's own variables (``AWS_REGION``,
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``).

Why it is built this way:

- **Atomic objects.** A single PUT or a completed multipart upload is atomic in
  S3: readers see the whole object or nothing, so there are no temporary names.
  A writer killed mid-upload leaves an incomplete multipart upload, invisible to
  ``list``; ``remove_temporary_files`` (called by prune) aborts old ones.
- **Multipart** above ``multipart_threshold`` (packs are 16-32 MiB), parts sent
  from the caller's parts without one joined copy of the whole pack.
- **Retries** are botocore's "standard" mode: exponential backoff with jitter on
  throttling (SlowDown, 503) and 5xx/connection errors, ``max_attempts`` tries.
- **Conditional writes.** ``exclusive=True`` sends ``If-None-Match: *`` (PUT and
  CompleteMultipartUpload), so of racing lock writers exactly one wins.
- **Object Lock.** With a lock mode configured, ``retain_until`` is sent with
  the object itself (single PUT and CreateMultipartUpload alike), so no object
  is ever stored unlocked, not even for a moment.
- **Delete** never names a version: on a versioned (Object Lock) bucket it adds
  a delete marker and the bucket's lifecycle rule expires noncurrent versions.
  So safehold's credentials need no ``s3:DeleteObjectVersion`` at all: a stolen
  key can hide objects but not destroy them (see deploy/iam/).
"""

from __future__ import annotations

import errno
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence
from urllib.parse import urlparse

from ... import errors
from .base import Kind, ObjectExists, ObjectInfo, ObjectNotFound, ObjectRetained

if TYPE_CHECKING:
    from .local import Spool

MIB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 32 * MIB
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
DEFAULT_MAX_ATTEMPTS = 10
BODY_READ_ATTEMPTS = 5
STALE_UPLOAD_AGE = timedelta(hours=6)
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden"}
_PRECONDITION = {"PreconditionFailed", "412"}
_CONFLICT = {"ConditionalRequestConflict", "409"}


def spool_directory() -> Path:
    """Where S3 packs are spooled while they fill: ``SAFEHOLD_SPOOL_DIR``, else ``/var/tmp`` (kept on
    disk by convention; ``/tmp`` is often a tmpfs), else the interpreter's temporary folder."""
    import os
    import tempfile

    configured = os.environ.get("SAFEHOLD_SPOOL_DIR")
    if configured:
        return Path(configured)
    if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK | os.X_OK):
        return Path("/var/tmp")
    return Path(tempfile.gettempdir())


class S3RequestFailed(OSError):
    """An S3 call failed after botocore's retries; the repository maps it to BackendError."""


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise errors.UsageError(f"{url!r} is not an S3 url; expected s3://bucket/prefix")
    return parsed.netloc, parsed.path.strip("/")


# One client per process and settings: a botocore session and client cost ~0.1 s of CPU to build (the
# service model is parsed per session), and a worker opened one per job; a client is thread-safe
# and keeps its connection pool. Keyed by the settings and the environment the credential chain
# reads, so a changed variable (another profile, rotated keys in the environment) gets a new one.
_CLIENTS: dict[tuple, object] = {}
_CLIENTS_LOCK = threading.Lock()
_CLIENT_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                       "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                       "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                       "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                       "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CA_BUNDLE")


def make_client(region: str | None = None, endpoint_url: str | None = None,
                max_attempts: int = DEFAULT_MAX_ATTEMPTS, pool_size: int = 32, shared: bool = True):
    """A thread-safe S3 client from the standard credential chain, shared by the process (``shared``
    False: a client of its own, e.g. for a caller that registers event handlers on it)."""
    import os

    if not shared:
        return _new_client(region, endpoint_url, max_attempts, pool_size)
    # The pid too: a forked child (the command server's) must not share its parent's connections.
    key = (os.getpid(), region, endpoint_url, max_attempts, pool_size,
           tuple(os.environ.get(name) for name in _CLIENT_ENVIRONMENT))
    with _CLIENTS_LOCK:  # boto3 sessions are not thread-safe to create
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = _new_client(region, endpoint_url, max_attempts, pool_size)
        return client


def _new_client(region: str | None, endpoint_url: str | None, max_attempts: int, pool_size: int):
    import os

    import botocore.session
    from botocore.config import Config

    endpoint_url = endpoint_url or None
    custom_endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # the first try included
        max_pool_connections=pool_size,
        # S3-compatible endpoints (MinIO, moto, Ceph) rarely resolve virtual-hosted names.
        s3={"addressing_style": "path" if custom_endpoint else "auto"},
    )
    # botocore itself reads only AWS_DEFAULT_REGION; AWS_REGION is what the other SDKs and Lambda set.
    region = region or os.environ.get("AWS_REGION") or None
    # botocore's session, not boto3's: the same credential chain and client, without importing boto3
    # and s3transfer (~0.14 s of a command's start-up, measured with -X importtime; issue 19 sixth
    # round), whose upload/download helpers and resources the backend does not use.
    session = botocore.session.get_session()
    return session.create_client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


class S3Backend:
    """Contract: see :class:`safehold.repository.backends.base.Backend` and ``RetentionBackend``."""

    def __init__(self, url: str, *, region: str | None = None, endpoint_url: str | None = None,
                 object_lock_mode: str | None = None, object_lock_days: int | None = None,
                 multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD, part_size: int = DEFAULT_PART_SIZE,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, client=None) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        if object_lock_mode is not None and object_lock_mode not in LOCK_MODES:
            raise errors.UsageError(f"object lock mode {object_lock_mode!r}; expected one of {', '.join(LOCK_MODES)}")
        if part_size < MIN_PART_SIZE:
            raise errors.UsageError(f"part_size {part_size} is below S3's minimum of {MIN_PART_SIZE} bytes")
        self.lock_mode = object_lock_mode
        self.supports_retention = object_lock_mode is not None
        # The repository asks for now + this on every data, index and snapshot object.
        self.retention_period = timedelta(days=object_lock_days) if object_lock_mode and object_lock_days else None
        self.multipart_threshold = max(multipart_threshold, MIN_PART_SIZE)
        self.part_size = part_size
        self.client = client if client is not None else make_client(region, endpoint_url, max_attempts)

    # -- keys -----------------------------------------------------------------
    def key(self, kind: Kind, name: str) -> str:
        if kind is Kind.CONFIG:
            relative = "config"
        else:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"invalid object name {name!r}")
            relative = f"{kind.value}/{name}"
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _kind_prefix(self, kind: Kind) -> str:
        return f"{self.prefix}/{kind.value}/" if self.prefix else f"{kind.value}/"

    # -- contract -------------------------------------------------------------
    def exists(self) -> bool:
        try:
            self.stat(Kind.CONFIG, "config")
            return True
        except ObjectNotFound:
            return False

    def create(self) -> None:
        if self.exists():
            raise ObjectExists(f"a repository exists at {self.url}")
        try:
            # A listing under our prefix, not HeadBucket: least-privilege roles may list only the prefix.
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1)
        except Exception as exc:  # botocore ClientError or connection failure
            raise _storage_error(exc, f"bucket {self.bucket}") from exc
        if self.lock_mode is not None and not self.bucket_object_lock_enabled():
            raise errors.BackendError(
                detail=f"object_lock is configured but bucket {self.bucket} was created without Object Lock; "
                f"turn it on (aws s3api put-bucket-versioning --bucket {self.bucket} --versioning-configuration "
                f"Status=Enabled, then aws s3api put-object-lock-configuration --bucket {self.bucket} "
                "--object-lock-configuration ObjectLockEnabled=Enabled) or use a bucket created with it"
            )

    def put(self, kind: Kind, name: str, data: bytes | Sequence[bytes], *, exclusive: bool = False,
            retain_until: datetime | None = None) -> None:
        key = self.key(kind, name)
        parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
        size = sum(memoryview(part).nbytes for part in parts)
        extra = self._retention_headers(retain_until)
        for _attempt in range(5):
            try:
                if size >= self.multipart_threshold:
                    self._put_multipart(key, parts, exclusive, extra)
                else:
                    body = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
                    condition = {"IfNoneMatch": "*"} if exclusive else {}
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra, **condition)
                return
            except Exception as exc:
                code = _error_code(exc)
                if exclusive and code in _PRECONDITION:
                    raise ObjectExists(f"{kind.value}/{name}") from None
                if exclusive and code in _CONFLICT:
                    continue  # a concurrent conditional write was in flight: ask again who won
                raise _storage_error(exc, f"writing {kind.value}/{name[:16]}") from exc
        raise S3RequestFailed(errno.EAGAIN, f"writing {kind.value}/{name[:16]}: conditional write kept conflicting")

    def _retention_headers(self, retain_until: datetime | None) -> dict:
        """The Object Lock fields of a PUT: the object is locked in the request that writes it."""
        if retain_until is None or self.lock_mode is None:
            return {}
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": _utc(retain_until)}

    # -- packs written as they fill (SpoolingBackend) ------------------------------
    def spool(self, kind: Kind) -> "Spool":
        """A temporary file the repository writes a pack into as it fills, instead of holding it
        in memory until the put (issue 19, sixth round: two 16 MiB packs per pack writer, the one
        filling and the one being put). In ``SAFEHOLD_SPOOL_DIR``, else ``/var/tmp`` (not ``/tmp``,
        often a tmpfs: memory again); mode 0600, created exclusively under a random name; it holds
        only encrypted blobs. Removed once put or dropped; a killed process leaves a
        ``.tmp-spool-*`` file there (the system's temporary-file cleaning removes it)."""
        from .local import Spool

        return Spool(spool_directory())

    def put_spool(self, kind: Kind, name: str, spool: "Spool", *, retain_until: datetime | None = None) -> None:
        """Store what was written into ``spool`` as ``kind/name`` (a single PUT streamed from the
        file, or a multipart upload of ``part_size`` pieces read from it), then remove the file."""
        key = self.key(kind, name)
        extra = self._retention_headers(retain_until)
        try:
            with spool.reader() as body:
                try:
                    if spool.size >= self.multipart_threshold:
                        self._put_multipart(key, iter(lambda: body.read(self.part_size), b""), False, extra)
                    else:
                        # botocore reads the file for the checksum and streams it; a retry seeks back.
                        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
                except Exception as exc:
                    raise _storage_error(exc, f"writing {kind.value}/{name[:16]}") from exc
        finally:
            spool.discard()

    def _put_multipart(self, key: str, parts: list, exclusive: bool, extra: dict) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)
        upload_id = upload["UploadId"]
        try:
            completed = []
            for number, chunk in enumerate(_rechunk(parts, self.part_size), start=1):
                answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                 PartNumber=number, Body=chunk)
                completed.append({"PartNumber": number, "ETag": answer["ETag"]})
            options = {"IfNoneMatch": "*"} if exclusive else {}
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": completed}, **options)
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:
                pass  # the upload expires through the bucket's lifecycle rule or the next prune
            raise

    def get(self, kind: Kind, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self.key(kind, name)
        if length == 0:
            self.stat(kind, name)  # still report a missing object
            return b""
        options = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            options["Range"] = f"bytes={offset}-{end}"
        # botocore retries the request, but not the reading of its body: a connection cut or a
        # body shorter than its Content-Length (botocore checks it) after the headers arrived
        # is retried here, as a transient error, never reported as damage.
        for attempt in range(1, BODY_READ_ATTEMPTS + 1):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key, **options)
            except Exception as exc:
                if _error_code(exc) == "InvalidRange":  # offset at or past the end: nothing to read
                    return b""
                raise self._read_error(exc, kind, name, f"reading {kind.value}/{name[:16]}") from exc
            try:
                return answer["Body"].read()
            except Exception as exc:
                if attempt == BODY_READ_ATTEMPTS or not _transient_body_error(exc):
                    raise _storage_error(exc, f"reading {kind.value}/{name[:16]}") from exc
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
        raise AssertionError("unreachable")

    def _head(self, kind: Kind, name: str) -> dict:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(kind, name))
        except Exception as exc:
            raise self._read_error(exc, kind, name, f"stat {kind.value}/{name[:16]}") from exc

    def _read_error(self, exc: BaseException, kind: Kind, name: str, what: str) -> Exception:
        """The error for a failed GET or HEAD: ObjectNotFound when the object does not exist.

        S3 answers a GET or HEAD of a missing key with 404 only to a caller allowed
        ``s3:ListBucket`` for that request, and with 403 otherwise (the HeadObject and GetObject
        API references say so). The shipped roles (deploy/iam/) may list only the repository's
        prefix: their ListBucket grant carries an ``s3:prefix`` condition, which a GET or HEAD
        (no prefix in the request) never satisfies, so every missing object answers 403. Granting
        ListBucket on the whole bucket would let a stolen key enumerate every other prefix in it;
        instead, on a 403 we ask the one question the role may ask, a listing with the key itself as
        the prefix: absent there means missing (ObjectNotFound, as with a 404); present, or the
        listing refused too, means the 403 was a real denial and is reported as one.
        """
        code = _error_code(exc)
        if code in _NOT_FOUND:
            return ObjectNotFound(kind, name)
        if code in _DENIED:
            key = self.key(kind, name)
            try:
                answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
            except Exception:
                return _storage_error(exc, what)  # the listing is denied too: report the first refusal
            # The key is the shortest name with itself as prefix, so it sorts first if it exists.
            if not any(entry.get("Key") == key for entry in answer.get("Contents", [])):
                return ObjectNotFound(kind, name)
        return _storage_error(exc, what)

    def stat(self, kind: Kind, name: str) -> ObjectInfo:
        return ObjectInfo(name, int(self._head(kind, name)["ContentLength"]))

    def list(self, kind: Kind) -> Iterator[ObjectInfo]:
        if kind is Kind.CONFIG:
            try:
                yield self.stat(Kind.CONFIG, "config")
            except ObjectNotFound:
                pass
            return
        prefix = self._kind_prefix(kind)
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for entry in page.get("Contents", []):
                    name = entry["Key"][len(prefix):]
                    if name and "/" not in name:
                        yield ObjectInfo(name, int(entry["Size"]))
        except Exception as exc:
            raise _storage_error(exc, f"listing {kind.value}") from exc

    def delete(self, kind: Kind, name: str) -> None:
        key = self.key(kind, name)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in _NOT_FOUND:
                return
            if _error_code(exc) == "AccessDenied" and self.supports_retention:
                until = self._retention_or_none(kind, name)
                if until is not None and until > datetime.now(timezone.utc):
                    raise ObjectRetained(kind, name, until) from None
            raise _storage_error(exc, f"deleting {kind.value}/{name[:16]}") from exc

    # -- retention (RetentionBackend) -------------------------------------------
    def retention(self, kind: Kind, name: str) -> datetime | None:
        """Retain-until of the current version, None when it carries no retention.

        Read through HEAD, which returns the lock fields to callers allowed
        s3:GetObjectRetention (moto also lacks GetObjectRetention itself).
        """
        until = self._head(kind, name).get("ObjectLockRetainUntilDate")
        return _utc(until) if until is not None else None

    def _retention_or_none(self, kind: Kind, name: str) -> datetime | None:
        try:
            return self.retention(kind, name)
        except (ObjectNotFound, OSError):
            return None

    def extend_retention(self, kind: Kind, name: str, until: datetime) -> None:
        if self.lock_mode is None:
            raise errors.UsageError("this repository has no object_lock configured; there is no retention to extend")
        try:
            self.client.put_object_retention(
                Bucket=self.bucket, Key=self.key(kind, name),
                Retention={"Mode": self.lock_mode, "RetainUntilDate": _utc(until)},
            )
        except Exception as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise ObjectNotFound(kind, name) from None
            raise _storage_error(exc, f"extending retention of {kind.value}/{name[:16]}") from exc

    # -- bucket facts (for the immutability audit) --------------------------------
    def bucket_object_lock_enabled(self) -> bool:
        return self.bucket_object_lock().get("ObjectLockEnabled") == "Enabled"

    def bucket_object_lock(self) -> dict:
        """The bucket's Object Lock configuration ({} when it has none)."""
        try:
            return self.client.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
        except Exception as exc:
            if _error_code(exc) in {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"}:
                return {}
            raise _storage_error(exc, f"reading the Object Lock configuration of {self.bucket}") from exc

    def bucket_versioning(self) -> str:
        try:
            return self.client.get_bucket_versioning(Bucket=self.bucket).get("Status", "Disabled")
        except Exception as exc:
            raise _storage_error(exc, f"reading the versioning state of {self.bucket}") from exc

    def immutability_facts(self) -> dict:
        """What the bucket enforces, for ``safehold repo audit-immutability``."""
        lock = self.bucket_object_lock()
        default = lock.get("Rule", {}).get("DefaultRetention")
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except Exception as exc:
            if _error_code(exc) != "NoSuchLifecycleConfiguration":
                raise _storage_error(exc, f"reading the lifecycle rules of {self.bucket}") from exc
            rules = []
        noncurrent = [r["NoncurrentVersionExpiration"].get("NoncurrentDays") for r in rules
                      if r.get("Status") == "Enabled" and "NoncurrentVersionExpiration" in r
                      and _rule_covers(r, self.prefix)]
        return {
            "store": f"s3 bucket {self.bucket}",
            "object_lock_enabled": lock.get("ObjectLockEnabled") == "Enabled",
            "versioning": self.bucket_versioning(),
            "default_retention": default,
            "noncurrent_version_expiration_days": min((d for d in noncurrent if d), default=None),
        }

    def remove_temporary_files(self) -> int:
        """Abort multipart uploads under the prefix left by killed writers; returns how many.

        Called by prune under the exclusive lock; only uploads older than
        ``STALE_UPLOAD_AGE`` go, in case a writer ignores the lock.
        """
        cutoff = datetime.now(timezone.utc) - STALE_UPLOAD_AGE
        aborted = 0
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""):
                for upload in page.get("Uploads", []):
                    if _utc(upload["Initiated"]) < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        aborted += 1
        except Exception as exc:
            raise _storage_error(exc, "aborting stale multipart uploads") from exc
        return aborted


def _rule_covers(rule: dict, prefix: str) -> bool:
    """Whether a lifecycle rule applies to the repository's keys (no filter, or a prefix filter above ours)."""
    rule_prefix = rule.get("Filter", {}).get("Prefix", rule.get("Prefix", "")) or ""
    return (prefix + "/").startswith(rule_prefix) or not rule_prefix


def _rechunk(parts: Sequence, size: int) -> Iterator[bytes]:
    """Cut a sequence of byte strings into ``size``-byte pieces (the last may be shorter)."""
    buffer = bytearray()
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            take = min(size - len(buffer), len(view))
            buffer += view[:take]
            view = view[take:]
            if len(buffer) == size:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)


def _transient_body_error(exc: BaseException) -> bool:
    """A response body cut short, reset or timed out while being read (not an answer from S3)."""
    from botocore import exceptions

    transient = (exceptions.IncompleteReadError, exceptions.ResponseStreamingError, exceptions.ReadTimeoutError,
                 exceptions.ConnectionError)
    if isinstance(exc, transient):
        return True
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
    except ImportError:  # pragma: no cover - urllib3 comes with botocore
        return False
    return isinstance(exc, (Urllib3Error, ConnectionError))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = error.get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(status) if status else None
    return None


def _storage_error(exc: BaseException, what: str) -> OSError:
    """An OSError naming the S3 error, so the repository reports it as BackendError with the cause."""
    if isinstance(exc, OSError):
        return exc
    code = _error_code(exc)
    if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}:
        return S3RequestFailed(errno.EACCES, f"{what}: access denied by S3 ({code}); check the credentials "
                                             "and the IAM policy (deploy/iam/)")
    if code in {"NoSuchBucket"} or (code == "404" and what.startswith("bucket ")):
        return S3RequestFailed(errno.ENOENT, f"{what}: the bucket does not exist")
    return S3RequestFailed(errno.EIO, f"{what}: {code or type(exc).__name__}: {exc}")
