"""Constants and the ``Aws`` helper of the EBS suite, in a module of their own: test modules
import them from here, never from ``conftest`` (another folder's conftest may hold that name
on sys.path when several suites run together)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

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
