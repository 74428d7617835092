"""mode physical: pg_basebackup's tar (with the WAL it needs) streamed into the repository, then
extracted into a new data directory on which a server starts and answers. Runs against a throwaway
cluster of its own (a base backup of the shared services' server would copy every other suite's data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from safehold import errors

PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def test_a_physical_backup_restores_to_a_data_directory_that_starts(safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot
    from safehold.platforms.postgres.cluster import TemporaryCluster
    from safehold.platforms.postgres.connection import Server

    cluster = TemporaryCluster()
    server = cluster.start()
    place = tempfile.mkdtemp(prefix="safehold-pg-restored-")
    started = False
    try:
        server.execute(None, "create database shop")
        server.execute("shop", "create table orders as select i as id, md5(i::text) as note "
                               "from generate_series(1, 20000) i")
        dsn = f"host={server.host} port={server.port} user=postgres dbname=postgres"
        context = safehold(f'{{type: postgres, dsn: "{dsn}", mode: physical}}')
        result = backup_target(context, "db")
        assert result.summary["files"] == 1
        server.execute("shop", "insert into orders values (-1, 'after the backup')")

        data = os.path.join(place, "data")
        if os.geteuid() == 0:
            shutil.chown(place, "postgres", "postgres")
        # A dump-style restore of a physical snapshot is refused with the way to do it.
        with pytest.raises(errors.UsageError, match="--data-dir"):
            restore_snapshot(context, result.snapshot_id, {"kind": "postgres", "to_dsn": dsn})
        outcome = restore_snapshot(context, result.snapshot_id, {"kind": "postgres", "data_dir": data,
                                                                 "owner": "postgres" if os.geteuid() == 0 else None})
        assert outcome.details["data_dir"] == data and outcome.details["files"] > 100
        assert os.path.exists(os.path.join(data, "backup_label"))
        assert oct(os.stat(data).st_mode & 0o777) == "0o700"

        options = f"-c listen_addresses='' -c port=5432 -c unix_socket_directories='{place}'"
        subprocess.run(as_postgres([PG_CTL, "-D", data, "-l", os.path.join(place, "log"), "-w", "-t", "120",
                                    "-o", options, "start"]), check=True, capture_output=True)
        started = True
        restored = Server(host=place, port=5432, user="postgres")
        assert restored.execute("shop", "select count(*) from orders") == [(20000,)]  # as of the backup
    finally:
        if started:
            subprocess.run(as_postgres([PG_CTL, "-D", os.path.join(place, "data"), "-m", "immediate", "stop"]),
                           capture_output=True)
        shutil.rmtree(place, ignore_errors=True)
        cluster.stop()


def test_a_restore_test_of_a_physical_target_starts_the_base_backup_and_queries_it(safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore_test import run_restore_test
    from safehold.platforms.postgres.cluster import TemporaryCluster

    cluster = TemporaryCluster()
    server = cluster.start()
    try:
        server.execute(None, "create database shop")
        server.execute("shop", "create table orders as select generate_series(1, 777) as id")
        dsn = f"host={server.host} port={server.port} user=postgres dbname=postgres"
        context = safehold(f'{{type: postgres, dsn: "{dsn}", mode: physical}}',
                           restore_test='{every: 1d, health_check: {type: sql, database: shop, '
                                        'query: "select count(*) from orders", expect: "=777"}}')
        backup_target(context, "db")
        before = set(os.listdir(tempfile.gettempdir()))
        result = run_restore_test(context, "db")
        assert result.passed and "returned 777" in result.detail
        assert {name for name in set(os.listdir(tempfile.gettempdir())) - before if name.startswith("safehold-pg-")} \
            == set()
    finally:
        cluster.stop()
