"""Ransomware verdicts for people and scripts: listing, scan, mark, and each target's state.

The signals and the verdict are computed by the backup (repository/signals.py, verdict.py) and
stored in the snapshot; ``scan`` recomputes them for a snapshot written before they existed (or
after a change of rules) from the snapshot's and its parent's trees, reading the first chunk of
each added or changed file and a sample of the new chunks; ``mark`` records an operator's
judgement. Both write a verdict record (repository/marks.py), never touch the snapshot, and run
as catalog jobs whose details carry the target's state, so ``status`` and ``/metrics`` answer
from the catalog alone.

A target's state (``ransomware`` in job details): its newest snapshot's verdict and score,
``suspicious`` (the newest is suspicious, or comes after a suspicious one nobody marked clean),
``since`` (that suspicious snapshot) and ``latest_clean``.
"""

from __future__ import annotations

import os
import random as _random
from typing import Any

from .. import errors
from ..repository import Repository, Snapshot
from ..repository.forgotten import live_snapshots
from ..repository.marks import MARKS, Assessment, assess, baseline_history, latest_clean, load_records, record_verdict
from ..repository.signals import (
    CHUNK_UNKNOWN,
    WINDOW,
    ParentFile,
    SignalCollector,
    image_chunk_randomness,
    looks_random,
    magic,
)
from ..repository.verdict import judge
from ..text import printable
from .context import Context

#: New chunks of a snapshot that ``scan`` reads to estimate the share of random new data.
SCAN_CHUNK_SAMPLE = 256
STATE_KEY = "ransomware"


def verdict_dict(item: Assessment | None) -> dict:
    """An assessment as plain JSON values, paths escaped (they come from the repository)."""
    if item is None:
        return {"verdict": "unknown", "source": "none", "score": 0.0, "reasons": [], "after_suspicious": None,
                "clean_point": False, "note": None}
    result = item.as_dict()
    result["reasons"] = [
        {"signal": printable(str(r.get("signal")))[:40], "value": r.get("value") if isinstance(r.get("value"), (int, float)) else None,
         "threshold": r.get("threshold") if isinstance(r.get("threshold"), (int, float)) else None,
         "context": bool(r.get("context")),
         **({"extension": printable(r["extension"])[:40]} if isinstance(r.get("extension"), str) else {}),
         "files": [printable(f) for f in r.get("files", []) if isinstance(f, str)][:10]}
        for r in item.reasons]
    result["note"] = printable(item.note) if item.note else None
    return result


