"""Disk-full campaign (issue 13): a small real tmpfs fills up during a backup, a prune and a
restore, at seeded fill levels.

The repository lives on an 8 MiB tmpfs; before each run a ballast file leaves a seeded amount
of free space, less than the run needs. Each run must stop with exit 20 and one clear error
line (no traceback), leave no temporary file and no lock, and lose nothing: once the ballast is
gone, ``check --read-data`` is clean, every earlier snapshot restores byte-identical and the
same command succeeds without any manual step. A restore into a 2 MiB tmpfs that cannot hold
the snapshot stops with exit 20 as well and names the destination, not the repository.

(`tests/e2e/test_errors.py` has the single full-disk backup this grew from.)
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from e2e_support import tree_manifest, write_file
from faults_support import SPENT, campaign_seed, figures, finish, make_campaign_workspace

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
ROUNDS = 3


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(mount: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``mount``."""
    ballast = mount / "ballast"
    size = max(0, free_bytes(mount) - leave)
    with open(ballast, "wb") as handle:
        while size > 0:
            written = handle.write(b"\0" * min(size, MiB))  # zeros: tmpfs allocates them all the same
            size -= written
    return ballast


def test_disk_full_campaign(tmpfs, tmp_path: Path):
    SPENT.clear()
    rng = random.Random(campaign_seed(2020))
    started = time.monotonic()
    repo_mount = tmpfs("repo", "8m")
    ws = make_campaign_workspace(tmp_path / "ws")
    (repo_mount / "repo").mkdir()
    ws.repo.symlink_to(repo_mount / "repo")  # the workspace's helpers look at ws/repo
    write_file(ws.data / "base.bin", rng.randbytes(MiB))
    ws.run("init")
    expected: dict[str, dict] = {}
    problems: list[str] = []
    tally = {"backup": 0, "prune": 0, "restore": 0, "exit20": 0}

    def record_new(before: set[str]) -> None:
        for name in ws.snapshot_names() - before:
            expected[name] = tree_manifest(ws.data, metadata=False)

    def backup_ok() -> None:
        before = ws.snapshot_names()
        ws.run("backup", "--target", "files")
        record_new(before)

    def expect_full(what: str, *args: str, destination: str = "repository") -> None:
        outcome = finish(ws.start(*args))
        tally[what] += 1
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
        if outcome.code != 20 or outcome.traceback or len(errors) != 1:
            problems.append(f"{what} on a full disk: exit {outcome.code}\n{outcome.stderr[-1200:]}")
            return
        tally["exit20"] += 1
        if destination == "repository" and "repository storage" not in errors[0]:
            problems.append(f"{what}: the error does not say the repository is full: {errors[0]}")
        if destination != "repository" and destination not in errors[0]:
            problems.append(f"{what}: the error does not name the destination {destination}: {errors[0]}")
        if list((repo_mount / "repo").rglob(".tmp-*")):
            problems.append(f"{what} left temporary files: {list((repo_mount / 'repo').rglob('.tmp-*'))}")
        if ws.lock_files():
            problems.append(f"{what} left its lock: {ws.lock_files()}")

    def nothing_lost(label: str) -> None:
        report = ws.json("check", "--read-data")
        if not report["ok"]:
            problems.append(f"{label}: check --read-data: {report['errors']} {report['damaged_packs']}")
        for name, manifest in expected.items():
            out = tmp_path / f"out-{name[:12]}-{time.monotonic_ns()}"
            ws.run("restore", name, "--to", out)
            if tree_manifest(out / "data", metadata=False) != manifest:
                problems.append(f"{label}: snapshot {name[:8]} does not restore what was backed up")

    backup_ok()
    for round_number in range(ROUNDS):
        # A backup that needs more than is left (1.5-2.5 MiB new, 0.1-1 MiB free).
        write_file(ws.data / f"new{round_number}.bin", rng.randbytes(rng.randrange(3 * MiB // 2, 5 * MiB // 2)))
        ballast = fill(repo_mount, rng.randrange(100_000, MiB))
        before = ws.snapshot_names()
        expect_full("backup", "backup", "--target", "files")
        if ws.snapshot_names() != before:
            problems.append("a backup that ran out of space committed a snapshot")
        ballast.unlink()
        nothing_lost(f"after the full backup {round_number}")
        backup_ok()  # the next run needs no manual step

        # A prune with work to do: the big file's data is unused once its snapshots are forgotten.
        os.unlink(ws.data / f"new{round_number}.bin")
        backup_ok()
        forget = json.loads(ws.run("forget", "--keep-last", "1", "--json").stdout)
        for name in forget["removed"]:
            expected.pop(name, None)
        ballast = fill(repo_mount, 0)  # prune writes its new index before it deletes anything
        expect_full("prune", "prune")
        ballast.unlink()
        nothing_lost(f"after the full prune {round_number}")
        ws.run("prune")
        report = ws.json("check", "--read-data")
        if not report["ok"] or report["unreferenced_packs"]:
            problems.append(f"prune after the full one left {report}")

    # A restore into a destination too small for the snapshot.
    write_file(ws.data / "large.bin", rng.randbytes(3 * MiB))
    backup_ok()
    small = tmpfs("restore", "2m")
    latest = max(expected, key=lambda n: next(s["time"] for s in ws.snapshots() if s["id"] == n))
    expect_full("restore", "restore", latest, "--to", str(small / "out"), destination=str(small / "out"))
    nothing_lost("after the full restore")

    line = figures("disk-full", runs=tally["backup"] + tally["prune"] + tally["restore"], exit20=tally["exit20"],
                   lost=len(problems), backup=tally["backup"], prune=tally["prune"], restore=tally["restore"],
                   snapshots=len(expected), seconds=time.monotonic() - started,
                   spent={k: round(v, 1) for k, v in SPENT.most_common()})
    assert not problems, line + "\n" + "\n".join(problems)
