"""Bringing a catalog database to the schema this code expects, with Alembic.

The Alembic environment ships inside the package (``migrations/``) and is
driven from code: no ``alembic.ini`` is needed at run time. The open path stays
cheap: one ``SELECT`` of ``alembic_version`` compared with ``HEAD_REVISION``;
Alembic itself is imported only when the database is behind.

Two processes may open a new catalog at the same moment (the scheduler and a
CLI command, or many workers on one PostgreSQL catalog), so the upgrade runs
under a lock and re-reads the revision once it holds it: SQLite's write lock
(``BEGIN IMMEDIATE``), or a transaction-scoped advisory lock on PostgreSQL.
Both databases have transactional DDL, so a failed migration leaves the
database as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from safehold.errors import CatalogSchemaTooNew

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

#: The newest revision in ``migrations/versions``. Kept here so that opening a
#: current catalog does not import Alembic or parse the migration scripts; a
#: unit test checks it against the script directory.
HEAD_REVISION = "0003"

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
WRITE_OPTION = "safehold_write_transaction"

# Arbitrary constant key for pg_advisory_xact_lock ("safehold" as 8 ASCII bytes, masked to int63).
_PG_MIGRATION_LOCK = int.from_bytes(b"safehold", "big") & 0x7FFF_FFFF_FFFF_FFFF


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic ``Config`` for the packaged migrations, built in code.

    Pass ``connection`` to run against an open connection (how ``upgrade``
    works); pass ``url`` for offline SQL generation (``sql=True``) or tools.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation: a literal % (URL-encoded password) must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in ``alembic_version``, or None for an empty database."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    revisions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if not revisions:
        return None
    if len(revisions) > 1:
        # Branches are never merged into a released catalog; say so rather than guess.
        raise CatalogSchemaTooNew(url="(catalog)", revision=",".join(sorted(revisions)), head=HEAD_REVISION)
    return str(revisions[0])


def is_current(engine: Engine) -> bool:
    """True when the database is already at ``HEAD_REVISION`` (one cheap query)."""
    with engine.connect() as connection:
        revision = current_revision(connection)
        connection.rollback()
    return revision == HEAD_REVISION


def upgrade(engine: Engine) -> bool:
    """Migrate the database to head if it is behind; True when a migration ran.

    Safe to call from several processes at once: one migrates, the others wait
    for its lock, see the new revision and return False.
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    with engine.connect() as connection:
        connection = connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            revision = current_revision(connection)
            if revision == HEAD_REVISION:
                return False
            config = alembic_config(connection=connection)
            script = ScriptDirectory.from_config(config)
            if revision is not None and not _known_revision(script, revision):
                raise CatalogSchemaTooNew(
                    url=engine.url.render_as_string(hide_password=True), revision=revision, head=HEAD_REVISION
                )
            command.upgrade(config, "head")
    return True


def _known_revision(script: ScriptDirectory, revision: str) -> bool:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except (RevisionError, CommandError):
        return False
