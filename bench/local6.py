#!/usr/bin/env python3
"""Issue 19, sixth round (local): bench/run.py's data set and tools, one phase per invocation, so
each locked run stays short; safehold (this build, and optionally another build's ``src``) and
restic side by side, the order rotated every round.

    python bench/local6.py setup     --work W --scale 1.0 [--before-src DIR]   # data, init, full backups
    python bench/local6.py full      --work W --rounds 3                       # more full backups (peak RSS)
    python bench/local6.py unchanged --work W --rounds 5                       # backup --all, nothing changed
    python bench/local6.py restore   --work W --rounds 3 [--where emptied,fresh] [--tools safehold,served,restic]
    python bench/local6.py snapshots --work W2 --scale 0.25 --rounds 5          # cold and served

``setup`` generates the data (``datagen``, seeded), initialises one repository per tool and times
the first full backup of each (safehold: ``backup --all`` of the tree and the disk image, restic:
``backup`` of the folder): wall, CPU and peak RSS (``bench/spawn.py``'s ``wait4``). ``unchanged``
times a backup with nothing changed (and records the bytes safehold read). ``restore`` times the
full restore (safehold ``restore --all``; restic the latest snapshot) into a directory where the
previous restore was just deleted (``emptied``) and into a new loop-mounted ext4 per run
(``fresh``, bench/run.py's ``FreshFs``), then ``sync``; every restore is verified against the
source; ``served`` in ``--tools`` adds this build's restore through a running
``safehold serve --commands-only`` (its CPU: the client's plus the command's fork in the server).
Every row carries the load average before and after it. Results are appended to
``W/results.jsonl``; ``summary`` prints the medians.

``snapshots`` (its own small work folder: it makes its data at ``--scale``, two targets and their
first backups) times ``safehold snapshots`` in its own process ("cold") and through a running
``safehold serve --commands-only`` ("served", CPU also of the command's process in the server, as
bench/startup.py counts it), each right after another ``snapshots`` ("warm") and right after a
nothing-changed ``backup --all`` ("after a backup": the catalog has a new job, so the listing memo
does not apply), alternated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def launcher(work: Path, name: str, source: Path) -> Path:
    folder = work / f"bin-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "python").exists():
        (folder / "python").symlink_to(sys.executable)
    script = folder / "safehold"
    # The entry point of the installed script (safehold/__main__.py): it asks a running command
    # server first, unless SAFEHOLD_NO_SERVER is set (every variant but "served" sets it).
    script.write_text(f"#!/bin/sh\nexport PYTHONPATH={source}${{PYTHONPATH:+:$PYTHONPATH}}\n"
                      f"exec {sys.executable} -c 'import sys; from safehold.__main__ import run; "
                      f"sys.argv[0] = \"safehold\"; sys.exit(run())' \"$@\"\n")
    script.chmod(0o755)
    return script


def tools(work: Path, only: str | None = None) -> dict[str, bench.Tool]:
    meta = json.loads((work / "meta.json").read_text())
    data = work / "data"
    runner = bench.Runner(work / "logs", drop=False)
    out: dict[str, bench.Tool] = {}
    for name, source in meta["builds"].items():
        folder = work / name
        folder.mkdir(exist_ok=True)
        exe = launcher(work, name, Path(source))
        tool = bench.Safehold(folder, data, runner, exe)
        tool.name = name  # the log names and result rows
        tool.env["SAFEHOLD_NO_SERVER"] = "1"  # in its own process, whatever server may be running
        out[name] = tool
    restic = bench.Restic(work / "restic", data, runner)
    restic.snapshots["latest"] = "latest"
    out["restic"] = restic
    if only:
        out = {name: tool for name, tool in out.items() if name in only.split(",")}
    return out


def record(work: Path, row: dict) -> None:
    with open(work / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "stdout"}), flush=True)


def rotated(names: list[str], round_no: int) -> list[str]:
    k = round_no % len(names)
    return names[k:] + names[:k]


def setup(args) -> None:
    import datagen

    work = args.work
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    (work / "restic").mkdir()
    builds = {"safehold": str(bench.REPO_ROOT / "src")}
    if args.before_src:
        builds["before"] = str(args.before_src.resolve())
    dataset = datagen.generate(work / "data", args.scale, args.seed)
    (work / "meta.json").write_text(json.dumps({"builds": builds, "scale": args.scale, "dataset": dataset}))
    want = {"tree": bench.tree_hashes(work / "data" / "tree"), "image": bench.file_hash(work / "data" / "disk.img")}
    (work / "want.json").write_text(json.dumps(want))
    all_tools = tools(work)
    for tool in all_tools.values():
        tool.init()
    for name in rotated(list(all_tools), 0):
        before = load()
        m = all_tools[name].backup_all("full", "full")
        m.pop("stdout", None)
        record(work, {"phase": "full", "tool": name, **m, "load_before": before, "load_after": load()})


def full(args) -> None:
    """More first full backups (a new repository each: wipe, init untimed), rotated: peak RSS."""
    all_tools = tools(args.work, args.tools)
    for round_no in range(args.rounds):
        for name in rotated(list(all_tools), round_no):
            tool = all_tools[name]
            tool.wipe()
            tool.init()
            before = load()
            m = tool.backup_all("full", "latest")
            m.pop("stdout", None)
            record(args.work, {"phase": "full", "tool": name, "round": round_no, **m,
                               "load_before": before, "load_after": load()})


def unchanged(args) -> None:
    all_tools = tools(args.work, args.tools)
    for round_no in range(args.rounds):
        for name in rotated(list(all_tools), round_no):
            before = load()
            m = all_tools[name].backup_all("unchanged", "latest")
            m.pop("stdout", None)
            record(args.work, {"phase": "unchanged", "tool": name, "round": round_no, **m,
                               "load_before": before, "load_after": load()})


class Served(bench.Safehold):
    """The same build and configuration, each command through a running ``safehold serve
    --commands-only`` (the command's CPU in the server is added from the zygote's ``cutime``)."""

    def __init__(self, base: bench.Safehold, server_pid: int, socket_path: Path) -> None:
        self.__dict__.update(base.__dict__)
        self.name = "served"
        self.zygote = server_pid
        self.env = dict(base.env, SAFEHOLD_COMMAND_SOCKET=str(socket_path))
        self.env.pop("SAFEHOLD_NO_SERVER", None)

    def run(self, phase: str, cmd: list[str], **kw) -> dict:
        import startup

        before = startup.children_cpu(self.zygote)
        m = self.runner.run(f"served-{phase}", cmd, self.env, **kw)
        for _ in range(50):  # the zygote reaps the command just after the client hears its status
            inside = startup.children_cpu(self.zygote) - before
            if inside > 0:
                break
            time.sleep(0.01)
        m["client_cpu_s"], m["server_cpu_s"] = m["cpu_s"], inside
        m["cpu_s"] += inside
        return m


def start_server(tool: bench.Safehold):
    """``safehold serve --commands-only`` for ``tool``'s configuration; (process, socket path)."""
    import subprocess

    socket_path = tool.work / "safehold-state" / "command.sock"
    env = dict(tool.env, SAFEHOLD_NO_SERVER="1")
    server = subprocess.Popen([str(tool.exe), "-c", str(tool.config), "serve", "--commands-only"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not socket_path.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise bench.BenchError("the command server did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    return server, socket_path


def restore(args) -> None:
    import signal

    work = args.work
    wanted = args.tools.split(",") if args.tools else None
    all_tools = tools(work, ",".join(t for t in wanted if t != "served") if wanted else None)
    server = None
    if wanted and "served" in wanted:
        server, socket_path = start_server(all_tools["safehold"])
        all_tools["served"] = Served(all_tools["safehold"], server.pid, socket_path)
        all_tools["served"].restore(work / "warm-up")  # the server's first command derives the key
        shutil.rmtree(work / "warm-up")
    try:
        _restore(args, work, all_tools)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


def _restore(args, work: Path, all_tools: dict) -> None:
    want = json.loads((work / "want.json").read_text())
    want_tree = {k: tuple(v) for k, v in want["tree"].items()}
    size = int(bench.tree_bytes(work / "data")[0] * 1.5) + 512 * bench.MiB
    wheres = args.where.split(",")
    for round_no in range(args.rounds):
        for where in wheres:
            for name in rotated(list(all_tools), round_no):
                tool = all_tools[name]
                if where == "fresh":
                    fresh = bench.FreshFs(size)
                    dest = fresh.__enter__() / "restore"
                else:
                    fresh = None
                    dest = work / "restore"
                    shutil.rmtree(dest, ignore_errors=True)
                    os.sync()
                try:
                    before = load()
                    if isinstance(tool, bench.Restic):
                        m, tree, image = tool.restore(dest, "latest")
                    else:
                        m, tree, image = tool.restore(dest)
                    sync = tool.runner.run(f"{name}-sync", ["sync"], os.environ.copy(), settle=False)
                    m.pop("stdout", None)
                    m["sync_s"] = sync["wall_s"]
                    m["restore_sync_s"] = m["wall_s"] + sync["wall_s"]
                    ok, detail = bench.verify(tree, image, want_tree, want["image"])
                    if not ok:
                        raise bench.BenchError(f"{name}: restore not verified: {detail}")
                    record(work, {"phase": f"restore_{where}", "tool": name, "round": round_no, **m,
                                  "load_before": before, "load_after": load()})
                finally:
                    if fresh is not None:
                        fresh.__exit__(None, None, None)
                    else:
                        shutil.rmtree(dest, ignore_errors=True)


def snapshots(args) -> None:
    import datagen
    import signal
    import startup

    work = args.work
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    datagen.generate(work / "data", args.scale, args.seed)
    runner = bench.Runner(work / "logs", drop=False)
    tool = bench.Safehold(work, work / "data", runner, bench.find_safehold(None))
    socket_path = work / "safehold-state" / "command.sock"  # the server's: in its state folder
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "RESTIC_"))}
    cold = dict(base, SAFEHOLD_PASSWORD=bench.PASSWORD, SAFEHOLD_NO_SERVER="1")
    served = dict(base, SAFEHOLD_PASSWORD=bench.PASSWORD, SAFEHOLD_COMMAND_SOCKET=str(socket_path))
    tool.init()
    tool.backup_all("full", "full")
    server, started_socket = start_server(tool)
    assert started_socket == socket_path
    try:
        variants = {"cold": (cold, None), "served": (served, server.pid)}
        listing = tool.cli("snapshots")
        backup = tool.cli("backup", "--all", "--json")
        for name, (env, zygote) in variants.items():  # warm-ups, not counted
            startup.run(listing, env, work, zygote)
        for round_no in range(args.rounds):
            for name in rotated(list(variants), round_no):
                env, zygote = variants[name]
                startup.run(listing, env, work, zygote)
                before = load()
                m = startup.run(listing, env, work, zygote)
                record(work, {"phase": "snapshots warm", "tool": name, "round": round_no, "wall_s": m["wall"],
                              "cpu_s": m["cpu"] + m["server_cpu"], "client_cpu_s": m["cpu"],
                              "server_cpu_s": m["server_cpu"], "peak_rss_bytes": 0,
                              "load_before": before, "load_after": load()})
                startup.run(backup, env, work, zygote)
                before = load()
                m = startup.run(listing, env, work, zygote)
                record(work, {"phase": "snapshots after a backup", "tool": name, "round": round_no,
                              "wall_s": m["wall"], "cpu_s": m["cpu"] + m["server_cpu"], "client_cpu_s": m["cpu"],
                              "server_cpu_s": m["server_cpu"], "peak_rss_bytes": 0,
                              "load_before": before, "load_after": load()})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def summary(args) -> None:
    rows = [json.loads(line) for line in (args.work / "results.jsonl").read_text().splitlines()]
    phases: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        phases.setdefault((row["phase"], row["tool"]), []).append(row)
    out = {}
    for (phase, tool), runs in sorted(phases.items()):
        med = {k: statistics.median(r[k] for r in runs if r.get(k) is not None)
               for k in ("wall_s", "cpu_s", "peak_rss_bytes", "restore_sync_s", "tool_read_bytes")
               if any(r.get(k) is not None for r in runs)}
        med["runs"] = len(runs)
        med["loads"] = sorted({r["load_before"].split()[0] for r in runs} | {r["load_after"].split()[0] for r in runs})
        out.setdefault(phase, {})[tool] = med
    for phase, by_tool in out.items():
        base = by_tool.get("restic")
        for tool, med in by_tool.items():
            ratio = f"{med['wall_s'] / base['wall_s']:.2f}x" if base else ""
            sync = f" +sync {med['restore_sync_s']:.2f}" if "restore_sync_s" in med else ""
            sync_ratio = (f" ({med['restore_sync_s'] / base['restore_sync_s']:.2f}x)"
                          if base and "restore_sync_s" in med else "")
            print(f"{phase:16s} {tool:9s} n={med['runs']} wall {med['wall_s']:.3f}{sync}{sync_ratio} cpu "
                  f"{med['cpu_s']:.3f} rss {med['peak_rss_bytes'] / bench.MiB:.0f} MiB vs restic {ratio} "
                  f"load {min(med['loads'])}-{max(med['loads'])}")
    if args.json:
        args.json.write_text(json.dumps({"summary": out, "rows": rows}, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["setup", "full", "unchanged", "restore", "snapshots", "summary"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/safehold-local6"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-src", type=Path)
    parser.add_argument("--where", default="emptied,fresh")
    parser.add_argument("--tools", help="only these (comma-separated: safehold, before, restic)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    {"setup": setup, "full": full, "unchanged": unchanged, "restore": restore, "snapshots": snapshots,
     "summary": summary}[args.phase](args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
