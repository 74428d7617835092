"""API tokens in the catalog: only a hash is stored, roles are ordered, revoked tokens stop working."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from sqlalchemy import text

from safehold.catalog import Catalog
from safehold.catalog.tokens import LAST_USED_RESOLUTION, ROLES, TOKEN_PREFIX, TokenStore, hash_token, role_allows
from safehold.errors import TokenNotFound, UsageError


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(tmp_path, clock) -> TokenStore:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}", clock=clock)
    yield TokenStore(catalog)
    catalog.close()


def test_only_the_hash_is_stored(tokens: TokenStore) -> None:
    record, secret = tokens.create("grafana", "viewer")
    assert secret.startswith(TOKEN_PREFIX) and len(secret) > 40
    with tokens.catalog.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_tokens")).all()
    stored = " ".join(str(value) for row in rows for value in row)
    assert secret not in stored and secret[len(TOKEN_PREFIX):] not in stored
    assert hash_token(secret) in stored
    assert record.role == "viewer" and record.name == "grafana" and record.active


def test_authenticate_finds_the_token_and_refuses_others(tokens: TokenStore) -> None:
    record, secret = tokens.create("ci", "operator")
    _, other_secret = tokens.create("ops", "admin")
    assert tokens.authenticate(secret).id == record.id
    assert tokens.authenticate(other_secret).role == "admin"
    assert tokens.authenticate(secret + "x") is None
    assert tokens.authenticate(secret[len(TOKEN_PREFIX):]) is None  # without its prefix
    assert tokens.authenticate("") is None


def test_revoked_tokens_stop_working_and_revoke_is_idempotent(tokens: TokenStore, clock: Clock) -> None:
    record, secret = tokens.create("ci", "operator")
    revoked = tokens.revoke(record.id)
    assert revoked.revoked_at == clock.now and not revoked.active
    assert tokens.authenticate(secret) is None
    clock.now += dt.timedelta(hours=1)
    assert tokens.revoke(record.id).revoked_at == revoked.revoked_at
    assert [token.id for token in tokens.list()] == []
    assert [token.id for token in tokens.list(include_revoked=True)] == [record.id]
    with pytest.raises(TokenNotFound):
        tokens.revoke(999)


def test_last_used_is_recorded_at_most_once_a_minute(tokens: TokenStore, clock: Clock) -> None:
    record, secret = tokens.create("ci", "viewer")
    tokens.authenticate(secret)
    first = clock.now
    assert tokens.get(record.id).last_used_at == first
    clock.now += LAST_USED_RESOLUTION / 2
    tokens.authenticate(secret)
    assert tokens.get(record.id).last_used_at == first
    clock.now += LAST_USED_RESOLUTION
    tokens.authenticate(secret)
    assert tokens.get(record.id).last_used_at == clock.now


def test_roles_are_ordered() -> None:
    assert ROLES == ("viewer", "operator", "admin")
    assert role_allows("admin", "viewer") and role_allows("operator", "operator")
    assert not role_allows("viewer", "operator") and not role_allows("operator", "admin")


@pytest.mark.parametrize("name, role", [("ci", "root"), ("", "viewer"), ("   ", "admin")])
def test_bad_requests_are_usage_errors(tokens: TokenStore, name: str, role: str) -> None:
    with pytest.raises(UsageError):
        tokens.create(name, role)


def test_a_catalog_at_revision_0001_gains_the_token_table_and_keeps_its_jobs(tmp_path) -> None:
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from safehold.catalog import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection=connection), "0001")
        connection.execute(text("INSERT INTO jobs (kind, status, created_at, bytes_read, bytes_added, files) "
                                "VALUES ('backup', 'succeeded', '2025-01-01 00:00:00.000000', 1, 2, 3)"))
    assert "api_tokens" not in inspect(engine).get_table_names()
    engine.dispose()
    with Catalog.open(url) as catalog:
        assert [job.bytes_added for job in catalog.list_jobs()] == [2]
        record, secret = TokenStore(catalog).create("after-upgrade", "admin")
        assert TokenStore(catalog).authenticate(secret) == record


@pytest.mark.skipif(
    not os.environ.get("SAFEHOLD_TEST_POSTGRES_URL"),
    reason="set SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://... to run against PostgreSQL",
)
def test_tokens_on_postgresql() -> None:
    url = os.environ["SAFEHOLD_TEST_POSTGRES_URL"]
    with Catalog.open(url) as catalog:
        tokens = TokenStore(catalog)
        record, secret = tokens.create(f"pg-{os.getpid()}", "operator")
        assert tokens.authenticate(secret).id == record.id
        assert tokens.get(record.id).last_used_at is not None
        assert tokens.revoke(record.id).revoked_at is not None
        assert tokens.authenticate(secret) is None
