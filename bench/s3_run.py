#!/usr/bin/env python3
"""The S3 phase of the benchmark (issue 19): safehold vs restic against a moto server on loopback
behind a proxy that adds a fixed latency per request (and, optionally, a bandwidth cap).

    .venv/bin/python bench/s3_run.py [--scale 0.1] [--latency-ms 20,50] [--mib-per-s 0] [--conn-mib-per-s 0]
                                     [--connections 16] [--repeat 1] [--json bench/s3-results.json]
                                     [--request-mib 24] [--baseline-src DIR] [--tools ...]
                                     [--workdir /var/tmp/safehold-s3-bench]

Same data set as ``bench/run.py`` (``datagen``, seeded). For each latency, side by side: safehold,
restic with its defaults (5 connections) and restic with ``-o s3.connections=N`` (N = safehold's
restore concurrency, ``--connections``; ``restic-32`` in ``--tools`` runs it with 32, the most
safehold's ``restore --all`` of two targets keeps in flight). Phases: first full backup, backup after the 1 % change,
full restore (verified against the source), single-file restore of the largest file from the
large snapshot, ``check --read-data``. borg has no S3 backend and is left out. Every timed command
is a child process measured like ``bench/run.py`` (wall clock, CPU and peak RSS from rusage).

moto keeps objects in memory and serves them from Python: on a 2-core machine its own CPU is part
of every number, for every tool alike. The ratios, not the absolute times, are the result.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (Runner, data verification, tool lookup)

PASSWORD = bench.PASSWORD
PHASES = ["full", "change", "restore", "restore_one", "check"]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
       "AWS_DEFAULT_REGION": "us-east-1"}


def start(command: list[str]) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=dict(os.environ, **AWS))
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise bench.BenchError(f"{command[1]} did not start: {line!r}")
    return process, int(line.split()[1])


def stop(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


MOTO = ("import signal, sys\nfrom moto.server import ThreadedMotoServer\n"
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start()\n"
        "print('PORT', s.get_host_and_port()[1], flush=True)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\nsys.stdin.read(); s.stop()\n")


def make_bucket(port: int, name: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{name}", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 200:
            raise bench.BenchError(f"cannot create bucket {name}: HTTP {answer.status}")


def delete_bucket(moto_port: int, name: str) -> None:
    """Frees moto's memory between rounds (every object, then the bucket)."""
    import boto3

    s3 = boto3.resource("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = s3.Bucket(name)
    bucket.objects.all().delete()
    bucket.delete()


class SafeholdS3(bench.Safehold):
    name = "safehold"

    def __init__(self, work: Path, data: Path, runner: bench.Runner, exe: Path, port: int, bucket: str,
                 connections: int) -> None:
        self.bucket = bucket
        self.port = port
        self.connections = connections
        super().__init__(work, data, runner, exe)
        self.config = work / f"safehold-{bucket}.yml"
        self.config.write_text(
            "# written by bench/s3_run.py\n"
            f"repository:\n  url: s3://{bucket}/repo\n  endpoint_url: http://127.0.0.1:{port}\n"
            "  password_env: SAFEHOLD_PASSWORD\n"
            f"state_dir: {work / ('state-' + bucket)}\n"
            "targets:\n"
            f"  - name: tree\n    tier: 3\n    source: {{type: files, paths: [{data / 'tree'}]}}\n"
            f"  - name: image\n    tier: 3\n"
            f"    source: {{type: image, path: {data / 'disk.img'}, chunk_size: 512KiB}}\n")

    def tool_env(self) -> dict:
        return {"SAFEHOLD_PASSWORD": PASSWORD, "SAFEHOLD_RESTORE_CONNECTIONS": str(self.connections), **AWS}

    def restore_one(self, dest: Path, path: str) -> dict:
        # the full backup's snapshot, as for restic (the snapshot before the 1 % change)
        return self.run("restore_one", self.cli("restore", self.snapshots["full"], "--include", path, "--to", str(dest),
                                                "--json"))

    def backup_all(self, phase: str, label: str) -> dict:
        m = super().backup_all(phase, label)
        listing = subprocess.run(self.cli("snapshots", "--json"), capture_output=True, text=True, env=self.env)
        snapshots = [s for s in json.loads(listing.stdout) if s.get("target") == "tree"]
        self.snapshots[label] = max(snapshots, key=lambda s: s["time"])["id"]
        return m


class SafeholdServedS3(SafeholdS3):
    """safehold with every command run through a command server (``safehold serve --commands-only``,
    docs/design/command-server.md) started for it on its own state folder: the start-up a
    scheduled or repeated backup does not pay. The client is measured as every tool is; the
    server's CPU during the command (the forked child's, reaped by it) is added to ``cpu_s``."""

    name = "safehold-served"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        folder = self.work / f"server-{self.bucket}"
        folder.mkdir(mode=0o700, exist_ok=True)
        self.socket = str(folder / "command.sock")
        self.log_path = folder / "server.log"
        env = {key: value for key, value in self.env.items() if not key.startswith("SAFEHOLD_")}
        env.update({"SAFEHOLD_CONFIG": str(self.config), "SAFEHOLD_COMMAND_SOCKET": self.socket,
                    "SAFEHOLD_NO_SERVER": "1", "SAFEHOLD_PASSWORD": PASSWORD})
        with open(self.log_path, "wb") as log:
            self.server = subprocess.Popen([str(self.exe), "serve", "--commands-only"], env=env,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while "serving commands on" not in self.log_path.read_text():
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise bench.BenchError(f"safehold serve --commands-only did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        self.env = {key: value for key, value in self.env.items() if key != "SAFEHOLD_NO_SERVER"}
        self.env["SAFEHOLD_COMMAND_SOCKET"] = self.socket

    def _server_cpu(self) -> float:
        fields = Path(f"/proc/{self.server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def run(self, phase: str, cmd: list[str], **kw) -> dict:
        before = self._server_cpu()
        m = super().run(phase, cmd, **kw)
        m["server_cpu_s"] = self._server_cpu() - before
        m["cpu_s"] += m["server_cpu_s"]
        if "command process " not in self.log_path.read_text():
            raise bench.BenchError(f"{' '.join(cmd)} was not run by the command server:\n{self.log_path.read_text()}")
        return m

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()


class ResticS3(bench.Restic):
    def __init__(self, work: Path, data: Path, runner: bench.Runner, port: int, bucket: str,
                 connections: int | None) -> None:
        self.name = f"restic-{connections}" if connections else "restic"
        self.url = f"s3:http://127.0.0.1:{port}/{bucket}"
        self.options = ["-o", f"s3.connections={connections}"] if connections else []
        super().__init__(work, data, runner)

    def tool_env(self) -> dict:
        return {"RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": self.url,
                "RESTIC_CACHE_DIR": str(self.work / f"cache-{self.name}"), **AWS}

    def state_dirs(self) -> list[Path]:
        return [self.work / f"cache-{self.name}"]

    def run(self, phase: str, cmd: list[str], **kw) -> dict:
        if cmd and cmd[0] == "restic":
            cmd = ["restic", *self.options, *cmd[1:]]
        return self.runner.run(f"{self.name}-{phase}", cmd, self.env, **kw)

    def restore_one(self, dest: Path, path: str) -> dict:
        return self.run("restore_one", ["restic", "restore", self.snapshots["full"], "--target", str(dest),
                                        "--include", path])


def largest_file(tree: Path) -> Path:
    return max((p for p in tree.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.1, help="data size factor (1.0: ~2 GiB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", default="20,50")
    parser.add_argument("--mib-per-s", type=float, default=0.0, help="bandwidth cap of the proxy (0: none)")
    parser.add_argument("--conn-mib-per-s", type=float, default=0.0,
                        help="bandwidth cap of each connection through the proxy, both ways (0: none): what "
                             "one connection to a bucket in another region carries")
    parser.add_argument("--proxy-workers", type=int, default=1,
                        help="processes of the latency proxy (one is a one-core ceiling on a loaded machine)")
    parser.add_argument("--connections", type=int, default=16,
                        help="safehold's restore concurrency; restic is also run with s3.connections at this")
    parser.add_argument("--repeat", type=int, default=1, help="restore and single-file restore repetitions")
    parser.add_argument("--tools", default="safehold,restic,restic-n",
                        help="among safehold, safehold-before (needs --baseline-src), safehold-served "
                             "(through a command server), restic, restic-n (s3.connections = --connections), "
                             "restic-N (s3.connections = N)")
    parser.add_argument("--direct", action="store_true",
                        help="also restore safehold's repository blob by blob (SAFEHOLD_RESTORE_CONNECTIONS=0)")
    parser.add_argument("--request-mib", type=int, default=0,
                        help="also restore safehold's repository with SAFEHOLD_RESTORE_REQUEST_MIB at this (e.g. 24: "
                             "whole packs), as the row safehold-N, in the same run")
    parser.add_argument("--baseline-src",
                        help="also restore safehold's repository with this source tree (e.g. a git archive of "
                             "main's src/, run through PYTHONPATH): the before/after row, in the same run; with "
                             "the tool 'safehold-before' in --tools, that build also backs up into a bucket of its own")
    parser.add_argument("--changes", type=int, default=1,
                        help="1 %% change backups in a row (each after another change; the tools' order "
                             "alternates): the history a backup reads grows by one snapshot per target each time")
    parser.add_argument("--backups-only", action="store_true",
                        help="only the full and change backups (no restores, no check)")
    parser.add_argument("--safehold")
    parser.add_argument("--workdir", default="/var/tmp/safehold-s3-bench")
    parser.add_argument("--json", default=str(HERE / "s3-results.json"))
    args = parser.parse_args(argv)
    import datagen

    exe = bench.find_safehold(args.safehold)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    data = work / "data"
    runner = bench.Runner(work / "logs", drop=True)
    bench.log(f"generating the data set at scale {args.scale} in {data}")
    dataset = datagen.generate(data, args.scale, args.seed)
    formats = datagen.make_formats(args.seed)
    total = bench.tree_bytes(data)[0]
    results: dict = {"scale": args.scale, "data_bytes": total, "connections": args.connections,
                     "proxy_workers": args.proxy_workers,
                     "mib_per_s": args.mib_per_s, "conn_mib_per_s": args.conn_mib_per_s, "files": dataset["files"], "rounds": {}}
    moto, moto_port = start([sys.executable, "-c", MOTO])
    try:
        for round_number, latency in enumerate(int(x) for x in args.latency_ms.split(",")):
            proxy, port = start([sys.executable, str(HERE / "latency_proxy.py"), "--upstream",
                                 f"http://127.0.0.1:{moto_port}", "--latency-ms", str(latency),
                                 "--mib-per-s", str(args.mib_per_s), "--conn-mib-per-s", str(args.conn_mib_per_s),
                                 "--workers", str(args.proxy_workers)])
            try:
                results["rounds"][str(latency)] = run_round(args, work, data, runner, exe, moto_port, port,
                                                            latency, round_number, formats, datagen)
            finally:
                stop(proxy)
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        stop(moto)
    print(markdown(results))
    return 0


def run_round(args, work, data, runner, exe, moto_port, port, latency, round_number, formats, datagen) -> dict:
    tools: list = []
    try:
        return _run_round(args, work, data, runner, exe, moto_port, port, latency, round_number, formats, datagen,
                          tools)
    finally:
        for tool in tools:
            if hasattr(tool, "close"):
                tool.close()  # a command server this round started


def _run_round(args, work, data, runner, exe, moto_port, port, latency, round_number, formats, datagen,
               tools: list) -> dict:
    names = args.tools.split(",")
    for name in names:
        bucket = f"b{latency}-{name}".replace("_", "-")
        make_bucket(moto_port, bucket)
        if name == "safehold":
            tools.append(SafeholdS3(work, data, runner, exe, port, bucket, args.connections))
        elif name == "safehold-served":
            tools.append(SafeholdServedS3(work, data, runner, exe, port, bucket, args.connections))
        elif name == "safehold-before":
            if not args.baseline_src:
                raise bench.BenchError("the tool safehold-before needs --baseline-src")
            before = SafeholdS3(work, data, runner, exe, port, bucket, args.connections)
            before.name = "safehold-before"
            before.env = dict(before.env, PYTHONPATH=str(Path(args.baseline_src).resolve()))
            tools.append(before)
        elif name == "restic":
            tools.append(ResticS3(work, data, runner, port, bucket, None))
        elif name == "restic-n":
            tools.append(ResticS3(work, data, runner, port, bucket, args.connections))
        elif re.fullmatch(r"restic-\d+", name):  # e.g. restic-32: two targets' worth of safehold's 16
            tools.append(ResticS3(work, data, runner, port, bucket, int(name.split("-")[1])))
        else:
            raise bench.BenchError(f"unknown tool {name!r}")
    restorers = list(tools)
    if args.direct and tools and tools[0].name == "safehold":
        # The same repository, restored blob by blob (the reader before issue 19): the before/after row.
        direct = copy.copy(tools[0])
        direct.name = "safehold-direct"
        direct.env = dict(tools[0].env, SAFEHOLD_RESTORE_CONNECTIONS="0")
        restorers.insert(1, direct)
    if args.request_mib and tools and tools[0].name == "safehold":
        # The same build and repository with larger range requests (fewer requests, fewer connections busy).
        larger = copy.copy(tools[0])
        larger.name = f"safehold-{args.request_mib}"
        larger.env = dict(tools[0].env, SAFEHOLD_RESTORE_REQUEST_MIB=str(args.request_mib))
        restorers.insert(1, larger)
    if args.baseline_src and tools and tools[0].name == "safehold" and "safehold-before" not in names:
        # The same repository, restored by another build (its own state folder, so neither build's
        # listing memo or catalog is the other's): before and after alternate in one run.
        before = copy.copy(tools[0])
        before.name = "safehold-before"
        before.env = dict(tools[0].env, PYTHONPATH=str(Path(args.baseline_src).resolve()))
        state = work / f"state-before-{tools[0].bucket}"
        before.config = work / f"safehold-before-{tools[0].bucket}.yml"
        before.config.write_text(tools[0].config.read_text().replace(f"state_dir: {work / ('state-' + tools[0].bucket)}",
                                                                     f"state_dir: {state}"))
        restorers.insert(1, before)
    out: dict = {tool.name: {p: [] for p in PHASES} for tool in restorers}

    def note(tool, phase, m):
        m.pop("stdout", None)
        out[tool.name][phase].append(m)
        bench.log(f"  {latency} ms {tool.name:10s} {phase:12s} {m['wall_s']:7.2f}s cpu {m['cpu_s']:6.2f}s "
                  f"rss {m['peak_rss_bytes'] / bench.MiB:5.0f} MiB")

    for tool in tools:
        tool.init()
        note(tool, "full", tool.backup_all("full", "full"))
    big = largest_file(data / "tree")
    for change in range(args.changes):
        datagen.change_one_percent(data, args.scale, args.seed, round_number * 1000 + change, formats)
        for tool in (tools if change % 2 == 0 else tools[::-1]):
            note(tool, "change", tool.backup_all("change", "change"))
    if args.backups_only:
        for tool in tools:
            delete_bucket(moto_port, tool.bucket if hasattr(tool, "bucket") else tool.url.rsplit("/", 1)[1])
            tool.wipe()
        return out
    want_tree = bench.tree_hashes(data / "tree")
    want_image = bench.file_hash(data / "disk.img")
    # Odd repetitions run the tools in reverse order: no tool always follows the same one.
    for rep in range(args.repeat):
        for tool in (restorers if rep % 2 == 0 else restorers[::-1]):
            dest = work / "restore"
            shutil.rmtree(dest, ignore_errors=True)
            if tool.name.startswith("safehold"):
                m, tree, image = tool.restore(dest)
            else:
                m, tree, image = tool.restore(dest, "change")
            ok, why = bench.verify(tree, image, want_tree, want_image)
            if not ok:
                raise bench.BenchError(f"{tool.name} restore differs from the source: {why}")
            note(tool, "restore", m)
            shutil.rmtree(dest, ignore_errors=True)
    relative = big.relative_to(data / "tree")
    for rep in range(args.repeat):
        for tool in (restorers if rep % 2 == 0 else restorers[::-1]):
            dest = work / "restore-one"
            shutil.rmtree(dest, ignore_errors=True)
            path = f"tree/{relative}" if tool.name.startswith("safehold") else str(big)
            m = tool.restore_one(dest, path)
            found = [p for p in dest.rglob(big.name) if p.is_file()]
            if not found or found[0].stat().st_size == 0:
                raise bench.BenchError(f"{tool.name} single-file restore wrote no {big.name}")
            note(tool, "restore_one", m)
            shutil.rmtree(dest, ignore_errors=True)
    for tool in tools:
        note(tool, "check", tool.check())
    for tool in tools:
        delete_bucket(moto_port, tool.bucket if hasattr(tool, "bucket") else tool.url.rsplit("/", 1)[1])
        tool.wipe()
    return out


def markdown(results: dict) -> str:
    lines = [f"Data: {results['data_bytes'] / bench.MiB:.0f} MiB ({results['files']} files + image), "
             f"scale {results['scale']}; safehold restore connections {results['connections']}; "
             f"bandwidth cap {results['mib_per_s'] or 'none'} MiB/s, per connection "
             f"{results.get('conn_mib_per_s') or 'none'} MiB/s; proxy processes {results.get('proxy_workers', 1)}", ""]
    for latency, out in results["rounds"].items():
        tools = list(out)
        lines += [f"Latency {latency} ms per request (median wall seconds; ratio = restic time / safehold time, "
                  ">1 means safehold is faster)", "",
                  "| phase | " + " | ".join(tools) + " | " + " | ".join(f"vs {t}" for t in tools[1:]) + " |",
                  "|---" * (2 * len(tools)) + "|"]
        for phase in PHASES:
            walls = [statistics.median([m["wall_s"] for m in out[t][phase]]) if out[t].get(phase) else None
                     for t in tools]
            ratios = [f"{w / walls[0]:.2f}x" if w and walls[0] else "-" for w in walls[1:]]
            lines.append(f"| {phase} | " + " | ".join(f"{w:.2f}" if w else "-" for w in walls) + " | "
                         + " | ".join(ratios) + " |")
        lines += ["", "CPU seconds (user + sys) and peak RSS MiB of the same runs (medians), less sensitive to the "
                  "machine's load than wall time:", "",
                  "| phase | " + " | ".join(f"{t} CPU / RSS" for t in tools) + " |", "|---" * (len(tools) + 1) + "|"]
        for phase in PHASES:
            cells = []
            for t in tools:
                runs = out[t].get(phase) or []
                cells.append(f"{statistics.median([m['cpu_s'] for m in runs]):.2f} / "
                             f"{statistics.median([m['peak_rss_bytes'] for m in runs]) / bench.MiB:.0f}" if runs else "-")
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
