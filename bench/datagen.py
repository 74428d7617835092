"""Deterministic benchmark data: a tree of text/CSV/log/binary files and a disk image.

Everything comes from one seeded ``numpy.random.Generator`` per purpose, so the
same ``(scale, seed)`` gives byte-identical data on every machine. Text is
generated in bulk with NumPy (a ragged gather over a word table with a
Zipf-like, log-uniform choice of words), never byte by byte in Python.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

TREE_BYTES = 1 * GiB          # at scale 1.0
TREE_FILES = 3000
IMAGE_BYTES = 1 * GiB
IMAGE_UNIT = 64 * KiB          # image runs are whole multiples of this
WRITE_SIZE = 64 * KiB          # size of one scattered image write
WRITES_PER_CHANGE = 160        # at scale 1.0: ~1 % of the 1 GiB image
APPENDS_PER_CHANGE = 36        # files appended to in the 1 % change
STAMP = "zz-stamp.txt"         # written last, so it is the file with the newest ctime


# -- vocabularies ---------------------------------------------------------------

_LETTERS = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
_LETTER_P = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
                      2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])
_LETTER_P = _LETTER_P / _LETTER_P.sum()


class Vocab:
    """Byte strings stored flat (each followed by one separator byte) for ragged gathers."""

    def __init__(self, words: list[bytes], sep: bytes) -> None:
        self.size = len(words)
        blob = sep.join(words) + sep
        self.flat = np.frombuffer(blob, dtype=np.uint8)
        self.lens = np.array([len(w) + 1 for w in words], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lens)[:-1]]).astype(np.int64)


def _words(rng: np.random.Generator, n: int) -> list[bytes]:
    lengths = np.clip(rng.poisson(5.0, n) + 1, 1, 14)
    letters = rng.choice(_LETTERS, size=int(lengths.sum()), p=_LETTER_P).tobytes()
    out, pos = [], 0
    for length in lengths.tolist():
        out.append(letters[pos:pos + length])
        pos += length
    return out


class Format:
    """Lines of ``len(columns)`` tokens; token j of a line comes from ``columns[j]``."""

    def __init__(self, columns: list[Vocab]) -> None:
        self.columns = columns
        self.flat = np.concatenate([c.flat for c in columns])
        self.offsets = np.cumsum([0] + [len(c.flat) for c in columns[:-1]]).astype(np.int64)
        self.line_mean = sum(float(c.lens.mean()) for c in columns)


@dataclass
class Formats:
    text: Format | None = None
    csv: Format | None = None
    log: Format | None = None


def make_formats(seed: int) -> Formats:
    rng = np.random.default_rng([seed, 1])
    words = _words(rng, 20000)
    f = Formats()
    text = Vocab(words, b" ")
    f.text = Format([text] * 13)
    # CSV: id, date, category, amount, quantity, name
    ids = [b"%d" % v for v in rng.integers(100000, 999999, 20000).tolist()]
    dates = [b"2024-%02d-%02d" % (m, d) for m, d in zip(rng.integers(1, 13, 2000).tolist(),
                                                         rng.integers(1, 29, 2000).tolist())]
    cats = words[:40]
    amounts = [b"%d.%02d" % (a, c) for a, c in zip(rng.integers(0, 5000, 20000).tolist(),
                                                    rng.integers(0, 100, 20000).tolist())]
    qty = [b"%d" % v for v in range(1, 200)]
    names = [a.capitalize() + b" " + b.capitalize() for a, b in zip(words[100:3100], words[5000:8000])]
    f.csv = Format([Vocab(v, b",") for v in (ids, dates, cats, amounts, qty, names)])
    # log: timestamp, level, component, message words..., key=value
    stamps = [b"2024-05-%02dT%02d:%02d:%02d.%03dZ" % t for t in zip(
        rng.integers(1, 29, 20000).tolist(), rng.integers(0, 24, 20000).tolist(),
        rng.integers(0, 60, 20000).tolist(), rng.integers(0, 60, 20000).tolist(),
        rng.integers(0, 1000, 20000).tolist())]
    levels = [b"INFO", b"INFO", b"INFO", b"DEBUG", b"DEBUG", b"WARN", b"ERROR"]
    comps = [b"[%s-%d]" % (w, i) for w, i in zip(words[:300], rng.integers(0, 16, 300).tolist())]
    kv = [b"%s=%d" % (w, v) for w, v in zip(words[200:10200], rng.integers(0, 100000, 10000).tolist())]
    f.log = Format([Vocab(v, b" ") for v in (stamps, levels, comps)] + [text] * 6 + [Vocab(kv, b" ")])
    return f


def _token_stream(rng: np.random.Generator, fmt: Format, n_bytes: int) -> bytes:
    """About ``n_bytes`` of lines; words chosen log-uniformly (Zipf-like) from each column's vocabulary."""
    out: list[np.ndarray] = []
    have = 0
    ncol = len(fmt.columns)
    while have < n_bytes:
        need = n_bytes - have
        lines = max(1, int(need / fmt.line_mean * 1.05) + 1)
        lines = min(lines, 1 + (4 * MiB) // max(1, int(fmt.line_mean)))
        starts = np.empty((lines, ncol), dtype=np.int64)
        lens = np.empty((lines, ncol), dtype=np.int64)
        for j, c in enumerate(fmt.columns):
            k = np.exp(rng.random(lines) * math.log(c.size)).astype(np.int64) - 1
            np.clip(k, 0, c.size - 1, out=k)
            starts[:, j] = c.starts[k] + fmt.offsets[j]
            lens[:, j] = c.lens[k]
        starts, lens = starts.reshape(-1), lens.reshape(-1)
        ends = np.cumsum(lens)
        total = int(ends[-1])
        src = np.arange(total, dtype=np.int64) - np.repeat(ends - lens - starts, lens)
        chunk = fmt.flat[src]
        chunk[ends[ncol - 1::ncol] - 1] = 10  # the last token of a line ends it
        out.append(chunk)
        have += total
    data = np.concatenate(out)[:n_bytes] if len(out) > 1 else out[0][:n_bytes]
    if n_bytes:
        data[-1] = 10
    return data.tobytes()


# -- the tree -------------------------------------------------------------------

KINDS = [("txt", "text", 0.35), ("csv", "csv", 0.20), ("log", "log", 0.25), ("bin", "bin", 0.20)]


def text_bytes(rng: np.random.Generator, formats: Formats, kind: str, n: int) -> bytes:
    return _token_stream(rng, getattr(formats, kind), n)


def plan_tree(scale: float, seed: int) -> list[tuple[str, str, int]]:
    """(relative path, kind, size) for every file of the tree."""
    rng = np.random.default_rng([seed, 2])
    n = max(12, round(TREE_FILES * scale))
    target = max(1 * MiB, int(TREE_BYTES * scale))
    bucket = rng.random(n)
    lo = np.where(bucket < 0.85, 2 * KiB, np.where(bucket < 0.98, 256 * KiB, 4 * MiB))
    hi = np.where(bucket < 0.85, 256 * KiB, np.where(bucket < 0.98, 4 * MiB, 48 * MiB))
    sizes = np.exp(np.log(lo) + rng.random(n) * (np.log(hi) - np.log(lo)))
    sizes = np.maximum(256, (sizes * (target / sizes.sum())).astype(np.int64))
    sizes[-1] += target - int(sizes.sum())  # exact total
    if sizes[-1] < 256:
        sizes[-1] = 256
    kind_p = np.array([k[2] for k in KINDS])
    kinds = rng.choice(len(KINDS), size=n, p=kind_p / kind_p.sum())
    dirs = max(1, round(math.sqrt(n) / 2))
    plan = []
    for i in range(n):
        ext, kind, _ = KINDS[int(kinds[i])]
        d = int(rng.integers(0, dirs))
        path = f"d{d % 8:02d}/s{d:03d}/{kind}-{i:05d}.{ext}"
        plan.append((path, kind, int(sizes[i])))
    return plan


def generate_tree(root: Path, scale: float, seed: int, formats: Formats) -> tuple[int, int]:
    plan = plan_tree(scale, seed)
    total = 0
    for i, (rel, kind, size) in enumerate(plan):
        rng = np.random.default_rng([seed, 3, i])
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.bytes(size) if kind == "bin" else text_bytes(rng, formats, kind, size)
        with open(path, "wb") as f:
            f.write(data)
        total += size
    return len(plan), total


# -- the disk image ---------------------------------------------------------------

def generate_image(path: Path, scale: float, seed: int) -> dict:
    """~40 % zero, 30 % random, 30 % repeated-pattern bytes, in runs of 1-16 x 64 KiB."""
    rng = np.random.default_rng([seed, 4])
    size = max(4 * IMAGE_UNIT, int(IMAGE_BYTES * scale) // IMAGE_UNIT * IMAGE_UNIT)
    units = size // IMAGE_UNIT
    patterns = [rng.bytes(4096) for _ in range(32)]
    zero = bytes(16 * IMAGE_UNIT)
    counts = {"zero": 0, "random": 0, "pattern": 0}
    done = 0
    with open(path, "wb") as f:
        while done < units:
            run = min(int(rng.integers(1, 17)), units - done)
            t = rng.random()
            n = run * IMAGE_UNIT
            if t < 0.4:
                f.write(zero[:n]); counts["zero"] += n
            elif t < 0.7:
                f.write(rng.bytes(n)); counts["random"] += n
            else:
                p = patterns[int(rng.integers(0, len(patterns)))]
                f.write(p * (n // len(p))); counts["pattern"] += n
            done += run
    return {"bytes": size, **counts}


def write_stamp(root: Path, label: str) -> None:
    """Write a tiny file last so it, not a big file, has the newest ctime (borg re-reads that one)."""
    with open(root / STAMP, "w") as f:
        f.write(f"benchmark state: {label}\n")


def generate(data: Path, scale: float, seed: int) -> dict:
    formats = make_formats(seed)
    data.mkdir(parents=True, exist_ok=True)
    image = generate_image(data / "disk.img", scale, seed)
    files, tree_bytes = generate_tree(data / "tree", scale, seed, formats)
    write_stamp(data / "tree", "generated")
    return {"files": files + 1, "tree_bytes": tree_bytes + (data / "tree" / STAMP).stat().st_size,
            "image": image}


# -- changes --------------------------------------------------------------------

def image_writes(path: Path, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` scattered 64 KiB writes of random bytes at 4 KiB-aligned offsets; returns the extents."""
    size = path.stat().st_size
    slots = (size - WRITE_SIZE) // 4096
    offsets = np.sort(rng.choice(slots + 1, size=min(count, slots + 1), replace=False)) * 4096
    extents = []
    fd = os.open(path, os.O_WRONLY)
    try:
        for off in offsets.tolist():
            os.pwrite(fd, rng.bytes(WRITE_SIZE), off)
            extents.append((int(off), WRITE_SIZE))
    finally:
        os.close(fd)
    return extents


def change_one_percent(data: Path, scale: float, seed: int, round_no: int, formats: Formats) -> dict:
    rng = np.random.default_rng([seed, 5, round_no])
    extents = image_writes(data / "disk.img", max(4, round(WRITES_PER_CHANGE * scale)), rng)
    texts = sorted(p for p in (data / "tree").rglob("*") if p.is_file() and p.suffix in (".txt", ".csv", ".log"))
    n = min(len(texts), max(3, round(APPENDS_PER_CHANGE * scale)))
    picked = rng.choice(len(texts), size=n, replace=False)
    appended = 0
    for i in sorted(picked.tolist()):
        p = texts[i]
        kind = {".txt": "text", ".csv": "csv", ".log": "log"}[p.suffix]
        extra = text_bytes(rng, formats, kind, int(rng.integers(512, 8 * KiB)))
        with open(p, "ab") as f:
            f.write(extra)
        appended += len(extra)
    write_stamp(data / "tree", f"change {round_no}")
    return {"image_extents": extents, "image_bytes_written": sum(e[1] for e in extents),
            "files_appended": n, "bytes_appended": appended}


def change_image_only(data: Path, scale: float, seed: int, round_no: int) -> dict:
    rng = np.random.default_rng([seed, 6, round_no])
    extents = image_writes(data / "disk.img", max(4, round(WRITES_PER_CHANGE * scale)), rng)
    return {"image_extents": extents, "image_bytes_written": sum(e[1] for e in extents)}
