"""Ransomware signals: what a backup sees of its data, summed up per snapshot, almost for free.

Everything here works on data the archiver already holds: the plaintext of each chunk it stores
(before compression), the first bytes of each file it reads, and the item records of the parent
snapshot (path, size, inode, and the two fields below that earlier backups stored). Nothing is
read that the backup would not read anyway.

- **Randomness of a chunk**: Pearson's chi-square of the byte histogram of a small sample (two
  4 KiB windows: the start and the middle of the chunk). For uniformly random bytes the statistic
  follows a chi-square distribution with 255 degrees of freedom (mean 255, deviation 22.6) whatever
  the sample size, while text, code, images' headers and even most compressed streams land far above
  it. Shannon entropy cannot tell compressed from encrypted data (both near 8 bits per byte); the
  chi-square can often, and the file-type check below covers the rest. A 8 KiB sample costs about
  a fiftieth of what zstd spends on the whole chunk (docs/benchmarks.md measures it).
- **Type of a file**: a label from the magic bytes of its first chunk (``pdf``, ``zip``, ``jpeg``,
  ``elf``, ... ``text`` for printable text, ``data`` for anything else). Encryption turns every
  type into random ``data``; compressing a file keeps a known type (``gzip``, ``zstd``), which is
  what keeps a compressed database dump or a photo import from looking like an attack.
- **Per snapshot**: added, deleted, modified and renamed files (a deleted path whose inode and
  size reappear under a new name), files whose type turned into random data
  (``type_changed``), new random files of no known type (``random_unknown_added``), extension
  churn (many new names that are a deleted name plus the same new extension, ``report.docx`` ->
  ``report.docx.locked``), and names that ransom notes use.

Randomness is judged only where a rule reads it: chunks of files of no known type (``data``) and
of disk images. A file of a known type is judged by its type alone (a JPEG is random by nature,
a text never; encryption shows as the type turning into ``data``), which spares the histogram
for most files of most trees.

Disk images have no file types: per changed chunk the randomness of the new data is compared with
the old data at the same offset, without reading it: each image item carries ``random``, one byte
per chunk (0 unknown or hole, else 1 + how many of eight 1 KiB windows spread over the chunk look
random), so the next backup knows what the parent held at every offset. ``overwritten_bytes`` is
the plain share of the data that new chunks replaced in place, ``became_random_bytes`` the share
whose windows turned random: what encrypting files inside a file system does to its blocks, also
when a chunk holds a few encrypted files among others. New data written where the parent had a
hole counts only in ``random_bytes``.

The item records of files carry ``magic`` (the label) and ``random`` (for ``data`` files: whether
the first 4 KiB look random, where intermittent encryption starts; absent under 512 bytes) so the next backup can compare without
reading the parent's data (docs/repository-format.md).
"""

from __future__ import annotations

import functools

import re
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .lazy_numpy import LazyNumpy

numpy = LazyNumpy()  # imported on first use: listing snapshots reads verdicts, never samples

SIGNALS_VERSION = 1
#: Per-chunk randomness of an image item (``random``: one byte per chunk): 0 unknown (or a hole),
#: else 1 + the number of its IMAGE_WINDOWS sample windows that look random (1 plain, 9 random).
CHUNK_UNKNOWN, CHUNK_PLAIN, CHUNK_RANDOM = 0, 1, 9
IMAGE_WINDOWS = 8
IMAGE_WINDOW = 1024
#: Bytes taken from each of the two sample windows of a chunk.
WINDOW = 4096
#: A sample whose chi-square is below this looks random: a random sample stays below it with
#: probability ~0.998 (255 + 2.9 deviations), compressed data mostly does not.
RANDOM_CHI_SQUARE = 320.0
#: Chunks shorter than this are sampled by their first window only.
SMALL_CHUNK = 64 * 1024
#: Samples shorter than this say nothing about randomness (too few bytes per histogram bin).
MIN_SAMPLE = 512
#: Paths kept per signal as examples (the counts stay exact).
EXAMPLES = 10

