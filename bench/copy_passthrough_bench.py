"""CPU of one copy in-process, compressed frames passed through or compressed again (issue 15).

    python bench/copy_passthrough_bench.py [--mib 200] [--workdir /tmp] [--rounds 2]

Backs up ``--mib`` MiB of bench/copy_bench.py's data (half incompressible, half log-like text) into
a local repository, then copies the snapshot with ``repository.copy.copy_snapshot`` into fresh
destinations made with the source's parameters: once with both repositories at the same
compression level (frames pass through) and once with the source's level set one higher (so the
copy decompresses and compresses again, as before pass-through existed). CPU seconds of this
process (every thread), which a busy host disturbs far less than wall time. No start-up, key
derivation or listing is counted: this is the transfer alone.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from copy_bench import make_data  # noqa: E402

from safehold.repository import Repository  # noqa: E402
from safehold.repository.archiver import Archiver  # noqa: E402
from safehold.repository.backends import open_backend  # noqa: E402
from safehold.repository.copy import CopyStats, copy_snapshot  # noqa: E402
from safehold.sources.files import FilesSource  # noqa: E402

KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}  # not what is measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safehold-copy-passthrough-", dir=args.workdir))
    try:
        make_data(work / "data", args.mib, random.Random(15))
        source = Repository.init(open_backend(str(work / "src")), b"source", KDF)
        with FilesSource([str(work / "data")]).open() as view:
            snapshot = Archiver(source, threads=2).snapshot(view, "files", None)
        source.load_index()
        print("| round | mode | CPU s | wall s | sent MiB |\n| ---: | --- | ---: | ---: | ---: |")
        for number in range(args.rounds):
            for mode in ("pass-through", "compress again"):
                destination = Repository.init(open_backend(str(work / f"dst-{number}-{mode.replace(' ', '-')}")),
                                              b"destination", KDF, params_from=source)
                level = destination.compression
                source.compression = level if mode == "pass-through" else (level or 3) + 1
                stats = CopyStats()
                cpu, wall = time.process_time(), time.monotonic()
                copy_snapshot(source, destination, snapshot, stats, None, "bench", threads=2, verify=True)
                print(f"| {number + 1} | {mode} | {time.process_time() - cpu:.2f} | {time.monotonic() - wall:.2f} | "
                      f"{stats.bytes_sent / 2**20:.1f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
