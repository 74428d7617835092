"""The catalog: job history, job logs and a cache of the repository's snapshots.

Concepts: a *job* is one run of a backup, restore, check, prune, drill...
(``jobs``), with its log lines (``job_logs``); the *snapshot cache*
(``snapshots``) mirrors the repository's snapshot manifests so listings need
not open the repository, and ``safehold catalog rebuild`` recreates it, since
the repository is the source of truth. SQLAlchemy over SQLite by default,
PostgreSQL at scale; the schema is migrated by the Alembic environment shipped
in ``migrations/`` whenever a catalog is opened behind the code's revision.
"""

from safehold.catalog.migrate import HEAD_REVISION, CatalogSchemaTooNew
from safehold.catalog.store import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    GOOD_BACKUP_STATUSES,
    JOB_KINDS,
    LOG_LEVELS,
    STATUSES,
    Catalog,
    JobHandle,
    JobNotFound,
    JobRecord,
    LogRecord,
    SnapshotRecord,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "GOOD_BACKUP_STATUSES",
    "HEAD_REVISION",
    "JOB_KINDS",
    "LOG_LEVELS",
    "STATUSES",
    "Catalog",
    "CatalogSchemaTooNew",
    "JobHandle",
    "JobNotFound",
    "JobRecord",
    "LogRecord",
    "SnapshotRecord",
]