# (offset, signature, label); the first match wins. Signatures of formats whose data is random
# by design matter most: they are what a benign compressed or encrypted file still shows.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"%PDF-", "pdf"), (0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"), (0, b"\x1f\x8b", "gzip"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"), (0, b"\xfd7zXZ\x00", "xz"), (0, b"BZh", "bzip2"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"), (0, b"Rar!\x1a\x07", "rar"), (0, b"\x04\x22\x4d\x18", "lz4"),
    (0, b"\x89PNG\r\n\x1a\n", "png"), (0, b"\xff\xd8\xff", "jpeg"), (0, b"GIF8", "gif"), (0, b"RIFF", "riff"),
    (0, b"II*\x00", "tiff"), (0, b"MM\x00*", "tiff"), (4, b"ftyp", "mp4"), (0, b"ID3", "mp3"),
    (0, b"OggS", "ogg"), (0, b"fLaC", "flac"), (0, b"\x1aE\xdf\xa3", "mkv"), (0, b"\x7fELF", "elf"),
    (0, b"MZ", "pe"), (0, b"\xca\xfe\xba\xbe", "class"), (0, b"\xcf\xfa\xed\xfe", "macho"),
    (0, b"\x00asm", "wasm"), (0, b"SQLite format 3\x00", "sqlite"), (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (0, b"PACK", "git-pack"), (0, b"\xfftOc", "git-index"), (0, b"DIRC", "git-index"),
    (0, b"PGDMP", "pgdump"), (0, b"!<arch>\n", "ar"), (257, b"ustar", "tar"), (0, b"\x03\xd9\xa2\x9a", "kdbx"),
    (0, b"age-encryption.org/", "age"), (0, b"-----BEGIN PGP", "pgp"), (0, b"LUKS\xba\xbe", "luks"),
    (0, b"\xed\xab\xee\xdb", "rpm"), (0, b"\x00\x00\x00\x0cjP  ", "jp2"), (0, b"wOFF", "woff"), (0, b"wOF2", "woff"),
    (0, b"\x00\x01\x00\x00\x00", "ttf"), (0, b"OTTO", "otf"), (0, b"{\\rtf", "rtf"),
]
# Signatures at offset 0 by their first byte: one dict lookup and a startswith or two per file.
_BY_FIRST_BYTE: dict[int, list[tuple[bytes, str]]] = {}
for _offset, _signature, _label in _MAGIC:
    if _offset == 0:
        _BY_FIRST_BYTE.setdefault(_signature[0], []).append((_signature, _label))
_AT_OFFSET = [(offset, signature, label) for offset, signature, label in _MAGIC if offset]
_ZLIB_SECOND = {0x01, 0x5E, 0x9C, 0xDA}  # 0x78 then one of these: a zlib stream (git's loose objects)
_TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\f\b\x1b"

#: File names that ransom notes use (matched on the last component, case-insensitively). Narrow on
#: purpose: a README.txt is not a note, a README_TO_DECRYPT.txt is.
RANSOM_NOTE = re.compile(
    rb"(decrypt|ransom|restore[-_ ]?(my[-_ ]?)?files|recover[-_ ]?(your[-_ ]?)?files|how[-_ ]?to[-_ ]?(back|get|recover|restore)"
    rb"|your[-_ ]?files|files[-_ ]?encrypted|unlock[-_ ]?files|!!!.*read|read[-_ ]?me[-_ ]?now|_readme\.txt$)",
    re.IGNORECASE)


#: Histograms counted with ``collections.Counter`` before NumPy is imported for them: a files
#: backup of a small tree need not load NumPy at all (12.5 MiB of resident memory; its index is a
#: dict too, repository/index.py). A Counter costs ~0.1 ms per 4 KiB window against NumPy's
#: ~0.006 ms; importing NumPy costs ~0.13 s of CPU and ~10 MiB of resident memory, so the switch
#: comes after ~0.2 s of counting, where the two ways have cost about the same CPU: a backup of
#: up to ~2 GiB of files of no known type (two windows per chunk) never loads NumPy (1,024 before
#: issue 19's fifth round, which loaded it part-way through a 1 GiB tree, +10 MiB of its peak RSS).
#: The counts, and so every score and verdict, are the same either way.
COUNTED_WITHOUT_NUMPY = 2048
_counted = 0


def histogram(sample: bytes | memoryview) -> Any:
    """The byte histogram of ``sample``: a NumPy array of 256 counts, or a ``Counter`` of the byte
    values present while NumPy is not loaded and fewer than COUNTED_WITHOUT_NUMPY were counted.
    Either adds to one of its own kind (``+``) and goes to ``_chi_square``."""
    global _counted
    if not _numpy_loaded() and _counted < COUNTED_WITHOUT_NUMPY:
        _counted += 1  # a race between threads only moves the switch by a count or two
        return Counter(bytes(sample))
    return numpy.bincount(numpy.frombuffer(sample, dtype=numpy.uint8), minlength=256)


