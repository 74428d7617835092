"""What a backup reads before its first byte goes out side by side (issue 19: on S3 each listing
is a round trip): the listings of snapshots, forget records, verdict records and index objects
are made at the same time, not one after the other. Real repository (local backend, its
listings held at a barrier), real catalog."""

from __future__ import annotations

import threading
from pathlib import Path

from safehold.engine.backup import backup_target
from safehold.engine.context import Context
from safehold.repository import Repository
from safehold.repository.backends import Kind, open_backend
from safehold.repository.backends.local import LocalBackend

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
HISTORY_KINDS = (Kind.SNAPSHOTS, Kind.FORGOTTEN, Kind.VERDICTS, Kind.INDEX)


def test_a_backup_lists_its_history_side_by_side(tmp_path: Path, monkeypatch):
    (tmp_path / "password").write_text("pw\n")
    (tmp_path / "password").chmod(0o600)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a").write_bytes(b"docs" * 1000)
    config = tmp_path / "targets.yml"
    config.write_text('repository: {"url": "repo", "password_file": "password"}\nstate_dir: state\n'
                      f'targets:\n  - {{"name": "docs", "tier": 1, "source": {{"type": "files", '
                      f'"paths": ["{tmp_path / "docs"}"]}}}}\n')
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    context = Context.load(config)
    try:
        first = backup_target(context, "docs")
        # Each of the four listings waits (at most 5 s) until all four are being made at once.
        barrier = threading.Barrier(len(HISTORY_KINDS), timeout=5)
        met: list[Kind] = []
        waited: set[Kind] = set()
        original = LocalBackend.list

        def listing(self, kind):
            if kind in HISTORY_KINDS and kind not in waited:
                waited.add(kind)
                try:
                    barrier.wait()
                    met.append(kind)
                except threading.BrokenBarrierError:
                    pass  # one after the other: the barrier broke; the listing still goes on
            return original(self, kind)

        monkeypatch.setattr(LocalBackend, "list", listing)
        (tmp_path / "docs" / "b").write_bytes(b"changed")
        second = backup_target(context, "docs")
    finally:
        context.close()
    assert sorted(met) == sorted(HISTORY_KINDS)
    assert second.parent_id == first.snapshot_id
