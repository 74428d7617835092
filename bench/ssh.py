#!/usr/bin/env python3
"""Throughput of an SSH backup: safehold pulling over SFTP, against restic pushing to an
``sftp:`` repository and rsync pulling the same tree, on loopback and with added latency.

    python bench/ssh.py [--small 3000] [--large 6] [--large-mib 32] [--delay-ms 10]
                        [--workdir /tmp/safehold-bench-ssh] [--json bench/ssh-results.json]

Needs the loopback sshd of the test services (``eval "$(bash scripts/services.d/sshd.sh start)"``),
restic and rsync. Latency: this container's kernel has no ``sch_netem``, so ``tc netem`` in a
network namespace is not available; a delaying TCP proxy (asyncio, in this process) holds every
piece of data for ``--delay-ms`` in each direction before passing it on, without limiting how
much is in flight: a round trip costs 2 x delay more, as on a long link.

Every run is a child process; wall time from a monotonic clock, CPU of the child from rusage.
The tree: ``--large`` files of random data and ``--small`` files of 1-32 KiB (seeded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAFEHOLD = ROOT / ".venv" / "bin" / "safehold"
PASSWORD = "safehold-bench-ssh"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_tree(root: Path, small: int, large: int, large_mib: int) -> int:
    rng = random.Random(17)
    total = 0
    for index in range(large):
        path = root / "large" / f"blob-{index:02}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(large_mib * 1024 * 1024))
        total += large_mib * 1024 * 1024
    for index in range(small):
        path = root / "small" / f"d{index % 50:02}" / f"f{index:05}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 32 * 1024)
        path.write_bytes(rng.randbytes(size))
        total += size
    return total


class DelayProxy:
    """127.0.0.1:port -> target, every piece of data held ``delay`` seconds in each direction."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                queue.put_nowait((self.loop.time() + self.delay, data))
        finally:
            queue.put_nowait((0, None))
            await sender

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer),
                             return_exceptions=True)


def timed(command: list[str], env: dict | None = None) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}


def ssh_options(env: dict, port: int) -> list[str]:
    return ["-i", env["SAFEHOLD_TEST_SSH_KEY"], "-p", str(port), "-o", f"UserKnownHostsFile={known_hosts(env, port)}",
            "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=safehold-bench"]


def known_hosts(env: dict, port: int) -> str:
    """The test host key under an alias, valid for the direct port and the proxy's alike."""
    path = Path(env["SAFEHOLD_TEST_SSH_KNOWN_HOSTS"]).with_name("bench_known_hosts")
    key = Path(env["SAFEHOLD_TEST_SSH_KNOWN_HOSTS"]).read_text().split(None, 1)[1]
    path.write_text(f"safehold-bench {key}[127.0.0.1]:{port} {key}")
    return str(path)


def run_safehold(work: Path, data: Path, env: dict, port: int) -> dict:
    folder = work / "safehold"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    config = folder / "targets.yml"
    source = {"type": "ssh", "host": "127.0.0.1", "port": port, "user": env["SAFEHOLD_TEST_SSH_USER"],
              "paths": [str(data)], "identity_file": env["SAFEHOLD_TEST_SSH_KEY"],
              "known_hosts": known_hosts(env, port)}
    config.write_text(f"repository: {{url: {folder / 'repo'}, password_env: SAFEHOLD_BENCH_PASSWORD}}\n"
                      f"catalog: {{url: \"sqlite:///{folder / 'catalog.db'}\"}}\n"
                      f"targets:\n  - {{name: host, tier: 2, source: {json.dumps(source)}}}\n")
    child = dict(os.environ, SAFEHOLD_BENCH_PASSWORD=PASSWORD, SAFEHOLD_CONFIG=str(config))
    subprocess.run([str(SAFEHOLD), "init"], env=child, check=True, capture_output=True)
    measured = {"full": timed([str(SAFEHOLD), "backup", "--target", "host"], child),
                "unchanged": timed([str(SAFEHOLD), "backup", "--target", "host"], child)}
    # Restore to the host over SFTP (the same link), into a fresh folder, and check it.
    out = work / "safehold-restored"
    shutil.rmtree(out, ignore_errors=True)
    url = f"ssh://{env['SAFEHOLD_TEST_SSH_USER']}@127.0.0.1:{port}{out}"
    measured["restore"] = timed([str(SAFEHOLD), "restore", "latest:host", "--to", url], child)
    same(data, out / data.name)
    return measured


def run_restic(work: Path, data: Path, env: dict, port: int) -> dict:
    repo = work / "restic-repo"
    shutil.rmtree(repo, ignore_errors=True)
    command = "ssh " + " ".join(ssh_options(env, port)) + f" {env['SAFEHOLD_TEST_SSH_USER']}@127.0.0.1 -s sftp"
    child = dict(os.environ, RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(work / "restic-cache"))
    base = ["restic", "-r", f"sftp:127.0.0.1:{repo}", "-o", f"sftp.command={command}", "--quiet"]
    subprocess.run(base + ["init"], env=child, check=True, capture_output=True)
    measured = {"full": timed(base + ["backup", str(data)], child),
                "unchanged": timed(base + ["backup", str(data)], child)}
    # restic restores to where it runs: from the sftp: repository into a local folder.
    out = work / "restic-restored"
    shutil.rmtree(out, ignore_errors=True)
    measured["restore"] = timed(base + ["restore", "latest", "--target", str(out)], child)
    same(data, out / str(data).lstrip("/"))
    return measured


