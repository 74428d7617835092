"""Human-written durations: ``90s``, ``15m``, ``12h``, ``7d``, ``1w``, ``1h30m``.

The configuration states RPOs, RTOs and retention windows this way. Units are
lower-case and fixed-length (a week is 7 days); months and years are not
accepted because their length varies and a recovery objective must be exact.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DURATION_FORMS", "format_duration", "parse_duration"]

DURATION_FORMS = "a number with a unit: s, m, h, d or w, combined largest first, e.g. 90s, 15m, 12h, 7d, 1w, 1h30m"

_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> timedelta:
    """Parse ``"1h30m"`` and friends into a timedelta.

    Spaces between the parts are allowed (``"1h 30m"``). Zero (``"0s"``) is a
    valid duration; callers that need a positive one check it themselves.
    Raises ValueError naming the bad value and the valid forms.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration; expected {DURATION_FORMS}")
    compact = "".join(text.split())
    match = _DURATION.fullmatch(compact)
    if not compact or match is None or not any(match.groups()):
        hint = ""
        if compact.isdigit():
            hint = f" (a bare number has no unit: write {compact}s, {compact}m, ...)"
        raise ValueError(f"{text!r} is not a duration{hint}; expected {DURATION_FORMS}")
    seconds = sum(
        int(amount) * _UNIT_SECONDS[unit]
        for amount, unit in zip(match.groups(), "wdhms", strict=True)
        if amount is not None
    )
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Format a timedelta the way parse_duration reads it: ``timedelta(minutes=90)`` → ``"1h30m"``.

    Whole weeks are written as ``w`` only when no days remain (``14d`` → ``2w``,
    ``10d`` stays ``10d``). Fractions of a second are rounded, since this is for
    people to read; ``parse_duration(format_duration(d)) == d`` for whole seconds.
    Raises ValueError for negative durations.
    """
    total = round(value.total_seconds())
    if total < 0:
        raise ValueError(f"cannot format a negative duration ({value})")
    if total == 0:
        return "0s"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days // 7}w" if days % 7 == 0 else f"{days}d")
    for amount, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")):
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
