"""S3 backend on a loopback moto server: backup, maintenance, audit-style chain lookup, prune.

Not a statement about AWS (moto keeps objects in memory and answers at once);
it shows safehold's own costs per request pattern: single PUT vs multipart,
one HEAD per object for retention, one PutObjectRetention per extended object.

    .venv/bin/python bench/s3_moto.py [--mib 128]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "aws"))

import moto_support  # noqa: E402

from safehold.repository import Repository  # noqa: E402
from safehold.repository import repository as repository_module  # noqa: E402
from safehold.repository.archiver import Archiver  # noqa: E402
from safehold.repository.backends import Kind  # noqa: E402
from safehold.repository.backends.s3 import MIB, S3Backend  # noqa: E402
from safehold.repository.immutability import chain_of, chain_retention, extend_retention  # noqa: E402
from safehold.repository.prune import prune  # noqa: E402
from safehold.sources.files import FilesSource  # noqa: E402

KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def timed(label: str, function):
    start = time.perf_counter()
    result = function()
    print(f"{label:<52} {time.perf_counter() - start:7.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--pack-kib", type=int, default=0,
                        help="smaller packs, to see maintenance cost per object (default: the real 16 MiB)")
    args = parser.parse_args()
    if args.pack_kib:
        repository_module.PACK_TARGET_SIZE = args.pack_kib * 1024
    with tempfile.TemporaryDirectory() as scratch, moto_support.MotoServer() as server:
        tree = Path(scratch) / "tree"
        tree.mkdir()
        for i in range(args.mib // 8):
            (tree / f"f{i}.bin").write_bytes(os.urandom(8 * MIB))
        for label, threshold in (("single PUTs (threshold 32 MiB)", 32 * MIB), ("multipart (threshold 5 MiB)", 5 * MIB)):
            bucket = moto_support.make_bucket(server, object_lock=True)
            backend = S3Backend(f"s3://{bucket}/repo", client=server.client("s3"), object_lock_mode="COMPLIANCE",
                                object_lock_days=1, multipart_threshold=threshold, part_size=max(threshold, 5 * MIB))
            repository = Repository.init(backend, b"pw", KDF)
            repository.compression = None

            def backup():
                with FilesSource([str(tree)]).open() as view:
                    return Archiver(repository, threads=2).snapshot(view, "bench", None)

            snapshot = timed(f"backup {args.mib} MiB, {label}", backup)
            print(f"  {sum(1 for _ in backend.list(Kind.DATA))} packs")
        chain = timed("chain of the snapshot (reads trees and index)", lambda: chain_of(repository, [snapshot]))
        timed(f"retention of {1 + len(chain.index_objects) + len(chain.packs)} objects (HEAD each)",
              lambda: chain_retention(repository, chain))
        backend.retention_period = timedelta(days=2)
        report = timed("maintenance: extend every object of the chain", lambda: extend_retention(repository, [snapshot]))
        print(f"  extended {report.objects_extended}")
        timed("maintenance again (nothing to extend)", lambda: extend_retention(repository, [snapshot]))
        timed("prune (nothing to delete)", lambda: prune(repository))


if __name__ == "__main__":
    main()
