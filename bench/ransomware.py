#!/usr/bin/env python3
"""Ransomware simulator: how well safehold's verdicts catch attacks, how often they cry wolf, and
what the signals cost. A benchmark, not part of the product: it drives the library (Repository,
Archiver, the verdict records) directly on a throwaway tree and repository under --workdir.

The tree is realistic rather than uniform: text, CSV and logs from bench/datagen.py, office
documents (zip), PDFs, JPEG and PNG photos, gzip files, SQLite databases, random .bin blobs, a git
repository with loose objects, and a lib/ of ELF shared objects and .pyc files.

Every scenario starts from a fresh copy of that tree and a fresh repository: a full backup, three
days of ordinary churn (a few files edited, added, deleted) so the target has a baseline, then the
scenario and the backup that is judged.

- attacks: full-file AES-256-CTR, or intermittent (4 KiB of every 64 KiB, from offset 0: the "dot
  pattern" of current families); in place, or renamed to NAME.<ext> (the original replaced); with
  or without a ransom note in each touched folder; on 0.1 %, 1 %, 10 % and 100 % of the files.
- benign sets that look alarming: a release of compressed archives, a photo import, a compressed
  database dump replaced, a 'git gc' (loose objects packed and deleted), a package upgrade (shared
  objects replaced, versioned names changed), and logs compressed in place ('gzip *.log').

Cost: full backups of the tree with the signals on and off, alternated, in one run (CPU time of
the process, all threads, and wall time).

    .venv/bin/python bench/ransomware.py --files 1500 --update-docs
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import shutil
import statistics
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datagen  # noqa: E402

from safehold.repository import Repository, Snapshot  # noqa: E402
from safehold.repository.archiver import Archiver  # noqa: E402
from safehold.repository.backends.local import LocalBackend  # noqa: E402
from safehold.repository.marks import assess, baseline_history  # noqa: E402
from safehold.sources.files import FilesSource  # noqa: E402
from safehold.sources.image import ImageSource  # noqa: E402

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
KiB, MiB = 1024, 1024 * 1024
FRACTIONS = [0.001, 0.01, 0.10, 1.0]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Ransomware detection"
IMAGE_SECTION = "### Disk images (ext4)"


# -- the tree ------------------------------------------------------------------------------------

def build_tree(root: Path, files: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 16])
    formats = datagen.make_formats(seed)
    dirs = max(4, int(files ** 0.5 / 2))

    def size(lo: int, hi: int) -> int:
        return int(np.exp(np.log(lo) + rng.random() * (np.log(hi) - np.log(lo))))

    def text(kind: str, n: int) -> bytes:
        return datagen.text_bytes(rng, formats, kind, n)

    kinds = ["txt", "csv", "log", "docx", "pdf", "jpg", "png", "gz", "sqlite", "bin"]
    weights = np.array([22, 12, 12, 12, 8, 14, 4, 4, 2, 4], dtype=float)
    for i in range(files):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        folder = root / f"share/d{int(rng.integers(dirs)):03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{kind}-{i:05d}.{kind}"
        if kind in ("txt", "csv", "log"):
            data = text({"txt": "text", "csv": "csv", "log": "log"}[kind], size(1 * KiB, 160 * KiB))
        elif kind == "docx":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("[Content_Types].xml", b"<?xml version='1.0'?><Types/>")
                archive.writestr("word/document.xml", text("text", size(4 * KiB, 200 * KiB)))
            data = buffer.getvalue()
        elif kind == "pdf":
            body = text("text", size(8 * KiB, 400 * KiB))
            data = b"%%PDF-1.7\n1 0 obj << /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) \
                + zlib.compress(body) + b"\nendstream\nendobj\n%%EOF\n"
        elif kind == "jpg":
            data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.bytes(size(20 * KiB, 800 * KiB))
        elif kind == "png":
            data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.bytes(size(10 * KiB, 500 * KiB))
        elif kind == "gz":
            data = gzip.compress(text("log", size(16 * KiB, 1 * MiB)), compresslevel=6)
        elif kind == "sqlite":
            page = b"SQLite format 3\x00" + bytes(84) + text("csv", 4096 - 100)
            data = page + b"".join(bytes(8) + text("csv", 4088) for _ in range(size(4, 64)))
        else:
            data = rng.bytes(size(1 * KiB, 256 * KiB))
        path.write_bytes(data)
    git = root / "project" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    for i in range(max(20, files // 15)):
        body = b"blob %d\x00" % i + text("text", size(200, 20 * KiB))
        digest = f"{i:040x}"
        (git / "objects" / digest[:2]).mkdir(parents=True, exist_ok=True)
        (git / "objects" / digest[:2] / digest[2:]).write_bytes(zlib.compress(body))
    lib = root / "lib"
    lib.mkdir()
    for i in range(max(10, files // 30)):
        (lib / f"libmod{i}.so.1.{i % 3}").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + text("log", size(8 * KiB, 400 * KiB)))
        (lib / f"mod{i}.cpython-311.pyc").write_bytes(b"\xa7\r\r\n" + bytes(12) + zlib.compress(text("text", 4 * KiB)))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def user_files(root: Path) -> list[Path]:
    """What ransomware goes for: everything but the libraries of the system it runs on."""
    return [p for p in all_files(root) if "lib" not in p.relative_to(root).parts[:1]]


# -- backups -----------------------------------------------------------------------------------

@dataclass
class Target:
    tree: Path
    repository: Repository
    snapshots: list[Snapshot]

    def backup(self, signals: bool = True) -> Snapshot:
        parent = self.snapshots[-1] if self.snapshots else None
        history = baseline_history(self.snapshots, assess(self.snapshots, {}))
        with FilesSource([str(self.tree)]).open() as view:
            snapshot = Archiver(self.repository, threads=2, signals=signals).snapshot(
                view, "bench", parent, history=history)
        self.snapshots.append(snapshot)
        return snapshot


def ordinary_day(tree: Path, day: int) -> None:
    """What a file share sees every day: a few edits, a few new files, a deletion."""
    rng = np.random.default_rng([day, 99])
    texts = [p for p in user_files(tree) if p.suffix in (".txt", ".csv", ".log")]
    for path in rng.choice(texts, size=max(1, len(texts) // 100), replace=False):
        with open(path, "ab") as handle:
            handle.write(b"edited on day %d\n" % day * 20)
    for i in range(5):
        (tree / "share" / "d000" / f"new-{day}-{i}.txt").write_bytes(b"notes of day %d\n" % day * 200)
    victims = [p for p in texts if p.exists()]
    victims[int(rng.integers(len(victims)))].unlink()


def fresh_target(base: Path, work: Path) -> Target:
    if work.exists():
        shutil.rmtree(work)
    tree = work / "tree"
    shutil.copytree(base, tree)
    repository = Repository.init(LocalBackend(work / "repo"), b"bench", FAST_KDF)
    target = Target(tree, repository, [])
    target.backup()
    for day in range(3):
        ordinary_day(tree, day)
        target.backup()
    return target


# -- attacks -------------------------------------------------------------------------------------

def aes(data: bytes) -> bytes:
    return Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor().update(data)


def intermittent(data: bytes) -> bytes:
    out = bytearray(data)
    for start in range(0, len(out), 64 * KiB):
        block = bytes(out[start: start + 4 * KiB])
        out[start: start + len(block)] = aes(block)
    return bytes(out)


def attack(tree: Path, fraction: float, mode: str, rename: bool, notes: bool, seed: int = 5) -> int:
    files = user_files(tree)
    rng = np.random.default_rng([seed, int(fraction * 1e6)])
    count = max(1, round(fraction * len(files)))
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=count, replace=False))]
    encrypt = aes if mode == "full" else intermittent
    folders = set()
    for path in chosen:
        data = encrypt(path.read_bytes())
        if rename:
            # Encrypt in place, then rename (same inode): what most families do.
            path.write_bytes(data)
            path.rename(path.with_name(path.name + ".lkd"))
        else:
            path.write_bytes(data)
        folders.add(path.parent)
    if notes:
        for folder in folders:
            (folder / "RESTORE_FILES_INFO.txt").write_text("Your files are encrypted. Pay 1 BTC to ...\n")
    return count


# -- benign change sets --------------------------------------------------------------------------

def release(tree: Path) -> None:
    out = tree / "releases" / "v2.0"
    out.mkdir(parents=True)
    sources = [p for p in user_files(tree) if p.suffix in (".txt", ".csv")][:200]
    for i in range(0, len(sources), 10):
        with zipfile.ZipFile(out / f"bundle-{i}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sources[i: i + 10]:
                archive.write(path, path.name)
        with gzip.open(out / f"bundle-{i}.tar.gz", "wb") as handle:
            for path in sources[i: i + 10]:
                handle.write(path.read_bytes())


def photo_import(tree: Path) -> None:
    rng = np.random.default_rng(42)
    folder = tree / "photos" / "import-2026-12"
    folder.mkdir(parents=True)
    for i in range(300):
        (folder / f"IMG_{i:04d}.JPG").write_bytes(b"\xff\xd8\xff\xe1\x00\x18Exif\x00" + rng.bytes(int(rng.integers(200, 800)) * KiB))


def database_dump(tree: Path) -> None:
    folder = tree / "db"
    folder.mkdir(exist_ok=True)
    rows = b"".join(b"INSERT INTO orders VALUES (%d, 'customer %d', %d.%02d);\n" % (i, i % 977, i % 5000, i % 100)
                    for i in range(300_000))
    (folder / "shop.sql.gz").write_bytes(gzip.compress(rows, compresslevel=6))
    for path in [p for p in user_files(tree) if p.suffix == ".sqlite"]:  # the databases change too
        data = bytearray(path.read_bytes())
        data[100:4096] = bytes(reversed(data[100:4096]))
        path.write_bytes(bytes(data))


def git_gc(tree: Path) -> None:
    objects = tree / "project" / ".git" / "objects"
    loose = sorted(p for p in objects.rglob("*") if p.is_file())
    pack = bytearray(b"PACK\x00\x00\x00\x02" + len(loose).to_bytes(4, "big"))
    for path in loose:
        pack += zlib.compress(zlib.decompress(path.read_bytes()), 9)
        path.unlink()
    (objects / "pack").mkdir()
    (objects / "pack" / "pack-1.pack").write_bytes(bytes(pack))
    (objects / "pack" / "pack-1.idx").write_bytes(b"\xfftOc\x00\x00\x00\x02" + os.urandom(len(loose) * 28))
    for folder in [p for p in objects.iterdir() if p.is_dir() and p.name != "pack"]:
        folder.rmdir()


def package_upgrade(tree: Path) -> None:
    rng = np.random.default_rng(7)
    lib = tree / "lib"
    for path in sorted(lib.glob("*.so.*")):
        stem, _, minor = path.name.rpartition(".")
        body = b"\x7fELF\x02\x01\x01" + bytes(9) + rng.bytes(64) + path.read_bytes()[80:][::-1]
        path.unlink()
        (lib / f"{stem}.{int(minor) + 1}").write_bytes(body)
    for path in sorted(lib.glob("*.pyc")):
        path.write_bytes(b"\xa7\r\r\n" + bytes(12) + zlib.compress(rng.bytes(100) + b"code" * 1000))


def compress_logs(tree: Path) -> None:
    for path in [p for p in user_files(tree) if p.suffix == ".log"]:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(path.read_bytes())
        path.unlink()


BENIGN: dict[str, Callable[[Path], None]] = {
    "release of compressed archives": release, "photo import": photo_import,
    "compressed database dump": database_dump, "git gc": git_gc, "package upgrade": package_upgrade,
    "logs compressed in place (gzip *.log)": compress_logs,
}


# -- disk images ---------------------------------------------------------------------------------

IMAGE_CHUNK = 512 * KiB
BLOCK = 4096


def tree_state(tree: Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    files, dirs = {}, set()
    for path in tree.rglob("*"):
        rel = "/" + path.relative_to(tree).as_posix()
        if path.is_dir():
            dirs.add(rel)
        elif path.is_file():
            st = path.stat()
            files[rel] = (st.st_size, st.st_mtime_ns)
    return files, dirs


def debugfs(image: Path, commands: list[str], write: bool = True) -> str:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
        script.write("\n".join(commands) + "\n")
        script.flush()
        proc = subprocess.run(["debugfs", *(["-w"] if write else []), "-f", script.name, str(image)],
                              capture_output=True, text=True, check=True)
    return proc.stdout


def sync_image(image: Path, tree: Path, before: tuple[dict, set]) -> None:
    """Apply what changed in ``tree`` since ``before`` to the file system in ``image`` (rm, mkdir,
    write: the file system allocates the blocks, as in a running guest)."""
    files, dirs = tree_state(tree)
    old_files, old_dirs = before
    commands = [f"mkdir {d}" for d in sorted(dirs - old_dirs, key=len)]
    for rel in sorted(old_files):
        if rel not in files or files[rel] != old_files[rel]:
            commands.append(f"rm {rel}")
    for rel in sorted(files):
        if rel not in old_files or files[rel] != old_files[rel]:
            commands.append(f"write {tree}{rel} {rel}")
    commands += [f"rmdir {d}" for d in sorted(old_dirs - dirs, key=len, reverse=True)]
    debugfs(image, commands)


def encrypt_in_place(image: Path, tree: Path, fraction: float, seed: int = 5) -> int:
    """Full-file AES of a fraction of the user files, each written over its own blocks."""
    files = user_files(tree)
    rng = np.random.default_rng([seed, int(fraction * 1e6), 3])
    count = max(1, round(fraction * len(files)))
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=count, replace=False))]
    rels = ["/" + p.relative_to(tree).as_posix() for p in chosen]
    out = debugfs(image, [f"blocks {rel}" for rel in rels], write=False)
    lines = [line for line in out.splitlines() if not line.startswith("debugfs")]
    with open(image, "r+b") as handle:
        for path, line in zip(chosen, lines):
            data = aes(path.read_bytes())
            for n, block in enumerate(int(b) for b in line.split()):
                handle.seek(block * BLOCK)
                handle.write(data[n * BLOCK: (n + 1) * BLOCK])
    return count


@dataclass
class ImageTarget:
    tree: Path
    image: Path
    repository: Repository
    snapshots: list[Snapshot]

    def backup(self) -> Snapshot:
        parent = self.snapshots[-1] if self.snapshots else None
        history = baseline_history(self.snapshots, assess(self.snapshots, {}))
        with ImageSource(str(self.image), IMAGE_CHUNK).open(None) as view:
            snapshot = Archiver(self.repository, threads=2).snapshot(view, "disk", parent, chunk_size=IMAGE_CHUNK,
                                                                     history=history)
        self.snapshots.append(snapshot)
        return snapshot

    def change(self, function: Callable[[Path], object]) -> object:
        before = tree_state(self.tree)
        result = function(self.tree)
        sync_image(self.image, self.tree, before)
        return result


def fresh_image_target(base: Path, work: Path) -> ImageTarget:
    import subprocess

    if work.exists():
        shutil.rmtree(work)
    tree = work / "tree"
    shutil.copytree(base, tree)
    used = sum(p.stat().st_size for p in all_files(tree))
    image = work / "disk.img"
    with open(image, "wb") as handle:
        handle.truncate((used * 3 // MiB + 64) * MiB)  # room for the benign sets and encrypted copies
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-d", str(tree), str(image)], check=True)
    repository = Repository.init(LocalBackend(work / "repo"), b"bench", FAST_KDF)
    target = ImageTarget(tree, image, repository, [])
    target.backup()
    for day in range(3):
        target.change(lambda t, day=day: ordinary_day(t, day))
        target.backup()
    return target


def package_upgrade_with_cache(tree: Path) -> None:
    """The package upgrade, plus the .deb archives apt keeps (xz-compressed: random bytes)."""
    import lzma

    package_upgrade(tree)
    cache = tree / "var" / "cache" / "apt" / "archives"
    cache.mkdir(parents=True)
    for path in sorted((tree / "lib").iterdir()):
        (cache / f"{path.name}_amd64.deb").write_bytes(b"!<arch>\ndebian-binary   " + lzma.compress(path.read_bytes()))


IMAGE_BENIGN: dict[str, Callable[[Path], None]] = {
    "package upgrade with its .deb archives (ext4 image)": package_upgrade_with_cache,
    "photo import (ext4 image)": photo_import, "logs compressed in place (ext4 image)": compress_logs,
}


def run_images(base: Path, workdir: Path, fractions: list[float], result: dict) -> None:
    result["image_attacks"], result["image_benign"] = [], []
    for mode in ("in place", "encrypted copies renamed .lkd, originals deleted"):
        for fraction in fractions:
            target = fresh_image_target(base, workdir / "image-scenario")
            if mode == "in place":
                touched = encrypt_in_place(target.image, target.tree, fraction)
            else:
                touched = target.change(lambda t: attack(t, fraction, "full", True, False))
            verdict = target.backup().summary["verdict"]
            result["image_attacks"].append({"mode": mode, "fraction": fraction, "files": touched,
                                            "verdict": verdict["verdict"], "score": verdict["score"],
                                            "signals": sorted({r["signal"] for r in verdict["reasons"]})})
            print(f"image attack {mode} {fraction:7.1%} ({touched} files): {verdict['verdict']} "
                  f"{verdict['score']:.2f}", file=sys.stderr)
    for name, change in IMAGE_BENIGN.items():
        target = fresh_image_target(base, workdir / "image-scenario")
        target.change(change)
        verdict = target.backup().summary["verdict"]
        result["image_benign"].append({"set": name, "verdict": verdict["verdict"], "score": verdict["score"],
                                       "signals": sorted({r["signal"] for r in verdict["reasons"]})})
        print(f"image benign {name}: {verdict['verdict']} {verdict['score']:.2f}", file=sys.stderr)
    shutil.rmtree(workdir / "image-scenario", ignore_errors=True)


def image_markdown(result: dict) -> list[str]:
    attacks, benign = result["image_attacks"], result["image_benign"]
    fractions = sorted({a["fraction"] for a in attacks})
    lines = ["### Disk images (ext4)", "",
             "The same tree in an ext4 image (mke2fs -d), backed up as a disk in 512 KiB chunks; every change is "
             "written into the image with debugfs (the file system allocates the blocks), the in-place attack "
             "overwrites each chosen file's own blocks. Each scenario: a fresh image, a full backup, three ordinary "
             "days, the change, the judged backup. Each new chunk is compared with what the parent held at its "
             "offset (`became_random`); the share of random new data (`random_new_data`) is context only.", "",
             "| attack (full-file AES) | " + " | ".join(f"{f:.0%} of files" for f in fractions) + " |",
             "| --- |" + " ---: |" * len(fractions)]
    for mode in dict.fromkeys(a["mode"] for a in attacks):
        cells = []
        for f in fractions:
            a = next((x for x in attacks if x["mode"] == mode and x["fraction"] == f), None)
            cells.append("" if a is None else f"{'**flagged**' if a['verdict'] == 'suspicious' else 'missed'} "
                         f"({a['files']}; {a['score']:.1f}; {', '.join(a['signals']) or '-'})")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: verdict (files touched; score; strong signals that fired).", "",
              "| benign change set | verdict | score |", "| --- | --- | ---: |"]
    for b in benign:
        lines.append(f"| {b['set']} | {b['verdict']}{' (' + ', '.join(b['signals']) + ')' if b['signals'] else ''} "
                     f"| {b['score']:.2f} |")
    detected = sum(a["verdict"] == "suspicious" for a in attacks)
    flagged = sum(b["verdict"] == "suspicious" for b in benign)
    lines += ["", f"Images: **{detected}/{len(attacks)}** attacks flagged, **{flagged}/{len(benign)}** benign sets "
              "flagged.", ""]
    return lines


# -- cost ----------------------------------------------------------------------------------------

def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class SignalClock:
    """CPU time spent inside the signal functions, summed over the threads that call them
    (time.thread_time: immune to what other processes on the machine do)."""

    def __init__(self) -> None:
        import safehold.repository.archiver as archiver

        self.archiver = archiver
        self.originals = {name: getattr(archiver, name) for name in ("chunk_randomness", "magic")}
        self.originals_collector = (archiver.SignalCollector.file, archiver.SignalCollector.chunk,
                                    archiver.SignalCollector.finish)
        self.spent = 0.0
        self.calls = 0
        self.lock = __import__("threading").Lock()

    def _timed(self, function):
        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self.lock:
                    self.spent += spent
                    self.calls += 1
        return timed

    def net(self) -> float:
        """Time inside the signal code, less what the clock itself adds inside each measured call
        (calibrated on a function that does nothing)."""
        probe = SignalClock.__new__(SignalClock)
        probe.spent, probe.calls, probe.lock = 0.0, 0, self.lock
        nothing = probe._timed(lambda: None)
        for _ in range(20000):
            nothing()
        return max(0.0, self.spent - self.calls * probe.spent / probe.calls)

    def __enter__(self) -> "SignalClock":
        for name, function in self.originals.items():
            setattr(self.archiver, name, self._timed(function))
        collector = self.archiver.SignalCollector
        collector.file, collector.chunk, collector.finish = (self._timed(f) for f in self.originals_collector)
        return self

    def __exit__(self, *exc) -> None:
        for name, function in self.originals.items():
            setattr(self.archiver, name, function)
        collector = self.archiver.SignalCollector
        collector.file, collector.chunk, collector.finish = self.originals_collector


def measure_cost(base: Path, work: Path, repeat: int) -> dict:
    """Full backups of the tree with signals on and off, alternated; fresh repository each time.
    Also the CPU time spent inside the signal code itself during the 'on' runs."""
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    inside: list[float] = []
    for round_no in range(repeat):
        for signals in ((True, False) if round_no % 2 == 0 else (False, True)):
            folder = work / f"cost-{round_no}-{signals}"
            repository = Repository.init(LocalBackend(folder), b"bench", FAST_KDF)
            target = Target(base, repository, [])
            with SignalClock() as clock:
                wall, used = time.perf_counter(), cpu()
                target.backup(signals=signals)
                times[signals].append((cpu() - used, time.perf_counter() - wall))
            if signals:
                inside.append(clock.net() / times[True][-1][0])
            shutil.rmtree(folder)
    on_cpu = statistics.median(t[0] for t in times[True])
    off_cpu = statistics.median(t[0] for t in times[False])
    on_wall = statistics.median(t[1] for t in times[True])
    off_wall = statistics.median(t[1] for t in times[False])
    return {"repeat": repeat, "cpu_on": on_cpu, "cpu_off": off_cpu, "wall_on": on_wall, "wall_off": off_wall,
            "cpu_overhead": on_cpu / off_cpu - 1, "wall_overhead": on_wall / off_wall - 1,
            "signal_cpu_share": statistics.median(inside),
            "all_cpu": times}


# -- run -----------------------------------------------------------------------------------------

def run(files: int, workdir: Path, repeat: int, fractions: list[float], seed: int, quick: bool = False,
        images: bool = True) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    base = workdir / "base"
    if base.exists():
        shutil.rmtree(base)
    build_tree(base, files, seed)
    tree_files = all_files(base)
    result: dict = {"files": len(tree_files), "bytes": sum(p.stat().st_size for p in tree_files),
                    "attacks": [], "benign": []}
    variants = [(mode, rename, notes) for mode in ("full", "intermittent") for rename in (False, True)
                for notes in (False, True)]
    if quick:  # the smoke test: two attacks exercise every code path
        variants = [("full", False, False), ("intermittent", True, True)]
    for mode, rename, notes in variants:
        if True:
            if True:
                for fraction in fractions:
                    target = fresh_target(base, workdir / "scenario")
                    touched = attack(target.tree, fraction, mode, rename, notes)
                    verdict = target.backup().summary["verdict"]
                    result["attacks"].append({
                        "mode": mode, "rename": rename, "notes": notes, "fraction": fraction, "files": touched,
                        "verdict": verdict["verdict"], "score": verdict["score"],
                        "signals": sorted({r["signal"] for r in verdict["reasons"] if not r.get("context")})})
                    print(f"attack {mode:12} rename={rename!s:5} notes={notes!s:5} {fraction:7.1%} "
                          f"({touched} files): {verdict['verdict']} {verdict['score']:.2f}", file=sys.stderr)
    for name, change in BENIGN.items():
        target = fresh_target(base, workdir / "scenario")
        change(target.tree)
        verdict = target.backup().summary["verdict"]
        result["benign"].append({"set": name, "verdict": verdict["verdict"], "score": verdict["score"],
                                 "signals": sorted({r["signal"] for r in verdict["reasons"]})})
        print(f"benign {name}: {verdict['verdict']} {verdict['score']:.2f}", file=sys.stderr)
    shutil.rmtree(workdir / "scenario", ignore_errors=True)
    if images:
        run_images(base, workdir, [f for f in fractions if f >= 0.01] or fractions[-1:], result)
    cost = measure_cost(base, workdir, repeat)
    cost.pop("all_cpu")
    result["cost"] = cost
    return result


def markdown(result: dict, command: str) -> str:
    lines = [SECTION, "",
             f"`{command}` (bench/ransomware.py, one run on this machine: 2 shared cores). Tree: "
             f"{result['files']} files, {result['bytes'] / MiB:.0f} MiB (text, CSV, logs, office documents, PDFs, "
             "photos, gzip, SQLite, random blobs, a git repository, shared libraries). Each scenario: a fresh copy, "
             "a full backup, three ordinary days (the baseline), the change, and the backup that is judged. "
             "Design: [ransomware.md](ransomware.md).", ""]
    fractions = sorted({a["fraction"] for a in result["attacks"]})
    lines += ["| attack | " + " | ".join(f"{f:.1%} of files" for f in fractions) + " |",
              "| --- |" + " ---: |" * len(fractions)]
    groups: dict[str, dict[float, dict]] = {}
    for a in result["attacks"]:
        name = (f"{'full-file AES' if a['mode'] == 'full' else 'intermittent (4 KiB / 64 KiB)'}, "
                f"{'renamed .lkd' if a['rename'] else 'in place'}, {'ransom notes' if a['notes'] else 'no note'}")
        groups.setdefault(name, {})[a["fraction"]] = a
    for name, by_fraction in groups.items():
        cells = []
        for f in fractions:
            a = by_fraction.get(f)
            cells.append("" if a is None else
                         f"{'**flagged**' if a['verdict'] == 'suspicious' else 'missed'} ({a['files']}; {a['score']:.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    at_least = [a for a in result["attacks"] if a["fraction"] >= 0.01]
    detected = sum(a["verdict"] == "suspicious" for a in at_least)
    low = [a for a in result["attacks"] if a["fraction"] < 0.01]
    lines += ["", f"Cells: verdict (files touched; score, suspicious from 1). Detection rate for attacks touching "
              f"≥ 1 % of files: **{detected}/{len(at_least)}**; below 1 %: "
              f"{sum(a['verdict'] == 'suspicious' for a in low)}/{len(low)}.", "",
              "| benign change set | verdict | score |", "| --- | --- | ---: |"]
    for b in result["benign"]:
        lines.append(f"| {b['set']} | {b['verdict']}{' (' + ', '.join(b['signals']) + ')' if b['signals'] else ''} "
                     f"| {b['score']:.2f} |")
    flagged = sum(b["verdict"] == "suspicious" for b in result["benign"])
    cost = result["cost"]
    lines += ["", f"False positives: **{flagged}/{len(result['benign'])}** benign sets flagged.", ""]
    lines += [
              f"Cost of the signals: full backup of the tree, median of {cost['repeat']} runs each, alternated in the "
              "same run:", "",
              "| | signals on | signals off | overhead |", "| --- | ---: | ---: | ---: |",
              f"| CPU (process, all threads) | {cost['cpu_on']:.2f} s | {cost['cpu_off']:.2f} s | "
              f"{cost['cpu_overhead']:+.1%} |",
              f"| wall time | {cost['wall_on']:.2f} s | {cost['wall_off']:.2f} s | {cost['wall_overhead']:+.1%} |", "",
              f"CPU time spent inside the signal code (chunk chi-square, magic bytes, first-window chi-square, the "
              f"collector), measured per thread during the 'on' runs (less the clock's own cost, calibrated): "
              f"**{cost['signal_cpu_share']:.1%}** of the "
              "backup's CPU. The A/B difference above is the same quantity measured from outside: on 2 cores "
              "shared with other jobs it carries the machine's noise (see the spread of the runs in --json).", ""]
    if result.get("image_attacks") is not None:
        lines += image_markdown(result)
    return "\n".join(lines)


def update_docs(text: str, docs: Path = DOCS, section: str = SECTION) -> None:
    """Replace ``section`` (up to the next heading of its level or above) in ``docs``; an image
    subsection missing is added at the end of the ransomware section."""
    content = docs.read_text() if docs.exists() else ""
    start = content.find(section)
    if start < 0 and section != SECTION and SECTION in content:
        after = content.find(SECTION)
        end = content.find("\n## ", after + len(SECTION))
        end = len(content) if end < 0 else end + 1
        content = content[:end].rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n\n" + content[end:]
    elif start < 0:
        content = content.rstrip("\n") + "\n\n" + text
    else:
        ends = [i for i in (content.find("\n## ", start + len(section)),
                            content.find("\n### ", start + len(section)) if section != SECTION else -1) if i >= 0]
        end = min(ends) if ends else -1
        content = content[:start] + text + ("\n" + content[end + 1:] if end >= 0 else "")
    docs.write_text(content if content.endswith("\n") else content + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1500, help="files in the tree (default 1500)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/safehold-ransomware-bench"))
    parser.add_argument("--repeat", type=int, default=5, help="full backups per setting for the cost")
    parser.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="two attack variants only (the smoke test)")
    parser.add_argument("--no-images", action="store_true", help="leave out the ext4 image scenarios")
    parser.add_argument("--images-only", action="store_true",
                        help=f"only the ext4 image scenarios; --update-docs replaces '{IMAGE_SECTION}' alone")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    parser.add_argument("--update-docs", action="store_true", help=f"replace '{SECTION}' in docs/benchmarks.md")
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",")]
    command = "python bench/ransomware.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                       if a != "--update-docs")
    if args.images_only:
        args.workdir.mkdir(parents=True, exist_ok=True)
        base = args.workdir / "base"
        shutil.rmtree(base, ignore_errors=True)
        build_tree(base, args.files, args.seed)
        result = {"files": len(all_files(base)), "bytes": sum(p.stat().st_size for p in all_files(base))}
        run_images(base, args.workdir, [f for f in fractions if f >= 0.01] or fractions[-1:], result)
        lines = image_markdown(result)
        lines[2:2] = [f"`{command.strip()}` (one run on this machine: 2 shared cores); tree of {result['files']} files, "
                      f"{result['bytes'] / MiB:.0f} MiB.", ""]
        text = "\n".join(lines)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(text)
        if args.update_docs:
            update_docs(text, section=IMAGE_SECTION)
        print(text)
        shutil.rmtree(args.workdir, ignore_errors=True)
        return 0
    result = run(args.files, args.workdir, args.repeat, fractions, args.seed,
                 quick=args.quick, images=not args.no_images)
    text = markdown(result, command.strip())
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(text)
    if args.update_docs:
        update_docs(text)
    print(text)
    shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