def _numpy_loaded() -> bool:
    return "numpy" in sys.modules


def _chi_square(counts: Any, length: int) -> float:
    # sum((c - E)^2 / E) with E = n / 256 is sum(c^2) * 256 / n - n: one integer dot product
    # instead of four float array operations (this runs for every chunk and every file).
    if isinstance(counts, Counter):
        return float(sum(count * count for count in counts.values()) * 256 / length - length)
    return float(int(numpy.dot(counts, counts)) * 256 / length - length)


def chi_square(sample: bytes | memoryview) -> float:
    """Pearson's chi-square of ``sample``'s byte histogram against the uniform distribution."""
    return _chi_square(histogram(sample), len(sample))


def sample_of(data: bytes) -> bytes | memoryview:
    """The bytes judged for ``data``'s randomness: its start and its middle, one window each."""
    if len(data) <= 2 * WINDOW:
        return data
    view = memoryview(data)
    middle = len(data) // 2
    return bytes(view[:WINDOW]) + bytes(view[middle: middle + WINDOW])


def looks_random(data: bytes) -> bool | None:
    """Whether ``data`` looks like uniformly random bytes (encrypted, or compressed well); None
    when it is too short to tell."""
    sample = sample_of(data)
    if len(sample) < MIN_SAMPLE:
        return None
    return chi_square(sample) < RANDOM_CHI_SQUARE


def chunk_randomness(data: bytes, first: bool) -> tuple[bool | None, bool | None]:
    """(the chunk's sample looks random, its first window looks random — only for a file's first
    chunk, else None). One histogram serves both: the sample starts with the first window."""
    if len(data) < SMALL_CHUNK:
        # A small chunk (most files are one) is judged on its first window alone: one histogram
        # of at most 4 KiB, which is also the file's first window when the chunk is its first.
        sample = memoryview(data)[:WINDOW]
        random = None if len(sample) < MIN_SAMPLE else _chi_square(histogram(sample), len(sample)) < RANDOM_CHI_SQUARE
        return random, random if first else None
    head = histogram(memoryview(data)[:WINDOW])
    middle = len(data) // 2
    tail = histogram(memoryview(data)[middle: middle + WINDOW])
    if type(head) is not type(tail):  # the switch to NumPy fell between the two windows
        head, tail = histogram(memoryview(data)[:WINDOW]), histogram(memoryview(data)[middle: middle + WINDOW])
    counts = head + tail
    chunk = _chi_square(counts, 2 * WINDOW) < RANDOM_CHI_SQUARE
    return chunk, (_chi_square(head, WINDOW) < RANDOM_CHI_SQUARE) if first else None


