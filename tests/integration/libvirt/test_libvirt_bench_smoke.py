"""bench/libvirt_incremental.py at a tiny scale, so the benchmark cannot rot: it runs, its restore
verifies, and it writes its section where it is told (never into docs/benchmarks.md here).
No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_libvirt_benchmark_runs_and_verifies(libvirt_uri, tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept as it is\n")
    command = [sys.executable, str(ROOT / "bench" / "libvirt_incremental.py"), "--size-gib", "0.0625",
               "--repeat", "1", "--scenarios", "64KiB:64KiB", "--uri", libvirt_uri, "--workdir",
               str(tmp_path / "work"), "--docs", str(docs), "--section", str(tmp_path / "section.md"),
               "--json", str(tmp_path / "results.json")]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    run = results["runs"][0]
    assert run["restore_identical"]
    assert run["full"]["bytes_read"] == 64 * 1024 * 1024  # random data: every block allocated and read
    incremental = run["incrementals"][0]
    # 64 KiB chunks and 64 KiB writes: exactly the changed blocks are read.
    assert incremental["bytes_read"] == incremental["bytes_changed"] > 0
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nkept as it is\n")
    assert "## KVM/libvirt: incremental vs full" in text and text.count("libvirt-bench:begin") == 1
    assert not (tmp_path / "work").exists(), "the benchmark left its work folder"
