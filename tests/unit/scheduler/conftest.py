from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; the helpers live beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_support import FakeClock, ManualExecutor  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def executor() -> ManualExecutor:
    return ManualExecutor()
