"""Pydantic models of ``targets.yml``: repository, tiers, targets and their sources.

Every model forbids unknown keys and documents every field, because the JSON
schema and the configuration reference are generated from these classes.

Validation that depends on where the file lives (relative paths) or on the
environment (``SAFEHOLD_STATE_DIR``) reads the pydantic validation context:
``{"base_dir": Path, "environ": Mapping[str, str], "path": Path}``. Without a
context, relative paths are resolved against the current directory and the
process environment is used. ``safehold.config.loader`` supplies the context
and turns validation errors into one ``ConfigError`` with file:line for each.

Cross-field problems (unknown key 'password', duplicate target names, tier
references) are raised as ``ValidationError`` with the precise location of
the offending key, so that the loader can point at its line like any other
error, and they are reported together with every other problem in the file.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from safehold.config.durations import DURATION_FORMS, format_duration, parse_duration
from safehold.errors import PasswordMissing, TargetNotFound

__all__ = [
    "DEFAULT_STATE_DIR",
    "DEFAULT_TIERS",
    "PLANNED_SOURCE_TYPES",
    "SOURCE_TYPES",
    "STATE_DIR_ENV",
    "CatalogConfig",
    "ChecksumCheck",
    "CommandCheck",
    "Config",
    "FileExistsCheck",
    "EbsCopy",
    "EbsSource",
    "FilesSource",
    "HealthCheck",
    "ImageSource",
    "LibvirtSource",
    "ObjectLock",
    "VmwareSource",
    "RepositoryConfig",
    "RestoreTest",
    "Retention",
    "SchedulerConfig",
    "Source",
    "Target",
    "TierConfig",
]

DEFAULT_STATE_DIR = "/var/lib/safehold"
STATE_DIR_ENV = "SAFEHOLD_STATE_DIR"
DEFAULT_PASSWORD_ENV = "SAFEHOLD_PASSWORD"

# Tier number -> raw values; user tiers are merged over these key by key.
DEFAULT_TIERS: dict[int, dict[str, str]] = {
    1: {"rpo": "15m", "rto": "1h"},
    2: {"rpo": "12h", "rto": "4h"},
    3: {"rpo": "24h", "rto": "24h"},
}



SOURCE_TYPES = ("files", "image", "ebs", "hyperv", "libvirt", "vmware")
# Named in DESIGN.md, not implemented yet: a config using one gets a clear
# "not supported by this release" instead of a generic invalid-value error.
PLANNED_SOURCE_TYPES = ("ssh", "postgres")
HEALTH_CHECK_TYPES = ("command", "file_exists", "checksum")

TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_TARGET_NAME = re.compile(TARGET_NAME_PATTERN)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_DB_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|B)?", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kib": 1024, "mib": 1024 * 1024}


# --- error helpers ----------------------------------------------------------


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is complete as written (no templating)."""
    return PydanticCustomError("config", message)


def _problem(loc: tuple[str | int, ...], message: str, value: object) -> InitErrorDetails:
    return InitErrorDetails(type=_invalid(message), loc=loc, input=value)


def _reraise(title: str, problems: list[InitErrorDetails], caught: ValidationError | None = None) -> NoReturn:
    """Raise one ValidationError holding ``caught``'s errors followed by ``problems``.

    pydantic prefixes the locations of a ValidationError raised inside a
    validator with the location being validated, so ``loc`` stays relative.
    """
    details: list[InitErrorDetails] = []
    for error in caught.errors() if caught is not None else []:
        message = error["msg"]
        context = error.get("ctx")
        # Keep the context only when the finished message cannot be re-templated by it.
        if context and any("{" + key + "}" in message for key in context):
            context = None
        details.append(
            InitErrorDetails(
                type=PydanticCustomError(error["type"], message, context),
                loc=error["loc"],
                input=error["input"],
            )
        )
    raise ValidationError.from_exception_data(title, [*details, *problems])


def _suggestion(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


# --- context helpers --------------------------------------------------------


def _context(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, Mapping) else {}


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    environ = _context(info).get("environ")
    return environ if environ is not None else os.environ


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Absolute form of ``value``; relative paths are relative to the config file's directory.

    Symlinks are deliberately not resolved: ``/dev/vg0/db`` must stay the LVM
    name, not become ``/dev/dm-3`` which may change across boots.
    """
    base = _context(info).get("base_dir") or Path.cwd()
    expanded = os.path.expanduser(value)
    return os.path.normpath(os.path.join(os.fspath(base), expanded))


# --- reusable field types ---------------------------------------------------


def _to_positive_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        try:
            duration = parse_duration(value)
        except ValueError as error:
            raise _invalid(str(error)) from None
    else:
        raise _invalid(f"{value!r} is not a duration; expected {DURATION_FORMS}")
    if duration <= timedelta(0):
        raise _invalid(f"{value!r} is not valid; the duration must be longer than zero, e.g. 15m")
    return duration


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*(\d+\s*w)?\s*(\d+\s*d)?\s*(\d+\s*h)?\s*(\d+\s*m)?\s*(\d+\s*s)?\s*$",
    "description": DURATION_FORMS,
    "examples": ["15m", "12h", "7d", "1h30m"],
}

Duration = Annotated[
    timedelta,
    BeforeValidator(_to_positive_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""A positive duration written like ``15m``, ``12h``, ``7d``, ``1w`` or ``1h30m``."""


def _to_chunk_size(value: object) -> int:
    valid = "a power of two between 64KiB and 16MiB, in bytes or with KiB/MiB, e.g. 512KiB, 1MiB, 4MiB"
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        unit = match.group(2).lower() if match.group(2) else None
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    if size is None:
        raise _invalid(f"{value!r} is not a size; expected {valid}")
    if not (MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE) or size & (size - 1):
        raise _invalid(f"{value!r} is not a valid chunk size; expected {valid}")
    return size


ChunkSize = Annotated[
    int,
    BeforeValidator(_to_chunk_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": MIN_CHUNK_SIZE, "maximum": MAX_CHUNK_SIZE},
                {"type": "string", "pattern": r"^\s*\d+\s*(KiB|MiB|B)?\s*$"},
            ],
            "examples": ["512KiB", "1MiB", "4MiB"],
        }
    ),
]
"""Bytes; written as an integer or ``512KiB``/``1MiB``; a power of two from 64 KiB to 16 MiB."""


