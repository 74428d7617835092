"""The scheduler's settings: ``SchedulerConfig`` (concurrency limits, jitter, retries, maintenance schedules)."""

from __future__ import annotations

from datetime import timedelta

from typing import Literal

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
    large_after: Duration | None = Field(
        timedelta(minutes=30),
        description=(
            "Fair share: a target whose last good backup took longer than this is large, and large targets "
            "together run in at most max_concurrent minus a quarter of it (at least one slot kept free), so a "
            "few huge targets cannot hold every slot while the rest wait; null turns it off."
        ),
        examples=["30m", "2h"],
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

    executor: Literal["thread", "procrastinate"] = Field(
        "thread",
        description=(
            "Where jobs run: 'thread' (the default) in a pool of threads of the scheduler's own process; "
            "'procrastinate' on 'safehold worker' processes, on this host or others, fed through a procrastinate "
            "job queue in PostgreSQL (needs the 'workers' extra and a PostgreSQL catalog shared by all of them). "
            "The queue's DSN is read from the environment variable named by queue_dsn_env, or the file queue_dsn_file, "
            "never from this file."
        ),
        examples=["thread", "procrastinate"],
    )
    queue_dsn_env: str = Field(
        "SAFEHOLD_QUEUE_DSN",
        description="Environment variable holding the queue's PostgreSQL DSN (libpq form, e.g. postgresql://safehold@db/safehold).",
        examples=["SAFEHOLD_QUEUE_DSN"],
    )
    queue_dsn_file: str | None = Field(
        None,
        description=(
            "File holding the queue's DSN (one line), used when the variable named by queue_dsn_env is unset. "
            "Relative paths are relative to this file's directory."
        ),
        examples=["/etc/safehold/queue.dsn"],
    )
    placement: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Which queue each target's jobs go to with executor: procrastinate: target-name pattern (shell-style, "
            "first match in file order wins) to queue name. A worker takes the queues given by 'safehold worker "
            "--queues' plus 'label:<name>' for each '--host-label'. Unmatched targets and repository jobs (prune, "
            "check, maintenance, drills) go to queue 'default'."
        ),
        examples=[{"kvm01-*": "label:kvm01", "ebs-*": "aws"}],
    )
    worker_timeout: Duration = Field(
        timedelta(seconds=30),
        description=(
            "A worker whose last heartbeat (sent every tenth of this) is older than this is taken as dead: its jobs "
            "are recorded 'interrupted' and retried per 'retries' on another worker."
        ),
        examples=["30s", "2m"],
    )

    @field_validator("queue_dsn_file")
    @classmethod
    def _resolve_dsn_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @field_validator("sandbox_dir")
    @classmethod
    def _resolve_sandbox(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)
