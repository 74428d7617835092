"""ORM models of the catalog tables: ``jobs``, ``job_logs``, ``snapshots`` and ``api_tokens``.

These classes describe the schema *as it is after the newest migration*. The
migrations under ``migrations/versions/`` are the record of how a database gets
there and never import this module (a migration must keep doing what it did
when it was written). A unit test compares the two with Alembic's autogenerate
so they cannot drift apart.

Column types are kept portable between SQLite (the embedded default) and
PostgreSQL (at scale): datetimes are stored timezone-aware where the database
can and normalised to UTC either way; JSON is stored as text, which every
database supports and which the catalog never needs to query into.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL keeps the offset (``timestamptz``). SQLite has no datetime type
    and SQLAlchemy stores a fixed-width text without an offset, so values are
    converted to UTC before they are written and marked UTC when read back;
    the fixed width also keeps text ordering equal to time ordering.
    Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"catalog datetimes must be timezone-aware, got naive {value!r}")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """A JSON document stored as text (portable; the catalog never queries inside it)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(value)


# Named constraints, so that a later migration can drop or alter them by name
# on every database (SQLite's batch mode needs names too).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One run of a job: a backup, a restore, a check, a prune, a drill..."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_target_kind_id", "target", "kind", "id"),
        Index("ix_jobs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    snapshot_id: Mapped[str | None] = mapped_column(String(128))
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_added: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONText())
    pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(255))


class JobLog(Base):
    """A line of a job's log, kept with the job so the UI can show it later."""

    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class Snapshot(Base):
    """Cached summary of a snapshot manifest; the repository is the source of truth.

    The key is (repository_id, id) rather than id alone: a copy job (3-2-1)
    writes the same manifest, and so the same snapshot id, into a second
    repository, and both copies belong in the cache.
    """

    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_target_time", "target", "time"),)

    repository_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    target: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str | None] = mapped_column(String(32))
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    hostname: Mapped[str | None] = mapped_column(String(255))
    parent: Mapped[str | None] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    added_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    tags: Mapped[list[str] | None] = mapped_column(JSONText())


class ApiToken(Base):
    """An API token of the control plane. Only the token's SHA-256 is stored, never the token.

    Tokens are 256-bit random strings, so a fast hash is enough: nobody can
    guess a preimage, and a lookup by hash needs no per-token salt.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