def _check_kind(value: object, *, what: str, supported: tuple[str, ...], planned: tuple[str, ...] = ()) -> object:
    """Check a tagged mapping's ``type`` with a message better than pydantic's union error."""
    if not isinstance(value, dict):
        return value  # the model's own validation reports "expected a mapping"
    expected = ", ".join(supported)
    if "type" not in value:
        raise ValidationError.from_exception_data(
            what,
            [_problem(("type",), f"missing required key 'type'; expected one of: {expected}", value)],
        )
    kind = value["type"]
    if isinstance(kind, str) and kind in supported:
        return value
    if isinstance(kind, str) and kind in planned:
        message = (
            f"{what} type {kind!r} is not supported by this release of safehold; this release supports: {expected}"
        )
    else:
        message = f"{kind!r} is not valid; expected one of: {expected}"
        close = _suggestion(kind, (*supported, *planned)) if isinstance(kind, str) else None
        if close in supported:
            message += f"; did you mean {close!r}?"
        elif close is not None:
            message += f" ({close!r} is planned but not supported by this release)"
    raise ValidationError.from_exception_data(what, [_problem(("type",), message, kind)])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- repository -------------------------------------------------------------


class ObjectLock(_Model):
    """S3 Object Lock retention applied to every data, index and snapshot object."""

    mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(
        description=(
            "S3 Object Lock mode. COMPLIANCE: nobody, not even the root account, can delete an object "
            "before its retention ends. GOVERNANCE: users with s3:BypassGovernanceRetention can."
        ),
        examples=["COMPLIANCE"],
    )
    days: int = Field(
        gt=0,
        description=(
            "Days each object stays locked after it is written; a maintenance job extends it on packs "
            "that kept snapshots still use. Make it longer than the longest time you may need to notice an attack."
        ),
        examples=[30],
    )


