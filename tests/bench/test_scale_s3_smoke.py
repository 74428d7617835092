"""Smoke test of bench/scale.py's S3 round and worker-kill campaign at a tiny size (4 targets, real
``safehold worker`` processes, a moto server, PostgreSQL): it runs, reports every figure the docs
cite, restores every target byte for byte, and leaves nothing behind. About a minute of worker
processes, so only with ``-m campaign``. Nothing here depends on timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get("SAFEHOLD_TEST_POSTGRES_URL", "")


@pytest.mark.campaign
@pytest.mark.skipif(not ADMIN_URL, reason="needs SAFEHOLD_TEST_POSTGRES_URL (scripts/services.sh start)")
def test_scale_bench_on_s3_runs_rounds_a_profile_and_a_kill_campaign(tmp_path: Path, request) -> None:
    if "campaign" not in (request.config.option.markexpr or ""):
        pytest.skip("a minute of worker processes: select it with -m campaign")
    pytest.importorskip("procrastinate")
    pytest.importorskip("moto")
    leftovers = set(Path(tempfile.gettempdir()).glob("safehold-scale-*"))
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--repository", "s3", "--targets", "4",
                           "--large", "0", "--workers", "1", "--change", "--profile-at", "1", "--kill-every", "1",
                           "--kills", "1", "--worker-timeout", "3s", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    row, campaign = json.loads(out.read_text())["results"]
    assert row["executor"] == "procrastinate" and row["targets"] == 4
    for name in ("first", "second"):
        figures = row[name]
        assert figures["seconds"] > 0 and figures["workers_cpu"] > 0 and figures["moto_cpu"] > 0, figures
        assert figures["queue_latency_ms"]["n"] == 4, figures
    assert row["changes"]["changed_files"] > 0
    assert row["catalog_statements"]["job_row_writes_ms"]["n"] > 0
    assert row["profile"]["worker_cpu_seconds"] > 0 and "top_entry_points_cpu_seconds" in row["profile"]
    assert campaign["mode"] == "kill-campaign" and campaign["restored_targets"] == 4
    assert campaign["restore_mismatches"] == [] and campaign["stuck_jobs"] == 0 and campaign["queue_left"] == {}
    assert campaign["statuses"]["succeeded"] == 4
    assert campaign["retries"] == campaign["statuses"].get("interrupted", 0) >= campaign["kills"] - 1
    assert set(Path(tempfile.gettempdir()).glob("safehold-scale-*")) == leftovers
