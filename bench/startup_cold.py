#!/usr/bin/env python3
"""Cold start of one build against another (issue 19, start-up third round, part 1): CPU seconds
of ``snapshots``, a nothing-changed ``backup`` of a small files target and a ``restore`` of it, each
in its own process, builds alternated, N rounds, medians; and the total import time
(``python -X importtime``: the sum of the top-level cumulative times, wall clock, so the least of
``--import-runs`` runs) of each command.

    .venv/bin/python bench/startup_cold.py --before-src /tmp/main/src --rounds 5

Each build has its own state folder (SAFEHOLD_STATE_DIR), so one's listing never invalidates the
other's listing memo. The command server is off (SAFEHOLD_NO_SERVER=1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PASSWORD = "bench-password"


def run(command: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - start
    err = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, err


def import_seconds(stderr: str) -> float:
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if cumulative.strip().isdigit() and name[1:2] != " ":  # a top-level import (no indentation)
                total += int(cumulative)
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/safehold-cold-bench"))
    parser.add_argument("--import-runs", type=int, default=5, help="-X importtime runs per command (least shown)")
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    (work / "data" / "etc").mkdir(parents=True)
    for number in range(50):
        (work / "data" / "etc" / f"file-{number}.conf").write_text(f"setting {number}\n" * 40)
    config = work / "targets.yml"
    config.write_text(f"repository:\n  url: {work / 'repo'}\n  password_env: SAFEHOLD_PASSWORD\n"
                      f"state_dir: {work / 'state'}\ntargets:\n"
                      f"  - {{name: docs, tier: 3, source: {{type: files, paths: [{work / 'data'}]}}}}\n")
    python = sys.executable
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    base.update(SAFEHOLD_PASSWORD=PASSWORD, SAFEHOLD_NO_SERVER="1")
    builds = {
        "before": dict(base, PYTHONPATH=str(args.before_src), SAFEHOLD_STATE_DIR=str(work / "state-before")),
        "after": dict(base, SAFEHOLD_STATE_DIR=str(work / "state-after")),
    }
    main_code = "import sys; from safehold.cli.main import run; sys.argv[0] = 'safehold'; run()"
    after_code = "import sys; from safehold.__main__ import run; sys.argv[0] = 'safehold'; run()"
    code = {"before": main_code, "after": after_code}
    cli = {name: [python, "-c", code[name], "-c", str(config)] for name in builds}
    subprocess.run([*cli["after"], "init"], env=builds["after"], check=True, capture_output=True)
    for name, env in builds.items():
        subprocess.run([*cli[name], "backup", "-t", "docs"], env=env, check=True, capture_output=True)
    commands = {"snapshots": ["snapshots"], "backup (nothing changed)": ["backup", "-t", "docs"],
                "restore": ["restore", "latest:docs", "--to", "RESTORE"]}
    results: dict[str, dict[str, list[float]]] = {}
    imports: dict[str, dict[str, float]] = {}
    loads = []
    for name, words in commands.items():
        for build, env in builds.items():  # warm-up and the import times (one -X importtime run each)
            target = work / f"restore-{build}-warm"
            argv = [w if w != "RESTORE" else str(target) for w in words]
            run([*cli[build], *argv], env, work)
            shutil.rmtree(target, ignore_errors=True)
            seconds = []
            for _ in range(args.import_runs):  # wall-clock based: the least of several runs
                _, _, err = run([python, "-X", "importtime", *cli[build][1:], *argv], env, work)
                shutil.rmtree(target, ignore_errors=True)
                seconds.append(import_seconds(err))
            imports.setdefault(name, {})[build] = min(seconds)
    # The configuration alone (import + validation of a files-only targets.yml), CPU measured inside
    # the process with getrusage around it: the part the per-type source models change, too small
    # to see in a whole command's CPU on a loaded machine.
    probe = ("import resource, sys\n"
             "def cpu():\n    r = resource.getrusage(resource.RUSAGE_SELF)\n    return r.ru_utime + r.ru_stime\n"
             "import pydantic, yaml\nstart = cpu()\nfrom safehold.config import load_config\n"
             "load_config(sys.argv[1])\nprint(cpu() - start)\n")
    config_cpu: dict[str, list[float]] = {}
    for number in range(args.rounds * 4):
        order = list(builds) if number % 2 == 0 else list(reversed(builds))
        for build in order:
            answer = subprocess.run([python, "-c", probe, str(config)], env=builds[build], capture_output=True,
                                    text=True, check=True)
            config_cpu.setdefault(build, []).append(float(answer.stdout))
    for number in range(args.rounds):
        order = list(builds) if number % 2 == 0 else list(reversed(builds))
        for name, words in commands.items():
            for build in order:
                target = work / f"restore-{build}-{number}"
                argv = [w if w != "RESTORE" else str(target) for w in words]
                wall, cpu, _ = run([*cli[build], *argv], builds[build], work)
                shutil.rmtree(target, ignore_errors=True)
                results.setdefault(name, {}).setdefault(build, []).append(cpu)
        loads.append(" ".join(Path("/proc/loadavg").read_text().split()[:3]))
    print(f"{args.rounds} rounds, builds alternated; load after each round: {'; '.join(loads)}\n")
    print("| command | before CPU s (median, min-max) | after CPU s (median, min-max) | imports before s (least) "
          "| imports after s (least) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    cells = [f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f})" for v in config_cpu.values()]
    print(f"| configuration load (in-process, {args.rounds * 4} runs each) | {cells[0]} | {cells[1]} | | |")
    for name, per_build in results.items():
        cells = [f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f})" for v in per_build.values()]
        print(f"| `{name}` | {cells[0]} | {cells[1]} | {imports[name]['before']:.3f} | {imports[name]['after']:.3f} |")


if __name__ == "__main__":
    main()
