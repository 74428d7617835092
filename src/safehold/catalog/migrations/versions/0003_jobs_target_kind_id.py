"""jobs (target, kind, id): each target's newest job of a kind read from the index alone.

Replaces ix_jobs_target_kind (target, kind), of which it is a superset. SQLite's index already
held the rowid (the id), so there the new one only renames it; PostgreSQL's held no id, so
"the newest job of a kind for every target" had to read every job of the kind (a GROUP BY, 60+ ms
at 100,000 jobs, seven times per /metrics scrape: docs/benchmarks.md, issue 18). With the id in
the index each target's newest is one backward index probe on both databases.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Built before the old one goes, so no moment exists without an index on (target, kind). A plain
    # CREATE INDEX (not CONCURRENTLY): migrations run in one transaction, and at a million jobs the
    # build takes seconds.
    op.create_index("ix_jobs_target_kind_id", "jobs", ["target", "kind", "id"])
    op.drop_index("ix_jobs_target_kind", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_target_kind", "jobs", ["target", "kind"])
    op.drop_index("ix_jobs_target_kind_id", table_name="jobs")