def image_chunk_randomness(data: bytes) -> tuple[bool | None, int]:
    """A disk chunk's randomness: (the chunk looks random: most of its windows do, None when too
    short; its map byte, CHUNK_UNKNOWN or 1 + the number of random windows). Eight 1 KiB windows
    spread over the chunk, histogrammed in one call: a chunk that is partly encrypted (a few files of
    a file system among others) counts for its share, at the cost of the two 4 KiB windows of files."""
    length = len(data)
    if length < IMAGE_WINDOWS * IMAGE_WINDOW:
        return None, CHUNK_UNKNOWN
    view = numpy.frombuffer(data, dtype=numpy.uint8)
    offsets = [min(i * length // IMAGE_WINDOWS, length - IMAGE_WINDOW) for i in range(IMAGE_WINDOWS)]
    keys = numpy.concatenate([view[o: o + IMAGE_WINDOW] for o in offsets]).astype(numpy.uint16)
    keys += _window_base()
    counts = numpy.bincount(keys, minlength=IMAGE_WINDOWS * 256).reshape(IMAGE_WINDOWS, 256).astype(numpy.int64)
    scores = (counts * counts).sum(axis=1) * 256 / IMAGE_WINDOW - IMAGE_WINDOW
    random_windows = int((scores < RANDOM_CHI_SQUARE).sum())
    return random_windows * 2 > IMAGE_WINDOWS, 1 + random_windows


@functools.cache
def _window_base():
    """Each window's offset into the joint histogram; built on first use, so that importing this
    module (every command that reads snapshots does) does not load NumPy."""
    return numpy.repeat(numpy.arange(IMAGE_WINDOWS, dtype=numpy.uint16) * 256, IMAGE_WINDOW)


def magic(first: bytes) -> str:
    """A label for the type the first bytes of a file claim (``data`` when none)."""
    if first:
        for signature, label in _BY_FIRST_BYTE.get(first[0], ()):
            if first.startswith(signature):
                return label
    for offset, signature, label in _AT_OFFSET:
        if first.startswith(signature, offset):
            return label
    if len(first) >= 2 and first[0] == 0x78 and first[1] in _ZLIB_SECOND and (first[0] * 256 + first[1]) % 31 == 0:
        return "zlib"
    head = first[:1024]
    if not head:
        return "empty"
    if b"\x00" not in head:
        # Text: printable ASCII or valid UTF-8 (a multi-byte character cut at the end of the
        # window is fine); random bytes are almost never valid UTF-8 for a kilobyte.
        if not head.translate(None, _TEXT_BYTES):
            return "text"
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
                return "text"
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "text"
    return "data"


def encrypted_looking(label: str | None, random: bool | None) -> bool:
    """Content of no known type that looks random (or is too short to tell)."""
    return label == "data" and random is not False


@dataclass
class ParentFile:
    """What a backup knows of a file of the parent snapshot without reading it."""

    size: int
    inode: int
    magic: str | None  # None: the parent was written before signals (or by a scan-less copy)
    random: bool | None


@dataclass
class _New:
    path: bytes
    size: int
    inode: int
    magic: str | None
    random: bool | None


def _examples() -> list:
    return []


@dataclass
class SignalCollector:
    """Sums up one snapshot's signals. ``file`` is called on the archiver's thread, ``chunk``
    from the pool's threads (it takes a lock)."""

    # path -> what the parent knew of the file; None: no parent (a first snapshot). Any mapping:
    # ``unpack`` turns its values into ParentFile, so the archiver passes the dict of tuples it
    # already holds instead of a second object per file (a parent of millions of files).
    parent: Mapping[bytes, Any] | None
    unpack: Callable[[Any], ParentFile] = lambda value: value
    files: int = 0
    added: int = 0
    modified: int = 0
    new_chunks: int = 0
    new_bytes: int = 0
    random_chunks: int = 0
    random_bytes: int = 0
    type_changed: int = 0
    type_changed_files: list = field(default_factory=_examples)
    image: bool = False  # an image snapshot: the per-extent counts below go into its signals
    overwritten_bytes: int = 0
    became_random_bytes: int = 0
    became_random_chunks: int = 0
    became_random_extents: list = field(default_factory=_examples)
    _added: list[_New] = field(default_factory=list)
    _seen: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def chunk(self, length: int, random: bool | None) -> None:
        """A chunk this snapshot stored (new to the repository); ``random`` None when not judged
        (a chunk of a file of a known type)."""
        with self._lock:
            self.new_chunks += 1
            self.new_bytes += length
            if random:
                self.random_chunks += 1
                self.random_bytes += length

    def extent(self, name: str, offset: int, length: int, old: int, new: int) -> None:
        """A new chunk of a disk at ``offset``: ``old`` and ``new`` its map bytes in the parent and
        now (CHUNK_UNKNOWN, or 1 + random windows). The plain share of the old data counts as
        overwritten, the windows that turned random as data that became random."""
        if old == CHUNK_UNKNOWN or new == CHUNK_UNKNOWN:
            return
        old_random, new_random = min(old - 1, IMAGE_WINDOWS), min(new - 1, IMAGE_WINDOWS)
        turned = max(0, new_random - old_random) * length // IMAGE_WINDOWS
        with self._lock:
            self.overwritten_bytes += (IMAGE_WINDOWS - old_random) * length // IMAGE_WINDOWS
            if turned:
                self.became_random_bytes += turned
                self.became_random_chunks += 1
                if len(self.became_random_extents) < EXAMPLES:
                    self.became_random_extents.append(f"{name}@{offset}+{length}")

    def file(self, path: bytes, size: int, inode: int, label: str | None, random: bool | None,
             read: bool) -> None:
        """A regular file of the snapshot; ``read``: its content was read (new or changed), else
        ``label``/``random`` are the parent's."""
        self.files += 1
        self._seen.add(path)
        if self.parent is None:
            return
        old = self.parent.get(path)
        if old is None:
            self._added.append(_New(path, size, inode, label, random))
        elif read:
            self.modified += 1
            self._compare(path, self.unpack(old), label, random)

    def _compare(self, path: bytes, old: ParentFile, label: str | None, random: bool | None) -> None:
        if not encrypted_looking(label, random) or old.magic in (None, "empty"):
            return
        # It was of a known type and is now random data (or data too short to judge: a note-sized
        # text encrypted); or it was of no type but not random, and now is, measurably.
        if old.magic != "data" or (old.random is False and random is True):
            self.type_changed += 1
            if len(self.type_changed_files) < EXAMPLES:
                self.type_changed_files.append(path)

    def finish(self) -> dict:
        """The snapshot's signals (``summary.signals``, docs/repository-format.md)."""
        signals: dict = {
            "version": SIGNALS_VERSION, "files": self.files, "first": self.parent is None,
            "new_chunks": self.new_chunks, "new_bytes": self.new_bytes,
            "random_chunks": self.random_chunks, "random_bytes": self.random_bytes,
        }
        if self.image and self.parent is not None:
            signals.update({"overwritten_bytes": self.overwritten_bytes,
                            "became_random_bytes": self.became_random_bytes,
                            "became_random_chunks": self.became_random_chunks,
                            "examples": {"became_random": list(self.became_random_extents)}})
            return signals
        if self.parent is None:
            return signals
        deleted = {path: self.unpack(old) for path, old in self.parent.items() if path not in self._seen}
        by_inode: dict[tuple[int, int], bytes] = {(old.inode, old.size): path for path, old in deleted.items()
                                                 if old.inode}
        renamed = 0
        random_unknown: list[bytes] = []
        random_unknown_count = 0
        notes: list[bytes] = []
        notes_count = 0
        gained: dict[bytes, list] = {}  # new extension -> [count, examples]
        for new in self._added:
            counterpart = None
            key = (new.inode, new.size)
            if new.inode and key in by_inode:
                renamed += 1
                counterpart = by_inode.pop(key)
            stem, dot, extension = new.path.rpartition(b".")
            if dot and b"/" not in extension and 0 < len(extension) <= 32:
                old_path = counterpart if counterpart is not None else (stem if stem in deleted else None)
                # Only content that looks encrypted counts: 'gzip *.log' gives many '.gz' too.
                if (old_path is not None and not old_path.endswith(b"." + extension)
                        and encrypted_looking(new.magic, new.random)):
                    entry = gained.setdefault(extension.lower(), [0, []])
                    entry[0] += 1
                    if len(entry[1]) < EXAMPLES:
                        entry[1].append(new.path)
                if counterpart is None and stem in deleted:
                    counterpart = stem
            if counterpart is not None:
                # Encrypted into a new name (or renamed then encrypted): judged against the file
                # it replaces, as a modification.
                self._compare(new.path, deleted[counterpart], new.magic, new.random)
            elif encrypted_looking(new.magic, new.random):
                random_unknown_count += 1
                if len(random_unknown) < EXAMPLES:
                    random_unknown.append(new.path)
            if RANSOM_NOTE.search(new.path.rpartition(b"/")[2]):
                notes_count += 1
                if len(notes) < EXAMPLES:
                    notes.append(new.path)
        churn_extension, (churn, churn_files) = max(gained.items(), key=lambda kv: kv[1][0],
                                                    default=(b"", (0, [])))
        signals.update({
            "added": len(self._added), "deleted": len(deleted), "modified": self.modified, "renamed": renamed,
            "parent_files": len(self.parent),
            "type_changed": self.type_changed, "random_unknown_added": random_unknown_count,
            "extension_churn": churn, "churn_extension": churn_extension, "ransom_notes": notes_count,
            "examples": {"type_changed": self.type_changed_files, "random_unknown_added": random_unknown,
                         "extension_churn": churn_files, "ransom_notes": notes},
        })
        return signals


__all__ = ["CHUNK_PLAIN", "CHUNK_RANDOM", "CHUNK_UNKNOWN", "IMAGE_WINDOWS", "ParentFile", "image_chunk_randomness", "SignalCollector", "chi_square", "chunk_randomness", "encrypted_looking", "looks_random", "magic",
           "RANSOM_NOTE", "SIGNALS_VERSION"]
