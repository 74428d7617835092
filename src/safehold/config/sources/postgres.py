"""PostgreSQL source: ``PostgresSource``, logical dumps (pg_dump) or a physical base backup
(pg_basebackup) of a server reached by DSN or host/port/user."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from safehold.config.common import _ENV_NAME, _invalid, _Model, _resolve_path
from safehold.platforms.postgres.connection import dsn_has_password

__all__ = ["PostgresSource"]


class PostgresSource(_Model):
    """A PostgreSQL server, application-consistent: one pg_dump per database (plus roles and
    tablespaces) or a pg_basebackup of the cluster, streamed into the repository without a local
    file. Needs the ``postgres`` extra (psycopg) and the PostgreSQL client tools of the server's
    major version or newer."""

    type: Literal["postgres"] = Field(description="Source kind.", examples=["postgres"])
    dsn: str | None = Field(
        None,
        description=(
            "libpq connection string or URI, without a password (one in it is refused: use password_env "
            "or password_file). Host, port and user below override its parts."
        ),
        examples=["postgresql://backup@db-01.internal:5432/postgres?sslmode=verify-full"],
    )
    host: str | None = Field(None, description="Server host name, or a Unix socket folder.", examples=["db-01.internal"])
    port: int | None = Field(None, ge=1, le=65535, description="Server port (default 5432).", examples=[5432])
    user: str | None = Field(None, description="Role to connect as; it needs to read every table it dumps "
                             "(pg_read_all_data), and REPLICATION for mode physical.", examples=["backup"])
    password_env: str | None = Field(
        None, description="Environment variable holding the password (none: trust, peer or a passfile).",
        examples=["SAFEHOLD_PG_PASSWORD"],
    )
    password_file: str | None = Field(
        None, description="File whose first line is the password (wins over password_env). Relative to this file.",
        examples=["/etc/safehold/pg.password"],
    )
    passfile: str | None = Field(
        None, description="A libpq password file (~/.pgpass format) to use instead. Relative to this file.",
        examples=["/etc/safehold/pgpass"],
    )
    databases: list[str] | Literal["all"] = Field(
        "all",
        description="Databases to dump (mode dump), or 'all' for every database one can connect to except templates.",
        examples=[["shop", "accounts"], "all"],
    )
    mode: Literal["dump", "physical"] = Field(
        "dump",
        description=(
            "dump: pg_dump --format=custom per database and pg_dumpall --globals-only; restore per database "
            "with 'safehold postgres restore'. physical: pg_basebackup (tar, with the WAL it needs) of the "
            "whole cluster; restored, a data directory that starts."
        ),
        examples=["dump"],
    )
    compress: int = Field(
        0, ge=0, le=9,
        description=(
            "pg_dump's own compression level. Default 0: uncompressed dumps deduplicate between days and the "
            "repository compresses each chunk; compressed ones share almost nothing."
        ),
        examples=[0],
    )
    globals: bool = Field(True, description="Also store roles and tablespaces (pg_dumpall --globals-only).",
                          examples=[True])
    bin_dir: str | None = Field(
        None,
        description="Folder of the client tools to use (default: the best match in /usr/lib/postgresql/*/bin or PATH).",
        examples=["/usr/lib/postgresql/16/bin"],
    )

    @field_validator("dsn")
    @classmethod
    def _no_password_in_dsn(cls, value: str | None) -> str | None:
        if value is not None and dsn_has_password(value):
            raise _invalid(
                "the dsn holds a password, which must never be written in the configuration; remove it and "
                "set password_env (an environment variable) or password_file instead"
            )
        return value

    @field_validator("password_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise _invalid(f"{value!r} is not an environment variable name; expected e.g. SAFEHOLD_PG_PASSWORD")
        return value

    @field_validator("password_file", "passfile", "bin_dir")
    @classmethod
    def _resolve_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @model_validator(mode="after")
    def _reaches_a_server(self) -> PostgresSource:
        if not self.dsn and not self.host:
            raise _invalid("the postgres source names no server: set dsn, or host (with port and user)")
        if self.mode == "physical" and self.databases != "all":
            raise _invalid("mode physical backs up the whole cluster; leave databases out (or set it to 'all')")
        return self
