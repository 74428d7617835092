"""The catalog: job history, job logs and a cache of the repository's snapshots.

Concepts: a *job* is one run of a backup, restore, check, prune, drill...
(``jobs``), with its log lines (``job_logs``); the *snapshot cache*
(``snapshots``) mirrors the repository's snapshot manifests so listings need
not open the repository, and ``safehold catalog rebuild`` recreates it, since
the repository is the source of truth. SQLAlchemy over SQLite by default,
PostgreSQL at scale; the schema is migrated by the Alembic environment shipped
in ``migrations/`` whenever a catalog is opened behind the code's revision.

The names below load on first use (PEP 562), so that ``catalog.light`` (a
job recorder on the standard library's sqlite3, for commands whose start-up
matters) can be imported without SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and readers see; at run time __getattr__ below
    from safehold.catalog.migrate import CatalogSchemaTooNew
    from safehold.catalog.revision import HEAD_REVISION
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

_NAMES = {
    "HEAD_REVISION": "safehold.catalog.revision",
    "CatalogSchemaTooNew": "safehold.catalog.migrate",
    "ACTIVE_STATUSES": "safehold.catalog.store",
    "FINAL_STATUSES": "safehold.catalog.store",
    "GOOD_BACKUP_STATUSES": "safehold.catalog.store",
    "JOB_KINDS": "safehold.catalog.store",
    "LOG_LEVELS": "safehold.catalog.store",
    "STATUSES": "safehold.catalog.store",
    "Catalog": "safehold.catalog.store",
    "JobHandle": "safehold.catalog.store",
    "JobNotFound": "safehold.catalog.store",
    "JobRecord": "safehold.catalog.store",
    "LogRecord": "safehold.catalog.store",
    "SnapshotRecord": "safehold.catalog.store",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
