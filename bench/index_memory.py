"""Index memory per chunk: load N random 32-byte blob ids into safehold's Index (bench/run.py).

Run by the Python beside the ``safehold`` under test:
    python index_memory.py --chunks 10000000 [--per-pack 20] [--seed 42]
Entries are staged per pack (``stage_pack``, as loading stored index objects
does) and merged with ``finish_loading``. Prints JSON: ``memory_bytes`` (what
``Index.memory_bytes()`` reports), RSS growth after loading and peak RSS growth,
each also per chunk.
"""

import argparse
import json
import time

import numpy as np

from safehold.repository.index import ENTRY_DTYPE, Index


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=10_000_000)
    parser.add_argument("--per-pack", type=int, default=20, help="blobs per pack (16 MiB packs of ~0.8 MiB chunks)")
    parser.add_argument("--batch", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rng = np.random.default_rng([args.seed, 7])
    index = Index()
    rss_before = _status("VmRSS")
    started = time.perf_counter()
    pack_no = 0
    done = 0
    while done < args.chunks:
        n = min(args.batch, args.chunks - done)
        entries = np.zeros(n, dtype=ENTRY_DTYPE)
        entries["id"] = np.frombuffer(rng.bytes(32 * n), dtype="V32")
        entries["type"] = 0
        entries["length"] = rng.integers(200_000, 1_100_000, n, dtype=np.uint32)
        entries["plain"] = entries["length"]
        entries["offset"] = (np.arange(n, dtype=np.uint64) % args.per_pack * 800_000).astype(np.uint32)
        for start in range(0, n, args.per_pack):
            index.stage_pack(rng.bytes(32).hex(), entries[start:start + args.per_pack])
            pack_no += 1
        done += n
        del entries
    staged = time.perf_counter()
    index.finish_loading()
    loaded = time.perf_counter()
    rss_after = _status("VmRSS")
    peak = _status("VmHWM")
    count = len(index)
    # a few lookups, so a broken index does not report a fine number
    probe = np.random.default_rng([args.seed, 7]).bytes(32)
    found = index.lookup(probe) is not None
    memory = index.memory_bytes()
    json.dump({
        "chunks": count, "packs": pack_no, "memory_bytes": memory, "memory_bytes_per_chunk": memory / count,
        "rss_growth_bytes": rss_after - rss_before, "rss_growth_per_chunk": (rss_after - rss_before) / count,
        "peak_rss_growth_bytes": peak - rss_before, "peak_rss_growth_per_chunk": (peak - rss_before) / count,
        "stage_seconds": staged - started, "finish_loading_seconds": loaded - staged, "first_id_found": found,
    }, __import__("sys").stdout)
    print()


if __name__ == "__main__":
    main()
