"""Opt-in measurements of one ``safehold worker`` for benchmarks (bench/scale.py), off by default.

- ``SAFEHOLD_WORKER_PROFILE=FILE``: a cProfile of every thread of this worker (jobs, chunk threads,
  procrastinate's loop), timed by each thread's CPU clock, written to FILE (pstats format) when
  the worker stops on SIGTERM.
- ``SAFEHOLD_WORKER_SQL_TIMES=FILE``: the duration of every catalog statement this worker sends,
  grouped by verb and table (``UPDATE jobs``, ``INSERT job_logs`` ...), written to FILE as JSON
  (``{group: [seconds, ...]}``) at the same moment.

A worker killed with SIGKILL writes neither. Both cost little when unset (one environment lookup
per worker start); the profile slows the worker it watches (by half or more), so a benchmark sets it on one worker.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

PROFILE_ENV = "SAFEHOLD_WORKER_PROFILE"
SQL_TIMES_ENV = "SAFEHOLD_WORKER_SQL_TIMES"


def statement_group(statement: str) -> str:
    """``UPDATE jobs``, ``INSERT job_logs``, ``SELECT jobs``: the verb and the first table named."""
    words = statement.split()
    if not words:
        return "?"
    verb = words[0].upper()
    upper = [word.upper() for word in words]
    if verb == "INSERT" and len(words) > 2:
        table = words[2]
    elif verb == "UPDATE" and len(words) > 1:
        table = words[1]
    elif verb in ("SELECT", "DELETE", "WITH") and "FROM" in upper:
        table = words[upper.index("FROM") + 1]
    else:
        table = ""
    table = table.strip('"(').split(".")[-1]
    return f"{verb} {table}".strip()


class WorkerDiagnostics:
    """What the two variables ask for: ``attach`` the catalog, ``start_profile``, ``write`` at exit."""

    def __init__(self, environ: Any = None) -> None:
        environ = os.environ if environ is None else environ
        self.profile_path = environ.get(PROFILE_ENV) or None
        self.sql_path = environ.get(SQL_TIMES_ENV) or None
        self._profiles: list[Any] = []
        self._times: dict[str, list[float]] = {}
        self._times_lock = threading.Lock()

    def start_profile(self) -> None:
        """Profile every thread of this process from now on (this one and every thread started later),
        each with its own cProfile timed by the thread's CPU clock, so the figures are CPU, not waits."""
        if not self.profile_path:
            return
        import cProfile

        def start_in_thread(*_: Any) -> None:
            profile = cProfile.Profile(time.thread_time)
            self._profiles.append(profile)  # list.append is atomic under the GIL
            profile.enable()  # replaces this hook in the thread: called once per thread
        threading.setprofile(start_in_thread)
        start_in_thread()

    @property
    def enabled(self) -> bool:
        return bool(self.profile_path or self.sql_path)

    def attach(self, engine: Any) -> None:
        """Time every statement ``engine`` (a SQLAlchemy engine) sends from now on."""
        if not self.sql_path:
            return
        from sqlalchemy import event

        def before(connection, cursor, statement, parameters, context, executemany) -> None:
            connection.info.setdefault("safehold_started", []).append(time.perf_counter())

        def after(connection, cursor, statement, parameters, context, executemany) -> None:
            started = connection.info.get("safehold_started")
            if not started:
                return
            took = time.perf_counter() - started.pop()
            with self._times_lock:
                self._times.setdefault(statement_group(statement), []).append(took)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)

    def write(self) -> None:
        if self.profile_path and self._profiles:
            import pstats

            threading.setprofile(None)
            pstats.Stats(*self._profiles).dump_stats(self.profile_path)
        if self.sql_path:
            with self._times_lock:
                data = {group: [round(value, 6) for value in values] for group, values in self._times.items()}
            Path(self.sql_path).write_text(json.dumps(data))
