"""Restore tests of postgres targets: the newest dump restored into a throwaway cluster that
safehold starts itself (initdb, pg_ctl), a sql health check run there, the ART recorded, and the
cluster gone afterwards."""

from __future__ import annotations

import glob

import pytest

from safehold import errors


def clusters() -> set[str]:
    return set(glob.glob("/tmp/safehold-pg-*"))


def test_a_sql_health_check_passes_in_a_throwaway_cluster(pg_url, make_database, safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore_test import run_restore_test

    database = make_database(rows=300)
    context = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: [{database}]}}',
                       restore_test='{every: 1d, health_check: {type: sql, query: "select count(*) from orders", '
                                    'expect: ">0"}}')
    backup_target(context, "db")
    before = clusters()
    result = run_restore_test(context, "db")
    assert result.passed and "returned 300" in result.detail
    assert result.art_seconds > 0 and result.rto_met
    assert result.health_check == "sql 'select count(*) from orders' expect >0"
    assert clusters() == before  # the throwaway cluster is stopped and removed
    job = context.catalog.list_jobs(kind="restore-test")[0]
    assert job.status == "succeeded"
    lines = [record.message for record in context.catalog.job_logs(job.id)]
    assert any("temporary PostgreSQL cluster started" in line for line in lines)


@pytest.mark.parametrize("check, detail", [
    ('{type: sql, query: "select count(*) from orders", expect: "=0"}', "returned 300, expected =0"),
    ('{type: sql, query: "select count(*) from missing_table", expect: ">0"}', "query failed"),
    ('{type: command, run: "psql -XAtc \'select 1\' $NOPE >/dev/null; test \\"$PGUSER\\" = nobody"}', "exit status 1"),
])
def test_a_failing_check_fails_the_restore_test(pg_url, make_database, safehold, check, detail):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore_test import run_restore_test

    database = make_database(rows=300)
    context = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: [{database}]}}',
                       restore_test=f"{{every: 1d, health_check: {check}}}")
    backup_target(context, "db")
    before = clusters()
    with pytest.raises(errors.RestoreTestFailed, match=detail):
        run_restore_test(context, "db")
    assert clusters() == before


def test_a_command_check_reaches_the_throwaway_cluster(pg_url, make_database, safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore_test import run_restore_test

    database = make_database(rows=42)
    check = (f'{{type: command, run: "test $(/usr/lib/postgresql/15/bin/psql -XAt -d {database} '
             f'-c \'select count(*) from orders\') = 42"}}')
    context = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: [{database}]}}',
                       restore_test=f"{{every: 1d, health_check: {check}}}")
    backup_target(context, "db")
    assert run_restore_test(context, "db").passed


def test_a_given_server_receives_the_restore_under_new_names_dropped_afterwards(pg_url, pg_server, make_database,
                                                                                 safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore_test import run_restore_test

    database = make_database(rows=12)
    context = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: [{database}]}}',
                       restore_test=f'{{every: 1d, server: {{dsn: "{pg_url}"}}, health_check: {{type: sql, '
                                    'query: "select count(*) from orders", expect: "=12"}}')
    backup_target(context, "db")
    before = set(pg_server.databases())
    result = run_restore_test(context, "db")
    assert result.passed and "returned 12" in result.detail
    assert set(pg_server.databases()) == before  # the copy (<name>_safehold_test_<job>) is gone again
    lines = [r.message for r in context.catalog.job_logs(result.job_id)]
    assert any(f"as {database}_safehold_test_{result.job_id}" in line for line in lines)
