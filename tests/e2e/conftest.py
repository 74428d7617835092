"""Fixtures of the end-to-end suite; the helpers they use live in ``e2e_support``.

Every test drives the real ``safehold`` CLI in subprocesses inside a throwaway
workspace (targets.yml, repository, state dir, data), as a user would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib, which puts no test folder on sys.path;
# the test modules import their helpers as ``e2e_support`` from this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_support import LockHolder, Workspace, make_workspace  # noqa: E402


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace: targets.yml (targets 'files' -> data/, 'disk' -> disk.img), no repository yet."""
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def run(workspace: Workspace):
    """``run(*args, ok=True)`` runs the CLI in ``workspace`` and asserts its exit code."""
    return workspace.run


@pytest.fixture
def lock_holder():
    """``lock_holder(ws, exclusive=False)`` starts a process holding a lock on ws's repository;
    any still running at the end of the test are killed."""
    holders: list[LockHolder] = []

    def start(ws: Workspace, exclusive: bool = False) -> LockHolder:
        holder = LockHolder(ws, exclusive)
        holders.append(holder)
        return holder

    yield start
    for holder in holders:
        holder.kill()
