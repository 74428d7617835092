"""Fixtures of the SSH suite: the loopback sshd of the test services (started here with the same
service script when this folder runs alone), and safehold contexts whose target reads a folder of
this machine through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "restore"))  # hostile_support

from ssh_support import SshServer, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SERVICE = ROOT / "scripts" / "services.d" / "sshd.sh"


@pytest.fixture(scope="session")
def ssh_server():
    """The running test sshd: the test command's (SAFEHOLD_TEST_SSH_*), or one started here."""
    pytest.importorskip("asyncssh")
    if os.environ.get("SAFEHOLD_TEST_SSH_PORT"):
        yield SshServer.from_environment(os.environ)
        return
    scratch = tempfile.mkdtemp(prefix="safehold-services-sshd-")
    env = dict(os.environ, SAFEHOLD_TEST_SCRATCH=scratch)
    subprocess.run(["bash", str(SERVICE), "install"], check=True, env=env)
    started = subprocess.run(["bash", str(SERVICE), "start"], check=True, env=env, capture_output=True, text=True)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if "=" in line)
    try:
        yield SshServer.from_environment(exports)
    finally:
        subprocess.run(["bash", str(SERVICE), "stop"], env=env, check=False)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def safehold(tmp_path, ssh_server, fast_kdf):
    """``safehold(paths, **source_options)`` -> a Context whose target 'host' backs up those
    paths over SSH from the loopback sshd, with a fresh repository."""
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    contexts = []

    def make(paths: list[Path], **source) -> Context:
        folder = tmp_path / f"ws-{len(contexts)}"
        folder.mkdir()
        context = Context.load(write_config(folder, ssh_server, [str(p) for p in paths], **source))
        init_repository(context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
