#!/usr/bin/env python3
"""Phase 5 (full restore) of bench/run.py for two builds of safehold, side by side in one run.

    python bench/restore_compare.py --baseline-src /path/to/old/checkout/src \\
        [--scale 0.5] [--repeat 3] [--workdir /var/tmp/safehold-restore-compare] [--out docs/benchmarks.md]

The same data set as bench/run.py (bench/datagen.py, seeded) is backed up once by the current
safehold; then `safehold restore --all` restores it with the current build and with the baseline
build (the same interpreter, with the baseline's source tree first on PYTHONPATH), alternating
run by run with the page cache dropped before each, and every restore is verified against the
source. The table (medians) replaces the section between the markers in ``--out``.

Used to show that a change of the restore path keeps its throughput (issue 12: the fd-relative
restorer against the path-based one it replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datagen  # noqa: E402
import run as bench  # noqa: E402

BEGIN = "<!-- restore-compare:begin -->"
END = "<!-- restore-compare:end -->"


def launcher(work: Path, name: str, python: Path, source: Path | None) -> Path:
    """An executable that runs safehold's CLI with ``python``, ``source`` first on the path if given
    (in a folder of its own, with ``python`` beside it as bench.Safehold expects)."""
    folder = work / f"bin-{name}"
    folder.mkdir()
    (folder / "python").symlink_to(python)
    script = folder / "safehold"
    path = f"export PYTHONPATH={source}${{PYTHONPATH:+:$PYTHONPATH}}\n" if source else ""
    script.write_text(f"#!/bin/sh\n{path}exec {python} -c 'import sys; from safehold.cli.main import run; "
                      f"sys.argv[0] = \"safehold\"; sys.exit(run())' \"$@\"\n")
    script.chmod(0o755)
    return script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", required=True, type=Path, help="src/ of the baseline checkout")
    parser.add_argument("--baseline-label", default="before", help="name of the baseline in the table")
    parser.add_argument("--label", default="after", help="name of the current build in the table")
    parser.add_argument("--scale", type=float, default=0.5, help="data size factor (1.0: ~2 GiB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/safehold-restore-compare"))
    parser.add_argument("--out", type=Path, default=bench.REPO_ROOT / "docs/benchmarks.md")
    parser.add_argument("--no-drop-caches", action="store_true")
    args = parser.parse_args()
    if not (args.baseline_src / "safehold" / "__init__.py").is_file():
        parser.error(f"--baseline-src {args.baseline_src}: no safehold package there (give the checkout's src/)")

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    data = work / "data"
    bench.log(f"generating the data set (scale {args.scale}, seed {args.seed})")
    datagen.generate(data, args.scale, args.seed)
    want_tree = bench.tree_hashes(data / "tree")
    want_image = bench.file_hash(data / "disk.img")

    runner = bench.Runner(work / "logs", drop=not args.no_drop_caches)
    python = Path(sys.executable)
    builds = {args.label: launcher(work, "current", python, bench.REPO_ROOT / "src"),
              args.baseline_label: launcher(work, "baseline", python, args.baseline_src.resolve())}
    tool = bench.Safehold(work, data, runner, builds[args.label])
    tool.init()
    tool.backup_all("full", "full")

    results: dict[str, list[dict]] = {name: [] for name in builds}
    for round_no in range(args.repeat):
        order = list(builds) if round_no % 2 == 0 else list(reversed(builds))
        for name in order:
            tool.exe = builds[name]
            dest = work / "restore"
            shutil.rmtree(dest, ignore_errors=True)
            m, tree, image = tool.restore(dest)
            ok, detail = bench.verify(tree, image, want_tree, want_image)
            if not ok:
                raise bench.BenchError(f"{name}: restore verification failed: {detail}")
            bench.log(f"  {name:8s} restore {m['wall_s']:7.2f}s cpu {m['cpu_s']:7.2f}s "
                      f"rss {m['peak_rss_bytes'] / bench.MiB:6.0f} MiB ({detail})")
            results[name].append(m)
            shutil.rmtree(dest, ignore_errors=True)

    apparent = sum(size for size, _digest in want_tree.values()) + (data / "disk.img").stat().st_size
    rows = []
    for name, runs in results.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        rss = max(r["peak_rss_bytes"] for r in runs)
        rows.append((name, wall, cpu, rss, apparent / wall / bench.MiB))
    base_wall = next(wall for name, wall, *_ in rows if name == args.baseline_label)
    table = [BEGIN, "",
             f"`python bench/restore_compare.py --scale {args.scale} --repeat {args.repeat}` "
             f"({len(want_tree)} files and a disk image, {apparent / bench.MiB:.0f} MiB restored by "
             f"`safehold restore --all`, page cache dropped before each run, runs alternating, medians; "
             f"every restore verified byte for byte):", "",
             "| build | wall s | CPU s | peak RSS MiB | MiB/s | wall vs baseline |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, wall, cpu, rss, speed in rows:
        table.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss / bench.MiB:.0f} | {speed:.0f} | "
                     f"{wall / base_wall:.2f}x |")
    table += ["", END]
    text = args.out.read_text() if args.out.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + "\n".join(table) + text[text.index(END) + len(END):]
    else:
        text += "\n## Restore before and after a change of the restore path\n\n" + "\n".join(table) + "\n"
    args.out.write_text(text)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n".join(table[2:-2]))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
