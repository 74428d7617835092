"""Repository copies: throughput of a first copy and bytes sent by an incremental one (issue 15).

    python bench/copy_bench.py [--mib 500] [--workdir /tmp] [--no-restic]

Makes ``--mib`` MiB of files (half incompressible, half log-like text, 5 MiB each), backs them up
into a local safehold repository, creates a second one with ``init --copy-params-from`` and times
``safehold copy`` (first copy), then changes 1 % of the bytes (1 MiB overwritten in the middle of
one file in twenty), backs up again and times the second copy. ``sent`` is what the copy reports
(stored bytes written to the destination); ``dest growth`` is what the destination folder grew
by. With restic on the PATH the same is done with two restic repositories
(``init --copy-chunker-params``, ``restic copy``), for comparison. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
SAFEHOLD = [str(Path(sys.executable).with_name("safehold"))]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_data(root: Path, mib: int, rng: random.Random) -> list[Path]:
    words = [b"GET", b"POST", b"/api/orders", b"200", b"404", b"user=alice", b"user=bob", b"latency_ms=12"]
    paths = []
    for number in range(mib // 5):
        path = root / f"part{number % 8}" / f"file{number:03d}.{'bin' if number % 2 else 'log'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if number % 2:
            data = rng.randbytes(5 * MiB)
        else:
            lines = []
            size = 0
            while size < 5 * MiB:
                line = b" ".join(rng.choice(words) for _ in range(8)) + b" %d\n" % rng.randrange(10**9)
                lines.append(line)
                size += len(line)
            data = b"".join(lines)[: 5 * MiB]
        path.write_bytes(data)
        paths.append(path)
    return paths


def change_one_percent(paths: list[Path], rng: random.Random) -> int:
    changed = 0
    for path in paths[::20]:
        with open(path, "r+b") as handle:
            handle.seek(2 * MiB)
            handle.write(rng.randbytes(MiB))
        changed += MiB
    return changed


def config(folder: Path, repository: Path, data: Path) -> Path:
    path = folder / "targets.yml"
    path.write_text(f"repository:\n  url: {repository}\n  password_env: SAFEHOLD_PASSWORD\nstate_dir: {folder}/state\n"
                    f"targets:\n  - {{name: files, tier: 3, source: {{type: files, paths: [{data}]}}}}\n")
    return path


CPU: list[float] = [0.0]  # user + sys seconds of the last command run (steadier than wall time on a busy host)


def run(command: list[str], env: dict) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - started, proc.stdout


VERIFY: list[str] = []


def safehold(work: Path, data: Path, paths: list[Path], rng_seed: int) -> list[dict]:
    (work / "src").mkdir(exist_ok=True)
    (work / "dst").mkdir(exist_ok=True)
    source_env = {**os.environ, "SAFEHOLD_CONFIG": str(config(work / "src", work / "src-repo", data)),
                  "SAFEHOLD_PASSWORD": "source", "DEST_PASSWORD": "dest"}
    dest_env = {**source_env, "SAFEHOLD_CONFIG": str(config(work / "dst", work / "dst-repo", data)),
                "SAFEHOLD_PASSWORD": "dest", "SOURCE_PASSWORD": "source"}
    run([*SAFEHOLD, "init"], source_env)
    run([*SAFEHOLD, "backup", "--target", "files"], source_env)
    run([*SAFEHOLD, "init", "--copy-params-from", str(work / "src-repo"), "--from-password-env", "SOURCE_PASSWORD"],
        dest_env)
    rows = []
    copy = [*SAFEHOLD, "copy", "--to", str(work / "dst-repo"), "--to-password-env", "DEST_PASSWORD", "--json", *VERIFY]
    for label in ("first copy", "after a 1 % change"):
        if label != "first copy":
            change_one_percent(paths, random.Random(rng_seed))
            run([*SAFEHOLD, "backup", "--target", "files"], source_env)
        before = folder_bytes(work / "dst-repo")
        seconds, out = run(copy, source_env)
        [result] = json.loads(out)
        rows.append({"tool": "safehold" + (" --no-verify" if VERIFY else ""), "run": label, "seconds": seconds,
                     "cpu": CPU[0], "sent": result["bytes_sent"],
                     "growth": folder_bytes(work / "dst-repo") - before, "blobs": result["blobs_sent"]})
    return rows


def restic(work: Path, data: Path, paths: list[Path], rng_seed: int) -> list[dict]:
    env = {**os.environ, "RESTIC_PASSWORD": "dest", "RESTIC_FROM_PASSWORD": "source", "RESTIC_PASSWORD2": "source",
           "RESTIC_CACHE_DIR": str(work / "restic-cache")}
    source, dest = str(work / "restic-src"), str(work / "restic-dst")
    run(["restic", "-r", source, "init", "--repository-version", "2"], {**env, "RESTIC_PASSWORD": "source"})
    run(["restic", "-r", source, "backup", "--compression", "auto", str(data)], {**env, "RESTIC_PASSWORD": "source"})
    run(["restic", "-r", dest, "init", "--repository-version", "2", "--from-repo", source, "--copy-chunker-params"],
        {**env, "RESTIC_PASSWORD2": "source"})
    rows = []
    for label in ("first copy", "after a 1 % change"):
        if label != "first copy":
            change_one_percent(paths, random.Random(rng_seed))
            run(["restic", "-r", source, "backup", "--compression", "auto", str(data)],
                {**env, "RESTIC_PASSWORD": "source"})
        before = folder_bytes(Path(dest))
        seconds, _ = run(["restic", "-r", dest, "copy", "--from-repo", source, "--compression", "auto"],
                         {**env, "RESTIC_PASSWORD2": "source"})
        growth = folder_bytes(Path(dest)) - before
        rows.append({"tool": "restic 0.14 copy", "run": label, "seconds": seconds, "cpu": CPU[0], "sent": growth,
                     "growth": growth,
                     "blobs": None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="Copy without reading the sent blobs back.")
    args = parser.parse_args()
    VERIFY[:] = ["--no-verify"] if args.no_verify else []
    work = Path(tempfile.mkdtemp(prefix="safehold-copy-bench-", dir=args.workdir))
    try:
        rows = []
        for tool in ([safehold] if args.no_restic or not shutil.which("restic") else [safehold, restic]):
            data = work / f"data-{tool.__name__}"
            paths = make_data(data, args.mib, random.Random(15))
            rows += tool(work, data, paths, rng_seed=16)
        print(f"`python bench/copy_bench.py --mib {args.mib}` ({os.cpu_count()} cores; {args.mib} MiB, half "
              "incompressible; the change: 1 MiB overwritten in one file in twenty):\n")
        print("| tool | copy | seconds | CPU s | MiB/s of snapshot | sent MiB | destination grew MiB | blobs sent |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            print(f"| {row['tool']} | {row['run']} | {row['seconds']:.1f} | {row['cpu']:.1f} | {args.mib / row['seconds']:.0f} | "
                  f"{row['sent'] / MiB:.2f} | {row['growth'] / MiB:.2f} | {row['blobs'] if row['blobs'] is not None else ''} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
