"""Restore a postgres dump snapshot into a PostgreSQL server: ``PostgresDestination``.

Each stored ``<database>.pgdump`` is piped, chunk by verified chunk, into ``pg_restore`` (no local
file). By default into a **new** database (the dump's name, or ``new_name``), created here and
dropped again by ``rollback`` when the restore fails: an existing database of that name is
refused in ``plan``. With ``clean`` the dump replaces the objects of an existing database
(``pg_restore --clean --if-exists``). Either way pg_restore runs as one transaction
(``--single-transaction``), so a failed restore changes nothing in an existing database.

``no_owner`` (restore tests into a throwaway cluster, a server without the original roles) leaves
ownership and grants out. A physical snapshot (``base.tar`` of pg_basebackup, with its WAL) is
extracted into a new or empty ``data_dir`` (``restore.pgdata``), a data directory that starts. The raw dump files need no destination of their own: ``safehold restore
SNAPSHOT DIR`` writes them into a directory like any file snapshot.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ..errors import DestinationError, PathNotInSnapshot, PostgresRestoreRefused, SafeholdError, UsageError
from ..platforms.postgres.connection import Server, dsn_has_password, version_text
from ..platforms.postgres.tools import find_tool
from .base import BlobReader, Progress, RestoreReport, SnapshotInfo
from .options import PostgresOptions
from .pipe import Feed

DUMP_SUFFIX = ".pgdump"  # as sources.postgres names them (this package does not import sources)


def _database_of(path: bytes) -> str | None:
    from urllib.parse import unquote

    try:
        name = path.decode()
    except UnicodeDecodeError:
        return None
    if "/" in name or not name.endswith(DUMP_SUFFIX):
        return None
    return unquote(name[: -len(DUMP_SUFFIX)])


def _version_number(text: str) -> int:
    """'15.18' -> 150018 (the form servers report); 0 when it cannot be read."""
    try:
        parts = [int(part) for part in text.split(".")[:2]]
    except ValueError:
        return 0
    if parts[0] >= 10:
        return parts[0] * 10000 + (parts[1] if len(parts) > 1 else 0)
    return parts[0] * 10000 + (parts[1] if len(parts) > 1 else 0) * 100


class PostgresDestination:
    def __init__(self, options: PostgresOptions, *, password: str | None = None, threads: int | None = None) -> None:
        if options.to_dsn is not None and dsn_has_password(options.to_dsn):
            raise UsageError("the destination DSN holds a password; pass it in the environment variable named by "
                             "--password-env (or a libpq passfile) instead")
        self.options = options
        self.server = Server(dsn=options.to_dsn or "", password=password)
        self.created: list[str] = []  # databases made by write: rollback drops them
        self.feed: Feed | None = None
        self.made_directory: str | None = None  # data_dir made by write (rollback removes it)
        self.emptied_directory: str | None = None  # data_dir that was empty (rollback empties it again)

    # -- plan --------------------------------------------------------------------------------
    def plan(self, snapshot: SnapshotInfo, items: Any) -> Any:
        facts = snapshot.source.get("postgres") or {}
        if snapshot.kind == "files" and facts.get("mode") == "physical":
            return self._plan_physical(snapshot, items)
        if snapshot.kind != "files" or facts.get("mode") != "dump":
            raise UsageError(f"snapshot {snapshot.short_id} of {snapshot.target} is not a postgres dump snapshot; "
                             "restore it to a directory with 'safehold restore'")
        if self.options.to_dsn is None or self.options.data_dir is not None:
            raise UsageError(f"snapshot {snapshot.short_id} holds dumps: restore them into a server with "
                             "--to-dsn (a data directory is for physical snapshots)")
        dumps: dict[str, dict] = {}
        for item in items:
            if item.get("type") == "file":
                database = _database_of(item["path"])
                if database is not None:
                    dumps[database] = item
        if self.options.database is not None:
            if self.options.database not in dumps:
                raise PathNotInSnapshot(path=self.options.database + DUMP_SUFFIX, snapshot=snapshot.short_id)
            chosen = [self.options.database]
        else:
            chosen = sorted(dumps)
            if not chosen:
                raise PathNotInSnapshot(path="*" + DUMP_SUFFIX, snapshot=snapshot.short_id)
            if self.options.new_name is not None and len(chosen) > 1:
                raise UsageError(f"snapshot {snapshot.short_id} holds {len(chosen)} databases "
                                 f"({', '.join(chosen)}); name the one to restore as {self.options.new_name!r} "
                                 "with --database")
        suffix = self.options.name_suffix or ""
        names = {database: self.options.new_name or database + suffix for database in chosen}
        version = self.server.version()
        dumped_with = _version_number(str(facts.get("tool_version", "")))
        tool = find_tool("pg_restore", max(version, dumped_with), self.options.bin_dir, self.server.describe())
        existing = set(self.server.databases())
        where = self.server.describe()
        for database, name in names.items():
            if name in existing and not self.options.clean:
                raise PostgresRestoreRefused(destination=f"{where} database {name!r}", detail="the database exists",
                                             advice="restore under another name (--as NAME), or pass --clean to "
                                                    "replace its contents (in one transaction)")
        return {"tool": tool.path, "server_version": version_text(version),
                "databases": [(database, names[database], names[database] in existing, dumps[database])
                              for database in chosen]}

    def _plan_physical(self, snapshot: SnapshotInfo, items: Any) -> Any:
        if self.options.data_dir is None or self.options.to_dsn is not None:
            raise UsageError(f"snapshot {snapshot.short_id} is a physical base backup: restore it into a new data "
                             "directory with --data-dir DIR (then start a server on it)")
        base = next((item for item in items if item.get("type") == "file" and item["path"] == b"base.tar"), None)
        if base is None:
            raise PathNotInSnapshot(path="base.tar", snapshot=snapshot.short_id)
        path = os.path.abspath(self.options.data_dir)
        if os.path.lexists(path):
            if os.path.islink(path) or not os.path.isdir(path):
                raise DestinationError(destination=path, detail="exists and is not a directory")
            if os.listdir(path):
                raise DestinationError(destination=path, detail="the data directory is not empty; give a new or "
                                       "empty one")
        owner = None
        if self.options.owner is not None:
            import pwd

            try:
                entry = pwd.getpwnam(self.options.owner)
            except KeyError:
                raise DestinationError(destination=path, detail=f"no user {self.options.owner!r} to own it") from None
            owner = (entry.pw_uid, entry.pw_gid)
        return {"physical": base, "path": path, "owner": owner}

    def _write_physical(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        from .pgdata import extract_base_tar

        path = plan["path"]
        if os.path.isdir(path):
            self.emptied_directory = path
        else:
            os.makedirs(path, mode=0o700)
            self.made_directory = path
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
            if plan["owner"] is not None:
                os.fchown(fd, *plan["owner"])
            files, written, skipped = extract_base_tar(reader, plan["physical"], fd, owner=plan["owner"],
                                                       progress=lambda done: progress(done, "base.tar"))
        finally:
            os.close(fd)
        report = RestoreReport(files=files, bytes_written=written, warnings=skipped,
                               details={"data_dir": path, "files": files})
        report.log.append(f"extracted the base backup into {path}: {files} files; start a server on it "
                          f"(pg_ctl -D {path} start) and it recovers to the end of the backup")
        return report

    # -- write -------------------------------------------------------------------------------
    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        from psycopg import sql

        if "physical" in plan:
            return self._write_physical(reader, plan, progress)

        report = RestoreReport()
        done = 0
        restored: dict[str, str] = {}
        for database, name, exists, item in plan["databases"]:
            if not exists:
                self.server.execute(None, sql.SQL("create database {}").format(sql.Identifier(name)))
                self.created.append(name)
                report.log.append(f"created database {name!r}")
            argv = [plan["tool"], "--no-password", "--single-transaction", f"--dbname={self.server.conninfo(name)}"]
            if self.options.clean:
                argv += ["--clean", "--if-exists"]
            if self.options.no_owner:
                argv += ["--no-owner", "--no-privileges"]
            self.feed = Feed(argv, env=self.server.environment())
            try:
                written = self.feed.pump(reader, item, lambda count, name=name: progress(done + count, name))
            except BrokenPipeError:
                written = None  # pg_restore stopped reading: its status and output say why
            status, output = self.feed.finish()
            self.feed = None
            if status != 0 or written is None:
                raise PostgresRestoreRefused(
                    destination=self.server.describe(name),
                    detail=f"pg_restore failed (exit status {status}): {output or 'no output'}",
                    advice="nothing was changed in an existing database (one transaction) and a database made for "
                           "the restore was dropped; fix what pg_restore reports (missing roles: --no-owner) and "
                           "run the restore again")
            done += written
            report.files += 1
            report.bytes_written += written
            restored[database] = name
            report.log.append(f"restored database {database!r} into {name!r} on {self.server.describe(name)}"
                              f"{' (clean)' if exists else ''}")
        report.details = {"server": self.server.describe(), "server_version": plan["server_version"],
                          "databases": restored, "clean": self.options.clean}
        return report

    def commit(self) -> None:
        self.created = []
        self.made_directory = self.emptied_directory = None

    def rollback(self) -> None:
        from psycopg import sql

        if self.made_directory is not None:
            shutil.rmtree(self.made_directory, ignore_errors=True)
            self.made_directory = None
        if self.emptied_directory is not None:
            for name in os.listdir(self.emptied_directory):
                entry = os.path.join(self.emptied_directory, name)
                if os.path.isdir(entry) and not os.path.islink(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    os.unlink(entry)
            self.emptied_directory = None
        if self.feed is not None:
            self.feed.kill()
            self.feed = None
        while self.created:
            name = self.created[-1]
            try:
                self.server.execute(None, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            except SafeholdError:
                pass  # the server went away: nothing more can be undone from here
            self.created.pop()
