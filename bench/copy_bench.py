"""Repository copies: throughput of a first copy and bytes sent by an incremental one (issue 15).

    python bench/copy_bench.py [--mib 500] [--workdir /tmp] [--no-restic] [--verify packs|full|none]
                               [--rounds N] [--incrementals N]

Makes ``--mib`` MiB of files (half incompressible, half log-like text, 5 MiB each), backs them up
into a local safehold repository, creates a second one with ``init --copy-params-from`` and times
``safehold copy`` (first copy), then changes 1 % of the bytes (1 MiB overwritten in the middle of
one file in twenty), backs up again and times the second copy. ``sent`` is what the copy reports
(stored bytes written to the destination); ``dest growth`` is what the destination folder grew
by. With restic on the PATH the same is done with two restic repositories
(``init --copy-chunker-params``, ``restic copy``), for comparison: both tools are set up first,
then each copy runs right beside the other tool's (the order alternating), so both see the same
load. ``--rounds`` repeats everything on fresh repositories, ``--incrementals`` the change and the
copy. Prints every run and the medians as Markdown tables, the load average beside each run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
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


class SafeholdPair:
    """A safehold source repository with the data backed up, and its copy destination."""

    tool = "safehold"

    def __init__(self, work: Path, data: Path) -> None:
        (work / "src").mkdir(exist_ok=True)
        (work / "dst").mkdir(exist_ok=True)
        self.work = work
        self.env = {**os.environ, "SAFEHOLD_CONFIG": str(config(work / "src", work / "src-repo", data)),
                    "SAFEHOLD_PASSWORD": "source", "DEST_PASSWORD": "dest"}
        dest_env = {**self.env, "SAFEHOLD_CONFIG": str(config(work / "dst", work / "dst-repo", data)),
                    "SAFEHOLD_PASSWORD": "dest", "SOURCE_PASSWORD": "source"}
        run([*SAFEHOLD, "init"], self.env)
        self.backup()
        run([*SAFEHOLD, "init", "--copy-params-from", str(work / "src-repo"), "--from-password-env",
             "SOURCE_PASSWORD"], dest_env)
        if VERIFY:
            self.tool += " " + " ".join(VERIFY)

    def backup(self) -> None:
        run([*SAFEHOLD, "backup", "--target", "files"], self.env)

    def copy(self) -> dict:
        before = folder_bytes(self.work / "dst-repo")
        seconds, out = run([*SAFEHOLD, "copy", "--to", str(self.work / "dst-repo"), "--to-password-env",
                            "DEST_PASSWORD", "--json", *VERIFY], self.env)
        [result] = json.loads(out)
        return {"seconds": seconds, "cpu": CPU[0], "sent": result["bytes_sent"],
                "growth": folder_bytes(self.work / "dst-repo") - before, "blobs": result["blobs_sent"]}


class ResticPair:
    """Two restic repositories (``init --copy-chunker-params``), the source with the data backed up."""

    tool = "restic 0.14 copy"

    def __init__(self, work: Path, data: Path) -> None:
        self.data = data
        self.env = {**os.environ, "RESTIC_PASSWORD": "dest", "RESTIC_FROM_PASSWORD": "source",
                    "RESTIC_PASSWORD2": "source", "RESTIC_CACHE_DIR": str(work / "restic-cache")}
        self.source, self.dest = str(work / "restic-src"), str(work / "restic-dst")
        run(["restic", "-r", self.source, "init", "--repository-version", "2"], {**self.env, "RESTIC_PASSWORD": "source"})
        self.backup()
        run(["restic", "-r", self.dest, "init", "--repository-version", "2", "--from-repo", self.source,
             "--copy-chunker-params"], self.env)

    def backup(self) -> None:
        run(["restic", "-r", self.source, "backup", "--compression", "auto", str(self.data)],
            {**self.env, "RESTIC_PASSWORD": "source"})

    def copy(self) -> dict:
        before = folder_bytes(Path(self.dest))
        seconds, _ = run(["restic", "-r", self.dest, "copy", "--from-repo", self.source, "--compression", "auto"],
                         self.env)
        growth = folder_bytes(Path(self.dest)) - before
        return {"seconds": seconds, "cpu": CPU[0], "sent": growth, "growth": growth, "blobs": None}


def compile_package() -> None:
    """Byte-compile safehold's own modules, as installing the package does (pip compiles a wheel's
    modules): in an editable checkout under PYTHONDONTWRITEBYTECODE every command would otherwise
    compile them from source, a cost no installed safehold pays."""
    import safehold

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(safehold.__file__).parent)], check=True)


def one_round(work: Path, mib: int, number: int, incrementals: int, tools: list) -> list[dict]:
    """Both tools set up side by side, then each copy of one tool right beside the same copy of the
    other, the order alternating from one pair of copies to the next."""
    pairs = []
    for tool in tools:
        folder = work / tool.__name__
        folder.mkdir()
        data = folder / "data"
        paths = make_data(data, mib, random.Random(15))
        pairs.append((tool(folder, data), paths))
    rows = []
    turn = number
    for step in range(incrementals + 1):
        label = "first copy" if step == 0 else "after a 1 % change"
        if step:
            for pair, paths in pairs:
                change_one_percent(paths, random.Random(1000 * number + step))
                pair.backup()
        order = pairs if turn % 2 == 0 else pairs[::-1]
        turn += 1
        for pair, _paths in order:
            load = os.getloadavg()[0]
            rows.append({"tool": pair.tool, "run": label, "round": number, "load": load, **pair.copy()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="Copy without reading the sent blobs back.")
    parser.add_argument("--verify", choices=("packs", "full", "none"), help="safehold copy --verify MODE.")
    parser.add_argument("--rounds", type=int, default=1, help="Fresh repositories and data this many times.")
    parser.add_argument("--incrementals", type=int, default=1,
                        help="Incremental copies (each after its own 1 %% change) per round.")
    args = parser.parse_args()
    VERIFY[:] = ["--no-verify"] if args.no_verify else (["--verify", args.verify] if args.verify else [])
    compile_package()
    tools = [SafeholdPair] if args.no_restic or not shutil.which("restic") else [SafeholdPair, ResticPair]
    rows = []
    for number in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="safehold-copy-bench-", dir=args.workdir))
        try:
            rows += one_round(work, args.mib, number, args.incrementals, tools)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    command = " ".join(["python", "bench/copy_bench.py", *sys.argv[1:]])
    print(f"`{command}` ({os.cpu_count()} cores; {args.mib} MiB, half incompressible; the change: 1 MiB "
          "overwritten in one file in twenty; load = 1-minute load average before the copy):\n")
    print("| round | tool | copy | seconds | CPU s | load | MiB/s of snapshot | sent MiB | destination grew MiB | blobs sent |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['round']} | {row['tool']} | {row['run']} | {row['seconds']:.2f} | {row['cpu']:.2f} | "
              f"{row['load']:.1f} | {args.mib / row['seconds']:.0f} | {row['sent'] / MiB:.2f} | "
              f"{row['growth'] / MiB:.2f} | {row['blobs'] if row['blobs'] is not None else ''} |")
    print("\nMedians (safehold / restic: the ratio of the medians):\n")
    print("| copy | tool | runs | seconds | CPU s | sent MiB | load |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    medians: dict = {}
    for label in ("first copy", "after a 1 % change"):
        for tool in dict.fromkeys(row["tool"] for row in rows):
            picked = [row for row in rows if row["run"] == label and row["tool"] == tool]
            if not picked:
                continue
            median = {key: statistics.median(row[key] for row in picked) for key in ("seconds", "cpu", "sent", "load")}
            medians[(label, tool.split()[0])] = median
            print(f"| {label} | {tool} | {len(picked)} | {median['seconds']:.2f} | {median['cpu']:.2f} | "
                  f"{median['sent'] / MiB:.2f} | {median['load']:.1f} |")
    for label in ("first copy", "after a 1 % change"):
        ours, theirs = medians.get((label, "safehold")), medians.get((label, "restic"))
        if ours and theirs:
            print(f"\n{label}: time {ours['seconds'] / theirs['seconds']:.2f}x restic's, CPU "
                  f"{ours['cpu'] / theirs['cpu']:.2f}x, sent {ours['sent'] / theirs['sent']:.2f}x")


if __name__ == "__main__":
    main()
