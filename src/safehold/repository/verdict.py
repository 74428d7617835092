"""A snapshot's verdict from its signals (signals.py) against its target's own baseline.

``clean``, ``suspicious`` (with the reasons and the files that carry them) or ``unknown`` (a first
snapshot: nothing to compare with). The baseline is the mean and deviation of each signal over the
target's last ``BASELINE_SNAPSHOTS`` snapshots that were neither first nor suspicious (an
operator's ``mark clean`` puts a snapshot back in): a target that adds random files every day
(a backup of backups, a media library) raises its own bar and does not alarm every day.

A signal fires when it reaches ``max(floor, mean + DEVIATIONS * deviation)``. The four *strong*
signals each make a snapshot suspicious on their own:

- ``type_changed``: files that were of a known type (or not random) and are now random data of no
  type: what encryption in place does, whole-file or intermittent, with or without renaming;
- ``random_unknown_added``: new random files of no known type, when they are a large part of what
  was added (encrypted copies written next to deleted originals);
- ``extension_churn``: many files gaining the same new extension (``.locked``);
- ``ransom_notes``: new files named as ransom notes.

Images (disks) have no file types: their strong signal is ``became_random``, the bytes of plain
data overwritten in place that are now random (window by window of each new chunk, against what
the parent held at the same offset): encryption of files inside a file system. ``random_new_data``, the share of all new
bytes that look random, is context only: at the block level a photo import into free space looks
exactly like encrypted copies written there (measured: bench/ransomware.py). Bursts of deletions and renames are reported
beside a strong signal (``context``) but never make a verdict alone: a ``git gc`` or a cleanup
deletes thousands of files legitimately.

The score is the largest ratio of a strong signal to its threshold (suspicious from 1.0 on).
Everything read here comes from snapshot objects: hostile input, type-checked.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

BASELINE_SNAPSHOTS = 20
DEVIATIONS = 4.0
#: signal -> floor of its threshold; the baseline can only raise it.
STRONG_FLOORS = {"type_changed": 3, "random_unknown_added": 5, "extension_churn": 3, "ransom_notes": 1}
#: random_unknown_added fires only when such files are at least this share of the added ones.
RANDOM_ADDED_SHARE = 0.3
IMAGE_RANDOM_SHARE = 0.5  # floor of random_new_data (share of new bytes)
IMAGE_MIN_BYTES = 4 << 20  # an image snapshot adding less is not judged on randomness
IMAGE_BECAME_RANDOM_BYTES = 1 << 20  # floor of became_random (plain bytes turned random)
CONTEXT_FLOORS = {"deleted": 20, "renamed": 20}
VERDICTS = ("clean", "suspicious", "unknown")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def _share(signals: dict, name: str) -> float:
    if name == "random_new_data":
        total = _number(signals.get("new_bytes"))
        return _number(signals.get("random_bytes")) / total if total else 0.0
    if name == "became_random":
        return _number(signals.get("became_random_bytes"))
    return _number(signals.get(name))


def baseline(history: Iterable[dict], names: Iterable[str]) -> dict[str, tuple[float, float]]:
    """name -> (mean, deviation) over ``history`` (signals dicts)."""
    rows = [h for h in history if isinstance(h, dict)]
    result = {}
    for name in names:
        values = [_share(row, name) for row in rows]
        if not values:
            result[name] = (0.0, 0.0)
            continue
        mean = sum(values) / len(values)
        result[name] = (mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
    return result


def _threshold(floor: float, stats: tuple[float, float]) -> float:
    mean, deviation = stats
    return max(floor, mean + DEVIATIONS * deviation)


def _files(signals: dict, name: str) -> list[str]:
    examples = signals.get("examples")
    paths = examples.get(name) if isinstance(examples, dict) else None
    if not isinstance(paths, list):
        return []
    return [os.fsdecode(p) if isinstance(p, bytes) else p for p in paths[:10] if isinstance(p, (bytes, str))]


def judge(signals: dict, history: list[dict]) -> dict:
    """The verdict of a snapshot with ``signals`` against ``history`` (the baseline's signals)."""
    if not isinstance(signals, dict):
        return {"verdict": "unknown", "score": 0.0, "reasons": [], "baseline": 0}
    history = [h for h in history if isinstance(h, dict)][-BASELINE_SNAPSHOTS:]
    if signals.get("first") is True:
        return {"verdict": "unknown", "score": 0.0, "reasons": [], "baseline": len(history)}
    image = signals.get("kind") == "image"
    floors: dict[str, float] = {"became_random": IMAGE_BECAME_RANDOM_BYTES} if image else dict(STRONG_FLOORS)
    context_floors = {"random_new_data": IMAGE_RANDOM_SHARE} if image else CONTEXT_FLOORS
    stats = baseline(history, list(floors) + list(context_floors))
    reasons: list[dict] = []
    score = 0.0
    for name, floor in floors.items():
        value = _share(signals, name)
        threshold = _threshold(floor, stats[name])
        if name == "random_unknown_added":
            added = _number(signals.get("added"))
            if not added or value / added < RANDOM_ADDED_SHARE:
                continue
        if name == "random_new_data" and _number(signals.get("random_bytes")) < IMAGE_MIN_BYTES:
            continue
        ratio = value / threshold if threshold else 0.0
        score = max(score, ratio)
        if ratio >= 1.0:
            reason = {"signal": name, "value": round(value, 4), "threshold": round(threshold, 4),
                      "files": _files(signals, name)}
            if name == "extension_churn" and isinstance(signals.get("churn_extension"), bytes):
                reason["extension"] = os.fsdecode(signals["churn_extension"])[:32]
            reasons.append(reason)
    if reasons:
        for name, floor in context_floors.items():
            if name == "random_new_data" and _number(signals.get("random_bytes")) < IMAGE_MIN_BYTES:
                continue
            value = _share(signals, name)
            threshold = _threshold(floor, stats[name])
            if value >= threshold:
                reasons.append({"signal": name, "value": round(value, 4), "threshold": round(threshold, 4), "context": True,
                                "files": []})
    return {"verdict": "suspicious" if reasons else "clean", "score": round(score, 4), "reasons": reasons,
            "baseline": len(history)}


def describe_reasons(reasons: list) -> str:
    """One line naming each reason of a verdict, e.g. '12 file(s) turned into random data (a.docx, b.pdf)'."""
    texts = {"type_changed": "file(s) turned into random data", "random_unknown_added": "new random file(s) of no "
             "known type", "extension_churn": "file(s) gained the same new extension", "ransom_notes": "ransom "
             "note name(s)", "random_new_data": "share of new data that looks random",
             "became_random": "bytes of plain data overwritten with random data", "deleted": "file(s) deleted",
             "renamed": "file(s) renamed"}
    parts = []
    for reason in reasons:
        if not isinstance(reason, dict):
            continue
        name = str(reason.get("signal"))
        value = reason.get("value")
        text = f"{value:g}" if isinstance(value, (int, float)) else "?"
        text += " " + texts.get(name, name)
        if isinstance(reason.get("extension"), str):
            text += f" .{reason['extension']}"
        files = [f for f in reason.get("files", []) if isinstance(f, str)][:3]
        if files:
            text += " (" + ", ".join(files) + ")"
        parts.append(text)
    return "; ".join(parts)


def stored_verdict(summary: Any) -> dict | None:
    """A snapshot's own stored verdict (``summary.verdict``), checked; None when absent (a snapshot
    written before signals: ``safehold scan`` computes one)."""
    verdict = summary.get("verdict") if isinstance(summary, dict) else None
    if not isinstance(verdict, dict) or verdict.get("verdict") not in VERDICTS:
        return None
    reasons = verdict.get("reasons") if isinstance(verdict.get("reasons"), list) else []
    return {"verdict": verdict["verdict"], "score": _number(verdict.get("score")),
            "reasons": [r for r in reasons if isinstance(r, dict) and isinstance(r.get("signal"), str)][:16],
            "baseline": int(_number(verdict.get("baseline")))}


__all__ = ["BASELINE_SNAPSHOTS", "baseline", "describe_reasons", "judge", "stored_verdict", "VERDICTS"]
