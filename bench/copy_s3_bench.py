"""A first copy from an S3 repository: blob by blob against the prefetched pack ranges (issue 15).

    python bench/copy_s3_bench.py [--mib 100] [--latency-ms 20]

Backs ``--mib`` MiB (half incompressible, half log-like text, 5 MiB files) up into a repository
in a bucket of a loopback moto server reached through ``bench/latency_proxy.py`` (a fixed delay
per request, as a bucket in another region has), then copies its snapshot in-process into a
fresh local destination twice: with ``SAFEHOLD_COPY_PREFETCH=0`` (one GET per blob, as before)
and with the prefetcher (merged ranges of each pack). Prints seconds, GETs of data objects and
bytes fetched; a Markdown table.
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
            source = Repository.init(S3Backend("s3://copy-bench/repo", client=client), b"source", FAST_KDF)
            with FilesSource([str(data)]).open() as view:
                snapshot = Archiver(source, threads=2).snapshot(view, "files", None)
            source = Repository.open(S3Backend("s3://copy-bench/repo", client=client), b"source")
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
            for label, setting in (("blob by blob (before)", "0"), ("pack ranges (prefetch)", "1")):
                os.environ["SAFEHOLD_COPY_PREFETCH"] = setting
                folder = Path(work) / f"dest-{setting}"
                destination = Repository.init(LocalBackend(str(folder)), b"dest", FAST_KDF, params_from=source)
                gets.update(count=0, bytes=0)
                stats = CopyStats()
                started = time.monotonic()
                copy_snapshot(source, destination, snapshot, stats, None, "s3://copy-bench/repo",
                              threads=args.threads)
                seconds = time.monotonic() - started
                rows.append((label, seconds, gets["count"], gets["bytes"] / 2**20, stats.blobs_sent,
                             stats.bytes_sent / 2**20))
    finally:
        s3_run.stop(proxy)
        s3_run.stop(moto)
    print(f"`python bench/copy_s3_bench.py --mib {args.mib} --latency-ms {args.latency_ms:g}` (first copy, S3 "
          f"source on moto behind a {args.latency_ms:g} ms proxy, local destination, {args.threads} threads):\n")
    print("| read | seconds | data GETs | MiB fetched | blobs sent | sent MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, seconds, count, fetched, blobs, sent in rows:
        print(f"| {label} | {seconds:.1f} | {count} | {fetched:.1f} | {blobs} | {sent:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
