"""The EBS suite's AWS: moto's server on loopback, extended by ``moto_ebs`` (see its docstring).

One server process per test session (start-up costs ~1.5 s); every test starts from an
empty account (``/moto-api/reset`` plus the harness's own reset).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # --import-mode=importlib puts no test folder on sys.path

from ebs_support import Aws  # noqa: E402


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory):
    port_file = tmp_path_factory.mktemp("moto") / "port"
    log = open(port_file.parent / "server.log", "wb")
    process = subprocess.Popen([sys.executable, str(HERE / "moto_ebs.py"), "--port-file", str(port_file)],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {(port_file.parent / 'server.log').read_text()}")
            time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{port_file.read_text()}"
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """A fresh, empty account on the session's server; boto3 in this process points at it."""
    helper = Aws(moto_server)
    helper.call("/moto-api/reset")
    helper.call("/_harness/reset")
    for key, value in helper.environment().items():
        monkeypatch.setenv(key, value)
    return helper
