"""Where backups go: ``RepositoryConfig`` (with its ``ObjectLock``) and ``CatalogConfig``.

``RepositoryConfig`` names the repository (a local path, file:// or s3://)
and where its password comes from; a password written in the file is
refused. ``CatalogConfig`` names the job history database (SQLite or
PostgreSQL), never with a password in its URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ModelWrapValidatorHandler, ValidationError, ValidationInfo, field_validator, model_validator

from safehold.config.common import _ENV_NAME, _invalid, _Model, _problem, _reraise, _resolve_path
from safehold.errors import PasswordMissing
from safehold.files import warn_if_others_can_read

__all__ = ["DEFAULT_PASSWORD_ENV", "CatalogConfig", "ObjectLock", "RepositoryConfig"]

DEFAULT_PASSWORD_ENV = "SAFEHOLD_PASSWORD"

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DB_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ObjectLock(_Model):
    """S3 Object Lock retention applied to every object but locks: data, index, snapshots, the config and the keys."""

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
            "password_env. Relative paths are relative to this file's directory. Keep it mode 0600: a file its "
            "group or other users can read is used, with a warning on stderr (or in the server's log)."
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
                with open(self.password_file, "rb") as handle:
                    warn_if_others_can_read(self.password_file, "password_file", handle.fileno())
                    secret = handle.read()
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
