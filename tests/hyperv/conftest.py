"""Fixtures of the Hyper-V suite: a fake host (``fake_hyperv``) and a safehold workspace
whose target ``vm1`` is a Hyper-V VM on that host.

The suite runs with --import-mode=importlib, which puts no test folder on sys.path; the
modules import the fake as ``fake_hyperv`` from this folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_hyperv import FakeHyperVHost  # noqa: E402

MiB = 1024 * 1024


@pytest.fixture
def host(tmp_path: Path) -> FakeHyperVHost:
    return FakeHyperVHost(tmp_path / "host")


@pytest.fixture
def workspace(tmp_path: Path, host: FakeHyperVHost, fast_kdf: dict, monkeypatch: pytest.MonkeyPatch):
    """A repository, catalog and targets.yml with target ``vm1`` (VM ``vm1`` on the fake host,
    two disks of 48 MiB and 8 MiB); HyperVSource.connect hands out the fake."""
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.sources.hyperv import HyperVSource

    host.create_vm("vm1", [48 * MiB, 8 * MiB], processors=4, memory=2 << 30)
    config = tmp_path / "targets.yml"
    config.write_text(
        f"repository: {{url: {tmp_path / 'repo'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "tiers: {1: {rpo: 1h, rto: 1h}}\n"
        "targets:\n"
        "  - name: vm1\n"
        "    tier: 1\n"
        "    source: {type: hyperv, host: hv01.test, vm: vm1, username: 'TEST\\svc', chunk_size: 64KiB}\n"
    )
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "pw")
    monkeypatch.setenv("SAFEHOLD_HYPERV_PASSWORD", "secret")
    monkeypatch.setattr(HyperVSource, "connect", lambda self: host)
    context = Context.load(config, threads=2)
    init_repository(context)
    yield context
    context.close()
