"""Fixtures of the VMware suite: a fresh vSphere lab (vcsim + CBT proxy) per test, and a
safehold workspace whose target backs it up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; the helpers live beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vcsim_support import Lab  # noqa: E402


@pytest.fixture
def lab(tmp_path: Path):
    lab = Lab(tmp_path / "lab")
    try:
        yield lab
    finally:
        lab.close()
