"""What to back up and how long to keep it: ``Target``, its ``TierConfig`` and ``Retention``.

A ``Target`` names a ``Source`` (see ``safehold.config.sources``), a tier
(``TierConfig``: RPO and RTO, with ``DEFAULT_TIERS``), an optional cron
schedule, a ``Retention`` policy and a ``RestoreTest``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from safehold.config.common import _check_kind, _invalid, _Model
from safehold.config.fields import Cron, Duration
from safehold.config.restore_test import RestoreTest
from safehold.config.sources import PLANNED_SOURCE_TYPES, SOURCE_TYPES, Source

__all__ = ["DEFAULT_TIERS", "TARGET_NAME_PATTERN", "Retention", "Target", "TierConfig"]

# Tier number -> raw values; user tiers are merged over these key by key.
DEFAULT_TIERS: dict[int, dict[str, str]] = {
    1: {"rpo": "15m", "rto": "1h"},
    2: {"rpo": "12h", "rto": "4h"},
    3: {"rpo": "24h", "rto": "24h"},
}

TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_TARGET_NAME = re.compile(TARGET_NAME_PATTERN)


# --- tiers ------------------------------------------------------------------


class TierConfig(_Model):
    """Recovery objectives shared by every target of a tier."""

    rpo: Duration = Field(
        description=(
            "Recovery point objective: the most data, in time, you accept to lose. "
            "A target is due when its last backup is older."
        ),
        examples=["15m", "12h"],
    )
    rto: Duration = Field(
        description=(
            "Recovery time objective: how long a restore may take. "
            "Restore tests measure it and alert when it is exceeded."
        ),
        examples=["1h", "4h"],
    )


def _default_tiers() -> dict[int, TierConfig]:
    return {number: TierConfig.model_validate(values) for number, values in DEFAULT_TIERS.items()}


# --- retention --------------------------------------------------------------


class Retention(_Model):
    """Which snapshots 'safehold forget' keeps (the rules of restic's forget; a snapshot kept by any rule stays)."""

    keep_last: int | None = Field(None, ge=0, description="Keep the N newest snapshots.", examples=[3])
    keep_hourly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N hours that have one.", examples=[24]
    )
    keep_daily: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N days that have one.", examples=[7]
    )
    keep_weekly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N ISO weeks that have one.", examples=[4]
    )
    keep_monthly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N months that have one.", examples=[12]
    )
    keep_yearly: int | None = Field(
        None, ge=0, description="Keep the newest snapshot of each of the last N years that have one.", examples=[3]
    )
    keep_within: Duration | None = Field(
        None, description="Keep every snapshot taken within this duration of the newest snapshot.", examples=["2d"]
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Retention:
        rules = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
        if not any(getattr(self, rule) for rule in rules) and self.keep_within is None:
            # An empty policy would forget every snapshot; refuse it here rather than at forget time.
            raise _invalid(
                "retention keeps nothing: set at least one of keep_last, keep_hourly, keep_daily, "
                "keep_weekly, keep_monthly, keep_yearly (above 0) or keep_within, or remove 'retention'"
            )
        return self


# --- targets ----------------------------------------------------------------


class Target(_Model):
    """One thing to back up, with its tier, schedule, retention and restore test."""

    name: str = Field(
        description=(
            "Unique name: letters, digits, '_', '.', '-', starting with a letter or digit. "
            "Used in metrics labels and snapshot tags."
        ),
        examples=["web-01"],
        json_schema_extra={"pattern": TARGET_NAME_PATTERN},
    )
    tier: int = Field(description="Tier number, a key of 'tiers'; sets the RPO and RTO.", examples=[2])
    source: Source = Field(
        description=f"What to back up; 'type' is one of: {', '.join(SOURCE_TYPES)}.",
        examples=[{"type": "files", "paths": ["/srv/docs"], "exclude": ["*.tmp"]}],
    )
    schedule: Cron | None = Field(
        None,
        description=(
            "Cron expression (5 fields, local time) for backups; without it the scheduler backs the target up "
            "every half RPO of its tier, so a failed run can be retried before the RPO is missed."
        ),
        examples=["0 */6 * * *"],
    )
    retention: Retention | None = Field(
        None,
        description="Which snapshots to keep when forgetting; without it 'safehold forget' leaves this target alone.",
        examples=[{"keep_last": 3, "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12}],
    )
    restore_test: RestoreTest | None = Field(
        None,
        description="Scheduled restore test; without it this target's RTO is never measured.",
        examples=[{"every": "7d", "health_check": {"type": "command", "run": "test -f etc/hostname"}}],
    )
    tags: list[str] = Field(
        default_factory=list, description="Free-form labels stored with each snapshot.", examples=[["prod"]]
    )
    forget_after_backup: bool = Field(
        True,
        description=(
            "Apply 'retention' (forget, without prune) after each successful backup the control plane runs; "
            "prune runs on its own schedule (scheduler.prune_schedule)."
        ),
        examples=[False],
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _TARGET_NAME.fullmatch(value):
            raise _invalid(
                f"{value!r} is not a valid target name; use letters, digits, '_', '.' and '-', "
                "starting with a letter or digit (e.g. web-01)"
            )
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _check_source_kind(cls, value: object) -> object:
        return _check_kind(value, what="source", supported=SOURCE_TYPES, planned=PLANNED_SOURCE_TYPES)
