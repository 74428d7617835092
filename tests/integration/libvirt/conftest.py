"""Fixtures of the libvirt suite: libvirtd (from the test command's services, or started here when
this folder runs alone), a throwaway domain, and a safehold context backing it up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))  # guest.py: the guest that boots

from libvirt_support import TestDomain, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SERVICE = ROOT / "scripts" / "services.d" / "libvirt.sh"


@pytest.fixture(scope="session")
def libvirt_uri():
    """The URI of a running libvirtd: the test command's (SAFEHOLD_TEST_LIBVIRT_URI), or one started
    here with the same service script so that ``pytest tests/integration/libvirt`` runs alone."""
    uri = os.environ.get("SAFEHOLD_TEST_LIBVIRT_URI")
    if uri:
        yield uri
        return
    scratch = tempfile.mkdtemp(prefix="safehold-services-libvirt-")
    env = dict(os.environ, SAFEHOLD_TEST_SCRATCH=scratch)
    subprocess.run(["bash", str(SERVICE), "install"], check=True, env=env)
    started = subprocess.run(["bash", str(SERVICE), "start"], check=True, env=env, capture_output=True, text=True)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.split("\n") if "=" in line)
    try:
        yield exports["SAFEHOLD_TEST_LIBVIRT_URI"]
    finally:
        subprocess.run(["bash", str(SERVICE), "stop"], env=env, check=False)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def connection(libvirt_uri):
    import libvirt

    conn = libvirt.open(libvirt_uri)
    yield conn
    conn.close()


@pytest.fixture
def make_domain(connection, tmp_path):
    """``make_domain(image_format='qcow2', running=True)``: a fresh domain, removed after the test."""
    domains: list[TestDomain] = []

    def make(image_format: str = "qcow2", running: bool = True, size: int | None = None) -> TestDomain:
        domain = TestDomain(connection, tmp_path, image_format, **({"size": size} if size else {}))
        domains.append(domain)
        if running:
            domain.start()
        return domain

    yield make
    for domain in domains:
        domain.remove()


@pytest.fixture
def safehold(tmp_path, libvirt_uri, fast_kdf):
    """``safehold(domain, **source_options)`` -> a Context whose target 'vm' backs up that domain,
    with a fresh repository."""
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    contexts = []

    def make(domain: TestDomain, **source) -> Context:
        folder = tmp_path / f"ws-{len(contexts)}"
        folder.mkdir()
        context = Context.load(write_config(folder, domain.name, libvirt_uri, **source))
        init_repository(context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
