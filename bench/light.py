#!/usr/bin/env python3
"""Issue 19, fourth round: the light job path (catalog/light.py) for backup and restore, against
an earlier build and restic, side by side in one run, the variants alternated every round.

    .venv/bin/python bench/light.py --scale 0.25 --rounds 5 --before-src DIR [--json FILE]

Rows, each a command in its own process (no command server), on the tree of bench/run.py's data
set (``datagen``):
- ``full``: the first backup of the tree into a new repository (safehold: ``init`` untimed, then
  ``backup -t tree``; restic: ``init`` untimed, then ``backup``): wall, CPU and peak RSS;
- ``unchanged``: a backup with nothing changed since the last one;
- ``one file``: the restore of one file (the first of the tree, ~100 KiB-1 MiB) of the tree's
  latest snapshot into a new folder (safehold ``restore latest:tree -i``, restic ``restore latest
  --include``).
``--before-src``: the ``src`` folder of another build (``git archive`` of it), run with PYTHONPATH
by this interpreter; each build has its own state folder (catalog), the repository is shared.

Wall, CPU (user + sys) and peak RSS of the command's process from ``bench/spawn.py`` (``wait4``);
medians; the load average after each round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import datagen  # noqa: E402

PASSWORD = "bench-password"


def timed(command: list[str], env: dict, cwd: Path) -> dict:
    """wall, CPU and peak RSS (MiB) of one command, through bench/spawn.py (a bare launcher: the
    kernel carries a forking parent's resident size into the child's ``ru_maxrss``)."""
    result = cwd / "rusage.json"
    process = subprocess.run([sys.executable, "-I", "-S", str(HERE / "spawn.py"), str(result), *command], env=env,
                             cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if process.returncode != 0:
        raise SystemExit(f"{command} failed ({process.returncode}): {process.stderr.decode()[-2000:]}")
    measured = json.loads(result.read_text())
    result.unlink()
    return {"wall": measured["wall_s"], "cpu": measured["user_s"] + measured["sys_s"],
            "rss": measured["peak_rss_bytes"] / 2**20}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/safehold-light-bench"))
    parser.add_argument("--safehold", type=Path, default=Path(sys.executable).with_name("safehold"))
    parser.add_argument("--before-src", type=Path, help="src folder of another build: rows 'before'")
    parser.add_argument("--after-src", type=Path, help="src folder of the build measured as 'after' (default: "
                        "the installed one); a copy lets the tree change while the benchmark runs")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=SRC",
                        help="another build's src folder, measured as LABEL (repeatable)")
    parser.add_argument("--json", type=Path, help="write the medians here")
    args = parser.parse_args()

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "data"
    print(f"generating the data set (scale {args.scale})", file=sys.stderr)
    info = datagen.generate(data, args.scale, args.seed)
    tree = data / "tree"
    first = min(path for path in tree.rglob("*") if path.is_file() and path.stat().st_size > 0)
    relative = first.relative_to(data)

    base = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "RESTIC_"))}
    python = str(Path(sys.executable))

    def config(label: str, repository: Path) -> Path:
        state = work / f"state-{label}"
        state.mkdir(mode=0o700, exist_ok=True)
        path = work / f"targets-{label}-{repository.name}.yml"
        path.write_text(f"repository:\n  url: {repository}\n  password_env: SAFEHOLD_PASSWORD\n"
                        f"state_dir: {state}\ntargets:\n"
                        f"  - name: tree\n    tier: 3\n    source: {{type: files, paths: [{tree}]}}\n")
        return path

    after = dict(base, SAFEHOLD_PASSWORD=PASSWORD, SAFEHOLD_NO_SERVER="1")
    if args.after_src:
        after["PYTHONPATH"] = str(args.after_src)
    variants: dict[str, tuple[list[str], dict]] = {"after": ([str(args.safehold)], after)}
    if args.before_src:
        variants["before"] = ([python, "-c", "from safehold.cli.main import run; run()"],
                              dict(base, SAFEHOLD_PASSWORD=PASSWORD, SAFEHOLD_NO_SERVER="1",
                                   PYTHONPATH=str(args.before_src)))
    for also in args.also:
        label, _, source = also.partition("=")
        variants[label] = ([python, "-c", "from safehold.cli.main import run; run()"],
                           dict(base, SAFEHOLD_PASSWORD=PASSWORD, SAFEHOLD_NO_SERVER="1", PYTHONPATH=source))
    restic_env = dict(base, RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(work / "restic-cache"))

    # The shared repositories of the 'unchanged' and 'one file' rows.
    shared = work / "repo"
    for label, (prefix, env) in variants.items():
        if label == "after":
            subprocess.run([*prefix, "-c", str(config(label, shared)), "init"], env=env, check=True,
                           capture_output=True)
        else:  # the state folder's catalog of this build, on the same repository
            subprocess.run([*prefix, "-c", str(config(label, shared)), "snapshots"], env=env, check=True,
                           capture_output=True)
    first_label = next(iter(variants))
    subprocess.run([*variants[first_label][0], "-c", str(config(first_label, shared)), "backup", "-t", "tree"],
                   env=variants[first_label][1], check=True, capture_output=True)
    restic_shared = dict(restic_env, RESTIC_REPOSITORY=str(work / "restic"))
    subprocess.run(["restic", "init", "--repository-version", "2"], env=restic_shared, check=True, capture_output=True)
    subprocess.run(["restic", "backup", "--host", "bench", "--compression", "auto", str(tree)], env=restic_shared,
                   check=True, capture_output=True, cwd=work)

    def command(label: str, row: str, number: int) -> tuple[list[str], dict, Path | None]:
        """The command of one row; the folder to remove afterwards (a restore's, a full backup's repo)."""
        out = work / f"out-{label}-{row.replace(' ', '-')}-{number}"
        if label == "restic":
            if row == "full":
                repository = work / f"restic-full-{number}"
                env = dict(restic_env, RESTIC_REPOSITORY=str(repository))
                subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True,
                               capture_output=True)
                return ["restic", "backup", "--host", "bench", "--compression", "auto", str(tree)], env, repository
            if row == "unchanged":
                return ["restic", "backup", "--host", "bench", "--compression", "auto", str(tree)], restic_shared, None
            return ["restic", "restore", "latest", "--target", str(out), "--include", str(first)], restic_shared, out
        prefix, env = variants[label]
        if row == "full":
            repository = work / f"full-{label}-{number}"
            path = config(label, repository)
            subprocess.run([*prefix, "-c", str(path), "init"], env=env, check=True, capture_output=True)
            return [*prefix, "-c", str(path), "backup", "-t", "tree", "--json"], env, repository
        path = config(label, shared)
        if row == "unchanged":
            return [*prefix, "-c", str(path), "backup", "-t", "tree", "--json"], env, None
        return [*prefix, "-c", str(path), "restore", "latest:tree", "--to", str(out), "-i", str(relative),
                "--json"], env, out

    rows = ("full", "unchanged", "one file")
    labels = [*variants, "restic"]
    for label in labels:  # one warm-up of the two short rows each (page cache, imports), not counted
        for row in rows[1:]:
            line, env, leftover = command(label, row, -1)
            timed(line, env, work)
            if leftover is not None:
                shutil.rmtree(leftover)
    results: dict[str, dict[str, list[dict]]] = {}
    loads = []
    for number in range(args.rounds):
        order = labels if number % 2 == 0 else list(reversed(labels))
        for row in rows:
            for label in order:
                line, env, leftover = command(label, row, number)
                results.setdefault(row, {}).setdefault(label, []).append(timed(line, env, work))
                if leftover is not None:
                    if row == "one file":
                        assert [p for p in leftover.rglob("*") if p.is_file()], f"{label} restored nothing"
                    shutil.rmtree(leftover)
        loads.append(load())
        print(f"round {number + 1}: load {loads[-1]}", file=sys.stderr)

    print(f"\nscale {args.scale}: tree of {info['files']} files, {info['tree_bytes'] / 2**20:.0f} MiB; one file: "
          f"{relative} ({first.stat().st_size} bytes); {args.rounds} rounds, alternated; load averages after "
          f"each round: {'; '.join(loads)}\n")
    print("| row | variant | wall s (median) | CPU s (median) | peak RSS MiB (median) | wall vs restic | "
          "RSS vs restic |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    table: dict = {}
    for row, per_label in results.items():
        medians = {label: {key: statistics.median(m[key] for m in measured) for key in ("wall", "cpu", "rss")}
                   for label, measured in per_label.items()}
        for label, median in medians.items():
            ratio = median["wall"] / medians["restic"]["wall"]
            rss = median["rss"] / medians["restic"]["rss"]
            print(f"| {row} | {label} | {median['wall']:.3f} | {median['cpu']:.3f} | {median['rss']:.0f} | "
                  f"{ratio:.2f}x | {rss:.2f}x |")
            table.setdefault(row, {})[label] = dict(median, walls=[round(m["wall"], 3) for m in per_label[label]],
                                                    rss_all=[round(m["rss"]) for m in per_label[label]])
    if args.json:
        args.json.write_text(json.dumps({"scale": args.scale, "rounds": args.rounds, "loads": loads,
                                         "file": str(relative), "results": table}, indent=1))


if __name__ == "__main__":
    main()
