"""Reusable field types of the configuration models: ``Duration``, ``ChunkSize`` and ``Cron``.

Each is an ``Annotated`` type carrying its validator (with a message that says
what is expected) and its JSON schema, so every field using it validates and
documents itself the same way. Parsing and formatting of durations themselves
live in ``safehold.config.durations``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from safehold.config.common import _invalid
from safehold.config.durations import DURATION_FORMS, format_duration, parse_duration

__all__ = ["CRON_USAGE", "MAX_CHUNK_SIZE", "MIN_CHUNK_SIZE", "ChunkSize", "Cron", "Duration"]

MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|B)?", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kib": 1024, "mib": 1024 * 1024}


def _to_positive_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        try:
            duration = parse_duration(value)
        except ValueError as error:
            raise _invalid(str(error)) from None
    else:
        raise _invalid(f"{value!r} is not a duration; expected {DURATION_FORMS}")
    if duration <= timedelta(0):
        raise _invalid(f"{value!r} is not valid; the duration must be longer than zero, e.g. 15m")
    return duration


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*(\d+\s*w)?\s*(\d+\s*d)?\s*(\d+\s*h)?\s*(\d+\s*m)?\s*(\d+\s*s)?\s*$",
    "description": DURATION_FORMS,
    "examples": ["15m", "12h", "7d", "1h30m"],
}

Duration = Annotated[
    timedelta,
    BeforeValidator(_to_positive_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""A positive duration written like ``15m``, ``12h``, ``7d``, ``1w`` or ``1h30m``."""


def _to_chunk_size(value: object) -> int:
    valid = "a power of two between 64KiB and 16MiB, in bytes or with KiB/MiB, e.g. 512KiB, 1MiB, 4MiB"
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        unit = match.group(2).lower() if match.group(2) else None
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    if size is None:
        raise _invalid(f"{value!r} is not a size; expected {valid}")
    if not (MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE) or size & (size - 1):
        raise _invalid(f"{value!r} is not a valid chunk size; expected {valid}")
    return size


ChunkSize = Annotated[
    int,
    BeforeValidator(_to_chunk_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": MIN_CHUNK_SIZE, "maximum": MAX_CHUNK_SIZE},
                {"type": "string", "pattern": r"^\s*\d+\s*(KiB|MiB|B)?\s*$"},
            ],
            "examples": ["512KiB", "1MiB", "4MiB"],
        }
    ),
]
"""Bytes; written as an integer or ``512KiB``/``1MiB``; a power of two from 64 KiB to 16 MiB."""


_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat, 0 and 7 are Sunday"),
)
_CRON_NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
CRON_USAGE = "expected 5 fields: minute hour day-of-month month day-of-week, e.g. '0 */6 * * *', or @hourly/@daily/@weekly/@monthly"


def _check_cron(expression: str) -> str:
    """Check a 5-field cron expression with croniter; returns it with single spaces.

    croniter does the parsing. It also accepts 6 and 7 fields (seconds, years)
    which the scheduler does not promise, so the field count is checked here,
    and each field is tried alone to name the bad one in the message.
    """
    from croniter import CroniterBadDateError, CroniterError, croniter

    fields = expression.split()
    if len(fields) == 1 and fields[0].lower() in _CRON_NICKNAMES:
        return fields[0].lower()
    if len(fields) != 5:
        raise _invalid(f"{expression!r} has {len(fields)} field(s); {CRON_USAGE}")
    for position, (field, valid) in enumerate(_CRON_FIELDS):
        alone = ["*"] * 5
        alone[position] = fields[position]
        try:
            croniter(" ".join(alone))
        except (CroniterError, ValueError):
            raise _invalid(
                f"{expression!r}: {fields[position]!r} is not a valid {field} field (valid: {valid}, lists a,b, "
                f"ranges a-b, steps */n); {CRON_USAGE}"
            ) from None
    normal = " ".join(fields)
    try:
        # A date that never comes (31 February) is only found by iterating.
        croniter(normal, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise _invalid(f"{expression!r} never matches a date; {CRON_USAGE}") from None
    except (CroniterError, ValueError) as error:
        raise _invalid(f"{expression!r} is not valid ({error}); {CRON_USAGE}") from None
    return normal


Cron = Annotated[
    str,
    BeforeValidator(lambda value: _check_cron(value) if isinstance(value, str) else value),
    WithJsonSchema({"type": "string", "description": CRON_USAGE, "examples": ["0 */6 * * *", "@daily"]}),
]
"""A 5-field cron expression (local time) or a nickname such as ``@daily``."""
