"""bench/latency_proxy.py, the S3 benchmark's latency proxy, in front of the shared moto server.

Every mode (bodies spliced through a pipe, copied with ``--copy``, paced by a bandwidth cap) must
pass bodies byte for byte, both ways (an upload, a whole object, ranges) and add the latency to
each request; the spliced mode must really splice (its count of bytes copied through Python stays
at the few bytes that arrived with the heads).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import moto_support
import pytest

PROXY = Path(__file__).resolve().parents[2] / "bench" / "latency_proxy.py"
LATENCY = 0.1
SIZE = 5 * 1024 * 1024 + 12345


def _start(moto, *extra: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, str(PROXY), "--upstream", moto.url, "--latency-ms",
                                str(LATENCY * 1000), *extra],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.startswith("PORT "), line
    return process, int(line.split()[1])


def _stop(process: subprocess.Popen) -> dict[str, int]:
    _, stderr = process.communicate(timeout=20)
    counts = re.search(r"requests (\d+) spliced (\d+) copied (\d+)", stderr)
    assert counts, stderr
    return dict(zip(("requests", "spliced", "copied"), map(int, counts.groups())))


def _client(port: int):
    """No retries: a body the proxy broke must fail the test, not be fetched again."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", region_name=moto_support.REGION, endpoint_url=f"http://127.0.0.1:{port}",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
                        **moto_support.CREDENTIALS)


@pytest.mark.parametrize("mode", [[], ["--copy"], ["--mib-per-s", "200"], ["--conn-mib-per-s", "200"],
                                  ["--workers", "2"]],
                         ids=["splice", "copy", "capped", "capped-per-connection", "two-workers"])
def test_bodies_pass_unchanged_and_every_request_waits(moto, plain_bucket, mode) -> None:
    process, port = _start(moto, *mode)
    try:
        s3 = _client(port)
        body = os.urandom(SIZE)
        s3.put_object(Bucket=plain_bucket, Key="pack", Body=body)
        assert s3.get_object(Bucket=plain_bucket, Key="pack")["Body"].read() == body
        ranges = [(0, 0), (1, 65536), (4 * 1024 * 1024 - 7, SIZE - 1)]
        for first, last in ranges:
            got = s3.get_object(Bucket=plain_bucket, Key="pack", Range=f"bytes={first}-{last}")["Body"].read()
            assert got == body[first : last + 1]
        assert s3.head_object(Bucket=plain_bucket, Key="pack")["ContentLength"] == SIZE
        started = time.monotonic()
        for _ in range(4):  # on one kept-alive connection: the latency is per request, not per connection
            s3.get_object(Bucket=plain_bucket, Key="pack", Range="bytes=0-9")["Body"].read()
        assert time.monotonic() - started >= 4 * LATENCY
    finally:
        counts = _stop(process)
    if mode == [] or mode[0] in ("--mib-per-s", "--conn-mib-per-s"):
        assert counts["requests"] >= 10
        # the upload, the whole object and the ranges: ~2 x SIZE through the pipe, not through
        # Python (a capped body too: it is spliced a piece at a time)
        assert counts["spliced"] >= 2 * SIZE - 2 * 1024 * 1024, counts
        assert counts["copied"] < 2 * 1024 * 1024, counts
    elif mode[0] == "--copy":
        assert counts["spliced"] == 0 and counts["copied"] >= 2 * SIZE, counts


def _timed_gets(port: int, bucket: str, key: str, connections: int) -> float:
    """Seconds to GET ``key`` once on each of ``connections`` clients at the same time."""
    from concurrent.futures import ThreadPoolExecutor

    clients = [_client(port) for _ in range(connections)]
    started = time.monotonic()
    with ThreadPoolExecutor(connections) as pool:
        bodies = list(pool.map(lambda s3: s3.get_object(Bucket=bucket, Key=key)["Body"].read(), clients))
    elapsed = time.monotonic() - started
    assert all(len(body) == 4 * 1024 * 1024 for body in bodies)
    return elapsed


@pytest.mark.parametrize("cap", ["--conn-mib-per-s", "--mib-per-s"])
def test_a_connection_cap_paces_each_connection_and_a_shared_cap_all_of_them(moto, plain_bucket, cap) -> None:
    """At 16 MiB/s a 4 MiB answer takes ~0.25 s. Per connection, four answers side by side take
    about as long as one (each connection has its own 16 MiB/s); under the shared cap, about four
    times as long. Uploads are paced by the per-connection cap too."""
    process, port = _start(moto, cap, "16")
    try:
        s3 = _client(port)
        started = time.monotonic()
        s3.put_object(Bucket=plain_bucket, Key="paced", Body=os.urandom(4 * 1024 * 1024))
        upload = time.monotonic() - started
        one = _timed_gets(port, plain_bucket, "paced", 1)
        four = _timed_gets(port, plain_bucket, "paced", 4)
    finally:
        _stop(process)
    assert one >= 0.2, one  # 4 MiB at 16 MiB/s, less the first 256 KiB burst
    if cap == "--conn-mib-per-s":
        assert upload >= 0.2, upload
        assert four < 2 * one, (one, four)
    else:
        assert four >= 3 * 0.2, (one, four)
