"""moto on loopback for the AWS tests: a real ``moto`` server process per use.

``MotoServer()`` starts ``moto_launch.py`` (moto plus ``moto_extensions``),
``shared_server()`` is one server for the whole test session, stopped at exit.
Helpers make buckets the way an operator would (with or without Object Lock).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGION = "eu-west-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class MotoServer:
    def __init__(self, vanilla: bool = False) -> None:
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        command = [sys.executable, str(HERE / "moto_launch.py")] + (["--vanilla"] if vanilla else [])
        # moto logs every request on stderr; SAFEHOLD_MOTO_LOG=FILE keeps it for debugging.
        log = open(os.environ["SAFEHOLD_MOTO_LOG"], "ab") if os.environ.get("SAFEHOLD_MOTO_LOG") else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                        text=True)
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"moto server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def client(self, service: str, region: str = REGION, **credentials):
        """A boto3 client for this server (default credentials: anything, as moto accepts without IAM)."""
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=region, endpoint_url=self.url,
                            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
                            **(credentials or CREDENTIALS))

    def post(self, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()

    def enforce_iam(self, unauthenticated_requests: int = 0) -> None:
        """Turn on IAM enforcement after ``unauthenticated_requests`` more free calls."""
        self.post("/moto-api/reset-auth", str(unauthenticated_requests).encode(), "text/plain")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> "MotoServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen) -> None:
    """Stop a helper server that serves until its stdin closes (killed after 10 s)."""
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_shared: MotoServer | None = None


def shared_server() -> MotoServer:
    global _shared
    if _shared is None:
        _shared = MotoServer()
        atexit.register(_shared.stop)
    return _shared


def make_bucket(server: MotoServer, object_lock: bool = False, name: str | None = None) -> str:
    return make_bucket_with(server.client("s3"), object_lock, name)


def make_bucket_with(s3, object_lock: bool = False, name: str | None = None) -> str:
    name = name or f"safehold-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION},
                     ObjectLockEnabledForBucket=object_lock)
    return name
