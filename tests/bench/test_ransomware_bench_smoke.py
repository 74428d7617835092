"""Smoke test of the ransomware simulator (bench/ransomware.py) on a tiny tree: it runs attacks and
every benign set, reports, and never writes docs/benchmarks.md unless asked. Not a measurement:
the detection goals are checked on the real run (docs/benchmarks.md), only the obvious here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_simulator_runs_attacks_and_benign_sets_and_reports(tmp_path: Path) -> None:
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.read_bytes()
    results, out = tmp_path / "results.json", tmp_path / "section.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ransomware.py"), "--files", "100", "--repeat", "1", "--quick",
         "--fractions", "1.0", "--no-images", "--workdir", str(tmp_path / "work"), "--json", str(results), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(results.read_text())
    assert len(result["attacks"]) == 2 and len(result["benign"]) == 6
    # every file encrypted, in place or renamed with notes: nothing subtle about it
    assert all(attack["verdict"] == "suspicious" for attack in result["attacks"]), result["attacks"]
    assert {benign["verdict"] for benign in result["benign"]} <= {"clean", "suspicious"}
    cost = result["cost"]
    assert cost["cpu_on"] > 0 and cost["cpu_off"] > 0 and 0 < cost["signal_cpu_share"] < 1
    text = out.read_text()
    assert text.startswith("## Ransomware detection") and "False positives" in text
    assert docs.read_bytes() == before
    assert not (tmp_path / "work").exists()  # cleaned up
