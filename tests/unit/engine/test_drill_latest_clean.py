"""A ransomware drill restores 'latest-clean': the newest snapshot judged clean, not the newest."""

from __future__ import annotations

import json
import random
from pathlib import Path

from control_support import FakeClock, files_target, write_config
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from safehold.engine.backup import backup_target
from safehold.engine.drill import plan_drill, run_drill


def context_with(root: Path, drills: list[dict], init: bool = True):
    from safehold.catalog import Catalog
    from safehold.config import load_config
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    path = write_config(root, [files_target(root, "db", tier=1)])
    with path.open("a") as file:
        file.write("drills:\n" + "".join(f"  - {json.dumps(drill)}\n" for drill in drills))
    config = load_config(path)
    context = Context(config)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context._catalog = Catalog.open(config.catalog_url, clock=FakeClock())
    if init:
        init_repository(context)
    return context


def test_a_drill_with_snapshot_latest_clean_restores_the_snapshot_before_the_attack(tmp_path) -> None:
    drill = {"name": "ransom", "scenario": "data_corruption", "snapshot": "latest-clean",
             "steps": [{"target": "db", "check": {"type": "command", "run": "grep -q 'order 7' db/orders-3.csv"}}]}
    context = context_with(tmp_path, [drill])
    data = tmp_path / "data" / "db"
    for i in range(6):
        (data / f"orders-{i}.csv").write_bytes(b"".join(b"order %d,%d EUR\n" % (n, n * 7) for n in range(400)))
    backup_target(context, "db")  # first: unknown
    assert plan_drill(context, "ransom").problems == [
        "db: no snapshot judged clean ('safehold snapshots --target db' shows the verdicts; 'safehold mark ID "
        "clean' records one)"]
    clean = backup_target(context, "db").snapshot_id
    for i in range(6):
        path = data / f"orders-{i}.csv"
        path.write_bytes(Cipher(algorithms.AES(random.Random(path.name).randbytes(32)), modes.CTR(bytes(16))).encryptor()
                         .update(path.read_bytes()))
    attacked = backup_target(context, "db")
    assert attacked.summary["verdict"]["verdict"] == "suspicious"
    plan = plan_drill(context, "ransom")
    assert plan.problems == [] and plan.steps[0].snapshot_id == clean
    result = run_drill(context, "ransom", report_dir=tmp_path / "report")
    assert result.passed and result.evidence["steps"][0]["snapshot_id"] == clean
    # the same drill on 'latest' would restore the encrypted data
    latest = dict(drill, name="naive", snapshot="latest")
    context = context_with(tmp_path, [latest], init=False)
    assert plan_drill(context, "naive").steps[0].snapshot_id == attacked.snapshot_id
