"""A first copy from an S3 repository: blob by blob against the prefetched pack ranges (issue 15).

    python bench/copy_s3_bench.py [--mib 100] [--latency-ms 20] [--local] [--rounds 1]

Backs ``--mib`` MiB (half incompressible, half log-like text, 5 MiB files) up into a repository
in a bucket of a loopback moto server reached through ``bench/latency_proxy.py`` (a fixed delay
per request, as a bucket in another region has), then copies its snapshot in-process into a
fresh local destination twice: with ``SAFEHOLD_COPY_PREFETCH=0`` (one GET per blob, as before)
and with the prefetcher (merged ranges of each pack). Prints seconds, GETs of data objects and
bytes fetched; a Markdown table. ``--local``: the source is a local folder instead (no moto);
``--rounds N`` repeats both copies N times, alternating which goes first.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import copy_bench  # noqa: E402
import s3_run  # noqa: E402

FAST_KDF = {"name": "argon2id", "memory_kib": 1024, "iterations": 1, "lanes": 1}


def main() -> int:
    import boto3
    from botocore.config import Config

    from safehold.repository import Repository
    from safehold.repository.archiver import Archiver
    from safehold.repository.backends import Kind
    from safehold.repository.backends.local import LocalBackend
    from safehold.repository.backends.s3 import S3Backend
    from safehold.repository.copy import CopyStats, copy_snapshot
    from safehold.sources.files import FilesSource

    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--local", action="store_true", help="A local source repository instead of S3.")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.update(s3_run.AWS)
    moto, moto_port = s3_run.start([sys.executable, "-c", s3_run.MOTO])
    proxy, port = s3_run.start([sys.executable, str(HERE / "latency_proxy.py"), "--upstream",
                                f"http://127.0.0.1:{moto_port}", "--latency-ms", str(args.latency_ms)])
    try:
        s3_run.make_bucket(moto_port, "copy-bench")
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              config=Config(max_pool_connections=32, s3={"addressing_style": "path"}))
        with tempfile.TemporaryDirectory(dir="/tmp") as work:
            data = Path(work) / "data"
            copy_bench.make_data(data, args.mib, random.Random(15))
            def backend():
                return LocalBackend(str(Path(work) / "src")) if args.local else \
                    S3Backend("s3://copy-bench/repo", client=client)

            source = Repository.init(backend(), b"source", FAST_KDF)
            with FilesSource([str(data)]).open() as view:
                snapshot = Archiver(source, threads=2).snapshot(view, "files", None)
            source = Repository.open(backend(), b"source")
            source.load_index()
            gets = {"count": 0, "bytes": 0}
            real = source.backend.get

            def counted(kind, name, offset=0, length=None):
                body = real(kind, name, offset, length)
                if kind is Kind.DATA:
                    gets["count"] += 1
                    gets["bytes"] += len(body)
                return body

            source.backend.get = counted  # type: ignore[method-assign]
            rows = []
            both = [("blob by blob (before)", "0"), ("pack ranges (prefetch)", "1")]
            order = [pair for number in range(args.rounds) for pair in (both if number % 2 == 0 else both[::-1])]
            for number, (label, setting) in enumerate(order):
                os.environ["SAFEHOLD_COPY_PREFETCH"] = setting
                folder = Path(work) / f"dest-{number}"
                destination = Repository.init(LocalBackend(str(folder)), b"dest", FAST_KDF, params_from=source)
                gets.update(count=0, bytes=0)
                stats = CopyStats()
                started, cpu = time.monotonic(), time.process_time()
                copy_snapshot(source, destination, snapshot, stats, None, "bench", threads=args.threads)
                rows.append((label, time.monotonic() - started, time.process_time() - cpu, gets["count"],
                             gets["bytes"] / 2**20, stats.blobs_sent, stats.bytes_sent / 2**20))
    finally:
        s3_run.stop(proxy)
        s3_run.stop(moto)
    where = "local source" if args.local else f"S3 source on moto behind a {args.latency_ms:g} ms proxy"
    print(f"`python bench/copy_s3_bench.py --mib {args.mib} --latency-ms {args.latency_ms:g}"
          f"{' --local' if args.local else ''} --rounds {args.rounds}` (first copy, {where}, local destination, "
          f"{args.threads} threads; CPU: this process):\n")
    print("| read | seconds | CPU s | data reads | MiB fetched | blobs sent | sent MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, seconds, cpu, count, fetched, blobs, sent in rows:
        print(f"| {label} | {seconds:.2f} | {cpu:.2f} | {count} | {fetched:.1f} | {blobs} | {sent:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
