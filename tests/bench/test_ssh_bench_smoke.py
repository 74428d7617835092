"""Smoke test of the SSH benchmark (bench/ssh.py) at a tiny scale: every tool runs over loopback and
through the delaying proxy, the report goes where it is told (never docs/benchmarks.md), and the
numbers are sane. Nothing depends on timing. Needs the test sshd (scripts/services.d/sshd.sh),
restic and rsync (scripts/test.sh installs both)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not os.environ.get("SAFEHOLD_TEST_SSH_PORT"),
                    reason="the test sshd is not running (eval \"$(bash scripts/services.d/sshd.sh start)\")")
def test_ssh_bench_runs_every_tool_on_both_links(tmp_path: Path) -> None:
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.stat().st_mtime_ns
    out, results = tmp_path / "benchmarks.md", tmp_path / "ssh.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ssh.py"), "--small", "30", "--large", "1",
                           "--large-mib", "1", "--delay-ms", "2", "--workdir", str(tmp_path / "work"),
                           "--json", str(results), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(results.read_text())
    assert data["files"] == 31 and set(data["runs"]) == {"loopback", "+4 ms RTT"}
    for tools in data["runs"].values():
        assert set(tools) == {"safehold", "restic", "rsync"}
        for phases in tools.values():
            assert all(phase["seconds"] > 0 and phase["MiB_per_s"] > 0 for phase in phases.values())
    assert all("restore" in phases for tools in data["runs"].values() for phases in tools.values())
    text = out.read_text()
    assert "<!-- ssh-bench:start -->" in text and "| +4 ms RTT | restic |" in text
    assert docs.stat().st_mtime_ns == before
