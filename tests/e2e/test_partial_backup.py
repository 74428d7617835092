"""A partial backup through the CLI, as an operator meets it: an unreadable directory and file do
not fail the target; the snapshot holds everything readable, the job ends 'partial' with exit
code 4 (3 still wins when another target failed), and ``--json``, ``status``, ``jobs``,
``snapshots`` and ``/metrics`` say what was left out; a restore brings back everything readable.

Tests run as root here, which reads mode-000 entries anyway: the backups run without
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (util-linux ``setpriv``), still as uid 0, so the
repository and catalog they write stay theirs while file modes bind them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from e2e_support import CLI, COMMAND_TIMEOUT, Workspace, assert_clean_error, make_workspace
from prometheus_client.parser import text_string_to_metric_families

EVIL = "evil\x1b[31mname"  # a name that would recolour a terminal if printed raw


def without_permission_override() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root bypasses file modes and setpriv (util-linux) is missing to drop that")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def run_bound(ws: Workspace, *args: str, code: int) -> subprocess.CompletedProcess:
    """``safehold ARGS`` with file modes binding it; asserts the exit code."""
    proc = subprocess.run([*without_permission_override(), *CLI, *args], cwd=ws.root, env=ws.environment(),
                          capture_output=True, text=True, errors="surrogateescape", timeout=COMMAND_TIMEOUT)
    assert proc.returncode == code, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


@pytest.fixture
def ws(tmp_path: Path):
    ws = make_workspace(tmp_path / "ws")
    data = ws.data
    (data / "open").mkdir()
    (data / "open" / "b.txt").write_bytes(b"b" * 3000)
    (data / "open" / "private.txt").write_bytes(b"private")
    (data / "open" / EVIL).write_bytes(b"evil")
    (data / "locked").mkdir()
    (data / "locked" / "s.txt").write_bytes(b"secret")
    (data / "a.txt").write_bytes(b"a" * 1000)
    (ws.root / "clean").mkdir()
    (ws.root / "clean" / "c.txt").write_bytes(b"c")
    ws.write_config([
        {"name": "files", "tier": 2, "source": {"type": "files", "paths": ["data"]}},
        {"name": "clean", "tier": 2, "source": {"type": "files", "paths": ["clean"]}},
        {"name": "gone", "tier": 3, "source": {"type": "files", "paths": ["missing"]}},
    ])
    ws.run("init")
    unreadable = [data / "locked", data / "open" / "private.txt", data / "open" / EVIL]
    for path in unreadable:
        path.chmod(0)
    yield ws
    for path in unreadable:
        path.chmod(0o755)


EXPECTED_ITEMS = [
    {"path": "data/locked", "type": "dir", "reason": "unreadable", "detail": "Permission denied"},
    {"path": "data/open/evil\\x1b[31mname", "type": "file", "reason": "unreadable", "detail": "Permission denied"},
    {"path": "data/open/private.txt", "type": "file", "reason": "unreadable", "detail": "Permission denied"},
]


def test_a_partial_backup_end_to_end(ws: Workspace, tmp_path: Path) -> None:
    # Before: exit 32 (SourceError: cannot read data/locked) and no snapshot at all.
    proc = run_bound(ws, "backup", "--target", "files", "--json", code=4)
    result = json.loads(proc.stdout)["results"][0]
    assert result["status"] == "partial"
    skipped = result["summary"]["skipped"]
    assert skipped == {"count": 3, "reasons": {"unreadable": 3}, "items": EXPECTED_ITEMS, "truncated": False}
    assert_clean_error(proc, 4, "1 of 1 target(s) backed up partially: files (job", "3 item(s)")
    assert "\x1b" not in proc.stdout + proc.stderr
    job_id = result["job_id"]

    # The people's output names every item, escaped, and ends with the same exit code.
    proc = run_bound(ws, "backup", "--target", "files", code=4)
    assert "files: partial snapshot: 3 item(s) left out or changed while read" in proc.stderr
    assert "unreadable: data/locked (dir): Permission denied" in proc.stderr
    assert "unreadable: data/open/evil\\x1b[31mname (file): Permission denied" in proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr

    # status: a partial backup is a good one for the RPO, and says how many items it left out
    target = {entry["name"]: entry for entry in ws.json("status")["targets"]}["files"]
    assert (target["last_status"], target["skipped_items"], target["compliant"]) == ("partial", 3, True)
    table = ws.run("status").stdout
    assert "partial (3 skipped)" in table and "whose newest backup left items out: files" in table

    # jobs: the state and the bounded, escaped list
    jobs = {job["id"]: job for job in ws.json("jobs", "--target", "files")}
    assert jobs[job_id]["status"] == "partial"
    assert jobs[job_id]["details"]["skipped"]["items"] == EXPECTED_ITEMS
    assert [job["id"] for job in ws.json("jobs", "--status", "partial")] == sorted(jobs, reverse=True)
    shown = ws.run("jobs", "--id", str(job_id)).stdout
    assert "skipped: 3 item(s):" in shown and "unreadable: data/open/evil\\x1b[31mname (file)" in shown
    assert "\x1b" not in shown

    # snapshots: the list travels with the snapshot (the repository is the source of truth)
    snapshots = ws.snapshots("files")
    assert [snapshot["skipped"]["count"] for snapshot in snapshots] == [3, 3]
    assert snapshots[-1]["skipped"]["items"] == EXPECTED_ITEMS

    # a restore of the partial snapshot brings back everything that was readable
    ws.run("restore", "latest:files", "--to", str(tmp_path / "out"))
    restored = {str(path.relative_to(tmp_path / "out")) for path in (tmp_path / "out").rglob("*")}
    assert restored == {"data", "data/a.txt", "data/open", "data/open/b.txt"}
    assert (tmp_path / "out" / "data" / "open" / "b.txt").read_bytes() == b"b" * 3000

    # several targets: partial and complete -> 4; partial and failed -> 3, the failure wins
    proc = run_bound(ws, "backup", "--target", "files", "--target", "clean", code=4)
    assert "1 of 2 target(s) backed up partially: files" in proc.stderr
    proc = run_bound(ws, "backup", "--target", "files", "--target", "gone", "--json", code=3)
    outcome = json.loads(proc.stdout)
    assert [result["status"] for result in outcome["results"]] == ["partial"]
    assert set(outcome["failures"]) == {"gone"}
    assert "1 of 2 target(s) failed: gone" in proc.stderr

    # once the permissions are fixed the next backup is complete again, and exits 0
    for path in (ws.data / "locked", ws.data / "open" / "private.txt", ws.data / "open" / EVIL):
        path.chmod(0o755)
    run_bound(ws, "backup", "--target", "files", code=0)
    target = {entry["name"]: entry for entry in ws.json("status")["targets"]}["files"]
    assert (target["last_status"], target["skipped_items"]) == ("succeeded", 0)


def test_metrics_of_a_partial_backup(ws: Workspace) -> None:
    run_bound(ws, "backup", "--target", "files", code=4)
    run_bound(ws, "backup", "--target", "clean", code=0)
    text = scrape_metrics(ws)
    families = {family.name: family.samples for family in text_string_to_metric_families(text)}

    def sample(name: str, target: str) -> float:
        [value] = [s.value for s in families[name] if s.labels["target"] == target]
        return value

    assert sample("safehold_backup_skipped_items", "files") == 3
    assert sample("safehold_backup_skipped_items", "clean") == 0
    assert sample("safehold_backup_last_status", "files") == 1  # a snapshot was written: not BackupJobFailed
    assert sample("safehold_backup_last_success_timestamp_seconds", "files") > 0  # counts for the RPO
    assert not [s for s in families["safehold_backup_skipped_items"] if s.labels["target"] == "gone"]
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def scrape_metrics(ws: Workspace) -> str:
    """One scrape of ``/metrics`` from a real ``safehold serve`` (without its scheduler)."""
    process = ws.start("serve", "--host", "127.0.0.1", "--port", "0", "--no-scheduler")
    found: list[str] = []
    started = threading.Event()

    def drain(stream) -> None:
        for line in stream:
            match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            if match:
                found.append(match.group(1))
                started.set()

    for stream in (process.stdout, process.stderr):
        threading.Thread(target=drain, args=(stream,), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not started.wait(0.1):
            assert process.poll() is None and time.monotonic() < deadline, "safehold serve did not start"
        with urllib.request.urlopen(f"{found[0]}/metrics", timeout=30) as response:
            return response.read().decode()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_a_scheduled_partial_backup_is_recorded_partial_and_not_retried(ws: Workspace) -> None:
    """The queue's path (scheduler -> run_job -> backup_target as the queued row): the row ends
    'partial', and the scheduler does not retry it, while it does retry the failed target."""
    config = ws.write_config([{"name": "files", "tier": 2, "source": {"type": "files", "paths": ["data"]}},
                              {"name": "gone", "tier": 2, "source": {"type": "files", "paths": ["missing"]}}])
    config.write_text(config.read_text() + "scheduler: {retry_backoff: 1s, prune_schedule: null, "
                                           "check_schedule: null}\n")
    run_bound(ws, "scheduler", "run", "--once", code=0)
    time.sleep(2.5)  # past the retry backoff: a failed scheduled job is due again
    run_bound(ws, "scheduler", "run", "--once", code=0)
    backups = ws.json("jobs", "--kind", "backup")
    assert [(job["target"], job["status"], job["details"]["trigger"]) for job in backups
            if job["target"] == "files"] == [("files", "partial", "scheduler")]
    assert [job["status"] for job in backups if job["target"] == "gone"] == ["failed", "failed"]  # retried
    partial = next(job for job in backups if job["target"] == "files")
    assert partial["details"]["skipped"]["count"] == 3
    assert partial["snapshot_id"] == ws.snapshots("files")[0]["id"]
