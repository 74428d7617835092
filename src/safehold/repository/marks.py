"""Verdict records: an operator's judgement of a snapshot, or a scan's recomputed verdict.

Snapshots are immutable (and under S3 Object Lock), so what is learnt about one later lives
beside it in ``verdicts/``: one new encrypted object per ``safehold mark`` or ``safehold scan``,
never rewritten, the newest of each source winning. A snapshot's *verdict* is, in order of
precedence: the operator's newest mark, the newest scan, the verdict stored in the snapshot by
its backup (``summary.verdict``), else ``unknown``.

The *assessment* of a target's snapshots walks them oldest first: after a suspicious snapshot,
later clean ones still hold what the suspicious one brought (encrypted files that no longer
change look clean), so they are ``after`` it and are no restore point until an operator marks one
of them (or the suspicious one) clean. ``latest-clean:TARGET`` is the newest snapshot that is
clean and not after an unresolved suspicious one.

A record's name is the hash of its encrypted content like every metadata object; its content is
hostile input (type-checked), and one that cannot be read is ignored (and said so by the caller).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from .. import errors
from .backends import Kind, ObjectNotFound
from .repository import Repository, Snapshot
from .verdict import BASELINE_SNAPSHOTS, stored_verdict

RECORD_VERSION = 1
MARKS = ("clean", "suspicious")


@dataclass
class Assessment:
    snapshot: str
    verdict: str  # clean | suspicious | unknown
    source: str  # backup | scan | operator | none
    score: float = 0.0
    reasons: list[dict] = field(default_factory=list)
    after: str | None = None  # the unresolved suspicious snapshot this one follows
    note: str | None = None  # the operator's note
    signals: dict | None = None

    @property
    def clean_point(self) -> bool:
        return self.verdict == "clean" and self.after is None

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "source": self.source, "score": self.score, "reasons": self.reasons,
                "after_suspicious": self.after, "clean_point": self.clean_point, "note": self.note}


def record_verdict(repository: Repository, snapshot: Snapshot, verdict: str, source: str,
                   note: str | None = None, result: dict | None = None, signals: dict | None = None) -> str:
    """Write a verdict record for ``snapshot``; returns its name."""
    document: dict[str, Any] = {
        "version": RECORD_VERSION, "snapshot": snapshot.id, "target": snapshot.target, "verdict": verdict,
        "source": source, "time": datetime.now(timezone.utc).isoformat(), "hostname": socket.gethostname(),
    }
    if note:
        document["note"] = note[:1000]
    if result is not None:
        document["result"] = result
    if signals is not None:
        document["signals"] = signals
    return repository.save_object(Kind.VERDICTS, document, repository.retain_until())


def _read_records(repository: Repository, on_error: Callable[[str, Exception], None] | None = None
                  ) -> Iterator[tuple[str, dict]]:
    """(object name, checked record) of every readable verdict record."""
    for name in repository.list_names(Kind.VERDICTS):
        try:
            document = repository.load_object(Kind.VERDICTS, name)
        except (errors.IntegrityError, ObjectNotFound) as exc:
            if on_error is not None:
                on_error(name, exc)
            continue
        record = _checked(document)
        if record is None:
            if on_error is not None:
                on_error(name, ValueError("not a verdict record"))
            continue
        yield name, record


def load_records(repository: Repository,
                 on_error: Callable[[str, Exception], None] | None = None) -> dict[str, dict[str, dict]]:
    """snapshot id -> {source ('operator' | 'scan') -> its newest record}."""
    found: dict[str, dict[str, dict]] = {}
    for _name, record in _read_records(repository, on_error):
        slot = found.setdefault(record["snapshot"], {})
        current = slot.get(record["source"])
        if current is None or record["time"] > current["time"]:
            slot[record["source"]] = record
    return found


def record_names(repository: Repository) -> dict[str, str]:
    """Verdict record name -> the snapshot id it judges (every readable record, superseded ones
    too). Maintenance keeps the records of kept snapshots locked (immutability.py)."""
    return {name: record["snapshot"] for name, record in _read_records(repository)}


def copy_records(source: Repository, destination: Repository, copies: dict[str, str],
                 source_records: dict[str, dict[str, dict]] | None = None) -> list[str]:
    """Carry the verdict records of copied snapshots to the copy: ``copies`` maps a source snapshot
    id to its copy's id on ``destination``. For each snapshot and each record source (operator,
    scan), the source's newest record is written for the copy unless the destination already has
    one as new or newer (a mark made on the copy itself wins when it is the newer). Idempotent; the
    record keeps its time, so 'newest wins' orders marks alike in both repositories, and names the
    snapshot it was copied from. Returns the names written."""
    records = load_records(source) if source_records is None else source_records
    wanted = {snapshot_id: copy_id for snapshot_id, copy_id in copies.items() if snapshot_id in records}
    if not wanted:
        return []
    present = load_records(destination)
    copies_by_id = {s.id: s for s in destination.list_snapshots(on_error=lambda name, exc: None)
                    if s.id in wanted.values()}
    written = []
    for snapshot_id, copy_id in sorted(wanted.items()):
        copy = copies_by_id.get(copy_id)
        if copy is None:
            continue
        for kind, record in sorted(records[snapshot_id].items()):
            mine = present.get(copy_id, {}).get(kind)
            if mine is not None and mine["time"] >= record["time"]:
                continue
            document: dict[str, Any] = {
                "version": RECORD_VERSION, "snapshot": copy_id, "target": copy.target, "verdict": record["verdict"],
                "source": kind, "time": record["time"], "hostname": record.get("hostname") or "",
                "copied_from": {"repository": source.id, "snapshot": snapshot_id},
            }
            if record.get("note"):
                document["note"] = record["note"]
            if "result" in record:
                document["result"] = record["result"]
            if "signals" in record:
                document["signals"] = record["signals"]
            written.append(destination.save_object(Kind.VERDICTS, document, destination.retain_until()))
    return written


def _checked(document: Any) -> dict | None:
    if not isinstance(document, dict):
        return None
    snapshot, verdict, source, time = (document.get(k) for k in ("snapshot", "verdict", "source", "time"))
    if not (isinstance(snapshot, str) and len(snapshot) <= 128 and verdict in ("clean", "suspicious", "unknown")
            and source in ("operator", "scan") and isinstance(time, str) and len(time) <= 64):
        return None
    record = {"snapshot": snapshot, "verdict": verdict, "source": source, "time": time,
              "hostname": document.get("hostname") if isinstance(document.get("hostname"), str) else None,
              "note": document.get("note")[:1000] if isinstance(document.get("note"), str) else None}
    result = stored_verdict({"verdict": document.get("result")})
    if result is not None:
        record["result"] = result
    if isinstance(document.get("signals"), dict):
        record["signals"] = document["signals"]
    return record


def assess(snapshots: list[Snapshot], records: dict[str, dict[str, dict]]) -> dict[str, Assessment]:
    """snapshot id -> its assessment; ``snapshots`` of one target, oldest first."""
    result: dict[str, Assessment] = {}
    suspicious_since: str | None = None
    for snapshot in snapshots:
        own = records.get(snapshot.id, {})
        stored = stored_verdict(snapshot.summary)
        signals = snapshot.summary.get("signals") if isinstance(snapshot.summary.get("signals"), dict) else None
        if "scan" in own and "result" in own["scan"]:
            scan = own["scan"]["result"]
            item = Assessment(snapshot.id, scan["verdict"], "scan", scan["score"], scan["reasons"],
                              signals=own["scan"].get("signals", signals))
        elif stored is not None:
            item = Assessment(snapshot.id, stored["verdict"], "backup", stored["score"], stored["reasons"],
                              signals=signals)
        else:
            item = Assessment(snapshot.id, "unknown", "none", signals=signals)
        operator = own.get("operator")
        if operator is not None:
            item.verdict, item.source, item.note = operator["verdict"], "operator", operator["note"]
        if item.source == "operator" and item.verdict == "clean":
            suspicious_since = None  # the operator says the data is good again
        elif item.verdict == "suspicious":
            suspicious_since = suspicious_since or snapshot.id
        elif suspicious_since is not None:
            item.after = suspicious_since
        result[snapshot.id] = item
    return result


def baseline_history(snapshots: list[Snapshot], assessed: dict[str, Assessment]) -> list[dict]:
    """The signals a new snapshot of the target is judged against: the newest clean, non-first
    snapshots' (marked suspicious ones never teach the baseline), oldest first."""
    history = []
    for snapshot in snapshots:
        item = assessed.get(snapshot.id)
        if item is None or item.verdict != "clean" or not isinstance(item.signals, dict):
            continue
        if item.signals.get("first") is True:
            continue
        history.append(item.signals)
    return history[-BASELINE_SNAPSHOTS:]


def latest_clean(snapshots: list[Snapshot], records: dict[str, dict[str, dict]]) -> Snapshot | None:
    assessed = assess(snapshots, records)
    for snapshot in reversed(snapshots):
        if assessed[snapshot.id].clean_point:
            return snapshot
    return None


__all__ = ["Assessment", "assess", "baseline_history", "copy_records", "latest_clean", "load_records", "record_names",
           "record_verdict", "MARKS"]
