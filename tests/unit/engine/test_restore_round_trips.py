"""The requests a restore makes before its first data byte (issue 19: on S3 each is a round trip,
20-50 ms to a bucket in another region). ``restore --all`` lists the snapshots and the forget
records once for every target and reads each snapshot object once (each target listed and read
them again); acquiring a lock does not read back the claim it just wrote; a restore by full
snapshot id reads that object without listing the snapshots. Real repository (local backend,
its calls counted), real catalog."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from safehold import errors
from safehold.engine.context import Context
from safehold.engine.restore import restore_targets
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend

from control_support import files_workspace  # noqa: E402


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """(operation, kind) -> how many times the local backend was asked (any thread)."""
    counted: Counter = Counter()
    guard = threading.Lock()
    for operation in ("get", "list"):
        original = getattr(LocalBackend, operation)

        def counting(self, kind, *args, _original=original, _operation=operation, **kwargs):
            with guard:
                counted[(_operation, kind)] += 1
            return _original(self, kind, *args, **kwargs)

        monkeypatch.setattr(LocalBackend, operation, counting)
    return counted


def backed_up_workspace(tmp_path: Path) -> Path:
    """The two-target files workspace with one backup of each target; its targets.yml."""
    from safehold.engine.backup import backup_targets

    config = files_workspace(tmp_path, ("docs", "mail"))
    context = Context.load(config)
    try:
        backup_targets(context, ["docs", "mail"])
    finally:
        context.close()
    return config


def test_restore_all_resolves_every_snapshot_once(tmp_path: Path, calls: Counter):
    config = backed_up_workspace(tmp_path)
    calls.clear()
    # Without the local object cache (repository/cache.py), which would answer every snapshot GET here.
    context = Context.load(config, cache=False)
    try:
        run = restore_targets(context, str(tmp_path / "out"), ["docs", "mail"])
    finally:
        context.close()
    assert not run.failures and sorted(outcome.target for outcome in run.results) == ["docs", "mail"]
    for name in ("docs", "mail"):
        [restored] = (tmp_path / "out" / name).rglob("a")
        assert restored.read_bytes() == name.encode() * 1000
    assert calls[("list", Kind.SNAPSHOTS)] == 1  # was 3: once more per target
    assert calls[("get", Kind.SNAPSHOTS)] == 2  # was 4: each object again per target
    assert calls[("list", Kind.FORGOTTEN)] == 1  # was 3
    assert calls[("get", Kind.LOCKS)] == 0  # the claim just written is not read back (was 1)


def test_a_lock_still_sees_the_locks_of_others(tmp_path: Path, calls: Counter):
    config = files_workspace(tmp_path, ("docs", "mail"))
    context = Context.load(config)
    try:
        repository = context.open_repository(load_index=False)
        shared = [repository.lock(purpose=f"reader {i}") for i in range(3)]
        calls.clear()
        with pytest.raises(errors.RepositoryLocked):
            repository.lock(exclusive=True, purpose="prune")
        assert calls[("get", Kind.LOCKS)] == 3  # the three others, never the claim itself
        for lock in shared:
            lock.release()
    finally:
        context.close()


def test_a_full_snapshot_id_is_read_without_a_listing(tmp_path: Path, calls: Counter):
    from safehold.engine.backup import backup_targets

    config = files_workspace(tmp_path, ("docs", "mail"))
    context = Context.load(config)
    try:
        snapshot_id = backup_targets(context, ["docs"]).results[0].snapshot_id
        repository = context.open_repository(load_index=False)
        calls.clear()
        assert repository.find_snapshot(snapshot_id).id == snapshot_id
        assert calls[("list", Kind.SNAPSHOTS)] == 0 and calls[("get", Kind.SNAPSHOTS)] == 1
        assert repository.find_snapshot(snapshot_id[:12]).id == snapshot_id  # a prefix still lists
        missing = "0" * 64
        with pytest.raises(errors.SnapshotNotFound):
            repository.find_snapshot(missing)
        # a damaged object under a full id is named as damage, as it was through the listing
        backend = repository.backend
        backend.put(Kind.SNAPSHOTS, "f" * 64, b"not a snapshot")
        with pytest.raises(errors.IntegrityError):
            repository.find_snapshot("f" * 64)
    finally:
        context.close()


def test_restore_all_reads_its_history_while_the_lock_is_acquired(tmp_path: Path, monkeypatch):
    """The index, snapshot and forget-record listings go out once our claim is stored, beside the
    listing of the other locks and the claim's rewrite (two round trips fewer on S3), never before
    the claim. The lock listing waits (up to 2 s) for the three listings, so the order is fixed
    when they run side by side, whatever the load; on the old code (listings after the lock) it
    times out."""
    config = backed_up_workspace(tmp_path)
    events: list[tuple[str, Kind]] = []
    guard = threading.Lock()
    history = {Kind.SNAPSHOTS, Kind.INDEX, Kind.FORGOTTEN}
    listed: set[Kind] = set()
    all_listed = threading.Event()
    original_list, original_put = LocalBackend.list, LocalBackend.put

    def listing(self, kind, *args, **kwargs):
        if kind == Kind.LOCKS:
            all_listed.wait(2)
        with guard:
            events.append(("list", kind))
            if kind in history:
                listed.add(kind)
                if listed == history:
                    all_listed.set()
        return original_list(self, kind, *args, **kwargs)

    def putting(self, kind, *args, **kwargs):
        if kind == Kind.LOCKS:
            with guard:
                events.append(("put", kind))
        return original_put(self, kind, *args, **kwargs)

    monkeypatch.setattr(LocalBackend, "list", listing)
    monkeypatch.setattr(LocalBackend, "put", putting)
    context = Context.load(config, cache=False)
    try:
        run = restore_targets(context, str(tmp_path / "out"), ["docs", "mail"])
    finally:
        context.close()
    assert not run.failures and len(run.results) == 2
    claim, held = [i for i, event in enumerate(events) if event == ("put", Kind.LOCKS)][:2]
    for kind in (Kind.SNAPSHOTS, Kind.INDEX, Kind.FORGOTTEN):
        assert claim < events.index(("list", kind)) < held, (kind, events)
