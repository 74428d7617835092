"""Fixtures shared across the test suites. Keep this small: helpers that only one
suite needs live in that suite's modules."""

from __future__ import annotations

import pytest

# A key derivation that costs microseconds: the real Argon2id parameters take
# ~0.15 s per key, which adds up over a few hundred repository tests.
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"correct horse battery staple"


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Make every key file written during the test use a cheap KDF (the default one too)."""
    from safehold.repository import crypto

    monkeypatch.setattr(crypto, "DEFAULT_KDF", dict(FAST_KDF))
    return dict(FAST_KDF)


@pytest.fixture
def memory_repository(fast_kdf: dict):
    """A freshly initialised repository on an in-memory backend, password ``PASSWORD``."""
    from safehold.repository import Repository
    from safehold.repository.backends.memory import MemoryBackend

    return Repository.init(MemoryBackend(), PASSWORD, fast_kdf)


# --- Running in parallel (pytest-xdist, as scripts/test.sh does) ----------------------------------
#
# scripts/test.sh runs `pytest -n N --dist loadgroup`, and the scheduler below decides the groups
# (each group's tests run in one worker process, one after another):
# - by default a test's file (module-scoped fixtures are built once, as in a serial run);
# - files that watch a service shared by the whole machine for what *other* tests leave behind
#   (every libvirt domain and image, the sshd's sftp.log, the throwaway PostgreSQL clusters under
#   /tmp/safehold-pg-*) share one group, "services", so they never run beside one another.
# The groups are computed from the node ids on the controller, not with xdist_group marks: xdist
# 3.8 carries a mark to the scheduler by rewriting the node id, which pytest 9.2 no longer allows
# (pytest-xdist issue 1386: the marks are silently ignored).
# Each worker gets a PostgreSQL database of its own for catalog tests (pytest_configure below):
# they drop every table of the catalog they are given.
SERIAL_GROUPS = {
    "services": ("tests/integration/libvirt/", "tests/integration/ssh/", "tests/integration/postgres/",
                 "tests/contract/", "tests/bench/test_ssh_bench_smoke.py"),
}


def group_of(nodeid: str) -> str:
    """The group a test runs in: a SERIAL_GROUPS name, else its file."""
    path = nodeid.split("::", 1)[0]
    for group, prefixes in SERIAL_GROUPS.items():
        if path.startswith(prefixes):
            return group
    return path


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ServiceGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ServiceGroupScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    import os

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    url = os.environ.get("SAFEHOLD_TEST_POSTGRES_URL")
    if not worker or not url:
        return
    # One database per worker on the test services' server, made afresh for this run.
    import psycopg
    from psycopg import sql

    base, _, _ = url.rpartition("/")
    name = f"safehold_worker_{worker}"
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    os.environ["SAFEHOLD_TEST_POSTGRES_URL"] = f"{base}/{name}"


@pytest.fixture
def new_pg_database():
    """``new_pg_database("prefix")`` -> the SQLAlchemy URL of a new, empty database on the test
    services' PostgreSQL (skips without SAFEHOLD_TEST_POSTGRES_URL); every one is dropped after."""
    import os
    import re
    import uuid

    url = os.environ.get("SAFEHOLD_TEST_POSTGRES_URL")
    made: list[str] = []
    admin = None

    def make(prefix: str) -> str:
        nonlocal admin
        if not url:
            pytest.skip("set SAFEHOLD_TEST_POSTGRES_URL to run against PostgreSQL")
        from sqlalchemy import create_engine, text

        admin = admin or create_engine(url, isolation_level="AUTOCOMMIT")
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", url, count=1)

    yield make
    if admin is not None:
        from sqlalchemy import text

        with admin.connect() as connection:
            for name in made:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
