"""A prune that loses its lock while paused must delete nothing more (issue 13, follow-up of item 1).

A real ``safehold prune`` is frozen with SIGSTOP after it planned (its repacking has written
its first new pack) and before its first delete. Its exclusive lock goes stale (the stale age
is shortened with the documented SAFEHOLD_LOCK_STALE_AFTER, shared by every process here), and
a backup runs meanwhile: it takes a shared lock beside the stale one and deduplicates against
blobs that the paused prune planned to drop (the content of a forgotten snapshot, backed up
again). Then the prune is resumed with SIGCONT. It must stop with LockLost (exit 25) having
deleted nothing, and the backup's snapshot must restore byte-identical with ``check
--read-data`` clean. Without the proof before deleting, the prune deletes the packs those blobs
live in and the new snapshot is damaged.

The moment to stop the prune is found by polling the repository for the first pack its
repacking writes (about 60 MiB are repacked, so the deletes are seconds away by then).
"""

from __future__ import annotations

import random
import shutil
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


def index_files(ws: Workspace) -> set[str]:
    return {p.name for p in (ws.repo / "index").iterdir() if not p.name.startswith(".")}


def test_prune_paused_past_its_stale_lock_deletes_nothing_used_by_a_backup_meanwhile(workspace: Workspace,
                                                                                     tmp_path: Path):
    ws = workspace
    ws.env["SAFEHOLD_LOCK_STALE_AFTER"] = str(STALE_AFTER)
    rng = random.Random(1313)
    # Kept and dropped files alternate, so every pack ends up about a quarter garbage once the
    # first snapshot is forgotten: prune repacks them all (long) before deleting anything.
    for i in range(20):
        write_file(ws.data / f"{i:02}a-keep.bin", rng.randbytes(3 * MiB))
        write_file(ws.data / f"{i:02}b-drop.bin", rng.randbytes(1 * MiB))
    ws.run("init")
    ws.run("backup", "--target", "files", "--threads", "1")
    (first,) = ws.snapshot_names()

    aside = tmp_path / "aside"
    aside.mkdir()
    for path in ws.data.glob("*-drop.bin"):
        shutil.move(path, aside / path.name)
    ws.run("backup", "--target", "files")
    kept_manifest = tree_manifest(ws.data, metadata=False)
    (kept,) = ws.snapshot_names() - {first}
    ws.run("forget", first)

    packs_before = ws.pack_files()
    indexes_before = index_files(ws)
    prune = ws.start("prune")
    try:
        wait_for(lambda: ws.pack_files() - packs_before or prune.poll() is not None, timeout=120,
                 what="the first pack the prune's repacking writes")
        pause_outside_catalog_write(prune, ws.state, tries=200, interval=0.01)
        assert prune.poll() is None, "the prune ended before it could be paused"
        assert packs_before <= ws.pack_files() and indexes_before <= index_files(ws), \
            "the prune was paused after it had begun deleting"

        # Paused past the stale age: a backup goes ahead beside the stale exclusive lock, and
        # stores the dropped files again by reference to the blobs the prune means to drop.
        time.sleep(STALE_AFTER + 1.5)
        for path in aside.iterdir():
            shutil.move(path, ws.data / path.name)
        ws.run("backup", "--target", "files")
        new_manifest = tree_manifest(ws.data, metadata=False)
    finally:
        prune.send_signal(signal.SIGCONT)
    stdout, stderr = prune.communicate(timeout=300)
    (new,) = ws.snapshot_names() - {kept}

    finished = subprocess.CompletedProcess(prune.args, prune.returncode, stdout, stderr)
    if prune.returncode == 0:
        check = ws.run("check", "--read-data", ok=False)
        pytest.fail("the prune that lost its lock exited 0; check then says:\n" + check.stdout + check.stderr)
    print(assert_clean_error(finished, 25, "prune lost its lock on the repository"))
    assert packs_before <= ws.pack_files(), "the prune deleted packs after losing its lock"
    assert indexes_before <= index_files(ws), "the prune deleted index objects after losing its lock"

    check = ws.json("check", "--read-data")
    assert check["ok"] is True, check
    for name, manifest in ((new, new_manifest), (kept, kept_manifest)):
        out = tmp_path / f"restore-{name[:8]}"
        ws.run("restore", name, "--to", out)
        assert tree_manifest(out / "data", metadata=False) == manifest, f"{name[:8]} does not restore byte-identical"

    # The next prune needs no manual step, and drops only what nothing uses.
    ws.run("prune")
    check = ws.json("check", "--read-data")
    assert check["ok"] is True, check
    out = tmp_path / "restore-again"
    ws.run("restore", new, "--to", out)
    assert tree_manifest(out / "data", metadata=False) == new_manifest
