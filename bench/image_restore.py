#!/usr/bin/env python3
"""Image restore against the physical limit: `safehold restore` of a disk image vs `dd` and `cp`.

    python bench/image_restore.py [--size-mib 1024] [--repeat 5] [--baseline-src OLD/src]
        [--workdir /tmp/safehold-image-bench]

A deterministic image (half data, a quarter holes in the file, a quarter written zero runs) is
backed up once with 512 KiB chunks into a local repository. Then, alternating the order run by
run, with the source and the repository in the page cache (nothing dropped; the previous run's
writeback is flushed before each): `safehold restore latest:image --to OUT --json` (the whole
process, and the job's own `duration`), the same with a baseline build when given, `dd bs=4M` of
the same bytes and `cp --sparse=always`. `sync` is timed separately after each. Every output is
compared with the source. Prints a table of medians (wall, CPU, peak RSS) and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402
from restore_compare import launcher  # noqa: E402

MiB = 1024 * 1024
UNIT = 64 * 1024


def make_image(path: Path, size: int, seed: int) -> dict:
    """Runs of 1-32 x 64 KiB: 50 % data (random and repeated text), 25 % holes, 25 % zero runs."""
    rng = random.Random(seed)
    text = b"".join(f"line {i}: the quick brown fox jumps over the lazy dog\n".encode() for i in range(2000))
    counts = {"data": 0, "holes": 0, "zeros": 0}
    done = 0
    with open(path, "wb") as f:
        while done < size:
            n = min(rng.randint(1, 32) * UNIT, size - done)
            t = rng.random()
            if t < 0.25:
                f.seek(n, os.SEEK_CUR)
                counts["holes"] += n
            elif t < 0.5:
                f.write(bytes(n))
                counts["zeros"] += n
            elif t < 0.75:
                f.write(rng.randbytes(n))
                counts["data"] += n
            else:
                start = rng.randrange(len(text) - n) if n < len(text) else 0
                f.write((text * (n // len(text) + 1))[start : start + n])
                counts["data"] += n
            done += n
        f.truncate(size)
    return counts


def digest(path: Path) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--baseline-src", type=Path, help="src/ of a baseline checkout (run beside this one)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/safehold-image-bench"))
    args = parser.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    (work / "data").mkdir()
    source = work / "data" / "disk.img"
    counts = make_image(source, args.size_mib * MiB, args.seed)
    want = digest(source)
    bench.log(f"image: {args.size_mib} MiB, {counts}")

    runner = bench.Runner(work / "logs", drop=False)
    python = Path(sys.executable)
    builds = {"safehold": launcher(work, "current", python, bench.REPO_ROOT / "src")}
    if args.baseline_src:
        builds["safehold-before"] = launcher(work, "baseline", python, args.baseline_src.resolve())
    tool = bench.Safehold(work, work / "data", runner, builds["safehold"])
    tool.init()
    tool.run("backup", tool.cli("backup", "--target", "image", "--json"))
    out = work / "out"

    def safehold(name: str) -> dict:
        tool.exe = builds[name]
        m = tool.run("restore", tool.cli("restore", "latest:image", "--to", str(out / "disk.img"), "--json"),
                     settle=False)
        m["job_s"] = bench.last_json(m["stdout"]).get("duration")
        return m

    commands = {name: (lambda name=name: safehold(name)) for name in builds}
    commands["dd bs=4M"] = lambda: runner.run("dd", ["dd", f"if={source}", f"of={out / 'disk.img'}", "bs=4M",
                                                      "status=none"], os.environ.copy(), settle=False)
    commands["cp --sparse=always"] = lambda: runner.run("cp", ["cp", "--sparse=always", str(source),
                                                               str(out / "disk.img")], os.environ.copy(), settle=False)
    results: dict[str, list[dict]] = {name: [] for name in commands}
    digest(source)  # into the page cache
    for round_no in range(args.repeat):
        order = list(commands) if round_no % 2 == 0 else list(reversed(commands))
        for name in order:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            os.sync()  # the previous run's writeback is not this run's cost
            m = commands[name]()
            m["sync_s"] = runner.run("sync", ["sync"], os.environ.copy(), settle=False)["wall_s"]
            m["load"] = os.getloadavg()[0]
            if digest(out / "disk.img") != want:
                raise bench.BenchError(f"{name}: the restored image differs from the source")
            m.pop("stdout", None)
            results[name].append(m)
            job = f" job {m['job_s']:.2f}s" if m.get("job_s") is not None else ""
            bench.log(f"  {name:20s} {m['wall_s']:6.2f}s{job} cpu {m['cpu_s']:5.2f}s "
                      f"rss {m['peak_rss_bytes'] / MiB:5.0f} MiB sync {m['sync_s']:.2f}s load {m['load']:.1f}")
    shutil.rmtree(out, ignore_errors=True)

    dd = statistics.median(r["wall_s"] for r in results["dd bs=4M"])
    print(f"\n{args.size_mib} MiB image ({counts}); {args.repeat} runs each, alternating; medians; "
          f"load {min(r['load'] for rs in results.values() for r in rs):.1f}-"
          f"{max(r['load'] for rs in results.values() for r in rs):.1f}\n")
    print("| command | wall s | vs dd | job s | job vs dd | CPU s | peak RSS MiB | sync after s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in results.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        jobs = [r["job_s"] for r in runs if r.get("job_s") is not None]
        job = statistics.median(jobs) if jobs else None
        print(f"| {name} | {wall:.2f} | {wall / dd:.2f}x | {'' if job is None else f'{job:.2f}'} | "
              f"{'' if job is None else f'{job / dd:.2f}x'} | {statistics.median(r['cpu_s'] for r in runs):.2f} | "
              f"{max(r['peak_rss_bytes'] for r in runs) / MiB:.0f} | "
              f"{statistics.median(r['sync_s'] for r in runs):.2f} |")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (bench.BenchError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