class RepositoryConfig(_Model):
    """Where backups are stored and how the repository password is obtained."""

    url: str = Field(
        description=(
            "Repository location: file:///absolute/path, a plain path (relative paths are relative to this "
            "file's directory), or s3://bucket/prefix."
        ),
        examples=["file:///var/lib/safehold/repo", "/srv/backup/repo", "s3://acme-backups/safehold"],
    )
    password_env: str = Field(
        DEFAULT_PASSWORD_ENV,
        description=(
            "Name of the environment variable holding the repository password. Used when password_file is not set."
        ),
        examples=["SAFEHOLD_PASSWORD"],
    )
    password_file: str | None = Field(
        None,
        description=(
            "File holding the repository password (one trailing newline is ignored); takes precedence over "
            "password_env. Relative paths are relative to this file's directory. Keep it mode 0600."
        ),
        examples=["/etc/safehold/password"],
    )
    object_lock: ObjectLock | None = Field(
        None,
        description=(
            "S3 Object Lock retention for every object written (s3:// repositories only; the bucket must have "
            "Object Lock enabled)."
        ),
        examples=[{"mode": "COMPLIANCE", "days": 30}],
    )
    region: str | None = Field(
        None,
        description=(
            "AWS region of the bucket (s3:// repositories only). Default: boto3's own lookup (AWS_REGION, "
            "AWS_DEFAULT_REGION, ~/.aws/config). Credentials always come from the standard AWS chain."
        ),
        examples=["eu-central-1"],
    )
    endpoint_url: str | None = Field(
        None,
        description=(
            "S3 endpoint for S3-compatible storage or a test server (s3:// repositories only); implies path-style "
            "addressing. Default: AWS, or the AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL environment variable."
        ),
        examples=["https://minio.internal:9000"],
    )

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_password(cls, data: Any, handler: ModelWrapValidatorHandler[RepositoryConfig]) -> RepositoryConfig:
        # A secret written into targets.yml ends up in version control and
        # backups of /etc; refuse it outright. The value is never echoed.
        if not isinstance(data, dict) or "password" not in data:
            return handler(data)
        rest = {key: value for key, value in data.items() if key != "password"}
        problem = _problem(
            ("password",),
            "a password must not be written in the configuration; put it in an environment variable "
            f"named by password_env (default {DEFAULT_PASSWORD_ENV}) or in a file named by password_file",
            "<hidden>",
        )
        try:
            handler(rest)
        except ValidationError as error:
            _reraise(cls.__name__, [problem], error)
        _reraise(cls.__name__, [problem])

    @field_validator("url")
    @classmethod
    def _normalize_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not value:
            raise _invalid("the repository url is empty; expected file:///path, a plain path or s3://bucket/prefix")
        if value.startswith("s3://"):
            bucket, _, prefix = value[len("s3://") :].partition("/")
            if not _S3_BUCKET.fullmatch(bucket):
                raise _invalid(
                    f"{value!r} is not valid: {bucket!r} is not an S3 bucket name "
                    "(3-63 lower-case letters, digits, '.' or '-'); expected s3://bucket/prefix"
                )
            return f"s3://{bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"s3://{bucket}"
        if value.startswith("file://"):
            path = value[len("file://") :]
            if not path.startswith("/"):
                raise _invalid(
                    f"{value!r} is not valid: a file URL must hold an absolute path (file:///srv/repo); "
                    "write a relative path without 'file://'"
                )
            return "file://" + os.path.normpath(path)
        if "://" in value:
            scheme = value.split("://", 1)[0]
            raise _invalid(
                f"{value!r} is not valid: this release does not support {scheme!r} repositories; "
                "expected file:///path, a plain path or s3://bucket/prefix"
            )
        return "file://" + _resolve_path(value, info)

    @field_validator("password_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise _invalid(
                f"{value!r} is not an environment variable name; "
                "expected letters, digits and '_', e.g. SAFEHOLD_PASSWORD"
            )
        return value

    @field_validator("password_file")
    @classmethod
    def _resolve_password_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @model_validator(mode="after")
    def _object_lock_needs_s3(self) -> RepositoryConfig:
        for option in ("region", "endpoint_url"):
            if getattr(self, option) is not None and self.scheme != "s3":
                raise ValidationError.from_exception_data(
                    type(self).__name__,
                    [_problem((option,), f"{option} only applies to s3:// repositories; remove it or use an "
                              "s3://bucket/prefix url", getattr(self, option))],
                )
        if self.endpoint_url is not None and not re.match(r"^https?://[^/\s]+", self.endpoint_url):
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [_problem(("endpoint_url",), f"{self.endpoint_url!r} is not an endpoint; expected "
                          "http(s)://host[:port]", self.endpoint_url)],
            )
        if self.object_lock is not None and self.scheme != "s3":
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    _problem(
                        ("object_lock",),
                        "object_lock only applies to s3:// repositories; a local repository cannot "
                        "enforce retention, so remove it or use an S3 bucket with Object Lock",
                        self.object_lock.model_dump(),
                    )
                ],
            )
        return self

    @property
    def scheme(self) -> str:
        """``"file"`` or ``"s3"``."""
        return self.url.split("://", 1)[0]

    def backend_options(self) -> dict[str, object]:
        """Constructor options for the storage backend (empty for local repositories)."""
        if self.scheme != "s3":
            return {}
        options: dict[str, object] = {"region": self.region, "endpoint_url": self.endpoint_url}
        if self.object_lock is not None:
            options["object_lock_mode"] = self.object_lock.mode
            options["object_lock_days"] = self.object_lock.days
        return options

    @property
    def local_path(self) -> Path | None:
        """The repository directory for file:// repositories, else None."""
        return Path(self.url[len("file://") :]) if self.scheme == "file" else None

    def password(self, environ: Mapping[str, str] | None = None) -> bytes:
        """The repository password, read now (never stored on the model, so never in a repr).

        password_file wins over password_env. Raises PasswordMissing when the
        file cannot be read, or the variable is unset, or either is empty.
        """
        if self.password_file is not None:
            try:
                secret = Path(self.password_file).read_bytes()
            except OSError as error:
                raise PasswordMissing(
                    detail=f"cannot read password_file {self.password_file}: {error.strerror or error}",
                    variable=self.password_env,
                ) from None
            if secret.endswith(b"\r\n"):
                secret = secret[:-2]
            elif secret.endswith(b"\n"):
                secret = secret[:-1]
            if not secret:
                raise PasswordMissing(detail=f"password_file {self.password_file} is empty", variable=self.password_env)
            return secret
        environ = os.environ if environ is None else environ
        value = environ.get(self.password_env)
        if not value:
            state = "is not set" if value is None else "is empty"
            raise PasswordMissing(
                detail=f"environment variable {self.password_env} {state}", variable=self.password_env
            )
        return os.fsencode(value)


