"""A server that asks for a password: it reaches psycopg and the tools only through the
environment, never a command line; a wrong one fails with a clear error. Runs against a
throwaway cluster with scram-sha-256 authentication (the test services' server trusts everyone)."""

from __future__ import annotations

import os
import stat

import pytest

from safehold import errors

SECRET = "s3cret-Password-7"


def test_the_password_goes_through_the_environment_only(safehold, tmp_path, monkeypatch):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot
    from safehold.platforms.postgres.cluster import TemporaryCluster

    cluster = TemporaryCluster(password=SECRET)
    server = cluster.start()
    try:
        server.execute(None, "create database shop")
        server.execute("shop", "create table orders as select generate_series(1, 50) as id")
        # Wrappers that record each tool's command line and whether it got the password, then run it.
        wrappers = tmp_path / "bin"
        wrappers.mkdir()
        record = tmp_path / "argv"
        for tool in ("pg_dump", "pg_dumpall", "pg_restore"):
            script = wrappers / tool
            script.write_text(f'#!/bin/sh\necho "{tool} $* PGPASSWORD-set=${{PGPASSWORD:+yes}}" >> {record}\n'
                              f'exec /usr/lib/postgresql/15/bin/{tool} "$@"\n')
            script.chmod(script.stat().st_mode | stat.S_IXUSR)
        dsn = f"host={server.host} port={server.port} user=postgres dbname=postgres"
        monkeypatch.setenv("SAFEHOLD_TEST_PG_PASSWORD", SECRET)
        context = safehold(f'{{type: postgres, dsn: "{dsn}", databases: [shop], password_env: SAFEHOLD_TEST_PG_PASSWORD, '
                           f'bin_dir: {wrappers}}}')
        snapshot = backup_target(context, "db").snapshot_id
        restore_snapshot(context, snapshot, {"kind": "postgres", "to_dsn": dsn, "database": "shop", "new_name": "copy",
                                             "password_env": "SAFEHOLD_TEST_PG_PASSWORD", "bin_dir": str(wrappers)})
        assert server.execute("copy", "select count(*) from orders") == [(50,)]
        lines = [line for line in record.read_text().splitlines() if "--version" not in line]
        assert {line.split()[0] for line in lines} == {"pg_dump", "pg_dumpall", "pg_restore"}
        assert all(line.endswith("PGPASSWORD-set=yes") for line in lines)
        assert SECRET not in record.read_text()
        job_log = " ".join(r.message for job in context.catalog.list_jobs() for r in context.catalog.job_logs(job.id))
        assert SECRET not in job_log

        monkeypatch.setenv("SAFEHOLD_TEST_PG_PASSWORD", "wrong")
        with pytest.raises(errors.PostgresError, match="password authentication failed") as caught:
            backup_target(context, "db")
        assert "wrong" not in str(caught.value)
    finally:
        cluster.stop()
        os.environ.pop("SAFEHOLD_TEST_PG_PASSWORD", None)
