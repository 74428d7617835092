#!/usr/bin/env python3
"""GETs per backup as an S3 repository's history grows: the local object cache (issue 18/19).

    .venv/bin/python bench/cache_gets.py [--snapshots 100] [--targets 10] [--latency-ms 20]
        [--baseline-src /tmp/main-src/src] [--json bench/cache-gets-results.json]

One moto server on loopback behind ``bench/latency_proxy.py``; for each configuration a child
process (``--child``) makes ``--snapshots`` backups, one after another, of ``--targets`` small file
trees (round robin, a file changed before each) into a repository of its own, through the engine
(``backup_target``, one Context: the key is derived once, as in a worker), and records for each
backup the GETs it sent by kind (counted on ``S3Backend.get``), its wall time and the process's
CPU time. Configurations: ``cache`` (this build), ``no-cache`` (this build, ``--no-cache``) and,
with ``--baseline-src``, ``before`` (that source tree through PYTHONPATH, e.g. a git archive of
main's ``src/``). They run one after the other, in an order that alternates between repetitions
(``--repeat``); the GET counts do not depend on the machine's load, the times do (``uptime`` is
printed with them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from s3_run import AWS, MOTO, start, stop  # noqa: E402  (moto and the latency proxy, started as s3_run.py does)
METADATA = ("snapshots", "index", "verdicts", "forgotten", "keys", "config", "locks")


def child(args: argparse.Namespace) -> int:
    """Make the backups and print one JSON line per backup."""
    from collections import Counter

    import yaml

    from safehold.catalog import Catalog
    from safehold.config import load_config
    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.repository.backends.s3 import S3Backend

    root = Path(args.workdir)
    root.mkdir(parents=True)
    targets = []
    for number in range(args.targets):
        tree = root / "data" / f"t{number:03d}"
        tree.mkdir(parents=True)
        for index in range(5):
            (tree / f"f{index}.bin").write_bytes(os.urandom(16 * 1024))
        targets.append({"name": f"t{number:03d}", "tier": 3, "source": {"type": "files", "paths": [str(tree)]}})
    document = {"repository": {"url": f"s3://{args.bucket}/{args.child}", "endpoint_url": args.endpoint,
                               "password_env": "SAFEHOLD_PASSWORD"},
                "state_dir": str(root / "state"), "targets": targets}
    (root / "targets.yml").write_text(yaml.safe_dump(document))
    config = load_config(root / "targets.yml")
    options = {"cache": False} if args.child == "no-cache" else {}
    context = Context(config, threads=2, _catalog=Catalog.open(config.catalog_url), **options)
    init_repository(context)
    gets: Counter = Counter()
    real_get = S3Backend.get

    def counting_get(self, kind, name, offset=0, length=None):
        gets[kind.value] += 1
        return real_get(self, kind, name, offset, length)

    S3Backend.get = counting_get
    for number in range(args.snapshots):
        target = targets[number % len(targets)]
        (Path(target["source"]["paths"][0]) / "changed.txt").write_text(f"backup {number}\n")
        gets.clear()
        cpu, wall = time.process_time(), time.monotonic()
        backup_target(context, target["name"])
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        print(json.dumps({"history": number, "wall_s": wall, "cpu_s": cpu, "gets": dict(gets)}), flush=True)
    context.close()
    return 0


def summary(rows: list[dict], snapshots: int) -> dict:
    """Per tenth of the history: mean metadata GETs per backup, median wall and CPU seconds."""
    out = {}
    step = max(1, snapshots // 10)
    for start_at in (0, snapshots // 2, snapshots - step):
        part = rows[start_at:start_at + step]
        if not part:
            continue
        out[f"{start_at}-{start_at + len(part) - 1}"] = {
            "metadata_gets": statistics.mean(sum(r["gets"].get(k, 0) for k in ("snapshots", "index", "verdicts"))
                                             for r in part),
            "all_gets": statistics.mean(sum(r["gets"].values()) for r in part),
            "wall_s": statistics.median(r["wall_s"] for r in part),
            "cpu_s": statistics.median(r["cpu_s"] for r in part),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--snapshots", type=int, default=100)
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline-src", help="a source tree of the code before (its src/ folder)")
    parser.add_argument("--configurations", default="cache,no-cache,before")
    parser.add_argument("--workdir", default="/tmp/safehold-cache-gets")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    import shutil
    import urllib.request

    shutil.rmtree(args.workdir, ignore_errors=True)
    env = dict(os.environ, **AWS, SAFEHOLD_PASSWORD="bench")
    moto, moto_port = start([sys.executable, "-c", MOTO])
    proxy, port = start([sys.executable, str(HERE / "latency_proxy.py"), "--upstream", f"http://127.0.0.1:{moto_port}",
                         "--latency-ms", str(args.latency_ms)])
    configurations = [c for c in args.configurations.split(",") if c != "before" or args.baseline_src]
    results: dict = {"snapshots": args.snapshots, "targets": args.targets, "latency_ms": args.latency_ms, "runs": []}
    try:
        for repetition in range(args.repeat):
            order = configurations if repetition % 2 == 0 else configurations[::-1]
            for name in order:
                bucket = f"cache-gets-{name}-{repetition}"
                request = urllib.request.Request(f"http://127.0.0.1:{moto_port}/{bucket}", method="PUT")
                urllib.request.urlopen(request, timeout=30).close()
                child_env = dict(env)
                if name == "before":
                    child_env["PYTHONPATH"] = str(Path(args.baseline_src).resolve())
                load = os.getloadavg()
                started = time.monotonic()
                finished = subprocess.run(
                    [sys.executable, __file__, "--child", name, "--endpoint", f"http://127.0.0.1:{port}",
                     "--bucket", bucket, "--snapshots", str(args.snapshots), "--targets", str(args.targets),
                     "--workdir", f"{args.workdir}/{name}-{repetition}"],
                    env=child_env, capture_output=True, text=True)
                if finished.returncode != 0:
                    raise RuntimeError(f"{name} failed: {finished.stderr[-2000:]}")
                rows = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
                run = {"configuration": name, "repetition": repetition, "load_before": load,
                       "load_after": os.getloadavg(), "total_s": time.monotonic() - started,
                       "summary": summary(rows, args.snapshots), "backups": rows}
                results["runs"].append(run)
                print(f"{name} (repetition {repetition}, load {load[0]:.2f} -> {run['load_after'][0]:.2f}, "
                      f"{run['total_s']:.0f} s):", flush=True)
                for part, figures in run["summary"].items():
                    print(f"  history {part}: {figures['metadata_gets']:.1f} metadata GETs "
                          f"({figures['all_gets']:.1f} in all) per backup, wall {figures['wall_s']:.3f} s, "
                          f"CPU {figures['cpu_s']:.3f} s", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
    finally:
        stop(proxy)
        stop(moto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
