#!/usr/bin/env python3
"""The test bed's ceiling for the S3 phase (issue 19): how fast can *anything* pull pack-sized
objects out of the moto server, directly and through ``bench/latency_proxy.py``?

    .venv/bin/python bench/s3_ceiling.py [--objects 14] [--mib 16] [--latency-ms 20]
                                         [--connections 1,5,16,32] [--ranges whole,8]
                                         [--paths moto,proxy,proxy2,copy,before] [--baseline-proxy FILE]

Uploads ``--objects`` random objects of ``--mib`` MiB (the size of safehold's and restic's packs)
once, then for each client (boto3 ``get_object`` read whole, as safehold's backend does; a raw
``http.client`` GET with keep-alive), each path (straight to moto; through the proxy at the
latency), each request size (whole objects, or N MiB ranges) and each connection count, reads
every object once and reports MiB/s and the CPU seconds the reader, moto and the proxy spent
(from /proc), so the bottleneck is visible: a process at ~1.0 CPU s per wall s is bound by its
GIL. Configurations alternate in order between the two repetitions; medians are printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from s3_run import AWS, MOTO, make_bucket, start, stop  # noqa: E402

MIB = 1024 * 1024


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children still running (the proxy's forked workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def requests_for(objects: list[str], size: int, range_mib: int | None) -> list[tuple[str, int, int | None]]:
    out = []
    for key in objects:
        if range_mib is None:
            out.append((key, 0, None))
        else:
            step = range_mib * MIB
            out += [(key, start_, min(step, size - start_)) for start_ in range(0, size, step)]
    return out


class RawClient:
    """One keep-alive connection per thread, ``http.client`` reading into one reused 1 MiB buffer;
    each GET presigned by boto3 beforehand (moto refuses anonymous reads), so no signing or
    parsing is timed."""

    def __init__(self, port: int, bucket: str, objects: list[str]) -> None:
        self.port, self.bucket = port, bucket
        self.local = threading.local()
        signer = BotoClient(port, bucket, 1).client
        self.urls = {key: signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                        ExpiresIn=3600).split(str(port), 1)[1]
                     for key in objects}

    def get(self, key: str, offset: int, length: int | None) -> int:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {} if length is None else {"Range": f"bytes={offset}-{offset + length - 1}"}
        connection.request("GET", self.urls[key], headers=headers)
        response = connection.getresponse()
        if response.status not in (200, 206):
            raise RuntimeError(f"GET {key}: HTTP {response.status}")
        total = 0
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while True:
            n = response.readinto(view)
            if not n:
                break
            total += n
        return total


class BotoClient:
    def __init__(self, port: int, bucket: str, pool: int) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(max_pool_connections=pool, s3={"addressing_style": "path"}))

    def get(self, key: str, offset: int, length: int | None) -> int:
        options = {} if length is None else {"Range": f"bytes={offset}-{offset + length - 1}"}
        return len(self.client.get_object(Bucket=self.bucket, Key=key, **options)["Body"].read())


def measure(client, work: list, connections: int, pids: dict[str, int]) -> dict:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    mine = self_cpu()
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        total = sum(pool.map(lambda item: client.get(*item), work))
    wall = time.perf_counter() - started
    out = {"mib_s": total / MIB / wall, "wall": wall, "reader_cpu": self_cpu() - mine}
    out.update({f"{name}_cpu": cpu_seconds(pid) - before[name] for name, pid in pids.items()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=14)
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--connections", default="1,5,16,32")
    parser.add_argument("--ranges", default="whole,8")
    parser.add_argument("--clients", default="raw,boto3")
    parser.add_argument("--paths", default="moto,proxy,proxy2",
                        help="moto: straight to moto; proxy: through the proxy (bodies spliced); proxy2: the same "
                             "with 2 workers; copy: the proxy copying bodies (--copy); before, before2: "
                             "--baseline-proxy with 1 and 2 workers")
    parser.add_argument("--baseline-proxy", help="another latency_proxy.py (e.g. main's) for the 'before' paths")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", help="write every measurement and the medians here")
    parser.add_argument("--passes", type=int, default=2, help="every object read this many times per measurement")
    args = parser.parse_args()
    os.environ.update(AWS)
    moto, moto_port = start([sys.executable, "-c", MOTO])
    variants = {"proxy": (HERE / "latency_proxy.py", []), "proxy2": (HERE / "latency_proxy.py", ["--workers", "2"]),
                "copy": (HERE / "latency_proxy.py", ["--copy"])}
    if args.baseline_proxy:
        variants.update({"before": (Path(args.baseline_proxy), []),
                         "before2": (Path(args.baseline_proxy), ["--workers", "2"])})
    proxies: dict[str, tuple] = {}
    for name in dict.fromkeys(args.paths.split(",")):
        if name != "moto":
            script, extra = variants[name]
            proxies[name] = start([sys.executable, str(script), "--upstream", f"http://127.0.0.1:{moto_port}",
                                   "--latency-ms", str(args.latency_ms), *extra])
    try:
        bucket = "ceiling"
        make_bucket(moto_port, bucket)
        uploader = BotoClient(moto_port, bucket, 4)
        objects = [f"data/{i:04d}" for i in range(args.objects)]
        for key in objects:
            uploader.client.put_object(Bucket=bucket, Key=key, Body=os.urandom(args.mib * MIB))
        configs = []
        for path in args.paths.split(","):
            for client_name in args.clients.split(","):
                for range_name in args.ranges.split(","):
                    for connections in (int(c) for c in args.connections.split(",")):
                        configs.append((path, client_name, range_name, connections))
        results: dict = {c: [] for c in configs}
        for rep in range(args.repeat):
            for config in (configs if rep % 2 == 0 else list(reversed(configs))):
                path, client_name, range_name, connections = config
                port = moto_port if path == "moto" else proxies[path][1]
                client = RawClient(port, bucket, objects) if client_name == "raw" else BotoClient(port, bucket, connections)
                work = args.passes * requests_for(objects, args.mib * MIB,
                                                  None if range_name == "whole" else int(range_name))
                pids = {"moto": moto.pid}
                if path != "moto":
                    pids["proxy"] = proxies[path][0].pid
                m = measure(client, work, connections, pids)
                results[config].append(m)
                print(f"# {path:5s} {client_name:5s} {range_name:>5s} x{connections:<3d} {m['mib_s']:7.1f} MiB/s "
                      + " ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "mib_s"), flush=True)
        print(f"\n{args.objects} objects of {args.mib} MiB read {args.passes} times, latency {args.latency_ms:g} ms through the proxy; "
              f"load average {os.getloadavg()[0]:.2f} at the end\n")
        print("| path | client | request | connections | MiB/s (median) | reader CPU s | moto CPU s | proxy CPU s "
              "| proxy CPU ms per MiB |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        mib = args.passes * args.objects * args.mib
        for config, runs in results.items():
            path, client_name, range_name, connections = config
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"| {path} | {client_name} | {'whole' if range_name == 'whole' else range_name + ' MiB'} "
                  f"| {connections} | {med['mib_s']:.1f} | {med['reader_cpu']:.2f} | {med['moto_cpu']:.2f} "
                  f"| {med.get('proxy_cpu', 0):.2f} | {1000 * med.get('proxy_cpu', 0) / mib:.2f} |")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "objects": args.objects, "mib": args.mib, "passes": args.passes, "latency_ms": args.latency_ms,
                "load_at_end": os.getloadavg()[0],
                "runs": [{"path": c[0], "client": c[1], "request": c[2], "connections": c[3], "measurements": runs}
                         for c, runs in results.items()]}, indent=1))
    finally:
        for process, _ in proxies.values():
            stop(process)
        stop(moto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
