"""Smoke test of bench/drill_overhead.py at a tiny scale (files only; the boot case needs libvirt and
is exercised by the benchmark run itself): it runs, reports sane numbers, cleans up after itself
and never writes docs/benchmarks.md. Nothing here depends on timing."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_drill_overhead_bench_runs_and_reports(tmp_path: Path) -> None:
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.stat().st_mtime_ns
    leftovers = set(Path(tempfile.gettempdir()).glob("safehold-bench-drill-*"))
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "drill_overhead.py"), "--size-mib", "1",
                           "--files", "4", "--repeat", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    files = result["files"]
    assert len(files["runs"]) == 1 and files["data"] == "4 files, 1 MiB (random)"
    for key in ("bare_restore_seconds", "drill_seconds", "drill_step_art_seconds"):
        assert 0 < files[key]["min"] <= files[key]["median"] <= files[key]["max"], (key, files)
    difference = files["drill_seconds"]["median"] - files["bare_restore_seconds"]["median"]
    assert abs(files["overhead_seconds"] - difference) <= 0.002, files
    assert "boot" not in result and "boot_art" not in result
    assert docs.stat().st_mtime_ns == before
    assert set(Path(tempfile.gettempdir()).glob("safehold-bench-drill-*")) == leftovers
