"""A backup that loses its lock while paused must not commit a snapshot (issue 13, item 1).

A real ``safehold backup`` process is frozen with SIGSTOP after its first pack is on disk
and before its snapshot; its lock goes stale (the stale age is shortened for the test
with the documented SAFEHOLD_LOCK_STALE_AFTER, which every process here shares), a
``safehold prune`` takes the exclusive lock and deletes the paused backup's packs as
garbage, and then the backup is resumed with SIGCONT. It must fail with LockLost, write no
snapshot, and leave a repository that checks clean and restores every earlier snapshot.

Nothing here patches timings inside the process: the pause is a real stopped process, and
the moment to stop it is found by polling the repository for the backup's first pack (the
source is large enough that the backup is far from done by then).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from e2e_support import (Workspace, assert_clean_error, pause_outside_catalog_write, tree_manifest, wait_for,
                          write_file)

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
STALE_AFTER = 3.0  # seconds; the default is 30 minutes


def test_backup_paused_past_its_stale_lock_and_pruned_fails_without_a_snapshot(workspace: Workspace,
                                                                               tmp_path: Path):
    ws = workspace
    ws.env["SAFEHOLD_LOCK_STALE_AFTER"] = str(STALE_AFTER)
    rng = random.Random(13)
    write_file(ws.data / "old.bin", rng.randbytes(3 * MiB))
    ws.run("init")
    ws.run("backup", "--target", "files")
    earlier = {name: tree_manifest(ws.data, metadata=False) for name in ws.snapshot_names()}
    assert len(earlier) == 1

    # ~96 MiB of incompressible data: six packs or so, so the first pack appears long before the end.
    for i in range(24):
        write_file(ws.data / f"new{i:02}.bin", rng.randbytes(4 * MiB))
    packs_before = ws.pack_files()
    backup = ws.start("backup", "--target", "files", "--threads", "1")
    try:
        wait_for(lambda: ws.pack_files() - packs_before or backup.poll() is not None, timeout=120,
                 what="the backup's first pack")
        # Freeze it while it does not hold the catalog's write lock (prune records a job too).
        pause_outside_catalog_write(backup, ws.state, tries=200, interval=0.01)
        assert backup.poll() is None, "the backup ended before it could be paused"
        written = ws.pack_files() - packs_before
        assert written, "the backup was paused before writing a pack"
        assert ws.lock_files(), "the paused backup should still have its lock object"

        # Paused past the stale age: its lock no longer blocks prune, which deletes its packs
        # (no snapshot references them yet).
        time.sleep(STALE_AFTER + 1.5)
        ws.run("prune")
        assert not (written & ws.pack_files()), "prune should have deleted the paused backup's packs"
    finally:
        backup.send_signal(signal.SIGCONT)
    stdout, stderr = backup.communicate(timeout=300)

    if backup.returncode == 0:
        check = ws.run("check", "--read-data", ok=False)
        pytest.fail("the backup that lost its lock exited 0 and committed a snapshot; check then says:\n"
                    + check.stdout + check.stderr)
    finished = subprocess.CompletedProcess(backup.args, backup.returncode, stdout, stderr)
    line = assert_clean_error(finished, 25, "backup files lost its lock on the repository")
    print(line)
    assert set(ws.snapshot_names()) == set(earlier), "a backup that lost its lock wrote a snapshot"

    check = ws.json("check", "--read-data")
    assert check["ok"] is True, check
    for name, manifest in earlier.items():
        out = tmp_path / f"restore-{name[:8]}"
        ws.run("restore", name, "--to", out)
        restored = tree_manifest(out / "data", metadata=False)
        assert restored == manifest, f"snapshot {name[:8]} does not restore byte-identical"
