"""bench/vmware_cbt.py at a tiny scale: it runs, its incremental restores byte for byte, and it
reports what it measured (never a timing assertion)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_vmware_benchmark_smoke(tmp_path: Path, fast_kdf, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("vmware_cbt_bench", ROOT / "bench/vmware_cbt.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # The benchmark sets these in os.environ; monkeypatch puts the old values back afterwards.
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "")
    monkeypatch.setenv("SAFEHOLD_BENCH_VSPHERE_PASSWORD", "")
    out = tmp_path / "report.md"
    assert bench.main(["--size-mib", "8", "--chunk-size", "64KiB", "--out", str(out)]) == 0
    report = out.read_text()
    assert "| incremental (CBT) |" in report and "bytes read 1.00x" in report
