"""The parallel test run's groups (tests/conftest.py): a file's tests stay in one worker, and the
files that watch a shared service as a whole share one worker, so they never run side by side.

Checked with real xdist workers on a throwaway tree laid out like tests/, because the way groups
reach xdist's scheduler has broken silently before (xdist_group marks are ignored with pytest 9.2,
pytest-xdist issue 1386): the run looked parallel and the groups were not honoured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

TEST = """
import os, time
import pytest

@pytest.mark.parametrize("n", range(3))
def test_where(n):
    time.sleep(0.1)
    with open(os.environ["WHERE_LOG"], "a") as log:
        log.write(f"{__name__.rsplit('.', 1)[-1]} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_files_and_service_suites_keep_to_one_worker(tmp_path: Path) -> None:
    layout = {"tests/integration/libvirt/test_domains.py", "tests/integration/ssh/test_sftp.py",
              "tests/contract/test_contract.py", "tests/unit/test_one.py", "tests/unit/test_two.py",
              "tests/e2e/test_three.py"}
    for relative in layout:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(TEST)
    # the project's own conftest, as it is
    (tmp_path / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --import-mode=importlib\n")
    log = tmp_path / "where.log"
    env = {"WHERE_LOG": str(log), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          "--dist", "loadgroup", "tests"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    workers: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        module, worker = line.split()
        workers.setdefault(module, set()).add(worker)
    assert len(workers) == len(layout) and all(len(where) == 1 for where in workers.values()), workers
    services = workers["test_domains"] | workers["test_sftp"] | workers["test_contract"]
    assert len(services) == 1, workers
    # and the run is parallel at all: both workers ran something
    assert len(set().union(*workers.values())) == 2, workers