def signals_dict(signals: Any) -> dict | None:
    """The counters of a snapshot's signals (no paths), checked."""
    if not isinstance(signals, dict):
        return None
    return {key: value for key, value in signals.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def assess_snapshots(repository: Repository, snapshots: list[Snapshot],
                     records: dict | None = None) -> dict[str, Assessment]:
    """Assessments of ``snapshots`` (any targets), each within its own target's history."""
    records = load_records(repository) if records is None else records
    by_target: dict[str, list[Snapshot]] = {}
    for snapshot in snapshots:
        by_target.setdefault(snapshot.target, []).append(snapshot)
    result: dict[str, Assessment] = {}
    for chain in by_target.values():
        result.update(assess(sorted(chain, key=lambda s: s.time), records))
    return result


def target_state(repository: Repository, target: str, records: dict | None = None) -> dict | None:
    """The target's ransomware state (module docstring); None when it has no snapshot."""
    records = load_records(repository) if records is None else records
    return state_of(live_snapshots(repository, target), records)


def state_of(snapshots: list[Snapshot], records: dict) -> dict | None:
    """The state of a target whose live snapshots are ``snapshots`` (oldest first)."""
    if not snapshots:
        return None
    assessed = assess(snapshots, records)
    newest = assessed[snapshots[-1].id]
    clean = latest_clean(snapshots, records)
    since = newest.snapshot if newest.verdict == "suspicious" else newest.after
    return {"snapshot": newest.snapshot, "verdict": newest.verdict, "score": newest.score,
            "suspicious": since is not None, "since": since, "latest_clean": clean.id if clean else None}


def scan_snapshot(context: Context, ref: str, target: str | None = None, *, job_id: int | None = None) -> dict:
    """Recompute the signals and the verdict of one snapshot and record them (a 'scan' record).
    ``job_id``: run as that queued job, already claimed (``engine.jobs.run_job``)."""
    found = context.open_repository(load_index=False).find_snapshot(ref, target)
    if target is not None and found.target != target:
        raise errors.SnapshotNotFound(ref=f"{ref} of target {printable(target)} (it is a snapshot of "
                                          f"{printable(found.target)})")
    with context.catalog.job("scan", found.target, job_id=job_id) as job:
        with context.locked(purpose="scan") as repository:
            snapshot = repository.load_snapshot(found.id)
            chain = live_snapshots(repository, snapshot.target)
            parent = next((s for s in chain if s.id == snapshot.parent), None)
            if parent is None:
                older = [s for s in chain if s.time < snapshot.time]
                parent = older[-1] if older else None
            signals = compute_signals(repository, snapshot, parent)
            records = load_records(repository)
            earlier = [s for s in chain if s.time < snapshot.time]
            history = baseline_history(earlier, assess(earlier, records))
            result = judge(signals, history)
            name = record_verdict(repository, snapshot, result["verdict"], "scan", result=result, signals=signals)
            records = load_records(repository)
            state = target_state(repository, snapshot.target, records)
            job.details[STATE_KEY] = state
            job.details["snapshot"] = snapshot.id
            job.log(f"scan of snapshot {snapshot.short_id} (parent {parent.short_id if parent else 'none'}): "
                    f"{result['verdict']}, score {result['score']}; record {name[:16]}")
            assessed = assess(chain, records)
            return {"snapshot": snapshot.id, "target": snapshot.target, "parent": parent.id if parent else None,
                    "record": name, "signals": signals_dict(signals),
                    "verdict": verdict_dict(assessed.get(snapshot.id)), "state": state}


def compute_signals(repository: Repository, snapshot: Snapshot, parent: Snapshot | None) -> dict:
    """A snapshot's signals recomputed from the stored data (``scan``)."""
    if snapshot.kind != "files":
        return _image_signals(repository, snapshot, parent)
    old: dict[bytes, dict] = {}
    if parent is not None and parent.kind == "files":
        old = {item["path"]: item for item in repository.read_tree(parent) if _is_file(item)}
    current = [item for item in repository.read_tree(snapshot) if _is_file(item)]
    now_chunks = {item["path"]: item.get("chunks") for item in current}
    parents: dict[bytes, ParentFile] = {}
    for path, item in old.items():
        label, rnd = _stored_type(item)
        if label is None and now_chunks.get(path) != item.get("chunks"):
            label, rnd = _read_type(repository, item)
        parents[path] = ParentFile(_int(item.get("size")), _int(item.get("inode")), label, rnd)
    collector = SignalCollector(parent=parents if parent is not None else None)
    old_chunks = {bytes(c) for item in old.values() for c in _ids(item.get("chunks"))}
    new_chunks: list[bytes] = []
    for item in current:
        unchanged = item["path"] in old and old[item["path"]].get("chunks") == item.get("chunks")
        if unchanged:
            label, rnd = parents[item["path"]].magic, parents[item["path"]].random
        else:
            label, rnd = _stored_type(item)
            if label is None:
                label, rnd = _read_type(repository, item)
            new_chunks += [c for c in _ids(item.get("chunks")) if c not in old_chunks]
        collector.file(item["path"], _int(item.get("size")), _int(item.get("inode")), label, rnd,
                       read=not unchanged)
    _sample_chunks(repository, list(dict.fromkeys(new_chunks)), collector)
    signals = collector.finish()
    signals["kind"] = snapshot.kind
    signals["scanned"] = True
    return signals


def _image_signals(repository: Repository, snapshot: Snapshot, parent: Snapshot | None) -> dict:
    """An image snapshot's signals: a sample of its new chunks, each judged and compared with what
    the parent held at the same offset (the parent's ``random`` map, else its chunk read)."""
    old_items: dict[bytes, dict] = {}
    if parent is not None and parent.kind == "image":
        old_items = {item["path"]: item for item in repository.read_tree(parent)
                     if isinstance(item, dict) and isinstance(item.get("path"), bytes)}
    old_chunks = {c for item in old_items.values() for c in _ids(item.get("chunks"))}
    new: list[tuple[bytes, str, int, bytes | None, int]] = []  # (id, disk, offset, parent id, parent flag)
    seen: set[bytes] = set()
    for item in repository.read_tree(snapshot):
        if not isinstance(item, dict) or not isinstance(item.get("path"), bytes):
            continue
        chunk_size = _int(item.get("chunk_size"))
        old = old_items.get(item["path"])
        same = old is not None and old.get("chunk_size") == chunk_size and chunk_size > 0
        old_ids = _ids(old.get("chunks")) if same else []
        old_map = old.get("random") if same and isinstance(old.get("random"), bytes) else None
        if old_map is not None and len(old_map) != len(old_ids):
            old_map = None
        for index, blob_id in enumerate(_ids(item.get("chunks"))):
            if blob_id in old_chunks or blob_id in seen or not any(blob_id):
                continue
            seen.add(blob_id)
            parent_id = old_ids[index] if index < len(old_ids) and any(old_ids[index]) else None
            flag = old_map[index] if old_map is not None and parent_id is not None else CHUNK_UNKNOWN
            new.append((blob_id, os.fsdecode(item["path"])[:64], index * chunk_size, parent_id, flag))
    collector = SignalCollector(parent={} if parent is not None else None, image=True)
    if new:
        sample = new if len(new) <= SCAN_CHUNK_SAMPLE else _random.Random(0).sample(new, SCAN_CHUNK_SAMPLE)
        probe = SignalCollector(parent={}, image=True)
        for blob_id, disk, offset, parent_id, flag in sample:
            data = repository.read_blob(blob_id)
            random, windows = image_chunk_randomness(data)
            probe.chunk(len(data), random)
            if parent_id is not None and flag == CHUNK_UNKNOWN:  # a parent written before the map
                flag = image_chunk_randomness(repository.read_blob(parent_id))[1]
            probe.extent(disk, offset, len(data), flag, windows)
        scale = len(new) / len(sample)
        collector.new_chunks = len(new)
        for name in ("new_bytes", "random_chunks", "random_bytes", "overwritten_bytes", "became_random_bytes",
                     "became_random_chunks"):
            setattr(collector, name, int(getattr(probe, name) * scale))
        collector.became_random_extents = probe.became_random_extents
    signals = collector.finish()
    signals["kind"] = snapshot.kind
    signals["scanned"] = True
    return signals


def _sample_chunks(repository: Repository, chunks: list[bytes], collector: SignalCollector) -> None:
    """Judge a sample of the new chunks and scale the counts to all of them."""
    if not chunks:
        return
    sample = chunks if len(chunks) <= SCAN_CHUNK_SAMPLE else _random.Random(0).sample(chunks, SCAN_CHUNK_SAMPLE)
    probe = SignalCollector(parent=None)
    for blob_id in sample:
        data = repository.read_blob(blob_id)
        probe.chunk(len(data), looks_random(data))
    scale = len(chunks) / len(sample)
    collector.new_chunks += len(chunks)
    collector.new_bytes += int(probe.new_bytes * scale)
    collector.random_chunks += int(probe.random_chunks * scale)
    collector.random_bytes += int(probe.random_bytes * scale)


def _is_file(item: Any) -> bool:
    """A file item of a tree read from the repository (hostile input: anything else is skipped)."""
    return isinstance(item, dict) and item.get("type") == "file" and isinstance(item.get("path"), bytes)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ids(chunks: Any) -> list[bytes]:
    if not isinstance(chunks, bytes):
        return []
    return [chunks[i: i + 32] for i in range(0, len(chunks) - 31, 32)]


def _stored_type(item: dict) -> tuple[str | None, bool | None]:
    label = item.get("magic")
    rnd = item.get("random")
    return (label if isinstance(label, str) and len(label) <= 16 else None,
            rnd if isinstance(rnd, bool) else None)


def _read_type(repository: Repository, item: dict) -> tuple[str | None, bool | None]:
    ids = _ids(item.get("chunks"))
    if not ids:
        return "empty", None
    try:
        data = repository.read_blob(ids[0])
    except errors.SafeholdError:
        return None, None
    return magic(data[:1024]), looks_random(data[:WINDOW])


def mark_snapshot(context: Context, ref: str, verdict: str, note: str | None = None,
                  target: str | None = None, *, job_id: int | None = None) -> dict:
    """Record an operator's judgement of a snapshot (it feeds the baseline and latest-clean).
    ``job_id``: run as that queued job, already claimed (``engine.jobs.run_job``)."""
    if verdict not in MARKS:
        raise errors.InvalidMark(snapshot=ref, detail=f"{verdict!r} is not a verdict (clean or suspicious)")
    found = context.open_repository(load_index=False).find_snapshot(ref, target)
    if target is not None and found.target != target:
        raise errors.SnapshotNotFound(ref=f"{ref} of target {printable(target)} (it is a snapshot of "
                                          f"{printable(found.target)})")
    with context.catalog.job("mark", found.target, job_id=job_id) as job:
        with context.locked(purpose="mark", load_index=False) as repository:
            snapshot = repository.load_snapshot(found.id)
            name = record_verdict(repository, snapshot, verdict, "operator", note=note)
            records = load_records(repository)
            state = target_state(repository, snapshot.target, records)
            job.details.update({STATE_KEY: state, "snapshot": snapshot.id, "verdict": verdict})
            job.log(f"snapshot {snapshot.short_id} of {printable(snapshot.target)} marked {verdict} by the operator; "
                    f"record {name[:16]}")
            assessed = assess(live_snapshots(repository, snapshot.target), records)
            return {"snapshot": snapshot.id, "target": snapshot.target, "record": name,
                    "verdict": verdict_dict(assessed.get(snapshot.id)), "state": state}


def target_states(context: Context, good_backups: dict | None = None) -> dict[str, dict]:
    """target -> its ransomware state from the catalog (the newest good backup, mark or scan job
    that recorded one); three queries whatever the number of targets, two when the caller has the
    newest good backups (``catalog.latest_jobs('backup', GOOD_BACKUP_STATUSES)``) at hand."""
    found: dict[str, list] = {}
    for kind in ("backup", "mark", "scan"):
        if kind == "backup" and good_backups is not None:
            jobs = good_backups
        else:
            jobs = context.catalog.latest_jobs(kind, status=("succeeded", "partial"))
        for target, job in jobs.items():
            if target is not None:
                found.setdefault(target, []).append(job)
    states = {target: state_of_jobs(jobs) for target, jobs in found.items()}
    return {target: state for target, state in states.items() if state is not None}


def state_of_jobs(jobs: Any) -> dict | None:
    """The ransomware state recorded by the newest of ``jobs`` (one target's newest good backup,
    mark and scan; None entries allowed) that recorded one; None when none did."""
    newest: tuple[int, dict] | None = None
    for job in jobs:
        state = (job.details or {}).get(STATE_KEY) if job is not None else None
        if isinstance(state, dict) and (newest is None or job.id > newest[0]):
            newest = (job.id, state)
    return newest[1] if newest else None


def paths_text(paths: list[bytes]) -> list[str]:
    return [printable(os.fsdecode(p)) for p in paths]


__all__ = ["assess_snapshots", "compute_signals", "mark_snapshot", "scan_snapshot", "signals_dict", "target_state",
           "state_of", "state_of_jobs", "target_states", "verdict_dict"]