class CatalogConfig(_Model):
    """The job history and snapshot cache database."""

    url: str = Field(
        description=(
            "SQLite or PostgreSQL database URL (SQLAlchemy form). Default: sqlite:///<state_dir>/catalog.db. "
            "A relative SQLite path is "
            "relative to this file's directory. Put a PostgreSQL password in PGPASSWORD or ~/.pgpass, not here."
        ),
        examples=["sqlite:////var/lib/safehold/catalog.db", "postgresql+psycopg://safehold@db.internal/safehold"],
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not _DB_URL.match(value):
            raise _invalid(
                f"{value!r} is not a database URL; expected e.g. sqlite:////var/lib/safehold/catalog.db "
                "or postgresql+psycopg://safehold@db.internal/safehold"
            )
        try:
            has_password = urlsplit(value).password is not None
        except ValueError:
            has_password = False
        if has_password:
            # Never echo the URL: it holds the secret.
            raise _invalid(
                "the catalog url contains a password; remove it and set PGPASSWORD or ~/.pgpass "
                "(secrets never go in the configuration)"
            )
        scheme, rest = value.split("://", 1)
        if scheme.split("+")[0] not in ("sqlite", "postgresql"):
            # The migration lock and the scheduler's lease exist for these two only.
            raise _invalid(
                f"{scheme!r} is not a catalog database safehold runs on; use SQLite (the default, "
                "sqlite:////var/lib/safehold/catalog.db) or PostgreSQL (postgresql+psycopg://safehold@db/safehold)"
            )
        if scheme.split("+")[0] == "sqlite" and rest.startswith("/"):
            database, question, query = rest[1:].partition("?")
            if database and database != ":memory:" and not database.startswith(("/", "file:")):
                return f"{scheme}:///{_resolve_path(database, info)}{question}{query}"
        return value


# --- tiers ------------------------------------------------------------------


class TierConfig(_Model):
    """Recovery objectives shared by every target of a tier."""

    rpo: Duration = Field(
        description=(
            "Recovery point objective: the most data, in time, you accept to lose. "
            "A target is due when its last backup is older."
        ),
        examples=["15m", "12h"],
    )
    rto: Duration = Field(
        description=(
            "Recovery time objective: how long a restore may take. "
            "Restore tests measure it and alert when it is exceeded."
        ),
        examples=["1h", "4h"],
    )


def _default_tiers() -> dict[int, TierConfig]:
    return {number: TierConfig.model_validate(values) for number, values in DEFAULT_TIERS.items()}


# --- retention --------------------------------------------------------------


class Retention(_Model):
    """Which snapshots 'safehold forget' keeps (the rules of restic's forget; a snapshot kept by any rule stays)."""

    keep_last: int | None = Field(None, ge=0, description="Keep the N newest snapshots.", examples=[3])
    keep_hourly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N hours that have one.", examples=[24]
    )
    keep_daily: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N days that have one.", examples=[7]
    )
    keep_weekly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N ISO weeks that have one.", examples=[4]
    )
    keep_monthly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N months that have one.", examples=[12]
    )
    keep_yearly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N years that have one.", examples=[3]
    )
    keep_within: Duration | None = Field(
        None, description="Keep every snapshot taken within this duration of the newest snapshot.", examples=["2d"]
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Retention:
        rules = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
        if not any(getattr(self, rule) for rule in rules) and self.keep_within is None:
            # An empty policy would forget every snapshot; refuse it here rather than at forget time.
            raise _invalid(
                "retention keeps nothing: set at least one of keep_last, keep_hourly, keep_daily, "
                "keep_weekly, keep_monthly, keep_yearly (above 0) or keep_within, or remove 'retention'"
            )
        return self


# --- sources ----------------------------------------------------------------


class FilesSource(_Model):
    """Files and directories on this host."""

    type: Literal["files"] = Field(description="Source kind.", examples=["files"])
    paths: list[str] = Field(
        min_length=1,
        description="Files or directories to back up. Relative paths are relative to this file's directory.",
        examples=[["/etc", "/srv/docs"]],
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Glob patterns of paths to leave out ('*' stays within a path component, '**' crosses them).",
        examples=[["*.tmp", "**/cache/**"]],
    )
    include: list[str] = Field(
        default_factory=list,
        description="Glob patterns that bring back paths an exclude pattern removed.",
        examples=[["**/cache/keep.me"]],
    )
    one_file_system: bool = Field(
        False,
        description="Stay on the file system of each path: do not descend into other mounts.",
        examples=[True],
    )

    @field_validator("paths")
    @classmethod
    def _resolve_paths(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for path in value:
            if not path.strip():
                raise _invalid("an empty path; every entry of paths must name a file or directory")
        return [_resolve_path(path, info) for path in value]


class ImageSource(_Model):
    """A raw disk image file or a block device, stored as fixed-size chunks."""

    type: Literal["image"] = Field(description="Source kind.", examples=["image"])
    path: str = Field(
        description="Image file or block device. Relative paths are relative to this file's directory.",
        examples=["/dev/vg0/db", "/var/lib/libvirt/images/vm.raw"],
    )
    chunk_size: ChunkSize = Field(
        512 * 1024,
        description=(
            "Fixed chunk size: a power of two from 64KiB to 16MiB. Smaller chunks store less when scattered "
            "blocks change; larger ones mean a smaller index. Default 512KiB (EBS's block size)."
        ),
    )

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise _invalid("the path is empty; name an image file or a block device")
        return _resolve_path(value, info)


class HyperVSource(_Model):
    """A Hyper-V virtual machine, read over PowerShell remoting (WinRM) from its host: recovery
    checkpoints, RCT changed ranges for incrementals. Needs the ``hyperv`` extra (pypsrp)."""

    type: Literal["hyperv"] = Field(description="Source kind.", examples=["hyperv"])
    host: str = Field(description="Hyper-V host (or cluster node) to connect to with WinRM.",
                      examples=["hv01.example.internal"])
    vm: str = Field(description="Name of the virtual machine, as Get-VM shows it.", examples=["web-01"])
    username: str | None = Field(
        None, description="Account on the host (DOMAIN\\user or user@REALM); none for Kerberos with a ticket cache.",
        examples=["EXAMPLE\\svc-backup"],
    )
    password_env: str = Field(
        "SAFEHOLD_HYPERV_PASSWORD", description="Environment variable holding the account's password.",
        examples=["SAFEHOLD_HYPERV_PASSWORD"],
    )
    auth: Literal["negotiate", "kerberos", "ntlm", "credssp", "certificate", "basic"] = Field(
        "negotiate",
        description=(
            "WinRM authentication. negotiate (NTLM, or Kerberos when available) works with the hyperv extra "
            "alone; kerberos and credssp need pypsrp's kerberos/credssp extras."
        ),
        examples=["kerberos"],
    )
    port: int | None = Field(None, ge=1, le=65535, description="WinRM port; default 5986 with ssl, 5985 without.",
                             examples=[5986])
    ssl: bool = Field(True, description="Use HTTPS for WinRM.", examples=[True])
    verify_certificate: bool = Field(
        True, description="Check the host's TLS certificate. Turn off only for a lab host.", examples=[False],
    )
    ca_bundle: str | None = Field(None, description="CA certificates (PEM) to trust instead of the system's.",
                                  examples=["/etc/safehold/hyperv-ca.pem"])
    consistency: Literal["application", "crash"] = Field(
        "application",
        description=(
            "application: a production (VSS) checkpoint, falling back to crash-consistent with a warning when "
            "the guest cannot provide one; crash: crash-consistent always (still logged as a warning)."
        ),
        examples=["application"],
    )
    chunk_size: ChunkSize = Field(512 * 1024, description="Fixed chunk size of the disks, as for image sources.")

    @field_validator("password_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise _invalid(f"{value!r} is not an environment variable name; expected letters, digits and '_'")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _resolve_ca_bundle(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)


class LibvirtSource(_Model):
    """The disks of a KVM/QEMU domain managed by libvirt: checkpoints and pull-mode backups over NBD;
    incrementals read only the blocks the dirty bitmap marks."""

    type: Literal["libvirt"] = Field(description="Source kind.", examples=["libvirt"])
    domain: str = Field(description="Name of the libvirt domain (running or shut off).", examples=["web-01"])
    uri: str = Field(
        "qemu:///system",
        description="libvirt connection URI (the daemon must support backupBegin: libvirt 7.2 or later with QEMU).",
        examples=["qemu:///system", "qemu+ssh://root@kvm-01/system"],
    )
    disks: list[str] = Field(
        default_factory=list,
        description="Target names of the disks to back up (as in the domain XML); empty means every disk.",
        examples=[["vda", "vdb"]],
    )
    chunk_size: ChunkSize = Field(
        512 * 1024,
        description=(
            "Fixed chunk size: a power of two from 64KiB to 16MiB. The dirty bitmap tracks 64KiB blocks, so "
            "64KiB stores least when scattered blocks change; 512KiB (the default) keeps the index 8x smaller."
        ),
    )
    keep_checkpoints: int = Field(
        2,
        ge=1,
        description=(
            "How many safehold checkpoints to keep on the domain; older ones are deleted after each backup "
            "(each checkpoint's bitmap costs a little on every guest write)."
        ),
        examples=[2],
    )
    scratch_dir: str | None = Field(
        None,
        description=(
            "Folder for the backup job's scratch files and NBD socket; QEMU's user must be able to write there. "
            "Default: the system temporary folder."
        ),
        examples=["/var/lib/libvirt/safehold-scratch"],
    )

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str) -> str:
        if not value.strip():
            raise _invalid("the domain name is empty; name a libvirt domain ('virsh list --all' shows them)")
        return value


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


class VmwareSource(_Model):
    """VMs on VMware vSphere (vCenter or ESXi): snapshots, changed-block tracking, datastore HTTP reads."""

    type: Literal["vmware"] = Field(description="Source kind.", examples=["vmware"])
    server: str = Field(
        min_length=1,
        description="vCenter or ESXi host name, optionally with ':port' (default 443).",
        examples=["vcenter.example.com", "10.0.0.5:8443"],
    )
    user: str = Field(min_length=1, description="vSphere user name.", examples=["backup@vsphere.local"])
    password_env: str = Field(
        "SAFEHOLD_VSPHERE_PASSWORD",
        description="Environment variable holding the vSphere password.",
        examples=["SAFEHOLD_VSPHERE_PASSWORD"],
    )
    password_file: str | None = Field(
        None,
        description="File holding the vSphere password (wins over password_env). Relative to this file's directory.",
        examples=["/etc/safehold/vsphere.password"],
    )
    ca_file: str | None = Field(
        None,
        description=(
            "PEM file of the CA that signed the vCenter certificate, when it is not in the system's trust store. "
            "Relative to this file's directory."
        ),
        examples=["/etc/safehold/vcenter-ca.pem"],
    )
    insecure: bool = Field(
        False,
        description="Do not check the server's TLS certificate. Only for a lab vCenter; certificates are checked by default.",
        examples=[False],
    )
    vms: list[str] = Field(
        default_factory=list,
        description="VM names to back up; '*' and '?' wildcards allowed. A VM is selected when it matches vms, folder or tags.",
        examples=[["db-01", "web-*"]],
    )
    folder: str | None = Field(
        None,
        description="Inventory path of a VM folder: every VM below it is backed up.",
        examples=["DC0/vm/production"],
    )
    tags: list[str] = Field(
        default_factory=list,
        description="vSphere tags, as 'name' or 'category/name': every VM carrying one is backed up.",
        examples=[["backup/daily"]],
    )
    quiesce: bool = Field(
        True,
        description=(
            "Quiesce the guest through VMware Tools when they run; otherwise (or when it fails) the backup is "
            "crash-consistent and the job log says so."
        ),
        examples=[True],
    )
    chunk_size: ChunkSize = Field(
        512 * 1024,
        description="Fixed chunk size of the stored disks: a power of two from 64KiB to 16MiB. Default 512KiB.",
    )

    @field_validator("password_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise _invalid(f"{value!r} is not an environment variable name; expected e.g. SAFEHOLD_VSPHERE_PASSWORD")
        return value

    @field_validator("password_file", "ca_file")
    @classmethod
    def _resolve_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @model_validator(mode="after")
    def _selects_something(self) -> VmwareSource:
        if not self.vms and not self.folder and not self.tags:
            raise _invalid("the vmware source selects no VM: set vms, folder or tags")
        return self


Source = Annotated[
    FilesSource | ImageSource | EbsSource | HyperVSource | LibvirtSource | VmwareSource, Field(discriminator="type")
]
"""One of the source kinds this release supports, chosen by ``type``."""


# --- restore tests ----------------------------------------------------------


def _inside_tree(value: str) -> str:
    """A path relative to the restored tree's root that cannot leave it."""
    parts = [part for part in value.strip().split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise _invalid(
            f"{value!r} is not valid; expected a path inside the restored tree, relative to its root "
            "and without '..', e.g. etc/hostname"
        )
    return "/".join(parts)


TreePath = Annotated[
    str,
    BeforeValidator(lambda value: _inside_tree(value) if isinstance(value, str) else value),
    WithJsonSchema({"type": "string", "minLength": 1, "examples": ["etc/hostname"]}),
]
"""A path inside a restored tree; a leading '/' is allowed and means the tree's root."""


class CommandCheck(_Model):
    """Run a shell command in the restored tree; exit status 0 means healthy."""

    type: Literal["command"] = Field(description="Health check kind.", examples=["command"])
    run: str = Field(
        min_length=1,
        description="Shell command, run with the restore destination as working directory.",
        examples=["test -f etc/hostname"],
    )
    timeout: Duration = Field(
        timedelta(minutes=10),
        description="The check fails when the command runs longer than this.",
        examples=["30s", "10m"],
    )


class FileExistsCheck(_Model):
    """Healthy when a file exists in the restored tree."""

    type: Literal["file_exists"] = Field(description="Health check kind.", examples=["file_exists"])
    path: TreePath = Field(
        description="Path inside the restored tree (relative to its root).", examples=["etc/hostname"]
    )


class ChecksumCheck(_Model):
    """Healthy when a restored file has the expected SHA-256."""

    type: Literal["checksum"] = Field(description="Health check kind.", examples=["checksum"])
    path: TreePath = Field(
        description="Path inside the restored tree (relative to its root).",
        examples=["srv/docs/index.html"],
    )
    sha256: str = Field(
        description="Expected SHA-256 of the file, 64 hexadecimal digits.",
        examples=["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    )

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise _invalid(f"{value!r} is not a SHA-256 digest; expected 64 hexadecimal digits")
        return value.lower()


HealthCheck = Annotated[CommandCheck | FileExistsCheck | ChecksumCheck, Field(discriminator="type")]
"""One of the health check kinds, chosen by ``type``."""


class RestoreTest(_Model):
    """Scheduled restore drills: restore the latest snapshot, check it, record the recovery time."""

    every: Duration = Field(
        timedelta(days=7),
        description="How often to run the restore test.",
        examples=["7d", "1d"],
    )
    health_check: HealthCheck | None = Field(
        None,
        description="Check run on the restored data; without one a test passes when every byte restored and verified.",
        examples=[{"type": "command", "run": "test -f etc/hostname"}],
    )

    @field_validator("health_check", mode="before")
    @classmethod
    def _check_health_kind(cls, value: object) -> object:
        return _check_kind(value, what="health check", supported=HEALTH_CHECK_TYPES)


# --- targets ----------------------------------------------------------------

_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat, 0 and 7 are Sunday"),
)
_CRON_NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
CRON_USAGE = "expected 5 fields: minute hour day-of-month month day-of-week, e.g. '0 */6 * * *', or @hourly/@daily/@weekly/@monthly"


def _check_cron(expression: str) -> str:
    """Check a 5-field cron expression with croniter; returns it with single spaces.

    croniter does the parsing. It also accepts 6 and 7 fields (seconds, years)
    which the scheduler does not promise, so the field count is checked here,
    and each field is tried alone to name the bad one in the message.
    """
    from croniter import CroniterBadDateError, CroniterError, croniter

    fields = expression.split()
    if len(fields) == 1 and fields[0].lower() in _CRON_NICKNAMES:
        return fields[0].lower()
    if len(fields) != 5:
        raise _invalid(f"{expression!r} has {len(fields)} field(s); {CRON_USAGE}")
    for position, (field, valid) in enumerate(_CRON_FIELDS):
        alone = ["*"] * 5
        alone[position] = fields[position]
        try:
            croniter(" ".join(alone))
        except (CroniterError, ValueError):
            raise _invalid(
                f"{expression!r}: {fields[position]!r} is not a valid {field} field (valid: {valid}, lists a,b, "
                f"ranges a-b, steps */n); {CRON_USAGE}"
            ) from None
    normal = " ".join(fields)
    try:
        # A date that never comes (31 February) is only found by iterating.
        croniter(normal, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise _invalid(f"{expression!r} never matches a date; {CRON_USAGE}") from None
    except (CroniterError, ValueError) as error:
        raise _invalid(f"{expression!r} is not valid ({error}); {CRON_USAGE}") from None
    return normal


Cron = Annotated[
    str,
    BeforeValidator(lambda value: _check_cron(value) if isinstance(value, str) else value),
    WithJsonSchema({"type": "string", "description": CRON_USAGE, "examples": ["0 */6 * * *", "@daily"]}),
]
"""A 5-field cron expression (local time) or a nickname such as ``@daily``."""


class Target(_Model):
    """One thing to back up, with its tier, schedule, retention and restore test."""

    name: str = Field(
        description=(
            "Unique name: letters, digits, '_', '.', '-', starting with a letter or digit. "
            "Used in metrics labels and snapshot tags."
        ),
        examples=["web-01"],
        json_schema_extra={"pattern": TARGET_NAME_PATTERN},
    )
    tier: int = Field(description="Tier number, a key of 'tiers'; sets the RPO and RTO.", examples=[2])
    source: Source = Field(
        description=f"What to back up; 'type' is one of: {', '.join(SOURCE_TYPES)}.",
        examples=[{"type": "files", "paths": ["/srv/docs"], "exclude": ["*.tmp"]}],
    )
    schedule: Cron | None = Field(
        None,
        description=(
            "Cron expression (5 fields, local time) for backups; without it the scheduler backs the target up "
            "every half RPO of its tier, so a failed run can be retried before the RPO is missed."
        ),
        examples=["0 */6 * * *"],
    )
    retention: Retention | None = Field(
        None,
        description="Which snapshots to keep when forgetting; without it 'safehold forget' leaves this target alone.",
        examples=[{"keep_last": 3, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12}],
    )
    restore_test: RestoreTest | None = Field(
        None,
        description="Scheduled restore test; without it this target's RTO is never measured.",
        examples=[{"every": "7d", "health_check": {"type": "command", "run": "test -f etc/hostname"}}],
    )
    tags: list[str] = Field(
        default_factory=list, description="Free-form labels stored with each snapshot.", examples=[["prod"]]
    )
    forget_after_backup: bool = Field(
        True,
        description=(
            "Apply 'retention' (forget, without prune) after each successful backup the control plane runs; "
            "prune runs on its own schedule (scheduler.prune_schedule)."
        ),
        examples=[False],
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _TARGET_NAME.fullmatch(value):
            raise _invalid(
                f"{value!r} is not a valid target name; use letters, digits, '_', '.' and '-', "
                "starting with a letter or digit (e.g. web-01)"
            )
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _check_source_kind(cls, value: object) -> object:
        return _check_kind(value, what="source", supported=SOURCE_TYPES, planned=PLANNED_SOURCE_TYPES)



# --- scheduler --------------------------------------------------------------


class SchedulerConfig(_Model):
    """How the control plane's scheduler spreads, limits and retries jobs."""

    max_concurrent: int = Field(
        2, ge=1, description="Jobs run at once in this control plane, all kinds together.", examples=[2, 8]
    )
    max_per_host: int = Field(
        1,
        ge=1,
        description=(
            "Jobs run at once against one source host (local sources count as host 'localhost'), so a host "
            "is not read by several backups at once."
        ),
        examples=[1],
    )
    jitter: Duration = Field(
        timedelta(minutes=5),
        description=(
            "Each target starts up to this long after it is due, at an offset fixed per target name, so a "
            "hundred targets due at the same minute do not start in the same second."
        ),
        examples=["5m", "30s"],
    )
    retries: int = Field(
        3, ge=0, description="Extra attempts of a failed scheduled job before waiting for its next slot.", examples=[3]
    )
    retry_backoff: Duration = Field(
        timedelta(minutes=1),
        description="Wait before the first retry; doubled for each further retry.",
        examples=["1m", "10m"],
    )
    prune_schedule: Cron | None = Field(
        "0 3 * * 0",
        description="Cron expression for 'prune' (removing data no snapshot uses); null turns it off.",
        examples=["0 3 * * 0"],
    )
    check_schedule: Cron | None = Field(
        "0 4 * * *",
        description="Cron expression for 'check' of the repository; null turns it off.",
        examples=["0 4 * * *"],
    )
    maintenance_schedule: Cron | None = Field(
        "30 2 * * *",
        description=(
            "Cron expression for 'maintenance' (extending S3 Object Lock retention on what kept snapshots need, "
            "before it runs out); runs only when repository.object_lock is set; null turns it off. Runs must be less "
            "than half of object_lock.days apart, or retention can end between two runs."
        ),
        examples=["30 2 * * *"],
    )
    check_read_data_percent: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Share of the packs a scheduled check reads and verifies (a different random subset each time).",
        examples=[5, 100],
    )
    sandbox_dir: str | None = Field(
        None,
        description=(
            "Directory in which restore tests create (and always remove) their sandbox; default "
            "<state_dir>/restore-tests. Relative paths are relative to this file's directory."
        ),
        examples=["/var/tmp/safehold"],
    )

    @field_validator("sandbox_dir")
    @classmethod
    def _resolve_sandbox(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)


# --- the whole file ---------------------------------------------------------


def _tier_key(key: object) -> object:
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    return key


def _merge_tiers(raw: object) -> object:
    """User tiers merged over DEFAULT_TIERS: a default tier's keys can be overridden one by one."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw
    merged: dict[object, object] = {number: dict(values) for number, values in DEFAULT_TIERS.items()}
    for key, value in raw.items():
        number = _tier_key(key)
        default = merged.get(number)
        merged[number] = {**default, **value} if isinstance(default, dict) and isinstance(value, dict) else value
    return merged


def _cross_check(data: dict[str, Any]) -> list[InitErrorDetails]:
    """Duplicate target names and undefined tiers, checked on the raw data so they are
    reported alongside every other problem rather than only once the rest is valid."""
    targets = data.get("targets")
    tiers = data.get("tiers")
    if not isinstance(targets, list):
        return []
    defined = sorted(key for key in tiers if isinstance(key, int)) if isinstance(tiers, dict) else []
    problems: list[InitErrorDetails] = []
    first_index: dict[str, int] = {}
    for index, target in enumerate(targets):
        if not isinstance(target, dict):
            continue
        name = target.get("name")
        if isinstance(name, str):
            if name in first_index:
                problems.append(
                    _problem(
                        ("targets", index, "name"),
                        f"duplicate target name {name!r}: targets[{first_index[name]}] has it too; "
                        "names must be unique",
                        name,
                    )
                )
            else:
                first_index[name] = index
        tier = _tier_key(target.get("tier"))
        if isinstance(tier, int) and not isinstance(tier, bool) and isinstance(tiers, dict) and tier not in defined:
            problems.append(
                _problem(
                    ("targets", index, "tier"),
                    f"tier {tier} is not defined; defined tiers: {', '.join(map(str, defined))} "
                    "(add it under 'tiers:' with its rpo and rto)",
                    target.get("tier"),
                )
            )
    return problems


class Config(_Model):
    """The whole of targets.yml."""

    repository: RepositoryConfig = Field(description="Where backups are stored.")
    state_dir: str = Field(
        DEFAULT_STATE_DIR,
        description=(
            "Directory for local state (the default SQLite catalog, caches). Relative paths are relative to this "
            f"file's directory. The environment variable {STATE_DIR_ENV} overrides it."
        ),
        examples=["/var/lib/safehold"],
    )
    catalog: CatalogConfig | None = Field(
        None,
        description="Job history database; default sqlite:///<state_dir>/catalog.db.",
        examples=[{"url": "postgresql+psycopg://safehold@db.internal/safehold"}],
    )
    tiers: dict[Annotated[int, Field(ge=0)], TierConfig] = Field(
        default_factory=_default_tiers,
        description=(
            "Recovery objectives by tier number (lower is more critical). Defaults: 1: 15m/1h, 2: 12h/4h, "
            "3: 24h/24h; tiers given here are merged over them."
        ),
        examples=[{"1": {"rpo": "15m", "rto": "1h"}, "4": {"rpo": "7d", "rto": "3d"}}],
    )
    targets: list[Target] = Field(
        default_factory=list,
        description="Everything to back up.",
    )
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig,
        description="Concurrency limits, jitter, retries and the maintenance schedules of the scheduler.",
        examples=[{"max_concurrent": 4, "max_per_host": 1, "jitter": "5m", "retries": 3}],
    )

    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="wrap")  # type: ignore[arg-type]  # mypy cannot match the with-info overload
    @classmethod
    def _validate_whole(cls, data: Any, handler: ModelWrapValidatorHandler[Config], info: ValidationInfo) -> Config:
        if not isinstance(data, dict):
            return handler(data)
        data = dict(data)
        override = _environ(info).get(STATE_DIR_ENV)
        if override:
            # From the environment, so relative to where safehold runs, not to the file.
            data["state_dir"] = os.path.abspath(os.path.expanduser(override))
        data["tiers"] = _merge_tiers(data.get("tiers"))
        problems = _cross_check(data)
        try:
            config = handler(data)
        except ValidationError as error:
            _reraise(cls.__name__, problems, error)
        if problems:
            _reraise(cls.__name__, problems)
        path = _context(info).get("path")
        config._path = Path(path) if path is not None else None
        return config

    @field_validator("state_dir")
    @classmethod
    def _resolve_state_dir(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise _invalid(f"state_dir is empty; expected a directory, default {DEFAULT_STATE_DIR}")
        return _resolve_path(value, info)

    @property
    def path(self) -> Path | None:
        """The file this configuration was loaded from (None when built in code)."""
        return self._path

    @property
    def catalog_url(self) -> str:
        """The catalog database URL, defaulting to SQLite in state_dir."""
        if self.catalog is not None:
            return self.catalog.url
        return f"sqlite:///{Path(self.state_dir) / 'catalog.db'}"

    def target(self, name: str) -> Target:
        """The target called ``name``; raises TargetNotFound listing the known names."""
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(target.name for target in self.targets) or "(none)"
        raise TargetNotFound(name=name, path=str(self.path) if self.path else "the configuration", known=known)

    def tier_of(self, target: Target | str) -> TierConfig:
        """The TierConfig of a target (or target name)."""
        if isinstance(target, str):
            target = self.target(target)
        return self.tiers[target.tier]
