from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path; control_support lives beside this file.
# The scheduler and engine tests share these fixtures; a module defining its own clock wins.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from control_support import FakeClock, ManualExecutor  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def executor() -> ManualExecutor:
    return ManualExecutor()
