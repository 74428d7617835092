"""Alembic environment for the safehold catalog.

Driven from code (``safehold.catalog.migrate``), which passes an open
connection in ``config.attributes["connection"]`` inside a transaction it
owns. For developers, the same environment also works from the command line
with the ``alembic.ini`` beside this file and a URL::

    alembic -c src/safehold/catalog/migrations/alembic.ini \\
        -x url=sqlite:////tmp/catalog.db revision --autogenerate -m "add drills"

and offline (``--sql``) to hand a DBA the SQL for a PostgreSQL catalog.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.types import TypeDecorator

from safehold.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Migrations must not import safehold's models (they would change under an
    # old migration), so custom column types are written as their plain SQL type.
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_item=_render_item,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no catalog URL: pass -x url=... or set sqlalchemy.url")
    return url


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
