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
        # A VM snapshot left behind is a bug: after every test, only those the test made itself remain.
        for vm, props in lab.all_vms():
            left = [n for n in lab.snapshot_names(props["name"]) if n.startswith("safehold-")
                    and n not in lab.expected_snapshots]
            assert not left, f"VM {props['name']} still has safehold snapshots {left}"
    finally:
        lab.close()
