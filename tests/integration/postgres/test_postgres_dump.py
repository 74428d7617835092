"""postgres sources in dump mode against the real PostgreSQL of the test services: a backup
streamed into the repository, a restore into a new database that is then queried, --clean, a
failed --clean restore that changes nothing, and the refusals (a DSN with a password, a pg_dump
older than the server)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from safehold import errors


def source(pg_url: str, database: str, **extra: str) -> str:
    options = "".join(f", {key}: {value}" for key, value in extra.items())
    return f'{{type: postgres, dsn: "{pg_url}", databases: [{database}]{options}}}'


def snapshots(context) -> list:
    with context.locked() as repository:
        return repository.list_snapshots()


def drop(server, name: str) -> None:
    from psycopg import sql

    server.execute(None, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def test_dump_backup_and_restore_into_a_new_database(pg_url, pg_server, make_database, safehold, tmp_path):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot

    database = make_database(rows=2000)
    context = safehold(source(pg_url, database))
    result = backup_target(context, "db")
    assert result.summary["files"] == 2  # globals.sql and the database's dump
    facts = snapshots(context)[-1].source["postgres"]
    assert facts["mode"] == "dump" and facts["databases"] == [database] and facts["server_version"].startswith("15")

    copy = database + "_copy"
    try:
        outcome = restore_snapshot(context, result.snapshot_id, {"kind": "postgres", "to_dsn": pg_url,
                                                                 "database": database, "new_name": copy})
        assert outcome.details["databases"] == {database: copy}
        assert pg_server.execute(copy, "select count(*), sum(amount) from orders") == \
            pg_server.execute(database, "select count(*), sum(amount) from orders")

        # An existing database is never overwritten by default ...
        with pytest.raises(errors.DestinationError, match="the database exists"):
            restore_snapshot(context, result.snapshot_id, {"kind": "postgres", "to_dsn": pg_url,
                                                           "database": database, "new_name": copy})
        # ... and --clean replaces its contents.
        pg_server.execute(copy, "delete from orders where id > 10")
        restore_snapshot(context, result.snapshot_id, {"kind": "postgres", "to_dsn": pg_url, "database": database,
                                                       "new_name": copy, "clean": True})
        assert pg_server.execute(copy, "select count(*) from orders") == [(2000,)]
    finally:
        drop(pg_server, copy)

    # The raw dump files restore into a directory like any file snapshot; pg_restore reads them.
    out = tmp_path / "raw"
    restore_snapshot(context, result.snapshot_id, str(out))
    listing = subprocess.run(["/usr/lib/postgresql/15/bin/pg_restore", "--list", str(out / f"{database}.pgdump")],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public orders" in listing
    assert "CREATE ROLE" in (out / "globals.sql").read_text()


def test_a_failed_clean_restore_leaves_the_existing_database_as_it_was(pg_url, pg_server, make_database, safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot

    database = make_database(rows=100)
    context = safehold(source(pg_url, database))
    snapshot = backup_target(context, "db").snapshot_id
    copy = database + "_busy"
    pg_server.execute(None, f'create database "{copy}"')
    try:
        # A view of the existing 'orders' that --clean cannot drop makes pg_restore fail midway.
        pg_server.execute(copy, "create table orders (x int); insert into orders values (7); "
                                "create view depends as select * from orders")
        with pytest.raises(errors.DestinationError, match="pg_restore failed"):
            restore_snapshot(context, snapshot, {"kind": "postgres", "to_dsn": pg_url, "database": database,
                                                 "new_name": copy, "clean": True})
        assert pg_server.execute(copy, "select * from depends") == [(7,)]  # one transaction: nothing changed
    finally:
        drop(pg_server, copy)


def test_a_dsn_with_a_password_is_refused(safehold):
    for dsn in ("postgresql://postgres:secret@127.0.0.1/postgres", "host=127.0.0.1 user=postgres password=secret",
                "postgresql://postgres@127.0.0.1/postgres?password=secret"):
        with pytest.raises(errors.ConfigError, match="holds a password") as caught:
            safehold(f'{{type: postgres, dsn: "{dsn}"}}')
        assert "password_env" in str(caught.value)


def test_a_pg_dump_older_than_the_server_is_refused_before_anything_runs(pg_url, make_database, safehold, tmp_path):
    from safehold.engine.backup import backup_target

    database = make_database(rows=10)
    old = tmp_path / "old-bin"
    old.mkdir()
    ran = tmp_path / "ran"
    for tool in ("pg_dump", "pg_dumpall"):
        script = old / tool
        script.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && echo '{tool} (PostgreSQL) 12.9' && exit 0\n"
                          f"touch {ran}\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    context = safehold(source(pg_url, database, bin_dir=str(old)))
    with pytest.raises(errors.PostgresToolTooOld) as caught:
        backup_target(context, "db")
    assert "pg_dump 12.9" in str(caught.value) and "(15." in str(caught.value)
    assert "postgresql-client-15" in caught.value.hint
    assert caught.value.exit_code == 67
    assert not ran.exists()
    assert snapshots(context) == []


def test_the_password_reaches_the_tools_only_through_the_environment(monkeypatch):
    from safehold.platforms.postgres.connection import Server

    server = Server(host="db.internal", port=5433, user="backup", password="s3cret")
    assert "s3cret" not in server.conninfo("shop")
    assert server.environment()["PGPASSWORD"] == "s3cret"
    monkeypatch.setenv("PGHOST", "elsewhere")
    assert "PGHOST" not in server.environment()
    with pytest.raises(errors.PostgresError, match="holds a password"):
        Server(dsn="postgresql://u:p@h/db")
    assert os.environ.get("PGPASSWORD") != "s3cret"


def test_a_database_with_an_awkward_name_round_trips(pg_url, pg_server, safehold, tmp_path):
    from psycopg import sql

    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot

    name = f"odd/näme {os.getpid()} 100%"
    copy = name + " copy"
    pg_server.execute(None, sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        pg_server.execute(name, "create table t as select 1 as x")
        context = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: ["{name}"], globals: false}}')
        snapshot = backup_target(context, "db").snapshot_id
        restore_snapshot(context, snapshot, {"kind": "postgres", "to_dsn": pg_url, "new_name": copy})
        assert pg_server.execute(copy, "select x from t") == [(1,)]
        restore_snapshot(context, snapshot, str(tmp_path / "raw"))
        assert [p.name for p in (tmp_path / "raw").iterdir()] == ["odd%2Fn%C3%A4me " + str(os.getpid()) + " 100%25.pgdump"]
    finally:
        for database in (name, copy):
            pg_server.execute(None, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database)))
