#!/usr/bin/env python3
"""Start-up, third round (issue 19): commands in their own process ("cold") against the same
commands through a running command server (``safehold serve --commands-only``, "served"), and
restic's nothing-changed backup, side by side in one run, in alternating order.

    .venv/bin/python bench/startup.py --scale 0.25 --rounds 5 [--before-src DIR]

Rows: ``safehold --version``, ``safehold snapshots`` (a small repository: the bench data set's two
targets), ``safehold backup --all`` with nothing changed (the data set of bench/run.py: a tree and a
disk image), ``restic backup`` with nothing changed. ``--before-src`` adds cold rows of another
build (e.g. ``git archive`` of main unpacked, its ``src``) run with PYTHONPATH, for before/after.

Wall time from a monotonic clock; CPU (user + sys) of the command's process from ``os.wait4``;
for served rows also the CPU of the command's process inside the server (the zygote's reaped
children: ``cutime + cstime`` of /proc/ZYGOTE/stat before and after), so a served row's CPU is the
whole work, not only the client's. Load average printed beside every table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import datagen  # noqa: E402

PASSWORD = "bench-password"
TICK = os.sysconf("SC_CLK_TCK")


def run(command: list[str], env: dict, cwd: Path, zygote: int | None = None) -> dict:
    """Run one command; wall, CPU of its process (wait4) and of the server's child for it."""
    before = children_cpu(zygote) if zygote else 0.0
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - start
    out, err = process.stdout.read(), process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{command} failed ({code}): {err.decode()[-2000:]}")
    server_cpu = 0.0
    if zygote:
        for _ in range(50):  # the zygote reaps the child just after the client hears its status
            server_cpu = children_cpu(zygote) - before
            if server_cpu > 0:
                break
            time.sleep(0.01)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "server_cpu": server_cpu, "out": out}


def children_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / TICK  # cutime, cstime (fields 16, 17)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/safehold-startup-bench"))
    parser.add_argument("--safehold", type=Path, default=Path(sys.executable).with_name("safehold"))
    parser.add_argument("--before-src", type=Path, help="src folder of another build: cold rows 'before'")
    parser.add_argument("--json", type=Path, help="write the medians here")
    args = parser.parse_args()

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "data"
    print(f"generating the data set (scale {args.scale})", file=sys.stderr)
    info = datagen.generate(data, args.scale, args.seed)
    state = work / "state"
    state.mkdir(mode=0o700)
    config = work / "targets.yml"
    config.write_text(f"repository:\n  url: {work / 'repo'}\n  password_env: SAFEHOLD_PASSWORD\n"
                      f"state_dir: {state}\ntargets:\n"
                      f"  - name: tree\n    tier: 3\n    source: {{type: files, paths: [{data / 'tree'}]}}\n"
                      f"  - name: image\n    tier: 3\n"
                      f"    source: {{type: image, path: {data / 'disk.img'}, chunk_size: 512KiB}}\n")
    socket_path = state / "command.sock"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "RESTIC_"))}
    cold = dict(base, SAFEHOLD_PASSWORD=PASSWORD, SAFEHOLD_NO_SERVER="1")
    served = dict(base, SAFEHOLD_PASSWORD=PASSWORD, SAFEHOLD_COMMAND_SOCKET=str(socket_path))
    restic_env = dict(base, RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(work / "restic"),
                      RESTIC_CACHE_DIR=str(work / "restic-cache"))
    safehold = [str(args.safehold), "-c", str(config)]
    subprocess.run([*safehold, "init"], env=cold, check=True, capture_output=True)
    subprocess.run(["restic", "init", "--repository-version", "2"], env=restic_env, check=True, capture_output=True)
    subprocess.run([*safehold, "backup", "--all"], env=cold, check=True, capture_output=True)
    subprocess.run(["restic", "backup", "--host", "bench", "--compression", "auto", str(data)], env=restic_env,
                   check=True, capture_output=True, cwd=work)

    server = subprocess.Popen([*safehold, "serve", "--commands-only"], env=dict(base, SAFEHOLD_NO_SERVER="1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not socket_path.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the command server did not start")
        time.sleep(0.05)
    time.sleep(0.5)

    python = str(Path(sys.executable))
    variants = {"cold": (safehold, cold, None), "served": (safehold, served, server.pid)}
    if args.before_src:
        variants["before (cold)"] = ([python, "-c", "from safehold.cli.main import run; run()", "-c", str(config)],
                                     dict(cold, PYTHONPATH=str(args.before_src)), None)
    commands = {"version": ["--version"], "snapshots": ["snapshots"], "backup": ["backup", "--all", "--json"]}
    restic_backup = ["restic", "backup", "--host", "bench", "--compression", "auto", str(data)]

    def command_for(prefix: list[str], name: str) -> list[str]:
        if name == "version":  # the bare option, as scripts ask it (no -c)
            return [*prefix[:-2], "--version"]
        return [*prefix, *commands[name]]

    for name in commands:  # one warm-up of each (page cache, the listing memo), not counted
        for prefix, env, zygote in variants.values():
            run(command_for(prefix, name), env, work, zygote)
    run(restic_backup, restic_env, work)
    results: dict[str, dict[str, list[dict]]] = {}
    loads = []
    for number in range(args.rounds):
        order = [*variants, "restic"]
        if number % 2:
            order.reverse()
        for label in order:
            if label == "restic":
                results.setdefault("backup", {}).setdefault("restic", []).append(run(restic_backup, restic_env, work))
                continue
            prefix, env, zygote = variants[label]
            for name in commands:
                results.setdefault(name, {}).setdefault(label, []).append(
                    run(command_for(prefix, name), env, work, zygote))
        loads.append(load())
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)

    table = {}
    print(f"\nscale {args.scale}: {info['files']} files, {info['tree_bytes'] / 2**20:.0f} MiB tree + "
          f"{info['image']['bytes'] / 2**20:.0f} "
          f"MiB image; {args.rounds} rounds, alternated; load averages after each round: {'; '.join(loads)}\n")
    print("| command | variant | wall s (median) | CPU s, client process (median) | CPU s, in the server (median) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, per_variant in results.items():
        for label, measured in per_variant.items():
            wall = statistics.median(m["wall"] for m in measured)
            cpu = statistics.median(m["cpu"] for m in measured)
            server_cpu = statistics.median(m["server_cpu"] for m in measured)
            table.setdefault(name, {})[label] = {"wall": wall, "cpu": cpu, "server_cpu": server_cpu,
                                                 "walls": [round(m["wall"], 3) for m in measured]}
            shown = "restic backup" if label == "restic" else f"safehold {' '.join(commands[name])}"
            print(f"| `{shown}` | {label} | {wall:.3f} | {cpu:.3f} | {server_cpu:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"scale": args.scale, "rounds": args.rounds, "loads": loads,
                                         "results": table}, indent=1))


if __name__ == "__main__":
    main()
