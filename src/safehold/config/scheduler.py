"""The scheduler's settings: ``SchedulerConfig`` (concurrency limits, jitter, retries, maintenance schedules)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, ValidationInfo, field_validator

from safehold.config.common import _Model, _resolve_path
from safehold.config.fields import Cron, Duration

__all__ = ["SchedulerConfig"]


class SchedulerConfig(_Model):
    """How the control plane's scheduler spreads, limits and retries jobs."""

    max_concurrent: int = Field(
        2, ge=1, description="Jobs run at once in this control plane, all kinds together.", examples=[2, 8]
    )
    max_per_host: int = Field(
        1,
        ge=1,
        description=(
            "Jobs run at once against one source host (local sources count as host 'localhost'), so a host "
            "is not read by several backups at once."
        ),
        examples=[1],
    )
    jitter: Duration = Field(
        timedelta(minutes=5),
        description=(
            "Each target starts up to this long after it is due, at an offset fixed per target name, so a "
            "hundred targets due at the same minute do not start in the same second."
        ),
        examples=["5m", "30s"],
    )
    retries: int = Field(
        3, ge=0, description="Extra attempts of a failed scheduled job before waiting for its next slot.", examples=[3]
    )
    retry_backoff: Duration = Field(
        timedelta(minutes=1),
        description="Wait before the first retry; doubled for each further retry.",
        examples=["1m", "10m"],
    )
    prune_schedule: Cron | None = Field(
        "0 3 * * 0",
        description="Cron expression for 'prune' (removing data no snapshot uses); null turns it off.",
        examples=["0 3 * * 0"],
    )
    check_schedule: Cron | None = Field(
        "0 4 * * *",
        description="Cron expression for 'check' of the repository; null turns it off.",
        examples=["0 4 * * *"],
    )
    maintenance_schedule: Cron | None = Field(
        "30 2 * * *",
        description=(
            "Cron expression for 'maintenance' (extending S3 Object Lock retention on what kept snapshots need, "
            "before it runs out); runs only when repository.object_lock is set; null turns it off. Runs must be less "
            "than half of object_lock.days apart, or retention can end between two runs."
        ),
        examples=["30 2 * * *"],
    )
    check_read_data_percent: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Share of the packs a scheduled check reads and verifies (a different random subset each time).",
        examples=[5, 100],
    )
    sandbox_dir: str | None = Field(
        None,
        description=(
            "Directory in which restore tests create (and always remove) their sandbox; default "
            "<state_dir>/restore-tests. Relative paths are relative to this file's directory."
        ),
        examples=["/var/tmp/safehold"],
    )

    @field_validator("sandbox_dir")
    @classmethod
    def _resolve_sandbox(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)
