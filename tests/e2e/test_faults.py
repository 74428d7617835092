"""Fault injection through the real CLI: SIGKILL at random moments, a flipped byte in a
pack, concurrent backups, and prune against a running backup.

Nothing here depends on timing for its verdict: kill moments are random (seeded)
but every outcome is acceptable as long as the repository stays consistent, and
the one kill that must leave garbage behind waits until a pack is on disk first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e_support import (
    Workspace,
    assert_clean_error,
    assert_same_tree,
    compressible_bytes,
    flip_byte,
    make_dataset,
    make_workspace,
    parse_table,
    pause_outside_catalog_write,
    tree_manifest,
    wait_for,
    write_file,
)

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
KILLS = 22


def rewrite(paths: list[Path], rng: random.Random, count: int, root: Path, manifest: dict) -> None:
    """Give ``count`` of ``paths`` new content and record it in ``manifest`` (tree_manifest form)."""
    for path in rng.sample(paths, count):
        if path.suffix == ".bin":
            data = rng.randbytes(path.stat().st_size)
        else:
            data = compressible_bytes(rng, path.stat().st_size)
        write_file(path, data)
        manifest[os.fsencode(path.relative_to(root))] = ("file", hashlib.sha256(data).hexdigest())


def restore_and_compare(ws: Workspace, snapshot_id: str, manifest: dict, out: Path) -> None:
    ws.run("restore", snapshot_id, "--to", out)
    actual = tree_manifest(out / "data", metadata=False)
    assert actual == manifest, f"snapshot {snapshot_id[:8]} does not restore what was backed up"


def test_sigkill_at_random_moments_leaves_a_consistent_repository(workspace: Workspace, tmp_path: Path):
    ws = workspace
    rng = random.Random(20240601)
    # ~80 MB: 20 random files and 20 log-like ones of 1.6-2 MB.
    paths = make_dataset(ws.data, rng, random_files=20, compressible_files=20, file_size=1_600_000)
    random_paths = [p for p in paths if p.suffix == ".bin"]
    manifest = tree_manifest(ws.data, metadata=False)
    ws.run("init")
    ws.run("backup", "--target", "files")
    expected: dict[str, dict] = {name: dict(manifest) for name in ws.snapshot_names()}

    # One undisturbed run with the same amount of work, to learn how long a run takes.
    rewrite(random_paths, rng, 10, ws.data, manifest)
    before = ws.snapshot_names()
    started = time.monotonic()
    ws.run("backup", "--target", "files")
    duration = time.monotonic() - started
    expected.update({name: dict(manifest) for name in ws.snapshot_names() - before})
    assert len(expected) == 2

    outcomes = {"killed": 0, "finished": 0}
    for attempt in range(KILLS):
        # 10 random files (~18 MB): more than one 16 MiB pack, so kills land between pack writes too.
        rewrite(random_paths, rng, 10, ws.data, manifest)
        rewrite(paths, rng, 2, ws.data, manifest)
        before = ws.snapshot_names()
        delay = rng.uniform(0.02, duration)
        process = ws.start("backup", "--target", "files")
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        outcomes["finished" if process.returncode == 0 else "killed"] += 1
        if process.returncode != 0:
            assert process.returncode == -signal.SIGKILL, (process.returncode, stderr)
        # A run that committed its snapshot before the kill must restore what it read.
        expected.update({name: dict(manifest) for name in ws.snapshot_names() - before})
    assert outcomes["killed"] > 0, outcomes
    print(f"{KILLS} kills over {duration:.2f}s runs: {outcomes}, {len(expected)} snapshot(s)")

    # The last kill waits for a pack of this run to be on disk: that pack is garbage.
    for attempt in range(3):
        rewrite(random_paths, rng, 15, ws.data, manifest)
        packs = ws.pack_files()
        before = ws.snapshot_names()
        process = ws.start("backup", "--target", "files", "--threads", "1")
        wait_for(lambda: process.poll() is not None or ws.pack_files() - packs, timeout=120,
                 interval=0.002, what="a new pack")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=120)
        expected.update({name: dict(manifest) for name in ws.snapshot_names() - before})
        if process.returncode == -signal.SIGKILL and ws.snapshot_names() == before:
            break
    else:
        pytest.fail("the backup finished every time before it could be killed after its first pack")

    # Killed holders left their locks; they are stale (dead pids on this host).
    assert ws.lock_files(), "a backup killed mid-write should have left its lock"

    # Every snapshot that exists restores exactly what was backed up.
    assert set(expected) == ws.snapshot_names()
    for number, (snapshot_id, files) in enumerate(sorted(expected.items())):
        restore_and_compare(ws, snapshot_id, files, tmp_path / f"restore{number}")

    check = ws.run("check")
    assert "no errors found" in check.stdout
    assert "garbage (not an error):" in check.stdout, check.stdout
    garbage = int(check.stdout.split("garbage (not an error): ")[1].split(" ")[0])
    assert garbage >= 1, check.stdout

    # The killed jobs are recorded as interrupted, not as running forever.
    interrupted = parse_table(ws.run("jobs", "--status", "interrupted", "--limit", "100").stdout)
    assert interrupted and all(row[1:4] == ["backup", "files", "interrupted"] for row in interrupted), interrupted
    assert parse_table(ws.run("jobs", "--status", "running").stdout) == []

    # No unlock needed: stale locks of dead processes do not block a backup or prune.
    assert ws.lock_files()
    before = ws.snapshot_names()
    ws.run("backup", "--target", "files")
    (latest,) = ws.snapshot_names() - before
    expected[latest] = dict(manifest)
    prune = json.loads(ws.run("prune", "--json").stdout)
    assert prune["unindexed_packs_deleted"] == garbage, prune
    assert ws.temporary_files() == []
    after = ws.json("check", "--read-data")
    assert after["ok"] is True and after["unreferenced_packs"] == [] and after["unused_blobs"] == 0
    assert after["packs_read"] == after["packs"] == len(ws.pack_files())
    restore_and_compare(ws, latest, expected[latest], tmp_path / "restore-final")
    # The oldest snapshot survived prune too.
    oldest = min(expected, key=lambda name: next(s["time"] for s in ws.snapshots() if s["id"] == name))
    restore_and_compare(ws, oldest, expected[oldest], tmp_path / "restore-oldest")


@dataclass
class Flipped:
    ws: Workspace
    paths: list[Path]
    pack: Path
    first: dict
    second: dict
    report: dict                         # check --read-data --json
    check: subprocess.CompletedProcess   # check --read-data (text)
    restore: subprocess.CompletedProcess  # restore latest --json
    out: Path


@pytest.fixture(scope="module")
def flipped(tmp_path_factory) -> Flipped:
    """Two snapshots sharing most data, then one byte flipped in the middle of the biggest pack."""
    root = tmp_path_factory.mktemp("flipped")
    ws = make_workspace(root / "ws")
    rng = random.Random(99)
    paths = make_dataset(ws.data, rng, random_files=6, compressible_files=10, file_size=700_000, folders=3)
    ws.run("init")
    ws.run("backup", "--target", "files")
    write_file(paths[0], rng.randbytes(700_000))  # the second snapshot shares all but one file
    ws.run("backup", "--target", "files")
    first, second = ws.snapshots()
    assert ws.json("check", "--read-data")["ok"] is True

    pack = max(ws.pack_files(), key=lambda p: p.stat().st_size)
    flip_byte(pack, pack.stat().st_size // 2)  # the middle of a pack is blob data, not its header

    report = json.loads(ws.run("check", "--read-data", "--json", code=19).stdout)
    check = ws.run("check", "--read-data", code=19)
    out = root / "out"
    restore = ws.run("restore", "latest", "--to", out, "--json", code=18)
    return Flipped(ws, paths, pack, first, second, report, check, restore, out)


def test_flipped_byte_check_names_the_pack_snapshots_and_files(flipped: Flipped):
    report = flipped.report
    assert report["ok"] is False
    assert [d["pack"] for d in report["damaged_packs"]] == [flipped.pack.name]
    damaged = report["damaged_packs"][0]
    assert "hash mismatch" in damaged["reason"] and "1 blob(s) fail authentication" in damaged["reason"]
    assert flipped.second["short_id"] in damaged["snapshots"]
    (damaged_file,) = json.loads(flipped.restore.stdout)["damaged"]
    assert f"{flipped.second['short_id']}:{damaged_file}" in damaged["files"]

    text = flipped.check
    assert_clean_error(text, 19, "check found 1 error(s)")
    assert f"damaged pack {flipped.pack.name}: " in text.stderr
    assert re.search(rf"^  snapshots: .*{flipped.second['short_id']}", text.stderr, re.M), text.stderr
    assert f"  file: {flipped.second['short_id']}:{damaged_file}" in text.stderr


def test_flipped_byte_check_names_only_the_damaged_file(flipped: Flipped):
    damaged = flipped.report["damaged_packs"][0]
    restored_damaged = json.loads(flipped.restore.stdout)["damaged"]
    named = [f.split(":", 1)[1] for f in damaged["files"] if f.startswith(flipped.second["short_id"] + ":")]
    assert named == restored_damaged


def test_flipped_byte_restore_writes_every_undamaged_file(flipped: Flipped, tmp_path: Path):
    ws, proc = flipped.ws, flipped.restore
    outcome = json.loads(proc.stdout)
    assert len(outcome["damaged"]) == 1, outcome
    (damaged_file,) = outcome["damaged"]
    assert damaged_file.startswith("data/part")
    assert outcome["files"] == len(flipped.paths) - 1
    assert_clean_error(proc, 18, damaged_file)
    assert not (flipped.out / damaged_file).exists()  # never written with wrong bytes
    relative = os.fsencode(Path(damaged_file).relative_to("data"))
    assert_same_tree(ws.data, flipped.out / "data", exclude=[relative])
    # Restoring around the damage is clean: no error for a healthy file.
    healthy = next(p for p in flipped.paths if str(p.relative_to(ws.root)) != damaged_file)
    ws.run("restore", "latest", "--to", tmp_path / "one", "--include", healthy.relative_to(ws.root))
    assert (tmp_path / "one" / healthy.relative_to(ws.root)).read_bytes() == healthy.read_bytes()


def test_two_backups_of_different_targets_at_once(workspace: Workspace, tmp_path: Path):
    ws = workspace
    ws.write_config(targets=[
        {"name": "alpha", "tier": 2, "source": {"type": "files", "paths": ["alpha"]}},
        {"name": "beta", "tier": 2, "source": {"type": "files", "paths": ["beta"]}},
    ])
    rng = random.Random(4)
    make_dataset(ws.root / "alpha", rng, random_files=6, compressible_files=4, file_size=2 * MiB)
    make_dataset(ws.root / "beta", rng, random_files=6, compressible_files=4, file_size=2 * MiB)
    ws.run("init")
    for round_number in range(2):
        if round_number:  # the second round is incremental, with new data on both sides
            for name in ("alpha", "beta"):
                write_file(ws.root / name / "part0" / "extra.bin", rng.randbytes(3 * MiB))
        processes = {name: ws.start("backup", "--target", name, "--threads", "1") for name in ("alpha", "beta")}
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, (name, stdout, stderr)
    snapshots = ws.snapshots()
    assert sorted(s["target"] for s in snapshots) == ["alpha", "alpha", "beta", "beta"]
    for name in ("alpha", "beta"):
        ws.run("restore", f"latest:{name}", "--to", tmp_path / name)
        assert_same_tree(ws.root / name, tmp_path / name / name)
    assert ws.json("check", "--read-data")["ok"] is True


def test_prune_refused_while_a_backup_runs_and_waits_with_wait(workspace: Workspace, tmp_path: Path):
    ws = workspace
    rng = random.Random(8)
    write_file(ws.data / "old.bin", rng.randbytes(2 * MiB))
    ws.run("init")
    ws.run("backup", "--target", "files")
    os.unlink(ws.data / "old.bin")  # its data becomes garbage for prune once forgotten
    ws.run("backup", "--target", "files")
    ws.run("forget", "--keep-last", "1")
    for i in range(3):
        write_file(ws.data / f"log{i}.txt", compressible_bytes(rng, 3 * MiB))

    # A slow backup: one thread and zstd level 19.
    backup = ws.start("backup", "--target", "files", "--threads", "1", "--compression", "19")
    try:
        wait_for(lambda: ws.lock_files() or backup.poll() is not None, timeout=120, what="the backup's lock")
        # Freeze it while it holds the lock (and not the catalog's write lock): the test no
        # longer depends on how long the backup takes.
        pause_outside_catalog_write(backup, ws.state, tries=100, interval=0.02)
        assert backup.poll() is None and ws.lock_files(), "the backup ended before prune could meet it"

        refused = ws.run("prune", ok=False)
        assert_clean_error(refused, 14, "repository is locked (shared) by backup files (pid "
                                        f"{backup.pid} on ")

        waiting = ws.start("prune", "--wait", "120", "--json")
        time.sleep(2)
        assert waiting.poll() is None, "prune --wait went ahead while the backup held its lock"
    finally:
        backup.send_signal(signal.SIGCONT)
    stdout, stderr = backup.communicate(timeout=300)
    assert backup.returncode == 0, stderr
    pruned_out, pruned_err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, pruned_err
    report = json.loads(pruned_out)
    assert report["bytes_freed"] >= 2 * MiB  # old.bin's data, forgotten before the backup
    check = ws.json("check", "--read-data")
    assert check["ok"] is True and check["unreferenced_packs"] == []
    ws.run("restore", "latest", "--to", tmp_path / "out")
    assert_same_tree(ws.data, tmp_path / "out" / "data")
