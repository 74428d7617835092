"""The catalog schema revision this code expects (no imports: read by the light job recorder
without SQLAlchemy or Alembic, and by ``migrate``)."""

#: The newest revision in ``migrations/versions``. Kept here so that opening a
#: current catalog does not import Alembic or parse the migration scripts; a
#: unit test checks it against the script directory.
HEAD_REVISION = "0003"
