"""The EBS suite's AWS: moto's server on loopback, extended by ``moto_ebs`` (see its docstring).

One server process per test session (start-up costs ~1.5 s); every test starts from an
empty account (``/moto-api/reset`` plus the harness's own reset).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # --import-mode=importlib puts no test folder on sys.path

REGION = "us-east-1"
DR_REGION = "us-west-2"


@dataclass
class Aws:
    endpoint: str

    def client(self, service: str, region: str = REGION):
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"max_attempts": 2, "mode": "standard"}))

    def call(self, path: str, body: bytes | dict | None = None, method: str = "POST") -> dict:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.endpoint + path, data=data if data is not None else b"", method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def write(self, volume_id: str, offset: int, data: bytes) -> None:
        self.call(f"/_harness/volumes/{volume_id}/write?offset={offset}", data)

    def volume_blocks(self, volume_id: str) -> dict[int, str]:
        return {int(k): v for k, v in self.call(f"/_harness/volumes/{volume_id}/blocks", method="GET")["blocks"].items()}

    def stats(self, reset: bool = False) -> dict:
        return self.call("/_harness/stats", method="DELETE" if reset else "GET")

    def configure(self, **settings) -> None:
        self.call("/_harness/config", settings)

    def environment(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}

    def instance(self, region: str = REGION, zone: str | None = None) -> dict:
        ec2 = self.client("ec2", region)
        placement = {"AvailabilityZone": zone or region + "a"}
        return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                 Placement=placement)["Instances"][0]

    def volume(self, size_gib: int = 1, region: str = REGION, zone: str | None = None,
               tags: dict[str, str] | None = None) -> str:
        ec2 = self.client("ec2", region)
        arguments: dict = {"Size": size_gib, "AvailabilityZone": zone or region + "a"}
        if tags:
            arguments["TagSpecifications"] = [{"ResourceType": "volume",
                                               "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return ec2.create_volume(**arguments)["VolumeId"]


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
