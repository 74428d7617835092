"""Fixtures of the fault campaigns (issue 13); the helpers live in ``faults_support``.

The campaigns reuse the end-to-end workspace (``tests/e2e/e2e_support.py``) and the
moto server of the AWS suite (``tests/aws/moto_support.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; the helpers live beside this file,
# in tests/e2e and in tests/aws.
HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "e2e", HERE.parent / "aws"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import faults_support  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _warm_cli() -> None:
    faults_support.warm_up()


@pytest.fixture(scope="session")
def moto():
    import moto_support

    return moto_support.shared_server()


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``tmpfs(name, size)`` mounts a fresh tmpfs of ``size`` (e.g. "8m") and returns its path;
    every one is unmounted at the end of the test. Needs root (CI runs as root)."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            if os.geteuid() != 0:
                pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the disk-full campaign needs root")
            raise AssertionError(f"mount failed: {proc.stderr}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)
