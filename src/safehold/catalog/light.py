"""Recording jobs in a current SQLite catalog with the standard library's sqlite3, without
SQLAlchemy: for commands whose start-up is most of their time (an incremental ``safehold copy``
is about a second, and SQLAlchemy's import was a quarter of it).

``SqliteJobs.open(url)`` returns None unless the catalog is a SQLite file whose schema is at
``HEAD_REVISION`` (one ``SELECT`` of ``alembic_version``); the caller then opens the full
``Catalog``, which creates and migrates. So this never creates tables or migrates, and a
PostgreSQL catalog always goes through SQLAlchemy.

It writes exactly what ``store.Catalog`` writes for a job, a log line, progress and the end of a
job (the same columns; datetimes as SQLAlchemy's SQLite ``DateTime`` text in UTC,
``YYYY-MM-DD HH:MM:SS.ffffff``; details as ``models.JSONText``'s JSON), with the same
connection settings (``database.py``: busy timeout, WAL, ``synchronous=NORMAL``, foreign keys,
write transactions begun with ``BEGIN IMMEDIATE``), and it marks 'interrupted' the jobs dead
processes of this host left running, as ``Catalog.open`` does. A unit test reads what it wrote
back through ``Catalog`` and compares with a job the catalog recorded itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safehold.catalog.handle import JobHandle, run_job
from safehold.catalog.processes import process_alive
from safehold.catalog.revision import HEAD_REVISION
from safehold.errors import JobNotFound

UTC = dt.UTC
#: Seconds a writer waits for another process's write lock (database.BUSY_TIMEOUT_SECONDS).
BUSY_TIMEOUT_SECONDS = 30.0
_FINAL_STATUSES = ("succeeded", "partial", "failed", "interrupted", "cancelled")  # store.FINAL_STATUSES
_LOG_LEVELS = ("debug", "info", "warning", "error")  # store.LOG_LEVELS


def sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` url; None for anything else (PostgreSQL, in-memory
    or ``?``-options urls), which the full catalog handles."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    path = url[len("sqlite:///"):]
    if path in ("", ":memory:"):
        return None
    return Path(path).expanduser()


def _stamp(value: dt.datetime) -> str:
    """A datetime as models.UTCDateTime stores it on SQLite (SQLAlchemy's DateTime text, UTC)."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond:06d}"


def _parse(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromisoformat(value).replace(tzinfo=UTC)


def _json(value: Any) -> str | None:
    """models.JSONText's encoding."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class SqliteJobs:
    """A job recorder on one sqlite3 connection. Offers what ``Catalog.job()`` needs:
    ``start_job``, ``log``, ``update_job``, ``finish_job``, ``job_status``, ``job_state`` and
    ``job()`` itself, with the same semantics and errors.

    Thread-safe as the catalog is (every method its own transaction): a backup's or a restore's
    progress arrives from its worker threads, and two transactions of one connection must never
    interleave (``BEGIN`` inside ``BEGIN``), so each holds the recorder's lock."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._connection = connection
        self._lock = threading.RLock()
        self.path = path
        self.hostname = socket.gethostname()

    @classmethod
    def open(cls, url: str, *, recover: bool = True) -> "SqliteJobs | None":
        """The recorder for ``url``, or None when the full catalog must open it (not a SQLite file,
        no file yet, or a schema that is not at HEAD_REVISION)."""
        path = sqlite_path(url)
        if path is None or not path.is_file():
            return None
        try:
            connection = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error:
            return None
        try:
            try:
                connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.execute("PRAGMA foreign_keys = ON")
                revisions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
            except sqlite3.DatabaseError:
                # No such table (a new database), or a file that is no catalog (damaged, read-only,
                # not SQLite): the full catalog creates it, or explains the error as it always has.
                revisions = []
            if revisions != [HEAD_REVISION]:
                connection.close()
                return None
            recorder = cls(connection, path)
            if recover:
                recorder.mark_interrupted()
        except BaseException:
            connection.close()
            raise
        return recorder

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE: take the write lock first and wait for it (database.py explains why).
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    @staticmethod
    def _now() -> dt.datetime:
        return dt.datetime.now(UTC)

    # --- what Catalog does for a job ----------------------------------------------------------

    def mark_interrupted(self) -> int:
        """Catalog.mark_interrupted: jobs this host left running in processes that are gone."""
        rows = self._connection.execute(
            "SELECT id, pid, started_at FROM jobs WHERE status = 'running' AND hostname = ? AND pid IS NOT NULL",
            (self.hostname,)).fetchall()
        marked = 0
        for job_id, pid, started_at in rows:
            if process_alive(pid, _parse(started_at)):
                continue
            with self._write() as connection:
                marked += connection.execute(
                    "UPDATE jobs SET status = 'interrupted', finished_at = ?, error = ?, error_type = 'ProcessGone' "
                    "WHERE id = ? AND status = 'running'",
                    (_stamp(self._now()), f"process {pid} on {self.hostname} ended without finishing the job",
                     job_id)).rowcount
        return marked

    def start_job(self, kind: str, target: str | None = None, details: Mapping[str, Any] | None = None) -> int:
        if not kind:
            raise ValueError("a job needs a kind")
        now = _stamp(self._now())
        with self._write() as connection:
            cursor = connection.execute(
                "INSERT INTO jobs (kind, target, status, created_at, started_at, bytes_read, bytes_added, files, "
                "details, pid, hostname) VALUES (?, ?, 'running', ?, ?, 0, 0, 0, ?, ?, ?)",
                (kind, target, now, now, _json(dict(details) if details else None), os.getpid(), self.hostname))
            return int(cursor.lastrowid or 0)

    def log(self, job_id: int, message: str, level: str = "info") -> None:
        if level not in _LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(_LOG_LEVELS)}, got {level!r}")
        try:
            with self._write() as connection:
                connection.execute("INSERT INTO job_logs (job_id, time, level, message) VALUES (?, ?, ?, ?)",
                                   (job_id, _stamp(self._now()), level, message))
        except sqlite3.IntegrityError as error:  # the foreign key: no such job
            raise JobNotFound(job_id=job_id) from error

    def update_job(self, job_id: int, *, bytes_read: int | None = None, bytes_added: int | None = None,
                   files: int | None = None, snapshot_id: str | None = None, target: str | None = None) -> None:
        values = {name: value for name, value in (("bytes_read", bytes_read), ("bytes_added", bytes_added),
                                                  ("files", files), ("snapshot_id", snapshot_id),
                                                  ("target", target)) if value is not None}
        if values:
            self._update(job_id, values)

    def finish_job(self, job_id: int, status: str, *, snapshot_id: str | None = None, bytes_read: int = 0,
                   bytes_added: int = 0, files: int = 0, error: str | None = None, error_type: str | None = None,
                   details: Mapping[str, Any] | None = None) -> bool:
        """Catalog.finish_job(): only a 'running' job ends; False (nothing written) when it ended already."""
        if status not in _FINAL_STATUSES:
            raise ValueError(f"a finished job's status must be one of {', '.join(_FINAL_STATUSES)}, got {status!r}")
        values: dict[str, Any] = {"status": status, "finished_at": _stamp(self._now()), "bytes_read": bytes_read,
                                  "bytes_added": bytes_added, "files": files, "error": error,
                                  "error_type": error_type}
        if snapshot_id is not None:
            values["snapshot_id"] = snapshot_id
        with self._write() as connection:  # read-modify-write inside BEGIN IMMEDIATE, as Catalog does
            row = connection.execute("SELECT status, details FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id=job_id)
            if row[0] != "running":  # fenced, as Catalog.finish_job
                return False
            if details:
                merged = dict(json.loads(row[1]) if row[1] is not None else {})
                merged.update(details)
                values["details"] = _json(merged)
            columns = ", ".join(f"{name} = ?" for name in values)  # names are ours, never input
            connection.execute(f"UPDATE jobs SET {columns} WHERE id = ? AND status = 'running'",
                               (*values.values(), job_id))
        return True

    def job_status(self, job_id: int) -> str:
        return self.job_state(job_id)[0]

    def job_state(self, job_id: int) -> tuple[str, str | None]:
        """Catalog.job_state(): the recorded status and error of one job (JobNotFound for an unknown id)."""
        with self._write() as connection:
            row = connection.execute("SELECT status, error FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id=job_id)
        return str(row[0]), row[1]

    def job(self, kind: str, target: str | None = None, details: Mapping[str, Any] | None = None, *,
            job_id: int | None = None) -> Any:
        """Catalog.job(): run a block as a recorded job (see its docstring)."""
        return run_job(self, kind, target, details, job_id=job_id)

    def _update(self, job_id: int, values: Mapping[str, Any]) -> None:
        with self._write() as connection:
            if self._execute_update(connection, job_id, values) == 0:
                raise JobNotFound(job_id=job_id)

    @staticmethod
    def _execute_update(connection: sqlite3.Connection, job_id: int, values: Mapping[str, Any]) -> int:
        columns = ", ".join(f"{name} = ?" for name in values)  # names are ours, never input
        return connection.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), job_id)).rowcount


__all__ = ["JobHandle", "SqliteJobs", "sqlite_path"]
