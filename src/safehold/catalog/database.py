"""The SQLAlchemy engine for a catalog URL, with what SQLite needs for concurrency.

SQLite: the parent directory is created, WAL journaling lets readers and one
writer proceed together, a 30 s busy timeout makes a second writer wait
instead of failing, and transactions opened with the ``WRITE_OPTION``
execution option start with ``BEGIN IMMEDIATE``. PostgreSQL needs none of this
(``pool_pre_ping`` only, for connections a server or proxy dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from safehold.catalog.migrate import WRITE_OPTION
from safehold.files import create_private_file, make_private_directory

#: Seconds a writer waits for another process's write lock before failing.
BUSY_TIMEOUT_SECONDS = 30.0


def create_catalog_engine(url: str | URL) -> Engine:
    """An Engine for the catalog, with the SQLite settings concurrency needs."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)

    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if not in_memory and url.query.get("uri") not in ("true", "1"):
        # SQLite would create the file with the umask's mode (0644 under umask 022), and its -wal
        # and -shm files copy the database's mode: pre-create it 0600 in a 0700 folder. Not by
        # setting the umask, which is per process and would race the server's other threads.
        path = Path(database).expanduser()
        make_private_directory(path.parent)
        create_private_file(path)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": BUSY_TIMEOUT_SECONDS}}
    if in_memory:
        # One shared connection, or each checkout would see its own empty database.
        kwargs.update(poolclass=StaticPool)
        kwargs["connect_args"]["check_same_thread"] = False
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Take transaction control from the sqlite3 module (which would not
        # BEGIN before SELECT or DDL); _on_begin below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            if not in_memory:
                # WAL: readers never block the writer and the writer never blocks
                # readers. synchronous=NORMAL in WAL mode survives a crash of the
                # process and cannot corrupt the file; a power cut may lose the
                # last few commits (log lines, progress), which is not worth an
                # fsync per log line. Snapshots themselves live in the repository.
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes cannot wait for
        # the lock (SQLite returns SQLITE_BUSY at once to avoid a deadlock), so
        # writers take the write lock first and wait up to busy_timeout for it.
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine
