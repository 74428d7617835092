"""The README's first command: the main job on the embedded default, run twice.

Runs scripts/quickstart.py (what quickstart.sh runs after installing) on a copy of the
checkout's configs/ and scripts/, with the safehold installed beside this Python.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path):
    if not (Path(sys.executable).parent / "safehold").exists():
        pytest.fail("the safehold command is not installed beside this Python; run ./scripts/test.sh")
    shutil.copytree(ROOT / "configs", tmp_path / "configs", symlinks=True)
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    return tmp_path


def run_quickstart(checkout: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    result = subprocess.run([sys.executable, str(checkout / "scripts" / "quickstart.py")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_quickstart_backs_up_restores_and_verifies_then_runs_incrementally(checkout):
    first = run_quickstart(checkout)
    assert (checkout / "var" / "repo" / "config").is_file()
    assert (checkout / "var" / "state" / "catalog.db").is_file()
    assert oct((checkout / "var" / "password").stat().st_mode & 0o777) == "0o600"
    assert "web-01-files: full snapshot" in first and "web-01-disk: full snapshot" in first
    assert first.count("is byte-identical") == 2 and "MISMATCH" not in first

    second = run_quickstart(checkout)
    assert "web-01-files: incremental snapshot" in second and "web-01-disk: incremental snapshot" in second
    assert "new data stored: 0 B" in second  # nothing changed in the example data
    assert second.count("is byte-identical") == 2
    restores = list((checkout / "var" / "restore").iterdir())
    assert len(restores) == 2  # each run restores into a fresh folder


def test_seed_wrappers_back_up_and_restore(checkout, tmp_path):
    run_quickstart(checkout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env["SAFEHOLD_PASSWORD"] = (checkout / "var" / "password").read_text().strip()
    config = str(checkout / "configs" / "targets.yml")
    backup = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_backup.py"), "--target", "web-01-files",
                             "--config", config], env=env, capture_output=True, text=True)
    assert backup.returncode == 0, backup.stderr
    assert "incremental on" in backup.stdout
    destination = tmp_path / "restored"
    restore = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_restore.py"), "--snapshot-id",
                              "latest:web-01-files", "--destination", str(destination), "--config", config],
                             env=env, capture_output=True, text=True)
    assert restore.returncode == 0, restore.stderr
    assert (destination / "tree" / "etc" / "hostname").read_text() == "web-01\n"
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_backup.py"), "--target", "nope",
                              "--config", config], env=env, capture_output=True, text=True)
    assert missing.returncode == 31 and "no target named 'nope'" in missing.stderr


def test_catalog_rebuild_recovers_the_snapshot_cache_after_losing_the_state(checkout):
    """The repository is the source of truth: a lost catalog comes back from it."""
    import json

    from safehold.catalog import Catalog

    run_quickstart(checkout)
    shutil.rmtree(checkout / "var" / "state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env["SAFEHOLD_PASSWORD"] = (checkout / "var" / "password").read_text().strip()
    result = subprocess.run([str(Path(sys.executable).parent / "safehold"), "--config",
                             str(checkout / "configs" / "targets.yml"), "catalog", "rebuild", "--json"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["snapshots"] == 2
    catalog = Catalog.open(f"sqlite:///{checkout / 'var' / 'state' / 'catalog.db'}")
    try:
        cached = catalog.list_snapshots()
        assert sorted(s.target for s in cached) == ["web-01-disk", "web-01-files"]
        assert [job.kind for job in catalog.list_jobs()] == ["catalog-rebuild"]
    finally:
        catalog.close()
