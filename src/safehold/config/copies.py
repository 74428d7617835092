"""Second copies of the repository elsewhere (3-2-1): ``copies:`` in targets.yml.

Each entry names a destination repository (the same fields as ``repository:``; it must have been
created with ``safehold init --copy-params-from`` the configured repository), the targets it
covers (all by default) and when to copy (after each backup, on a cron schedule, or both).

A copy may have a retention of its own (``retention:``, the rules of a target's): applied on the
destination after each copy job, which remembers there what it dropped on purpose so that the next
job does not send it again (repository/copy.py). Without one a copy keeps every snapshot it received.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from safehold.config.common import _invalid, _Model
from safehold.config.fields import Cron
from safehold.config.repository import RepositoryConfig
from safehold.config.targets import TARGET_NAME_PATTERN, Retention

__all__ = ["CopyConfig"]

_NAME = re.compile(TARGET_NAME_PATTERN)


class CopyConfig(_Model):
    """One destination repository that receives copies of the configured repository's snapshots."""

    name: str = Field(
        description="Name of the copy, used by 'safehold copy --to NAME' and in the metrics' destination label.",
        examples=["offsite"],
    )
    repository: RepositoryConfig = Field(
        description=(
            "The destination repository (url, password_env or password_file, S3 options), created with "
            "'safehold init --copy-params-from' the configured repository; its password is its own."
        ),
        examples=[{"url": "s3://dr-backups/safehold", "password_env": "SAFEHOLD_OFFSITE_PASSWORD",
                   "region": "eu-west-1"}],
    )
    targets: list[str] | None = Field(
        None,
        description="Targets whose snapshots are copied; default: every target.",
        examples=[["web-01", "db-disk"]],
    )
    after_backup: bool = Field(
        False,
        description="Copy a target's new snapshot right after each successful backup of it.",
        examples=[True],
    )
    schedule: Cron | None = Field(
        None,
        description="Cron schedule of a copy job for every covered target (besides or instead of after_backup).",
        examples=["30 2 * * *"],
    )
    retention: Retention | None = Field(
        None,
        description=(
            "The copy's own retention, applied on the destination per target after each copy job (then the "
            "destination is pruned under its exclusive lock). A copy it forgets is not sent again; a snapshot "
            "forgotten on the source stays on the copy while this keeps it. Default: keep every copy."
        ),
        examples=[{"keep_daily": 30, "keep_monthly": 24}],
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise _invalid(f"copy name {value!r} must match {TARGET_NAME_PATTERN}")
        return value
