"""Every documented failure, as a user meets it: one 'error:' line, a 'hint:' line, no
traceback, and the exit code from errors.py (docs/exit-codes.md)."""

from __future__ import annotations

import filecmp
import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from e2e_support import (
    Workspace,
    assert_clean_error,
    flip_byte,
    make_workspace,
    parse_table,
    write_file,
)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def initialized(tmp_path_factory) -> Workspace:
    """A repository with one small snapshot of 'files'; tests here only read it (or lock it briefly)."""
    ws = make_workspace(tmp_path_factory.mktemp("errors") / "ws")
    write_file(ws.data / "a.txt", b"alpha\n")
    ws.run("init")
    ws.run("backup", "--target", "files")
    return ws


def test_wrong_password_exits_13(initialized: Workspace):
    proc = initialized.run("snapshots", password="not the password", ok=False)
    assert_clean_error(proc, 13, "password does not open any key", f"file://{initialized.repo}")
    assert "password_env" in proc.stderr  # the hint says where the password comes from


def test_missing_password_exits_13(initialized: Workspace):
    proc = initialized.run("snapshots", env={"SAFEHOLD_PASSWORD": None}, ok=False)
    assert_clean_error(proc, 13, "no repository password")
    assert "SAFEHOLD_PASSWORD" in proc.stderr


def test_missing_repository_exits_10(workspace: Workspace, run):
    proc = run("snapshots", ok=False)
    assert_clean_error(proc, 10, f"no safehold repository at file://{workspace.repo}")
    assert "safehold init" in proc.stderr
    assert not workspace.repo.exists()  # a read never creates anything


def test_init_into_a_non_empty_directory_exits_12(workspace: Workspace):
    workspace.repo.mkdir()
    write_file(workspace.repo / "README", b"another tool's repository\n")
    (workspace.repo / "objects").mkdir()
    proc = workspace.run("init", ok=False)
    assert_clean_error(proc, 12, "is not a safehold repository", "README")
    assert sorted(os.listdir(workspace.repo)) == ["README", "objects"]  # left untouched


def test_unknown_target_exits_31(initialized: Workspace):
    proc = initialized.run("backup", "--target", "web-01", ok=False)
    assert_clean_error(proc, 31, "no target named 'web-01'")
    assert "known targets: files, disk" in proc.stderr


def test_unknown_snapshot_exits_16(initialized: Workspace, tmp_path: Path):
    proc = initialized.run("restore", "deadbeef", "--to", tmp_path / "out", ok=False)
    assert_clean_error(proc, 16, "no snapshot matches 'deadbeef'")
    assert not (tmp_path / "out").exists()


def test_prune_refused_while_a_lock_is_held_exits_14(initialized: Workspace, lock_holder):
    holder = lock_holder(initialized)
    proc = initialized.run("prune", ok=False)
    line = assert_clean_error(proc, 14, "repository is locked", f"e2e lock holder (pid {holder.pid} on ")
    assert "safehold unlock" in proc.stderr
    assert "(shared)" in line
    holder.release()
    assert initialized.lock_files() == []


def test_backup_refused_while_an_exclusive_lock_is_held_exits_14(initialized: Workspace, lock_holder):
    holder = lock_holder(initialized, exclusive=True)
    proc = initialized.run("backup", "--target", "files", ok=False)
    assert proc.returncode == 14 and "Traceback" not in proc.stderr, proc.stderr
    assert "locked exclusively by e2e lock holder" in proc.stderr
    holder.release()


def test_failed_backup_prints_one_error_line(initialized: Workspace):
    config = initialized.write_config(name="missing-source.yml", targets=[
        {"name": "files", "tier": 2, "source": {"type": "files", "paths": ["no-such-folder"]}}])
    proc = initialized.run("-c", config, "backup", "--target", "files", ok=False)
    assert_clean_error(proc, 32, "no-such-folder")


def test_restore_of_a_damaged_pack_exits_18_and_names_the_file(workspace: Workspace, tmp_path: Path):
    ws = workspace
    rng = random.Random(21)
    for i in range(8):
        write_file(ws.data / f"file{i}.bin", rng.randbytes(MiB + i))
    ws.run("init")
    ws.run("backup", "--target", "files")
    pack = max(ws.pack_files(), key=lambda p: p.stat().st_size)
    flip_byte(pack, pack.stat().st_size // 2)
    out = tmp_path / "out"
    proc = ws.run("restore", "latest", "--to", out, ok=False)
    line = assert_clean_error(proc, 18, "restore finished with 1 damaged file(s): data/file")
    damaged = re.search(r"damaged file\(s\): (data/file\d\.bin)$", line).group(1)
    assert f"damaged, not restored: {damaged}" in proc.stderr
    assert not (out / damaged).exists()
    for i in range(8):
        name = f"data/file{i}.bin"
        if name != damaged:
            assert filecmp.cmp(out / name, ws.data / f"file{i}.bin", shallow=False), name


# --- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(workspace: Workspace):
    mount_point = workspace.root / "mnt"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        message = proc.stderr.lower()
        if os.geteuid() != 0 or "permission denied" in message or "not permitted" in message \
                or "must be superuser" in message:
            pytest.skip(f"cannot mount a tmpfs here (EPERM: {proc.stderr.strip()}); the full-disk test needs root")
        raise AssertionError(f"mount failed: {proc.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_exits_20_and_keeps_earlier_snapshots(workspace: Workspace, tiny_tmpfs: Path, tmp_path: Path):
    ws = workspace
    ws.write_config(repository_url="mnt/repo")
    rng = random.Random(5)
    write_file(ws.data / "small.bin", rng.randbytes(MiB))
    ws.run("init")
    ws.run("backup", "--target", "files")
    write_file(ws.data / "big.bin", rng.randbytes(5 * MiB))  # more than the 3 MiB volume holds

    proc = ws.run("backup", "--target", "files", code=20)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("no space left on the repository storage" in line for line in errors), proc.stderr
    assert "No space left on device" in errors[-1]
    assert "hint: free space or grow the volume" in proc.stderr
    # The failed write left no torn or temporary object and no lock behind.
    repo = tiny_tmpfs / "repo"
    assert list(repo.rglob(".tmp-*")) == []
    assert os.listdir(repo / "locks") == []
    failed = [r for r in parse_table(ws.run("jobs", "--status", "failed").stdout)]
    assert len(failed) == 1 and failed[0][1:4] == ["backup", "files", "failed"]
    assert "no space left" in failed[0][8]

    # Free space (the big file leaves the source, prune clears any garbage): all is well again.
    os.unlink(ws.data / "big.bin")
    ws.run("prune")
    check = ws.json("check", "--read-data")
    assert check["ok"] is True and check["snapshots"] == 1
    out = tmp_path / "out"
    ws.run("restore", "latest", "--to", out)
    assert filecmp.cmp(out / "data" / "small.bin", ws.data / "small.bin", shallow=False)
    write_file(ws.data / "second.bin", rng.randbytes(MiB // 2))
    ws.run("backup", "--target", "files")
    assert len(ws.snapshots()) == 2
    statvfs = os.statvfs(tiny_tmpfs)
    assert statvfs.f_bavail * statvfs.f_frsize < 3 * MiB  # it really ran on the small volume
