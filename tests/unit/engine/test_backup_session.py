"""One open, one shared lock and one reading of the history for every target of ``backup --all``
(engine/backup.py ``BackupSession``): a target that fails in the middle closes the session (its
lock released) and the next target opens a fresh one; every snapshot restores; no lock is left.
Real repository (local backend), real catalog."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from safehold.engine.backup import backup_targets
from safehold.engine.context import Context
from safehold.engine.restore import restore_snapshot
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend

from control_support import files_workspace  # noqa: E402


@pytest.fixture
def lock_writes(monkeypatch) -> Counter:
    """'claims' (a lock object created) and 'deletes' of lock objects on the local backend."""
    counted: Counter = Counter()
    guard = threading.Lock()
    put, delete = LocalBackend.put, LocalBackend.delete

    def counting_put(self, kind, name, data, *args, exclusive=False, **kwargs):
        if kind is Kind.LOCKS and exclusive:
            with guard:
                counted["claims"] += 1
        return put(self, kind, name, data, *args, exclusive=exclusive, **kwargs)

    def counting_delete(self, kind, name, *args, **kwargs):
        if kind is Kind.LOCKS:
            with guard:
                counted["deletes"] += 1
        return delete(self, kind, name, *args, **kwargs)

    monkeypatch.setattr(LocalBackend, "put", counting_put)
    monkeypatch.setattr(LocalBackend, "delete", counting_delete)
    return counted


def restored_names(context: Context, tmp_path: Path, snapshot_id: str) -> dict[str, bytes]:
    """file name -> content of every file restored from ``snapshot_id`` (by the restore job)."""
    destination = tmp_path / "restored" / snapshot_id
    restore_snapshot(context, snapshot_id, str(destination))
    return {path.name: path.read_bytes() for path in destination.rglob("*") if path.is_file()}


def test_one_lock_for_every_target_and_a_fresh_one_after_a_failure(tmp_path: Path, lock_writes: Counter):
    config = files_workspace(tmp_path, ["docs", "mail", "www", "logs"])
    context = Context.load(config)
    try:
        first = backup_targets(context, ["docs", "mail", "www", "logs"])
        assert not first.failures and lock_writes == Counter(claims=1, deletes=1)  # was 4 and 4
        lock_writes.clear()
        # 'mail' fails in the middle of the run (its folder is gone); the others still back up,
        # on their parents.
        for name in ("docs", "www", "logs"):
            (tmp_path / name / "b").write_bytes(b"new " + name.encode())
        (tmp_path / "mail" / "a").unlink()
        (tmp_path / "mail").rmdir()
        second = backup_targets(context, ["docs", "mail", "www", "logs"])
        assert list(second.failures) == ["mail"], second.failures
        # docs and mail under the first lock; mail's failure released it; www and logs under a second.
        assert lock_writes == Counter(claims=2, deletes=2), lock_writes
        assert not list((tmp_path / "repo" / "locks").iterdir())
        parents = {result.target: result.snapshot_id for result in first.results}
        for result in second.results:
            assert result.parent_id == parents[result.target]
            assert restored_names(context, tmp_path, result.snapshot_id) == {
                "a": result.target.encode() * 1000, "b": b"new " + result.target.encode()}
        for result in first.results:  # every earlier snapshot still restores
            assert restored_names(context, tmp_path, result.snapshot_id) == {"a": result.target.encode() * 1000}
    finally:
        context.close()


def test_a_target_named_twice_backs_up_on_its_own_new_snapshot(tmp_path: Path):
    config = files_workspace(tmp_path, ["docs"])
    context = Context.load(config)
    try:
        run = backup_targets(context, ["docs", "docs"])
    finally:
        context.close()
    first, second = run.results
    assert first.parent_id is None and second.parent_id == first.snapshot_id
