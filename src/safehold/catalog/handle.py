"""A running job's handle and the block that records a job's end: shared by the catalog
(``store.Catalog``, SQLAlchemy) and the light recorder (``light.SqliteJobs``, the standard
library's sqlite3), so both record a job the same way. No SQLAlchemy here.

A *recorder* is anything with ``start_job(kind, target, details) -> id``, ``log(id, message,
level)``, ``update_job(id, ...)`` and ``finish_job(id, status, ...)`` (see ``store.Catalog``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@contextmanager
def run_job(recorder: Any, kind: str, target: str | None = None, details: Mapping[str, Any] | None = None,
            *, job_id: int | None = None) -> Iterator["JobHandle"]:
    """The body of ``Catalog.job()`` (see its docstring), for any recorder."""
    if job_id is None:
        handle = JobHandle(recorder, recorder.start_job(kind, target, details))
    else:
        handle = JobHandle(recorder, job_id, details=dict(details or {}))
    try:
        yield handle
    except Exception as exc:
        handle._finish("failed", exc)
        raise
    except BaseException as exc:  # asyncio's CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit
        handle._finish("cancelled" if _cancelled(exc) else "interrupted", exc)
        raise
    else:
        handle._finish(handle.status, None, swallow=False)


def _cancelled(exc: BaseException) -> bool:
    # asyncio's CancelledError, without importing asyncio (a tenth of a second with ssl) in
    # commands that never load it: a process that did not import asyncio cannot be raising it.
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


@dataclass(eq=False)
class JobHandle:
    """What ``Catalog.job()`` yields: the job's id and a way to report progress.

    ``update`` takes absolute values and writes them at most once per
    ``flush_interval`` seconds (the final values are always written when the
    job ends), so calling it per file costs little. ``details`` is merged into
    the job's details when it finishes.
    """

    catalog: Any  # the recorder: a Catalog or a light.SqliteJobs
    id: int
    bytes_read: int = 0
    bytes_added: int = 0
    files: int = 0
    snapshot_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # The status recorded when the block ends normally: 'succeeded', or 'partial' for a backup
    # whose snapshot left items out.
    status: str = "succeeded"
    flush_interval: float = 1.0
    _last_flush: float | None = field(default=None, repr=False)

    def log(self, message: str, level: str = "info") -> None:
        self.catalog.log(self.id, message, level)

    def update(
        self,
        *,
        bytes_read: int | None = None,
        bytes_added: int | None = None,
        files: int | None = None,
        snapshot_id: str | None = None,
    ) -> None:
        if bytes_read is not None:
            self.bytes_read = bytes_read
        if bytes_added is not None:
            self.bytes_added = bytes_added
        if files is not None:
            self.files = files
        if snapshot_id is not None and snapshot_id != self.snapshot_id:
            # A committed snapshot is worth recording at once: it exists now.
            self.snapshot_id = snapshot_id
            self.flush()
        elif self._last_flush is None or time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write the current progress now."""
        self.catalog.update_job(
            self.id,
            bytes_read=self.bytes_read,
            bytes_added=self.bytes_added,
            files=self.files,
            snapshot_id=self.snapshot_id,
        )
        self._last_flush = time.monotonic()

    def _finish(self, status: str, exc: BaseException | None, *, swallow: bool = True) -> None:
        error = error_type = None
        if exc is not None:
            error = str(exc) or repr(exc)
            error_type = type(exc).__name__
        try:
            recorded = self.catalog.finish_job(
                self.id,
                status,
                snapshot_id=self.snapshot_id,
                bytes_read=self.bytes_read,
                bytes_added=self.bytes_added,
                files=self.files,
                error=error,
                error_type=error_type,
                details=self.details or None,
            )
            if recorded is False:  # fenced: the job was ended meanwhile (interrupted, and retried elsewhere)
                self.catalog.log(self.id, f"this attempt ended ({status}) after the job was recorded "
                                          f"{self.catalog.job_status(self.id)}; its end is not recorded",
                                 level="warning")
        except Exception as record_error:
            if not swallow:
                raise
            # The job's own exception is about to propagate and matters more;
            # leave a trace of this one on stderr rather than replace it.
            print(f"safehold: could not record the end of job {self.id}: {record_error}", file=sys.stderr)


