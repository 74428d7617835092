"""Repository copies: throughput of a first copy and bytes sent by an incremental one (issue 15).

    python bench/copy_bench.py [--mib 500] [--workdir /tmp] [--no-restic] [--verify packs|full|none]
                               [--rounds N] [--incrementals N] [--served]

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

``--served`` adds a third row, "safehold served": the same commands on its own copy of the same data,
run through a command server (``safehold serve --commands-only``, docs/design/command-server.md)
that the bench starts on its own state directory (the socket named by ``SAFEHOLD_COMMAND_SOCKET``)
and stops at the end by its pid (SIGTERM). Every command of that row (init, backups, copies) goes
through the server, as for a user who keeps one running, so the derived keys are the server's
kept ones after the first command with a password; the bench counts the server's "command
process" log lines and stops if a command ran in its own process instead. Its CPU is the client's
(the ``safehold`` process, from ``RUSAGE_CHILDREN``) plus the server's (the forked command process,
read from the server's reaped-children time in ``/proc/PID/stat``, and the server's own time;
10 ms ticks). The cold row sets ``SAFEHOLD_NO_SERVER=1``. With three rows the order rotates.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
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


# User + sys seconds of the last command run (steadier than wall time on a busy host), and of it the
# command server's part (served commands only).
CPU: list[float] = [0.0, 0.0]


def run(command: list[str], env: dict) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU[1] = 0.0
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
                    "SAFEHOLD_PASSWORD": "source", "DEST_PASSWORD": "dest", **self.server_env()}
        dest_env = {**self.env, "SAFEHOLD_CONFIG": str(config(work / "dst", work / "dst-repo", data)),
                    "SAFEHOLD_PASSWORD": "dest", "SOURCE_PASSWORD": "source"}
        self.run([*SAFEHOLD, "init"], self.env)
        self.backup()
        self.run([*SAFEHOLD, "init", "--copy-params-from", str(work / "src-repo"), "--from-password-env",
                  "SOURCE_PASSWORD"], dest_env)
        if VERIFY:
            self.tool += " " + " ".join(VERIFY)

    def server_env(self) -> dict:
        return {"SAFEHOLD_NO_SERVER": "1"}  # a cold command in its own process, whatever socket exists

    def run(self, command: list[str], env: dict) -> tuple[float, str]:
        return run(command, env)

    def backup(self) -> None:
        self.run([*SAFEHOLD, "backup", "--target", "files"], self.env)

    def copy(self) -> dict:
        before = folder_bytes(self.work / "dst-repo")
        seconds, out = self.run([*SAFEHOLD, "copy", "--to", str(self.work / "dst-repo"), "--to-password-env",
                                 "DEST_PASSWORD", "--json", *VERIFY], self.env)
        [result] = json.loads(out)
        return {"seconds": seconds, "cpu": CPU[0], "server_cpu": CPU[1], "sent": result["bytes_sent"],
                "growth": folder_bytes(self.work / "dst-repo") - before, "blobs": result["blobs_sent"]}

    def close(self) -> None:
        pass


def process_cpu(pid: int) -> float:
    """A live process's own CPU plus that of its reaped children (utime, stime, cutime, cstime of
    /proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class ServedPair(SafeholdPair):
    """The same as SafeholdPair, every command through a command server started for it."""

    tool = "safehold served"

    def __init__(self, work: Path, data: Path) -> None:
        folder = work / "server"
        folder.mkdir(mode=0o700)
        self.socket = str(folder / "command.sock")
        self.log = folder / "server.log"
        server_config = config(folder, work / "unused-repo", data)  # its own state dir, <folder>/state
        env = {key: value for key, value in os.environ.items() if not key.startswith("SAFEHOLD_")}
        env.update({"SAFEHOLD_CONFIG": str(server_config), "SAFEHOLD_COMMAND_SOCKET": self.socket,
                    "SAFEHOLD_NO_SERVER": "1"})
        with open(self.log, "wb") as log:
            self.server = subprocess.Popen([*SAFEHOLD, "serve", "--commands-only"], env=env, stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while "serving commands on" not in self.log.read_text():
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"safehold serve --commands-only did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.served = 0
        try:
            super().__init__(work, data)
        except BaseException:
            self.close()
            raise

    def server_env(self) -> dict:
        return {"SAFEHOLD_COMMAND_SOCKET": self.socket}

    def run(self, command: list[str], env: dict) -> tuple[float, str]:
        env = {key: value for key, value in env.items() if key != "SAFEHOLD_NO_SERVER"}
        before = process_cpu(self.server.pid)
        result = run(command, env)
        CPU[1] = process_cpu(self.server.pid) - before
        CPU[0] += CPU[1]
        self.served += 1
        lines = self.log.read_text().count("command process ")
        if lines != self.served:
            raise SystemExit(f"{' '.join(command)} was not run by the command server ({lines} served "
                             f"of {self.served}):\n{self.log.read_text()}")
        return result

    def close(self) -> None:
        if self.server.poll() is None:
            os.kill(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.server.pid, signal.SIGKILL)
                self.server.wait()
        idle = sum(1 for line in self.log.read_text().splitlines() if "forgot" in line and "no command for" in line)
        if idle > 0:
            print(f"note: the command server forgot its derived keys {idle} time(s) before it stopped "
                  "(--key-cache-idle): those commands derived again", file=sys.stderr)


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
        return {"seconds": seconds, "cpu": CPU[0], "server_cpu": None, "sent": growth, "growth": growth,
                "blobs": None}

    def close(self) -> None:
        pass


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
    try:
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
            # Two tools alternate; three rotate (each first, middle and last in turn).
            shift = turn % len(pairs)
            order = pairs[shift:] + pairs[:shift] if len(pairs) > 2 else (pairs if turn % 2 == 0 else pairs[::-1])
            turn += 1
            for pair, _paths in order:
                load = os.getloadavg()[0]
                rows.append({"tool": pair.tool, "run": label, "round": number, "load": load, **pair.copy()})
        return rows
    finally:
        for pair, _paths in pairs:
            pair.close()


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
    parser.add_argument("--served", action="store_true",
                        help="Also run safehold's commands through a command server (a third row).")
    args = parser.parse_args()
    VERIFY[:] = ["--no-verify"] if args.no_verify else (["--verify", args.verify] if args.verify else [])
    compile_package()
    tools = [SafeholdPair] if args.no_restic or not shutil.which("restic") else [SafeholdPair, ResticPair]
    if args.served:
        tools.insert(1, ServedPair)
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
    print("| round | tool | copy | seconds | CPU s | of it server CPU s | load | MiB/s of snapshot | sent MiB | "
          "destination grew MiB | blobs sent |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        server = f"{row['server_cpu']:.2f}" if row["server_cpu"] is not None and "served" in row["tool"] else ""
        print(f"| {row['round']} | {row['tool']} | {row['run']} | {row['seconds']:.2f} | {row['cpu']:.2f} | {server} | "
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
            medians[(label, tool)] = median
            print(f"| {label} | {tool} | {len(picked)} | {median['seconds']:.2f} | {median['cpu']:.2f} | "
                  f"{median['sent'] / MiB:.2f} | {median['load']:.1f} |")
    for label in ("first copy", "after a 1 % change"):
        theirs = next((value for (run, tool), value in medians.items() if run == label and tool.startswith("restic")),
                      None)
        for (run, tool), ours in medians.items():
            if run == label and theirs and tool.startswith("safehold"):
                print(f"\n{label}, {tool}: time {ours['seconds'] / theirs['seconds']:.2f}x restic's, CPU "
                      f"{ours['cpu'] / theirs['cpu']:.2f}x, sent {ours['sent'] / theirs['sent']:.2f}x")


if __name__ == "__main__":
    main()
