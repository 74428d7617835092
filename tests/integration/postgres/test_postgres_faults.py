"""A server killed during the dump, and what a second day's dump adds: against PostgreSQL itself.

The server killed here is a throwaway cluster of this test's own (``TemporaryCluster``), never the
test services' server that other suites share."""

from __future__ import annotations

import threading
import time

import pytest

from postgres_support import change_rows, fill_orders

from safehold import errors


def test_a_server_killed_mid_dump_writes_no_snapshot_and_says_why(safehold):
    from safehold.engine.backup import backup_target
    from safehold.platforms.postgres.cluster import TemporaryCluster

    cluster = TemporaryCluster(150000)
    server = cluster.start()
    try:
        server.execute(None, "create database shop")
        fill_orders(server, "shop", rows=300_000, payload=200)  # a dump of ~70 MiB: seconds to stream
        dsn = f"host={server.host} port={server.port} user=postgres dbname=postgres"
        context = safehold(f'{{type: postgres, dsn: "{dsn}", databases: [shop]}}')
        killed = threading.Event()

        def kill_during_copy() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    rows = server.execute(None, "select 1 from pg_stat_activity where query like 'COPY public.orders%'")
                except errors.PostgresError:
                    return
                if rows:
                    time.sleep(0.2)  # some of it is in the repository's chunks by now
                    cluster.stop_server("immediate")
                    killed.set()
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=kill_during_copy)
        watcher.start()
        with pytest.raises(errors.PostgresError) as caught:
            backup_target(context, "db")
        watcher.join()
        assert killed.is_set(), "the dump finished before the server could be killed"
        message = str(caught.value)
        assert "pg_dump of database 'shop' failed" in message and "exit status 1" in message
        assert caught.value.exit_code == 68
        with context.locked() as repository:
            assert repository.list_snapshots() == []
        job = context.catalog.list_jobs(kind="backup")[0]
        assert job.status == "failed"
    finally:
        cluster.stop()


def test_a_second_dump_after_one_percent_changed_rows_adds_little(pg_url, pg_server, make_database, safehold):
    """Uncompressed dumps (the default) deduplicate between days where the changes are; bytes
    measured in docs/benchmarks.md (bench/postgres_dedup.py)."""
    from safehold.engine.backup import backup_target

    database = make_database(rows=60_000, payload=200)
    context = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: [{database}], globals: false}}')
    first = backup_target(context, "db").summary
    # The newest 1 % of the orders change (the usual pattern: recent orders are still worked on).
    pg_server.execute(database, "update orders set amount = amount + 1, note = md5(note) || substr(note, 33) "
                                "where id > 59400")
    second = backup_target(context, "db").summary
    assert second["bytes_read"] >= first["bytes_read"] * 0.95  # the whole dump was read again ...
    assert second["bytes_added"] < first["bytes_added"] * 0.35  # ... and most of it was already stored
    print(f"dump {second['bytes_read']} bytes: first backup added {first['bytes_added']}, "
          f"second {second['bytes_added']} ({second['bytes_added'] / first['bytes_added']:.1%})")


def test_changed_rows_spread_over_the_table(pg_url, pg_server, make_database, safehold):
    """1 % of the rows changed across the whole table still restore exactly (the dump is re-read)."""
    from safehold.engine.backup import backup_target

    database = make_database(rows=5000)
    context = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: [{database}], globals: false}}')
    backup_target(context, "db")
    assert change_rows(pg_server, database, 1) == 50
    second = backup_target(context, "db")
    assert second.parent_id is not None and second.summary["files"] == 1
