#!/usr/bin/env python3
"""What an incremental EBS pull costs, against the extended moto server (tests/integration/ebs/moto_ebs.py).

    python bench/ebs_incremental.py [--volume-gib 4] [--data-mib 512] [--changed 1,16,128]

Writes ``--data-mib`` of distinct data into a volume, backs it up (full), then for
each count in ``--changed`` rewrites that many scattered 512 KiB blocks and backs up
again. Prints, per run: blocks changed, GetSnapshotBlock calls and bytes served by
the server, bytes the archiver read, bytes and blobs added to the repository, and
the time. moto's server stands in for AWS: the figures are bytes and calls, not
AWS latency or throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "integration" / "ebs"
BLOCK = 512 * 1024


def block(seed: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < BLOCK:
        out += hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=64).digest()
        counter += 1
    return bytes(out[:BLOCK])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume-gib", type=int, default=4)
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--changed", default="1,16,128")
    args = parser.parse_args()
    sys.path.insert(0, str(HARNESS))
    from conftest import REGION, Aws

    work = Path(tempfile.mkdtemp(prefix="safehold-ebs-bench-"))
    port_file = work / "port"
    server = subprocess.Popen([sys.executable, str(HARNESS / "moto_ebs.py"), "--port-file", str(port_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not port_file.exists():
            time.sleep(0.05)
        aws = Aws(f"http://127.0.0.1:{port_file.read_text()}")
        while True:
            try:
                urllib.request.urlopen(aws.endpoint + "/moto-api/data.json").read()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(aws.environment() | {"SAFEHOLD_BENCH_PASSWORD": "bench"})
        volume = aws.volume(size_gib=args.volume_gib)
        blocks = args.data_mib * 1024 * 1024 // BLOCK
        total = args.volume_gib * 1024 * 1024 * 1024 // BLOCK
        layout = random.Random(1).sample(range(total), blocks)
        for seed, index in enumerate(layout):
            aws.write(volume, index * BLOCK, block(seed))
        config = {"repository": {"url": str(work / "repo"), "password_env": "SAFEHOLD_BENCH_PASSWORD"},
                  "state_dir": str(work / "state"),
                  "targets": [{"name": "bench", "tier": 1, "source": {"type": "ebs", "region": REGION,
                                                                      "volume_ids": [volume]}}]}
        (work / "targets.yml").write_text(yaml.safe_dump(config))
        from safehold.engine.backup import backup_target
        from safehold.engine.context import Context
        from safehold.engine.maintenance import init_repository

        context = Context.load(work / "targets.yml")
        init_repository(context)
        print(f"volume {args.volume_gib} GiB, {blocks} blocks ({args.data_mib} MiB) of data")
        print("| run | blocks changed | GetSnapshotBlock calls | bytes served | bytes read | bytes added | "
              "blobs added | seconds |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        runs = [("full", blocks)] + [("incremental", int(n)) for n in args.changed.split(",")]
        seed = 10**6
        for name, changed in runs:
            if name != "full":
                for index in random.Random(changed).sample(layout, changed):
                    seed += 1
                    aws.write(volume, index * BLOCK, block(seed))
            aws.stats(reset=True)
            started = time.monotonic()
            result = backup_target(context, "bench")
            elapsed = time.monotonic() - started
            stats = aws.stats()
            summary = result.summary
            print(f"| {name} | {changed} | {stats['get_snapshot_block']} | {stats['get_snapshot_block_bytes']} | "
                  f"{summary['bytes_read']} | {summary['bytes_added']} | {summary['blobs_added']} | {elapsed:.1f} |")
        context.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
