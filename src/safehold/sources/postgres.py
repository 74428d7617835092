"""PostgreSQL, application-consistent: ``PostgresSource``.

``mode: dump`` stores, per database, what ``pg_dump --format=custom`` writes (each dump is one
consistent snapshot of its database), plus the roles and tablespaces from ``pg_dumpall
--globals-only``, as files of a files snapshot:

    globals.sql                 roles, tablespaces (plain SQL)
    <database>.pgdump           one custom-format archive per database (its name percent-encoded
                                but for ASCII letters, digits, space and most punctuation: '/', '%'
                                and a leading '.' never appear as such)

``mode: physical`` stores ``pg_basebackup``'s tar stream of the whole cluster, with the WAL that
makes it consistent (``-X fetch``), as ``base.tar``; extracted, it is a data directory that starts.

Every dump goes from the tool's standard output through the chunker into the repository
(``stream.ChildOutput``): no temporary file, nothing of it on local disk. A tool that fails (the
server went away, a lock timeout) fails the backup before its snapshot is written.

The dumps are uncompressed by default (``compress: 0``): the custom format's own compression
compresses each table as one stream, so one changed row changes every compressed byte after it
and content-defined chunking finds nothing to share between days; uncompressed, only the chunks
around the changed rows are new, and the repository compresses each chunk anyway (measured in
docs/benchmarks.md).

The tools are matched to the server (``platforms.postgres.tools``): the server's major version
when installed, otherwise a newer one; older ones are refused before anything runs.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import quote

from ..errors import PostgresError
from ..platforms.postgres.connection import Server, version_text
from ..platforms.postgres.tools import Tool, find_tool
from .base import FileItem, View
from .stream import ChildOutput

GLOBALS_NAME = "globals.sql"
DUMP_SUFFIX = ".pgdump"
BASE_NAME = "base.tar"
STDERR_LINES = 50  # lines of the tools' standard error copied to the job log


def dump_name(database: str) -> str:
    """The file a database's dump is stored as: its name percent-encoded (UTF-8) but for ASCII
    letters, digits, space and most punctuation, '/', '%' and a leading '.' included, so it is
    always one safe, ASCII path component."""
    name = quote(database, safe=" !#$&'()+,;=@[]^_`{}~-")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return name + DUMP_SUFFIX


def read_secret(password_env: str | None, password_file: str | None) -> str | None:
    """The password from its file (first line) or environment variable; None when neither holds one."""
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as file:
                return file.readline().rstrip("\r\n")
        except OSError as exc:
            raise PostgresError(server="(password file)",
                                detail=f"cannot read {password_file}: {exc.strerror or exc}") from None
    if password_env:
        return os.environ.get(password_env)
    return None


class PostgresSource:
    def __init__(self, *, dsn: str | None = None, host: str | None = None, port: int | None = None,
                 user: str | None = None, password_env: str | None = None, password_file: str | None = None,
                 passfile: str | None = None, databases: list[str] | str = "all", mode: str = "dump",
                 compress: int = 0, globals: bool = True, bin_dir: str | None = None) -> None:
        self.server = Server(dsn=dsn, host=host, port=port, user=user,
                             password=read_secret(password_env, password_file), passfile=passfile)
        self.databases = databases
        self.mode = mode
        self.compress = compress
        self.globals = globals
        self.bin_dir = bin_dir
        self.warnings: list[str] = []
        self._stderr_lines = 0

    # -- the view ------------------------------------------------------------------------
    @contextmanager
    def open(self, parent_token: dict | None = None) -> Iterator[View]:
        version = self.server.version()  # PostgresError when the server cannot be reached
        where = self.server.describe()
        if self.mode == "physical":
            tool = find_tool("pg_basebackup", version, self.bin_dir, where)
            token = {"postgres": {"mode": "physical", "server_version": version_text(version),
                                  "tool_version": tool.version}}
            yield View(kind="files", paths=[where], items=lambda: self._physical(tool), token=token,
                       warnings=self.warnings)
            return
        available = self.server.databases()
        if self.databases == "all":
            wanted = available
        else:
            missing = [name for name in self.databases if name not in available]
            if missing:
                raise PostgresError(server=where, detail=f"no database {', '.join(map(repr, missing))} "
                                    f"(the server has: {', '.join(available) or 'none'})")
            wanted = list(self.databases)
        dump = find_tool("pg_dump", version, self.bin_dir, where)
        dumpall = find_tool("pg_dumpall", version, self.bin_dir, where) if self.globals else None
        token = {"postgres": {"mode": "dump", "server_version": version_text(version), "tool_version": dump.version,
                              "databases": wanted, "compress": self.compress, "globals": self.globals}}
        yield View(kind="files", paths=[where], items=lambda: self._dumps(dump, dumpall, wanted), token=token,
                   warnings=self.warnings)

    def _dumps(self, dump: Tool, dumpall: Tool | None, databases: list[str]) -> Iterator[FileItem]:
        if dumpall is not None:
            argv = [dumpall.path, "--globals-only", "--no-password", f"--dbname={self.server.conninfo()}"]
            yield self._item(GLOBALS_NAME, argv, "pg_dumpall --globals-only")
        for database in databases:
            argv = [dump.path, "--format=custom", f"--compress={self.compress}", "--no-password",
                    f"--dbname={self.server.conninfo(database)}"]
            yield self._item(dump_name(database), argv, f"pg_dump of database {database!r}", database)

    def _physical(self, tool: Tool) -> Iterator[FileItem]:
        # -D - writes one tar to standard output; -X fetch puts the WAL needed for consistency in it
        # (streaming WAL, -X stream, cannot go to standard output).
        argv = [tool.path, "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast", "--no-password",
                f"--dbname={self.server.conninfo()}"]
        yield self._item(BASE_NAME, argv, "pg_basebackup")

    def _item(self, name: str, argv: list[str], what: str, database: str | None = None) -> FileItem:
        now = time.time_ns()  # never equal to the parent's: a dump is always read again
        server = self.server.describe(database)

        def fail(detail: str) -> PostgresError:
            return PostgresError(server=server, detail=f"{what} failed: {detail}")

        def stderr(line: str) -> None:
            if line.strip() and self._stderr_lines < STDERR_LINES:
                self.warnings.append(f"{what}: {line}")
            self._stderr_lines += 1

        return FileItem(path=name.encode(), type="file", mode=0o600, uid=os.getuid(), gid=os.getgid(), user="",
                        group="", mtime_ns=now, ctime_ns=now, atime_ns=now, inode=0, device=0, size=0,
                        open=lambda: ChildOutput(argv, env=self.server.environment(), fail=fail, on_stderr=stderr))
