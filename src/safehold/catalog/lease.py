"""The scheduler lease: one scheduler per catalog.

The catalog is the job queue, and a scheduler queues what is due by reading it;
two schedulers on one catalog would each queue the same backups. So a scheduler
holds this lease for as long as it runs, and a second one is refused with the
holder named (pid, host, since when):

- SQLite (one host): an exclusive ``flock`` on ``<catalog>.scheduler.lock``
  beside the database file, which the kernel releases when the process ends,
  however it ends.
- PostgreSQL (many hosts): a session-level advisory lock held on a connection
  of its own, released when that connection closes, also when the process dies.
  The holder is found in ``pg_stat_activity`` by the connection's
  ``application_name``. Advisory locks belong to one database, while ``pg_locks`` shows the
  whole server's: the holder is looked up in this catalog's database only (a scheduler of
  another catalog on the same server holds a lock of the same key).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import socket
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from safehold.errors import SchedulerRunning

# Arbitrary constant key for the lease, distinct from the migration lock's key ("safehold").
_PG_KEY = int.from_bytes(b"shsched1", "big") & 0x7FFF_FFFF_FFFF_FFFF
_PRIVATE = -1  # the "descriptor" of an in-memory catalog's lease


def _holder_text() -> str:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return f"pid {os.getpid()} on {socket.gethostname()} since {now}"


class SchedulerLease:
    """Acquire with ``acquire()`` (raises SchedulerRunning), give back with ``release()``.
    Acquiring a lease this object already holds does nothing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._fd: int | None = None
        self._connection: Any = None

    @property
    def held(self) -> bool:
        return self._fd is not None or self._connection is not None

    @property
    def _catalog(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def acquire(self) -> None:
        if self.held:
            return
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            self._acquire_file()
        elif dialect == "postgresql":
            self._acquire_advisory()
        else:  # the configuration accepts only these two (catalog.url); never run unguarded
            raise ValueError(f"no scheduler lease for {dialect} catalogs: SQLite or PostgreSQL only")

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if fd != _PRIVATE:
                os.close(fd)  # closing the descriptor drops the flock
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_KEY})
            finally:
                connection.close()

    # --- SQLite ------------------------------------------------------------

    def _acquire_file(self) -> None:
        url = self.engine.url
        database = url.database or ""
        if url.query.get("uri") in ("true", "1"):
            database = database.removeprefix("file:").partition("?")[0]
        if database in ("", ":memory:") or url.query.get("mode") == "memory":
            self._fd = _PRIVATE  # an in-memory catalog: no other process can see it
            return
        path = Path(database).expanduser().with_name(Path(database).name + ".scheduler.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "a process holding " + str(path)
            os.close(fd)
            raise SchedulerRunning(catalog=self._catalog, holder=holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder_text() + "\n").encode(), 0)
        self._fd = fd

    # --- PostgreSQL --------------------------------------------------------

    def _acquire_advisory(self) -> None:
        connection = self.engine.connect()
        try:
            connection.execute(text("SELECT set_config('application_name', :name, false)"),
                               {"name": f"safehold scheduler {_holder_text()}"[:63]})
            got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": _PG_KEY}).scalar()
            connection.commit()  # session-level: the lock outlives this transaction
            if not got:
                holder = connection.execute(text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :high AND l.objid = :low "
                    "AND l.objsubid = 1 AND l.database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"),
                    {"high": _PG_KEY >> 32, "low": _PG_KEY & 0xFFFF_FFFF}).scalar()
                raise SchedulerRunning(catalog=self._catalog,
                                       holder=(holder or "another session").removeprefix("safehold scheduler "))
        except BaseException:
            connection.close()
            raise
        self._connection = connection
