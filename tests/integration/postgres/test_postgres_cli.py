"""The postgres commands as a user runs them: the real ``safehold`` CLI in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from postgres_support import PASSWORD, write_config


def cli(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, SAFEHOLD_CONFIG=str(config), SAFEHOLD_TEST_PG_SUITE_PASSWORD=PASSWORD, **env)
    return subprocess.run([sys.executable, "-m", "safehold.cli.main", *args], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_backup_then_postgres_restore_as_a_new_database(pg_url, pg_server, make_database, tmp_path):
    database = make_database(rows=500)
    config = write_config(tmp_path, f'{{type: postgres, dsn: "{pg_url}", databases: [{database}]}}')
    assert cli(config, "init").returncode == 0
    backup = cli(config, "backup", "--target", "db", "--json")
    assert backup.returncode == 0, backup.stderr
    copy = f"cli_copy_{uuid.uuid4().hex[:8]}"
    try:
        restored = cli(config, "postgres", "restore", "latest:db", "--database", database, "--as", copy,
                       "--to-dsn", pg_url, "--json", "--password-env", "SOME_PASSWORD", SOME_PASSWORD="unused")
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["databases"] == {database: copy}
        assert pg_server.execute(copy, "select count(*) from orders") == [(500,)]
        again = cli(config, "postgres", "restore", "latest:db", "--database", database, "--as", copy,
                    "--to-dsn", pg_url)
        assert again.returncode == 33 and "the database exists" in again.stderr and "--clean" in again.stderr
    finally:
        pg_server.execute(None, f'drop database if exists "{copy}" with (force)')

    refused = cli(config, "postgres", "restore", "latest:db", "--to-dsn", "postgresql://postgres:hunter2@db/x")
    assert refused.returncode == 2 and "holds a password" in refused.stderr
    assert "hunter2" not in refused.stderr + refused.stdout
    catalog = tmp_path / "state" / "catalog.db"
    assert b"hunter2" not in catalog.read_bytes()  # refused before the job row was written


def test_config_check_accepts_postgres_and_command_sources(tmp_path):
    config = write_config(tmp_path, '{type: postgres, host: db.internal, user: backup, password_env: PGPW}')
    checked = cli(config, "config", "check")
    assert checked.returncode == 0, checked.stderr
    assert "not supported" not in checked.stdout + checked.stderr
