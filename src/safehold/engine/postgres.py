"""Restore tests and drills of postgres targets: the newest dump snapshot restored into a
throwaway PostgreSQL cluster (``platforms.postgres.cluster.TemporaryCluster``: initdb, pg_ctl, a
private Unix socket, removed afterwards) and checked there with a query (``sql`` health check).

The actual recovery time includes starting the cluster and the whole pg_restore (for mode physical:
extracting the base backup and starting a server on it, which replays its WAL): what a recovery
onto a fresh server costs. Ownership and grants are left out (the throwaway server has none of
the original roles), and databases that exist in a fresh cluster (``postgres``) are restored over
with ``--clean``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .. import errors
from ..config.restore_test import SQL_EXPECT, SqlCheck

if TYPE_CHECKING:
    from ..catalog import JobHandle
    from .context import Context
    from .restore import RestoreOutcome


def restore_into_throwaway_cluster(context: Context, job: JobHandle, target: Any, check: Any,
                                   run_other_check: Any, snapshot_ref: str = "latest"
                                   ) -> tuple[RestoreOutcome, bool, str]:
    """Restore ``target``'s newest snapshot (or ``snapshot_ref``: a drill's choice) into a temporary
    cluster and run ``check`` there; returns (outcome, passed, detail). ``run_other_check(check, env)``
    runs a non-sql check (a command gets PGHOST, PGPORT and PGUSER of the cluster)."""
    from ..platforms.postgres.cluster import TemporaryCluster
    from .restore import restore_in_job

    given = target.restore_test.server if target.restore_test is not None else None
    if given is not None:
        if target.source.mode != "dump":
            raise errors.UsageError(f"target {target.name!r}: a base backup (mode physical) cannot be restored into "
                                    "a running server; leave restore_test.server out to use a throwaway cluster")
        return _restore_into_given_server(context, job, target, check, given, run_other_check, snapshot_ref)
    cluster = TemporaryCluster(bin_dir=target.source.bin_dir)
    try:
        if target.source.mode == "physical":
            # The base backup becomes the throwaway cluster's data directory; starting it replays the
            # WAL the backup carries, as a real recovery would.
            cluster.prepare()
            spec = {"kind": "postgres", "data_dir": cluster.data, "owner": cluster.run_as}
            outcome = restore_in_job(context, job, snapshot_ref, spec, target=target.name)
            job.log(f"restored snapshot {outcome.snapshot_id[:8]}: {outcome.files} files, "
                    f"{outcome.bytes_written} bytes in {outcome.duration:.2f}s")
            server = cluster.start_restored(user=target.source.user or "postgres")
            job.log(f"a server started on the restored data directory in {cluster.root} and recovered")
            databases = {name: name for name in server.databases()}
        else:
            server = cluster.start()
            job.log(f"temporary PostgreSQL cluster started in {cluster.root}")
            spec = {"kind": "postgres", "to_dsn": server.conninfo(), "no_owner": True, "clean": True,
                    "bin_dir": target.source.bin_dir}
            outcome = restore_in_job(context, job, snapshot_ref, spec, target=target.name)
            job.log(f"restored snapshot {outcome.snapshot_id[:8]}: {outcome.files} database(s), "
                    f"{outcome.bytes_written} bytes in {outcome.duration:.2f}s")
            databases = outcome.details.get("databases", {})
        if isinstance(check, SqlCheck):
            passed, detail = run_sql_check(server, check, databases)
        else:
            passed, detail = run_other_check(check, {"PGHOST": str(server.host), "PGPORT": str(server.port),
                                                     "PGUSER": "postgres"})
        return outcome, passed, detail
    finally:
        cluster.stop()


def _restore_into_given_server(context: Context, job: JobHandle, target: Any, check: Any, given: Any,
                               run_other_check: Any, snapshot_ref: str = "latest"
                               ) -> tuple[RestoreOutcome, bool, str]:
    """The restore test's databases go into an existing server under new names, dropped afterwards."""
    import os

    from psycopg import sql

    from ..platforms.postgres.connection import Server
    from .restore import restore_in_job

    password = os.environ.get(given.password_env) if given.password_env else None
    server = Server(dsn=given.dsn, password=password)
    suffix = f"_safehold_test_{job.id}"
    spec = {"kind": "postgres", "to_dsn": given.dsn, "password_env": given.password_env, "no_owner": True,
            "name_suffix": suffix, "bin_dir": target.source.bin_dir}
    databases: dict[str, str] = {}
    try:
        outcome = restore_in_job(context, job, snapshot_ref, spec, target=target.name)
        databases = outcome.details.get("databases", {})
        job.log(f"restored snapshot {outcome.snapshot_id[:8]} into {server.describe()} as "
                f"{', '.join(databases.values())}: {outcome.bytes_written} bytes in {outcome.duration:.2f}s")
        if isinstance(check, SqlCheck):
            passed, detail = run_sql_check(server, check, databases)
        else:
            host, port = _host_and_port(server)
            passed, detail = run_other_check(check, {"PGHOST": host, "PGPORT": port})
        return outcome, passed, detail
    finally:
        for name in databases.values():
            try:
                server.execute(None, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            except errors.PostgresError as exc:
                job.log(f"could not drop the restore test's database {name!r}: {exc}", level="warning")


def _host_and_port(server: Any) -> tuple[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(server.conninfo())
    return str(parts.get("host", "")), str(parts.get("port", "5432"))


def run_sql_check(server: Any, check: SqlCheck, databases: dict[str, str]) -> tuple[bool, str]:
    """Run the check's query in the restored database; (passed, one-line detail)."""
    if check.database is not None:
        if check.database not in databases:
            return False, f"database {check.database!r} is not in the snapshot (restored: {', '.join(databases)})"
        database = databases[check.database]
    else:
        chosen = [name for name in databases if name not in ("postgres", "template0", "template1")] or list(databases)
        if len(chosen) != 1:
            return False, (f"the snapshot holds {len(chosen)} databases ({', '.join(chosen)}); name the one to "
                           "query with health_check.database")
        database = databases[chosen[0]]
    milliseconds = int(check.timeout.total_seconds() * 1000)
    try:
        with server.connect(database) as connection:
            connection.execute(f"set statement_timeout = {milliseconds}")
            row = connection.execute(check.query).fetchone()
    except errors.PostgresError as exc:
        return False, f"cannot connect to the restored database {database!r}: {exc.fields.get('detail')}"
    except Exception as exc:  # psycopg's errors: the query's own failure is the check's verdict
        return False, f"query failed: {' '.join(str(exc).split())[:500]}"
    value = row[0] if row else None
    return compare(value, check.expect, check.query)


def compare(value: Any, expect: str, query: str = "") -> tuple[bool, str]:
    shown = "no row" if value is None else repr(value) if not isinstance(value, (int, float, Decimal)) else str(value)
    match = SQL_EXPECT.match(expect)
    if match is None:
        passed = value is not None and str(value) == expect
        return passed, f"{query!r} returned {shown}" + ("" if passed else f", expected {expect!r}")
    operator, number = match.group(1), Decimal(match.group(2))
    try:
        actual = Decimal(str(value)) if value is not None and not isinstance(value, bool) else None
    except InvalidOperation:
        actual = None
    if actual is None:
        return False, f"{query!r} returned {shown}, not a number to compare with {expect}"
    passed = {">": actual > number, ">=": actual >= number, "<": actual < number, "<=": actual <= number,
              "=": actual == number, "!=": actual != number}[operator]
    return passed, f"{query!r} returned {shown}" + (f" ({expect.strip()})" if passed else f", expected {expect.strip()}")