def run_rsync(work: Path, data: Path, env: dict, port: int) -> dict:
    target = work / "rsync-copy"
    shutil.rmtree(target, ignore_errors=True)
    shell = "ssh " + " ".join(ssh_options(env, port))
    command = ["rsync", "-a", "-e", shell, f"{env['SAFEHOLD_TEST_SSH_USER']}@127.0.0.1:{data}/", f"{target}/"]
    measured = {"full": timed(command), "unchanged": timed(command)}
    back = work / "rsync-restored"
    shutil.rmtree(back, ignore_errors=True)
    measured["restore"] = timed(["rsync", "-a", "-e", shell, f"{target}/",
                                 f"{env['SAFEHOLD_TEST_SSH_USER']}@127.0.0.1:{back}/"])
    same(data, back)
    return measured


def same(original: Path, copy: Path) -> None:
    """The restore holds every file of the tree with the same bytes (else the run stops)."""
    for path in original.rglob("*"):
        if path.is_file():
            twin = copy / path.relative_to(original)
            if not twin.is_file() or twin.read_bytes() != path.read_bytes():
                raise SystemExit(f"restore differs at {twin}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=3000)
    parser.add_argument("--large", type=int, default=6)
    parser.add_argument("--large-mib", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="added in each direction (RTT +2x)")
    parser.add_argument("--workdir", default="/tmp/safehold-bench-ssh")
    parser.add_argument("--json", default=str(HERE / "ssh-results.json"))
    parser.add_argument("--tools", default="safehold,restic,rsync")
    parser.add_argument("--out", default=None, help="write the section into this markdown file "
                        "(between its ssh-bench markers, or appended)")
    args = parser.parse_args()
    env = dict(os.environ)
    if "SAFEHOLD_TEST_SSH_PORT" not in env:
        raise SystemExit('start the test sshd first: eval "$(bash scripts/services.d/sshd.sh start)"')
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    total = make_tree(data, args.small, args.large, args.large_mib)
    files = args.small + args.large
    log(f"tree: {files} files, {total / 2**20:.1f} MiB in {data}")
    direct = int(env["SAFEHOLD_TEST_SSH_PORT"])
    proxy = DelayProxy(("127.0.0.1", direct), args.delay_ms / 1000)
    runs = {"safehold": run_safehold, "restic": run_restic, "rsync": run_rsync}
    results: dict = {"files": files, "bytes": total, "delay_ms_each_way": args.delay_ms,
                     "cpus": os.cpu_count(), "load_before": os.getloadavg()[0], "runs": {}}
    for link, port in (("loopback", direct), (f"+{2 * args.delay_ms:g} ms RTT", proxy.port)):
        for tool in args.tools.split(","):
            log(f"{tool} over {link} ...")
            measured = runs[tool](work, data, env, port)
            for phase in measured.values():
                phase["MiB_per_s"] = round(total / 2**20 / phase["seconds"], 1)
            results["runs"].setdefault(link, {})[tool] = measured
            log(f"  {measured}")
    results["load_after"] = os.getloadavg()[0]
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    if args.out:
        write_section(Path(args.out), results, " ".join(sys.argv[1:]))


START, END = "<!-- ssh-bench:start -->", "<!-- ssh-bench:end -->"


def write_section(path: Path, results: dict, arguments: str) -> None:
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    section = "\n".join([
        START, "## SSH",
        "",
        f"Generated by `python bench/ssh.py{' ' + arguments if arguments else ''}`" + f" on {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
        f"(safehold {revision}). Do not edit by hand: run the command again.",
        "",
        "safehold pulls the tree over SFTP from the loopback sshd of the test services into a local repository; "
        "restic 0.14 pushes the same tree into an `sftp:` repository on that sshd; rsync copies it over ssh (no "
        "deduplication, no encryption: a floor). The second run of each is with nothing changed. Restore: safehold "
        "writes the snapshot back to the host over SFTP (`--to ssh://`), restic restores from its `sftp:` "
        "repository to a local folder, rsync pushes its copy back; each restore is compared with the tree. The latency case "
        "goes through a delaying proxy (this kernel has no `sch_netem`) that holds data "
        f"{results['delay_ms_each_way']:g} ms in each direction. Wall time of the whole command (safehold's includes "
        "its start-up and the key derivation); CPU (user + sys) of the command and its children (restic's and rsync's ssh "
        "client), not of the server's sshd and sftp-server.",
        "",
        markdown(results), "", END, ""])
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def markdown(results: dict) -> str:
    lines = [f"{results['files']} files, {results['bytes'] / 2**20:.0f} MiB; load average "
             f"{results['load_before']:.1f} before, {results['load_after']:.1f} after, {results['cpus']} cores.", "",
             "| link | tool | full: s | full: MiB/s | full: CPU s | unchanged: s | unchanged: CPU s | restore: s "
             "| restore: MiB/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for link, tools in results["runs"].items():
        for tool, phases in tools.items():
            full, unchanged, back = phases["full"], phases["unchanged"], phases["restore"]
            lines.append(f"| {link} | {tool} | {full['seconds']} | {full['MiB_per_s']} | {full['cpu_seconds']} | "
                         f"{unchanged['seconds']} | {unchanged['cpu_seconds']} | {back['seconds']} | "
                         f"{back['MiB_per_s']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
