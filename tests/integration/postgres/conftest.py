"""Fixtures of the postgres suite: the test services' PostgreSQL (SAFEHOLD_TEST_POSTGRES_URL, shared
with other suites: every test makes its own databases under unique names and drops them), a
throwaway cluster of our own where a test must kill the server, and a safehold context."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from postgres_support import fill_orders, write_config  # noqa: E402


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A libpq URI of the services' server; without it, a throwaway cluster for the session."""
    url = os.environ.get("SAFEHOLD_TEST_POSTGRES_URL")
    if url:
        yield url.replace("postgresql+psycopg://", "postgresql://", 1)
        return
    from safehold.platforms.postgres.cluster import TemporaryCluster

    cluster = TemporaryCluster(150000)
    server = cluster.start()
    try:
        yield f"postgresql://postgres@/postgres?host={server.host}&port={server.port}"
    finally:
        cluster.stop()


@pytest.fixture
def pg_server(pg_url):
    from safehold.platforms.postgres.connection import Server

    return Server(dsn=pg_url)


@pytest.fixture
def make_database(pg_server):
    """``make_database(rows=1000)`` -> the name of a new database holding an ``orders`` table; dropped after."""
    from psycopg import sql

    made: list[str] = []

    def make(rows: int = 1000, payload: int = 100) -> str:
        name = f"safehold_test_{uuid.uuid4().hex[:10]}"
        pg_server.execute(None, sql.SQL("create database {}").format(sql.Identifier(name)))
        made.append(name)
        fill_orders(pg_server, name, rows, payload)
        return name

    yield make
    for name in made:
        pg_server.execute(None, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def safehold(tmp_path, fast_kdf):
    """``safehold(source_yaml, restore_test=None)`` -> a Context whose target 'db' has that source, with a
    fresh repository."""
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    contexts = []

    def make(source: str, restore_test: str | None = None) -> Context:
        folder = tmp_path / f"ws-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        context = Context.load(write_config(folder, source, restore_test))
        init_repository(context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
