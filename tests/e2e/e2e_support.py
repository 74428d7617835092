"""End-to-end helpers: a throwaway workspace and the real ``safehold`` CLI in subprocesses.

A workspace is a temporary folder holding ``targets.yml``, the repository
(``repo/``), the state dir with the catalog (``state/``) and the data the
targets back up (``data/``, ``disk.img``). Tests talk to safehold only the way
a user does: command lines, environment variables, exit codes, stdout/stderr
and the files it writes.

The CLI is the ``safehold`` script of the running interpreter's environment
when there is one, else ``python -m safehold.cli.main``; either way the
package under test is the one pytest imports, whatever venv runs the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable


PASSWORD = "e2e correct horse battery staple"
COMMAND_TIMEOUT = 300


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("safehold")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "safehold.cli.main"]


CLI = cli_command()


# --- the workspace ---------------------------------------------------------------


def default_targets(root: Path) -> list[dict]:
    return [
        {"name": "files", "tier": 2, "source": {"type": "files", "paths": ["data"], "exclude": ["*.tmp"]},
         "retention": {"keep_last": 2}},
        {"name": "disk", "tier": 3, "source": {"type": "image", "path": "disk.img", "chunk_size": "512KiB"}},
    ]


@dataclass
class Workspace:
    root: Path
    password: str = PASSWORD
    env: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "targets.yml"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def image(self) -> Path:
        return self.root / "disk.img"

    def write_config(self, targets: list[dict] | None = None, repository_url: str = "repo",
                     text: str | None = None, name: str = "targets.yml") -> Path:
        """Write targets.yml (JSON is valid YAML, so targets are given as plain dicts)."""
        path = self.root / name
        if text is None:
            targets = default_targets(self.root) if targets is None else targets
            lines = [
                "# written by tests/e2e/conftest.py",
                "repository:",
                f"  url: {repository_url}",
                "  password_env: SAFEHOLD_PASSWORD",
                "state_dir: state",
                "tiers:",
                "  1: {rpo: 15m, rto: 1h}",
                "  2: {rpo: 12h, rto: 4h}",
                "  3: {rpo: 24h, rto: 24h}",
                "targets:",
            ]
            lines += [f"  - {json.dumps(target)}" for target in targets]
            text = "\n".join(lines) + "\n"
        path.write_text(textwrap.dedent(text))
        return path

    def environment(self, password: str | None = None, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
        env.update(SAFEHOLD_CONFIG=str(self.config), SAFEHOLD_PASSWORD=self.password if password is None else password,
                   COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
        env.update(self.env)
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)  # None removes a variable
            else:
                env[key] = value
        return env

    def run(self, *args: str, ok: bool = True, code: int | None = None, password: str | None = None,
            env: dict | None = None, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """Run ``safehold ARGS`` in the workspace; assert the exit code (0 by default,
        non-zero with ``ok=False``, exactly ``code`` when given)."""
        proc = self.execute(args, password, env, timeout)
        described = (f"safehold {' '.join(map(str, args))} -> exit {proc.returncode}\n"
                     f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if code is not None:
            assert proc.returncode == code, described
        elif ok:
            assert proc.returncode == 0, described
        else:
            assert proc.returncode != 0, described
        return proc

    def execute(self, args: tuple, password: str | None, env: dict | None, timeout: float) -> subprocess.CompletedProcess:
        """Run ``safehold ARGS`` to its end, whatever its exit code."""
        return subprocess.run([*CLI, *map(str, args)], cwd=self.root, env=self.environment(password, env),
                              capture_output=True, text=True, errors="surrogateescape", timeout=timeout)

    def json(self, *args: str, **kwargs) -> object:
        """Run with --json and parse stdout."""
        return json.loads(self.run(*args, "--json", **kwargs).stdout)

    def start(self, *args: str, password: str | None = None, env: dict | None = None) -> subprocess.Popen:
        """Start ``safehold ARGS`` in the background (stdout/stderr to pipes)."""
        return subprocess.Popen([*CLI, *map(str, args)], cwd=self.root, env=self.environment(password, env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="surrogateescape")

    def snapshots(self, target: str | None = None) -> list[dict]:
        return self.json("snapshots", *(["--target", target] if target else []))

    def snapshot_names(self) -> set[str]:
        """Snapshot ids straight from the repository folder (no CLI call)."""
        folder = self.repo / "snapshots"
        return {name for name in os.listdir(folder) if not name.startswith(".")} if folder.is_dir() else set()

    def pack_files(self) -> set[Path]:
        return {p for p in (self.repo / "data").glob("*/*") if not p.name.startswith(".")}

    def lock_files(self) -> list[str]:
        folder = self.repo / "locks"
        return [n for n in os.listdir(folder) if not n.startswith(".")] if folder.is_dir() else []

    def temporary_files(self) -> list[Path]:
        return [p for p in self.repo.rglob(".tmp-*")]


def make_workspace(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(root)
    workspace.data.mkdir(exist_ok=True)
    workspace.write_config()
    return workspace


# --- error output -------------------------------------------------------------------


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *needles: str, hint: bool = True) -> str:
    """An expected failure: the documented exit code, exactly one 'error:' line, a 'hint:'
    line (usage errors have none: ``hint=False``), no traceback; returns the error line.
    ``needles`` must appear in it."""
    lines = proc.stderr.splitlines()
    context = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == code, context
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, context
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, context
    if hint:
        assert any(line.startswith("hint:") for line in lines), context
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in the error line\n{context}"
    return errors[0]


# --- data generators ------------------------------------------------------------------

WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"GET", b"POST", b"/api/orders", b"/static/app.js",
         b"200", b"404", b"500", b"user=alice", b"user=bob", b"latency_ms=12", b"latency_ms=340"]


def random_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def compressible_bytes(rng: random.Random, size: int) -> bytes:
    """Log-like text: compresses well but is not one repeated block."""
    line_count = size // 48 + 1
    parts = []
    for number in range(line_count):
        parts.append(b"2024-05-%02d %s %s %s\n" % (number % 28 + 1, rng.choice(WORDS), rng.choice(WORDS),
                                                    rng.choice(WORDS)))
    return b"".join(parts)[:size]


def write_file(path: Path | bytes, data: bytes, mtime: float | None = None) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def make_tree(root: Path, seed: int = 1) -> Path:
    """A small tree with every kind of entry the files source handles:
    random and compressible files, an empty file, nested and empty directories,
    relative and dangling symlinks, a hard link, a FIFO, a name that is not
    UTF-8, unusual modes and old mtimes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "etc" / "app").mkdir(parents=True, exist_ok=True)
    (root / "var" / "log").mkdir(parents=True, exist_ok=True)
    (root / "empty-dir").mkdir(exist_ok=True)
    write_file(root / "etc" / "hostname", b"web-01\n", mtime=1_600_000_000)
    write_file(root / "etc" / "app" / "settings.ini", b"[main]\nport = 8080\n" * 20, mtime=1_600_000_100.5)
    write_file(root / "random.bin", random_bytes(rng, 3 * 1024 * 1024 + 17))
    write_file(root / "var" / "log" / "access.log", compressible_bytes(rng, 2 * 1024 * 1024))
    write_file(root / "var" / "log" / "empty.log", b"")
    write_file(root / "secret.key", b"not really secret\n")
    os.chmod(root / "secret.key", 0o600)
    write_file(root / "run.sh", b"#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.symlink("etc/hostname", root / "hostname-link")
    os.symlink("does/not/exist", root / "dangling-link")
    os.link(root / "etc" / "hostname", root / "hostname-hardlink")
    os.mkfifo(root / "var" / "fifo")
    write_file(os.fsencode(root) + b"/caf\xe9-latin1.txt", b"non-UTF-8 name\n", mtime=1_500_000_000)
    write_file(root / "ignored.tmp", b"excluded by the target's pattern\n")
    os.utime(root / "empty-dir", (1_400_000_000, 1_400_000_000))
    return root


def make_dataset(root: Path, rng: random.Random, random_files: int, compressible_files: int,
                 file_size: int, folders: int = 4) -> list[Path]:
    """``random_files`` incompressible and ``compressible_files`` log-like files of about
    ``file_size`` bytes, spread over ``folders`` sub-folders; returns their paths."""
    paths = []
    for i in range(random_files + compressible_files):
        folder = root / f"part{i % folders}"
        folder.mkdir(parents=True, exist_ok=True)
        size = file_size + rng.randrange(0, file_size // 4 + 1)
        if i < random_files:
            path = folder / f"blob{i:03d}.bin"
            write_file(path, random_bytes(rng, size))
        else:
            path = folder / f"log{i:03d}.log"
            write_file(path, compressible_bytes(rng, size))
        paths.append(path)
    return paths


def make_sparse_image(path: Path, size: int, rng: random.Random,
                      extents: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """A sparse image file of ``size`` bytes with random data in ``extents`` (offset, length)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        written = []
        for offset, length in extents:
            handle.seek(offset)
            handle.write(random_bytes(rng, length))
            written.append((offset, length))
    return written


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


# --- comparing trees ---------------------------------------------------------------------


def sha256_file(path: bytes | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_manifest(root: Path | bytes, metadata: bool = True, exclude: Iterable[bytes] = ()) -> dict[bytes, tuple]:
    """Relative path (bytes) -> (type, mode, mtime_ns, content hash or link target), for every entry
    under ``root`` including ``root`` itself ('.'). Names stay bytes, so non-UTF-8 names compare exactly."""
    root = os.fsencode(root)
    excluded = set(exclude)
    manifest: dict[bytes, tuple] = {}

    def describe(path: bytes) -> tuple:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            kind, content = "file", sha256_file(path)
        elif stat.S_ISDIR(st.st_mode):
            kind, content = "dir", None
        elif stat.S_ISLNK(st.st_mode):
            kind, content = "symlink", os.readlink(path)
        elif stat.S_ISFIFO(st.st_mode):
            kind, content = "fifo", None
        else:
            kind, content = "other", None
        if not metadata:
            return (kind, content)
        # Directory mtimes compare too: restore applies them after writing the children.
        return (kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid, content)

    manifest[b"."] = describe(root)
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = os.path.join(directory, name)
            relative = os.path.relpath(full, root)
            if any(relative == e or relative.endswith(b"/" + e) for e in excluded) or name in excluded:
                continue
            manifest[relative] = describe(full)
    return manifest


def assert_same_tree(source: Path | bytes, restored: Path | bytes, metadata: bool = True,
                     exclude: Iterable[bytes] = ()) -> None:
    expected = tree_manifest(source, metadata, exclude)
    actual = tree_manifest(restored, metadata)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    different = sorted(p for p in set(expected) & set(actual) if expected[p] != actual[p])
    assert not (missing or extra or different), (
        f"restored tree differs from the source\nmissing: {missing}\nextra: {extra}\n"
        + "\n".join(f"{p!r}: source {expected[p]} restored {actual[p]}" for p in different[:20]))


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


# --- processes -----------------------------------------------------------------------------


LOCK_HOLDER = r"""
import sys, time
from safehold.repository import Repository
from safehold.repository.backends import open_backend
repository = Repository.open(open_backend(sys.argv[1]), sys.argv[2].encode())
lock = repository.lock(exclusive=sys.argv[3] == "exclusive", purpose="e2e lock holder")
print("locked", flush=True)
sys.stdin.read()          # hold the lock until stdin closes (or we are killed)
lock.release()
print("released", flush=True)
"""


class LockHolder:
    """A separate live process holding a repository lock through safehold's own API."""

    def __init__(self, workspace: Workspace, exclusive: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(workspace.repo), workspace.password,
             "exclusive" if exclusive else "shared"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if line.strip() != "locked":
            self.process.kill()
            raise AssertionError(f"lock holder failed: {line}{self.process.stderr.read()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=60)


def wait_for(predicate, timeout: float, interval: float = 0.005, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def parse_table(stdout: str) -> list[list[str]]:
    """Rows of a Rich table printed by the CLI (header and rule lines dropped)."""
    rows = []
    lines = stdout.splitlines()
    for line in lines[2:]:
        if "│" in line:
            rows.append([cell.strip() for cell in line.split("│")])
    return rows


HUMAN_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def parse_human(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+) (B|KiB|MiB|GiB|TiB)", text.strip()).groups()
    return float(number) * HUMAN_UNITS[unit]


def catalog_writable(state: Path) -> bool:
    """True when no process holds the catalog's write lock (a stopped backup might)."""
    connection = sqlite3.connect(state / "catalog.db", timeout=0)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def pause_outside_catalog_write(process: subprocess.Popen, state: Path, tries: int, interval: float) -> None:
    """SIGSTOP ``process`` at a moment it does not hold the catalog's write lock (so other commands,
    which record jobs, can still run); fails the test if every try found it holding the lock."""
    import pytest

    for _ in range(tries):
        process.send_signal(signal.SIGSTOP)
        if catalog_writable(state):
            return
        process.send_signal(signal.SIGCONT)
        time.sleep(interval)
    pytest.fail("the process held the catalog's write lock at every try")

