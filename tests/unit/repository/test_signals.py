"""Ransomware signals and verdicts: the statistics, the per-snapshot collector, the baseline and
the assessment of a target's chain (repository/signals.py, verdict.py, marks.py), plus the
archiver storing them (a real FilesSource over a real tree into a local repository)."""

from __future__ import annotations

import gzip
import io
import os
import random
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from safehold.repository import Repository, Snapshot
from safehold.repository.archiver import Archiver
from safehold.repository.backends.local import LocalBackend
from safehold.repository.marks import assess, baseline_history, latest_clean
from safehold.repository.signals import (
    RANDOM_CHI_SQUARE,
    ParentFile,
    SignalCollector,
    chi_square,
    looks_random,
    magic,
)
from safehold.repository.verdict import judge, stored_verdict
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def encrypt(data: bytes) -> bytes:
    """AES-CTR under a key drawn from the plaintext: ciphertext passes a randomness test only with
    high probability, so a key from os.urandom made the tests fail now and then (a statistical
    miss, not a bug); this way every run, and any selection of tests, judges the same bytes."""
    keys = random.Random(data)
    return Cipher(algorithms.AES(keys.randbytes(32)), modes.CTR(keys.randbytes(16))).encryptor().update(data)


def text(size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = [b"backup", b"restore", b"snapshot", b"the", b"of", b"and", b"repository", b"chunk", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


# --- statistics -------------------------------------------------------------------------------

def test_chi_square_tells_random_from_text_and_from_most_compressed_data():
    rng = random.Random(1)
    random_scores = [chi_square(rng.randbytes(8192)) for _ in range(50)]
    # Uniform bytes: chi-square with 255 degrees of freedom (mean 255, deviation 22.6).
    assert 200 < sum(random_scores) / len(random_scores) < 310
    assert all(score < RANDOM_CHI_SQUARE for score in random_scores)
    assert chi_square(text(8192)) > 10 * RANDOM_CHI_SQUARE
    assert looks_random(encrypt(text(1 << 20))) is True
    assert looks_random(text(1 << 20)) is False
    assert looks_random(b"short") is None  # too few bytes per bin to tell


def test_magic_labels_known_types_and_calls_the_rest_data():
    document = text(4000)
    assert magic(document) == "text"
    assert magic("naïve café ".encode() * 50) == "text"
    assert magic(gzip.compress(document)) == "gzip"
    assert magic(zstandard.ZstdCompressor().compress(document)) == "zstd"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", document)
    assert magic(buffer.getvalue()) == "zip"
    assert magic(b"%PDF-1.7\n" + document) == "pdf"
    assert magic(b"\xff\xd8\xff\xe0" + os.urandom(4000)) == "jpeg"
    assert magic(b"\x7fELF\x02\x01" + os.urandom(100)) == "elf"
    assert magic(b"x\x9c" + os.urandom(100)) == "zlib"  # git's loose objects
    assert magic(encrypt(document)) == "data"
    assert magic(encrypt(b"%PDF-1.7\n" + document)) == "data"
    assert magic(b"") == "empty"


# --- the collector ----------------------------------------------------------------------------

def parent_of(files: dict[str, tuple[int, int, str, bool]]) -> dict[bytes, ParentFile]:
    return {path.encode(): ParentFile(*values) for path, values in files.items()}


def test_collector_counts_changes_type_changes_renames_churn_and_notes():
    parent = parent_of({
        "docs/a.docx": (100, 1, "zip", False), "docs/b.txt": (200, 2, "text", False),
        "docs/c.txt": (300, 3, "text", False), "docs/d.pdf": (400, 4, "pdf", False),
        "docs/e.txt": (500, 5, "text", False), "photos/x.jpg": (600, 6, "jpeg", True),
        "gone.txt": (700, 7, "text", False), "old-name.txt": (800, 8, "text", False),
    })
    collector = SignalCollector(parent=parent)
    # encrypted in place
    collector.file(b"docs/a.docx", 100, 1, "data", True, read=True)
    collector.file(b"docs/b.txt", 200, 2, "data", True, read=True)
    # encrypted into a new name, original deleted (new inode): compared with the original
    collector.file(b"docs/c.txt.locked", 316, 33, "data", True, read=True)
    collector.file(b"docs/d.pdf.locked", 416, 44, "data", True, read=True)
    # edited normally, still text
    collector.file(b"docs/e.txt", 520, 5, "text", False, read=True)
    # untouched photo (random by nature, reused unread)
    collector.file(b"photos/x.jpg", 600, 6, "jpeg", True, read=False)
    # renamed (same inode and size), content unchanged
    collector.file(b"new-name.txt", 800, 8, "text", False, read=True)
    collector.file(b"README_TO_DECRYPT.txt", 50, 99, "text", None, read=True)
    collector.file(b"docs/new-photo.jpg", 5000, 100, "jpeg", True, read=True)
    signals = collector.finish()
    assert signals["modified"] == 3
    assert signals["added"] == 5
    assert signals["deleted"] == 4  # c.txt, d.pdf, gone.txt, old-name.txt
    assert signals["renamed"] == 1
    assert signals["type_changed"] == 4
    assert sorted(signals["examples"]["type_changed"]) == [b"docs/a.docx", b"docs/b.txt", b"docs/c.txt.locked",
                                                          b"docs/d.pdf.locked"]
    assert signals["extension_churn"] == 2 and signals["churn_extension"] == b"locked"
    assert signals["ransom_notes"] == 1
    # a new JPEG is random by nature, but of a known type: not "random unknown"
    assert signals["random_unknown_added"] == 0


def test_collector_without_parent_is_a_first_snapshot():
    collector = SignalCollector(parent=None)
    collector.file(b"a", 1, 1, "data", True, read=True)
    collector.chunk(1000, True)
    collector.chunk(1000, False)
    signals = collector.finish()
    assert signals["first"] is True
    assert (signals["new_chunks"], signals["random_chunks"], signals["random_bytes"]) == (2, 1, 1000)
    assert judge(signals, [])["verdict"] == "unknown"


# --- the verdict ------------------------------------------------------------------------------

def quiet(**overrides) -> dict:
    signals = {"version": 1, "first": False, "kind": "files", "files": 1000, "added": 20, "deleted": 5,
               "modified": 30, "renamed": 0, "type_changed": 0, "random_unknown_added": 0, "extension_churn": 0,
               "ransom_notes": 0, "new_bytes": 10 << 20, "random_bytes": 1 << 20}
    signals.update(overrides)
    return signals


def test_verdict_is_clean_for_ordinary_change_and_suspicious_with_reasons_and_files():
    assert judge(quiet(), [])["verdict"] == "clean"
    attacked = quiet(type_changed=40, modified=45, deleted=60,
                     examples={"type_changed": [b"a.docx", b"b\xff.pdf"]})
    verdict = judge(attacked, [quiet()] * 5)
    assert verdict["verdict"] == "suspicious"
    assert verdict["score"] > 1
    reasons = {reason["signal"]: reason for reason in verdict["reasons"]}
    assert reasons["type_changed"]["files"] == ["a.docx", os.fsdecode(b"b\xff.pdf")]
    assert reasons["deleted"]["context"] is True  # reported beside a strong signal
    # a burst of deletions alone (a git gc, a cleanup) is never a verdict
    assert judge(quiet(deleted=5000), [quiet()] * 5)["verdict"] == "clean"
    assert judge(quiet(ransom_notes=1), [])["verdict"] == "suspicious"


def test_the_baseline_raises_the_bar_for_a_target_that_always_writes_random_files():
    # A backup-of-backups target: every day ~100 new random files of no known type.
    history = [quiet(added=100 + day % 7, random_unknown_added=95 + day % 7) for day in range(14)]
    today = quiet(added=104, random_unknown_added=101)
    assert judge(today, [])["verdict"] == "suspicious"  # without history it would alarm
    assert judge(today, history)["verdict"] == "clean"
    assert judge(quiet(added=1000, random_unknown_added=1000), history)["verdict"] == "suspicious"


def test_random_unknown_added_needs_a_large_share_of_what_was_added():
    # 10 random files among 1000 new photos and documents: normal
    assert judge(quiet(added=1000, random_unknown_added=10), [])["verdict"] == "clean"
    assert judge(quiet(added=12, random_unknown_added=10), [])["verdict"] == "suspicious"


def test_image_snapshots_are_judged_on_plain_data_turning_random_and_random_new_data_is_context():
    image = {"version": 1, "first": False, "kind": "image", "new_bytes": 100 << 20, "random_bytes": 5 << 20,
             "overwritten_bytes": 40 << 20, "became_random_bytes": 0}
    busy = [dict(image, became_random_bytes=(8 + n % 3) << 20) for n in range(6)]  # a disk that always does it
    assert judge(dict(image, became_random_bytes=10 << 20), busy)["verdict"] == "clean"
    history = [dict(image) for _ in range(5)]
    assert judge(image, history)["verdict"] == "clean"
    # random data into free space (a photo import looks the same as encrypted copies): no verdict alone
    assert judge(dict(image, random_bytes=90 << 20), history)["verdict"] == "clean"
    attacked = judge(dict(image, random_bytes=90 << 20, became_random_bytes=30 << 20), history)
    assert attacked["verdict"] == "suspicious"
    assert [(r["signal"], r.get("context", False)) for r in attacked["reasons"]] == [
        ("became_random", False), ("random_new_data", True)]


def test_stored_verdicts_are_hostile_input():
    assert stored_verdict({"verdict": {"verdict": "pwned"}}) is None
    assert stored_verdict({"verdict": "clean"}) is None
    checked = stored_verdict({"verdict": {"verdict": "clean", "score": float("nan"), "reasons": [1, {"x": 1}]}})
    assert checked == {"verdict": "clean", "score": 0.0, "reasons": [], "baseline": 0}
    assert judge(quiet(type_changed="many", ransom_notes=-3), [])["verdict"] == "clean"


# --- the assessment of a chain ----------------------------------------------------------------

def snapshot(number: int, verdict: str | None, signals: dict | None = None) -> Snapshot:
    summary: dict = {}
    if verdict is not None:
        summary["verdict"] = {"verdict": verdict, "score": 2.0 if verdict == "suspicious" else 0.1, "reasons": []}
        summary["signals"] = signals or quiet(first=number == 0)
    return Snapshot(id=f"{number:064x}", time=datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=number),
                    target="t", kind="files", hostname="h", paths=[], tree=[], summary=summary)


def test_snapshots_after_a_suspicious_one_are_no_restore_point_until_marked_clean():
    chain = [snapshot(0, "unknown"), snapshot(1, "clean"), snapshot(2, "clean"), snapshot(3, "suspicious"),
             snapshot(4, "clean"), snapshot(5, "clean")]
    assessed = assess(chain, {})
    assert [assessed[s.id].clean_point for s in chain] == [False, True, True, False, False, False]
    assert assessed[chain[5].id].after == chain[3].id
    assert latest_clean(chain, {}) is chain[2]
    # The operator says snapshot 4 is good (the data was restored): 4 and 5 are restore points.
    marks = {chain[4].id: {"operator": {"verdict": "clean", "note": "restored", "time": "x"}}}
    assert latest_clean(chain, marks) is chain[5]
    # A false alarm marked clean at 3 clears the suspicion from 3 on.
    marks = {chain[3].id: {"operator": {"verdict": "clean", "note": None, "time": "x"}}}
    assert latest_clean(chain, marks) is chain[5]
    # Marking a clean snapshot suspicious moves latest-clean before it.
    marks = {chain[2].id: {"operator": {"verdict": "suspicious", "note": None, "time": "x"}}}
    assert latest_clean(chain, marks) is chain[1]
    # Old snapshots without a verdict are unknown: no restore point until scanned or marked.
    assert latest_clean([snapshot(0, None), snapshot(1, None)], {}) is None


def test_the_baseline_learns_only_from_clean_snapshots_that_are_not_first():
    chain = [snapshot(0, "unknown"), snapshot(1, "clean", quiet(added=7)), snapshot(2, "suspicious", quiet(added=9)),
             snapshot(3, "clean", quiet(added=11))]
    history = baseline_history(chain, assess(chain, {}))
    assert [h["added"] for h in history] == [7, 11]
    marked = {chain[3].id: {"operator": {"verdict": "suspicious", "note": None, "time": "x"}},
              chain[2].id: {"operator": {"verdict": "clean", "note": None, "time": "x"}}}
    assert [h["added"] for h in baseline_history(chain, assess(chain, marked))] == [7, 9]


# --- the archiver stores them -----------------------------------------------------------------

def test_backups_store_types_in_items_and_a_verdict_that_catches_encryption(tmp_path: Path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(30):
        (tree / f"doc{i:02}.txt").write_bytes(text(3000 + i * 100, seed=i))
    (tree / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + random.Random(3).randbytes(20000))
    (tree / "table.dat").write_bytes(b"\x02\x07" + b"".join(i.to_bytes(4, "little") + bytes(4) for i in range(1000)))
    (tree / "blob.dat").write_bytes(random.Random(4).randbytes(9000))
    repository = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", FAST_KDF)

    def backup(parent: Snapshot | None, history: list[dict], signals: bool = True) -> Snapshot:
        with FilesSource([str(tree)]).open() as view:
            return Archiver(repository, threads=2, signals=signals).snapshot(view, "t", parent, history=history)

    first = backup(None, [])
    assert first.summary["verdict"]["verdict"] == "unknown"
    items = {item["path"]: item for item in repository.read_tree(first) if item["type"] == "file"}
    # a file of a known type is judged by its type alone: no histogram, no 'random'
    assert items[b"tree/doc00.txt"]["magic"] == "text" and "random" not in items[b"tree/doc00.txt"]
    assert items[b"tree/photo.jpg"]["magic"] == "jpeg" and "random" not in items[b"tree/photo.jpg"]
    assert items[b"tree/table.dat"]["magic"] == "data" and items[b"tree/table.dat"]["random"] is False
    assert items[b"tree/blob.dat"]["magic"] == "data" and items[b"tree/blob.dat"]["random"] is True
    assert first.summary["signals"]["random_chunks"] == 1  # the blob's: the only judged random chunk
    second = backup(first, [])
    assert second.summary["verdict"]["verdict"] == "clean"
    # reused unread, the types are carried over
    assert {item["path"]: item.get("magic") for item in repository.read_tree(second)}[b"tree/doc00.txt"] == "text"
    for i in range(5):  # 5 of 31 files encrypted in place
        path = tree / f"doc{i:02}.txt"
        path.write_bytes(encrypt(path.read_bytes()))
    third = backup(second, [second.summary["signals"]])
    verdict = third.summary["verdict"]
    assert verdict["verdict"] == "suspicious"
    assert verdict["reasons"][0]["signal"] == "type_changed"
    assert sorted(verdict["reasons"][0]["files"]) == [f"tree/doc{i:02}.txt" for i in range(5)]
    # signals off (to measure their cost): no fields, no verdict
    off = backup(third, [], signals=False)
    assert "verdict" not in off.summary and "signals" not in off.summary


def test_a_short_untyped_file_changing_is_no_type_change():
    """A small binary of no known type (a .pyc) rewritten with content too short to judge is an
    upgrade, not encryption; a short text turned into untyped bytes is (a note-sized file encrypted)."""
    parent = parent_of({"lib/a.pyc": (900, 1, "data", False), "notes/todo.txt": (300, 2, "text", None)})
    collector = SignalCollector(parent=parent)
    collector.file(b"lib/a.pyc", 150, 1, "data", None, read=True)
    collector.file(b"notes/todo.txt", 300, 2, "data", None, read=True)
    signals = collector.finish()
    assert signals["type_changed"] == 1 and signals["examples"]["type_changed"] == [b"notes/todo.txt"]


def test_scan_recomputes_the_signals_of_snapshots_written_without_them(tmp_path: Path):
    """Snapshots of a release before verdicts have no types in their items: 'scan' reads the first
    chunk of each changed file of both snapshots and finds the same attack the backup would."""
    from safehold.engine.verdicts import compute_signals

    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(10):
        (tree / f"doc{i}.txt").write_bytes(text(5000, seed=i))
    repository = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", FAST_KDF)

    def backup(parent: Snapshot | None) -> Snapshot:
        with FilesSource([str(tree)]).open() as view:
            return Archiver(repository, threads=2, signals=False).snapshot(view, "t", parent)

    before = backup(None)
    for i in range(4):
        path = tree / f"doc{i}.txt"
        path.write_bytes(encrypt(path.read_bytes()))
    after = backup(before)
    assert "signals" not in after.summary and all("magic" not in item for item in repository.read_tree(after))
    signals = compute_signals(repository, after, before)
    assert signals["type_changed"] == 4 and signals["modified"] == 4 and signals["scanned"] is True
    assert judge(signals, [])["verdict"] == "suspicious"
    assert judge(compute_signals(repository, before, None), [])["verdict"] == "unknown"


# --- disk images: each changed chunk against the old data at its offset ------------------------

def test_image_chunks_are_judged_against_what_the_parent_held_at_the_same_offset(tmp_path: Path):
    """A disk whose plain blocks are encrypted in place is suspicious on 'became_random'; random data
    written where the parent had holes (a package cache filling free space) and plain rewrites are
    not, and a chunk reused unread (changed extents) keeps the parent's flag."""
    from safehold.repository.signals import CHUNK_PLAIN, CHUNK_RANDOM, CHUNK_UNKNOWN
    from safehold.sources.image import ImageSource

    chunk = 64 * 1024
    repository = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", FAST_KDF)
    image = tmp_path / "disk.img"
    plain = [text(chunk, seed) for seed in range(96)]  # 6 MiB of file system blocks holding text
    image.write_bytes(b"".join(plain) + bytes(96 * chunk))  # and 6 MiB of free space (holes)
    history: list[dict] = []
    snapshots: list[Snapshot] = []

    def backup(changed: list[tuple[int, int]] | None = None) -> Snapshot:
        with ImageSource(str(image), chunk).open(None, changed=changed) as view:
            snapshot = Archiver(repository, threads=2).snapshot(
                view, "disk", snapshots[-1] if snapshots else None, chunk_size=chunk, history=history)
        if snapshots:
            history.append(snapshot.summary["signals"])
        snapshots.append(snapshot)
        return snapshot

    def item(snapshot: Snapshot) -> dict:
        [found] = list(repository.read_tree(snapshot))
        return found

    first = backup()
    assert item(first)["random"] == bytes([CHUNK_PLAIN]) * 96 + bytes([CHUNK_UNKNOWN]) * 96  # text; holes
    with open(image, "r+b") as handle:  # an ordinary day: a few blocks rewritten with other text
        for n in (3, 40, 70):
            handle.seek(n * chunk)
            handle.write(text(chunk, 1000 + n))
    ordinary = backup()
    assert ordinary.summary["signals"]["overwritten_bytes"] == 3 * chunk
    assert ordinary.summary["signals"]["became_random_bytes"] == 0
    with open(image, "r+b") as handle:  # 8 MiB of compressed packages land in free space
        handle.seek(96 * chunk)
        handle.write(random.Random(3).randbytes(64 * chunk))
    cache = backup()
    # (a random sample passes the chi-square bar with probability ~0.998: counts allow a miss or two)
    assert cache.summary["signals"]["became_random_bytes"] == 0 and cache.summary["signals"]["random_bytes"] >= 60 * chunk
    assert "became_random" not in {r["signal"] for r in cache.summary["verdict"]["reasons"]}

    with open(image, "r+b") as handle:  # the attack: 40 blocks of files encrypted in place
        for n in range(10, 50):
            handle.seek(n * chunk)
            handle.write(encrypt(plain[n]))
    attacked = backup(changed=[(10 * chunk, 40 * chunk)])  # changed extents: the rest is reused unread
    signals = attacked.summary["signals"]
    assert signals["overwritten_bytes"] == 40 * chunk and signals["became_random_bytes"] >= 38 * chunk
    verdict = attacked.summary["verdict"]
    assert verdict["verdict"] == "suspicious", verdict
    [reason] = [r for r in verdict["reasons"] if r["signal"] == "became_random"]
    assert reason["value"] >= 38 * chunk and reason["files"][0].startswith(f"{image.name}@")
    flags = item(attacked)["random"]
    assert sum(flags[10:50]) >= 40 * CHUNK_RANDOM - 16 and flags[:10] == bytes([CHUNK_PLAIN]) * 10  # reused: kept
    assert flags[96:160] == item(cache)["random"][96:160]  # reused unread: the parent's flags


def test_an_image_parent_without_a_random_map_gives_no_extent_signal():
    from safehold.repository.archiver import _random_map

    assert _random_map({"chunks": bytes(64), "random": b"\x01\x02"}) == b"\x01\x02"
    assert _random_map({"chunks": bytes(64)}) is None
    assert _random_map({"chunks": bytes(64), "random": b"\x01"}) is None  # wrong length: hostile
    assert _random_map({"chunks": bytes(64), "random": [1, 2]}) is None
    assert judge({"version": 1, "first": False, "kind": "image", "new_bytes": 10 << 20, "random_bytes": 0,
                  "overwritten_bytes": 10 << 20, "became_random_bytes": 512 << 10}, [])["verdict"] == "clean"


def test_a_chunk_partly_encrypted_counts_for_its_share():
    from safehold.repository.signals import CHUNK_PLAIN, CHUNK_RANDOM, image_chunk_randomness

    chunk = 512 * 1024
    plain = text(chunk, 4)
    assert image_chunk_randomness(plain) == (False, CHUNK_PLAIN)
    assert image_chunk_randomness(encrypt(plain))[1] >= CHUNK_RANDOM - 1
    quarter = encrypt(plain[: chunk // 4]) + plain[chunk // 4:]  # one file of four encrypted
    random, windows = image_chunk_randomness(quarter)
    assert random is False and windows - 1 == 2  # two of the eight windows fall in it
    assert image_chunk_randomness(b"short") == (None, 0)


def test_scan_of_an_image_compares_new_chunks_with_the_parent_at_the_same_offset(tmp_path: Path):
    """A parent written before the random map: scan reads its chunk at the offset instead."""
    from safehold.engine.verdicts import compute_signals
    from safehold.sources.image import ImageSource

    chunk = 64 * 1024
    repository = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", FAST_KDF)
    image = tmp_path / "disk.img"
    plain = [text(chunk, seed) for seed in range(64)]
    image.write_bytes(b"".join(plain))
    with ImageSource(str(image), chunk).open(None) as view:
        parent = Archiver(repository, threads=2, signals=False).snapshot(view, "disk", None, chunk_size=chunk)
    with open(image, "r+b") as handle:
        for n in range(8, 56):
            handle.seek(n * chunk)
            handle.write(encrypt(plain[n]))
    with ImageSource(str(image), chunk).open(None) as view:
        attacked = Archiver(repository, threads=2, signals=False).snapshot(view, "disk", parent, chunk_size=chunk)
    assert "signals" not in attacked.summary
    signals = compute_signals(repository, attacked, parent)
    assert signals["overwritten_bytes"] == 48 * chunk and signals["became_random_bytes"] >= 46 * chunk
    assert judge(signals, [])["verdict"] == "suspicious"


@pytest.mark.parametrize("size", [600, 4096, 70_000, 300_000])
def test_histograms_without_numpy_give_the_same_scores(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """A small files backup counts its histograms with collections.Counter until NumPy is loaded
    (or COUNTED_WITHOUT_NUMPY were counted): the scores, hence the verdicts, must not change, and
    the switch to NumPy happens after that many."""
    from collections import Counter

    import numpy as np

    from safehold.repository import signals

    rng = np.random.default_rng(size)
    samples = [rng.bytes(size), bytes(rng.integers(0, 16, size, dtype=np.uint8)), b"text " * (size // 5)]
    with_numpy = [(signals.chunk_randomness(data, True), signals.looks_random(data)) for data in samples]
    monkeypatch.setattr(signals, "_numpy_loaded", lambda: False)
    monkeypatch.setattr(signals, "_counted", 0)
    assert isinstance(signals.histogram(samples[0][:600]), Counter)
    assert [(signals.chunk_randomness(data, True), signals.looks_random(data)) for data in samples] == with_numpy
    for data in samples:
        window = data[:4096]
        counted = signals.histogram(window)
        assert isinstance(counted, Counter)
        assert signals._chi_square(counted, len(window)) == signals._chi_square(
            np.bincount(np.frombuffer(window, dtype=np.uint8), minlength=256), len(window))
    monkeypatch.setattr(signals, "_counted", signals.COUNTED_WITHOUT_NUMPY)
    assert not isinstance(signals.histogram(samples[0]), Counter)  # past the budget: NumPy
    assert [(signals.chunk_randomness(data, True), signals.looks_random(data)) for data in samples] == with_numpy
