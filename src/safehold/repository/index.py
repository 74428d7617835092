"""The in-memory blob index: blob id -> (pack, offset, length, plaintext length, type).

Compact by design: a repository of tens of millions of chunks must fit in the
memory of a small host, so entries live in parallel NumPy arrays sorted by the
first 8 bytes of the id (49 bytes per entry), not in a dict of Python objects
(~250 bytes per entry). New entries go to a small dict that is merged into the
arrays when it grows past an eighth of them, keeping the amortised cost of
adding low and lookups at O(log n).

Stored index objects hold, per pack, the packed entries of its blobs (the
``ENTRY`` layout below), encrypted as any metadata object.

A small index never imports NumPy (12.5 MiB of resident memory and ~0.1 s of CPU to import, a
tenth of a small backup's peak RSS): up to ``MIN_MERGE`` entries (16,384, ~4 MiB as a dict:
16 GiB of data in 1 MiB chunks) everything stays in the dict, loaded from the stored records
with ``struct``; the arrays are made when the index outgrows it.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

from .lazy_numpy import LazyNumpy
from .pack import BlobType, PackEntry


# NumPy loads on first use (lazy_numpy): listing snapshots opens a repository but never
# touches the index's arrays.
np = LazyNumpy()
_ENTRY_FIELDS = [("id", "V32"), ("type", "u1"), ("offset", "<u4"), ("length", "<u4"), ("plain", "<u4")]
#: The same record for ``struct`` (packed, little-endian: 45 bytes), byte for byte the dtype's.
_RECORD = struct.Struct("<32sBIII")
ENTRY_SIZE = _RECORD.size
_entry_dtype = None


def entry_dtype():
    """The record type of a stored index entry (a numpy dtype, made on first use)."""
    global _entry_dtype
    if _entry_dtype is None:
        _entry_dtype = np.dtype(_ENTRY_FIELDS)
    return _entry_dtype


def __getattr__(name: str):
    # ENTRY_DTYPE stays importable (bench/index_memory.py) without importing numpy with this module.
    if name == "ENTRY_DTYPE":
        return entry_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class BlobLocation:
    pack: str
    blob_type: BlobType
    offset: int
    length: int
    plain_length: int


def encode_entries(entries: Iterable[PackEntry]) -> bytes:
    """The stored records of ``entries`` (``struct``: no NumPy for a backup's new index object)."""
    return b"".join(_RECORD.pack(e.blob_id, int(e.blob_type), e.offset, e.length, e.plain_length) for e in entries)


def decode_entries(data: bytes) -> np.ndarray:
    """The stored records as a NumPy array (``Index.stage_pack`` also takes the bytes themselves)."""
    return np.frombuffer(data, dtype=entry_dtype())


def _count(entries: np.ndarray | memoryview) -> int:
    """Records in a staged part (an array, or the stored bytes)."""
    return len(entries) if hasattr(entries, "dtype") else len(entries) // ENTRY_SIZE


def _records(data: bytes | memoryview) -> memoryview:
    """Stored records (hostile input: the length is checked, as ``np.frombuffer`` checks it)."""
    view = memoryview(data).cast("B")
    if len(view) % ENTRY_SIZE:
        raise ValueError(f"buffer size must be a multiple of element size ({len(view)} bytes, records of {ENTRY_SIZE})")
    return view


_ARRAYS = {"_keys": (0, "uint64"), "_rest": ((0, 24), "uint8"), "_pack": (0, "uint32"), "_offset": (0, "uint32"),
           "_length": (0, "uint32"), "_plain": (0, "uint32"), "_type": (0, "uint8")}


class Index:
    """Thread-safe blob index. ``add_pack`` and lookups may run concurrently.

    ``MIN_MERGE``: entries kept in the dict before the arrays are made (and NumPy imported); past
    it, the dict is merged into the arrays when it grows past an eighth of them."""

    MIN_MERGE = 16384

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        # The sorted arrays (_keys, _rest, _pack, _offset, _length, _plain, _type) are made empty
        # on first use (__getattr__), so an index nobody queries never imports numpy.
        self._pending: dict[bytes, tuple[int, int, int, int, int]] = {}
        self._staged: list[tuple[int, np.ndarray]] = []
        # A small loaded index (finish_loading): the stored records as they were staged, kept to
        # make the arrays exactly as a large index makes them if it outgrows the dict (or entries()
        # is asked: check and prune see every copy of a blob), and the dict of the first copy of
        # each blob that lookups read after _pending.
        self._small: list[tuple[int, np.ndarray | memoryview]] = []
        self._loaded: dict[bytes, tuple[int, int, int, int, int]] = {}
        self._loaded_count = 0  # records in _small, copies of one blob included

    def __getattr__(self, name: str):
        # Called only for an attribute not set yet: the arrays, before anything used them.
        if name not in _ARRAYS:
            raise AttributeError(name)
        for array, (shape, dtype) in _ARRAYS.items():
            self.__dict__.setdefault(array, np.zeros(shape, dtype=dtype))  # setdefault: a racing first use keeps one set
        return self.__dict__[name]

    # -- building -----------------------------------------------------------
    def _pack_number(self, pack: str) -> int:
        number = self._pack_numbers.get(pack)
        if number is None:
            number = self._pack_numbers[pack] = len(self.packs)
            self.packs.append(pack)
        return number

    def stage_pack(self, pack: str, entries: np.ndarray | bytes) -> None:
        """Bulk-load entries (from a stored index: its records as bytes, or ``decode_entries``'s
        array) without merging yet; call ``finish_loading``. ValueError for records of a wrong length."""
        if not hasattr(entries, "dtype"):
            entries = _records(entries)
        with self._lock:
            self._staged.append((self._pack_number(pack), entries))

    def _merged(self) -> int:
        """Entries in the arrays (0, without making them, before anything needed them)."""
        keys = self.__dict__.get("_keys")
        return 0 if keys is None else len(keys)

    def finish_loading(self) -> None:
        with self._lock:
            if not self._staged:
                return
            staged = sum(_count(entries) for _, entries in self._staged)
            if self._merged() == 0 and staged + self._loaded_count + len(self._pending) <= self.MIN_MERGE:
                # A small index: a dict, no NumPy. Among copies of one blob in several stored
                # packs the first staged is found, as the arrays' stable merge finds it; what
                # add_pack put in _pending is newer and is found first, as with the arrays.
                for number, entries in self._staged:
                    records = entries.tobytes() if hasattr(entries, "dtype") else entries
                    for blob_id, blob_type, offset, length, plain in _RECORD.iter_unpack(records):
                        self._loaded.setdefault(blob_id, (number, blob_type, offset, length, plain))
                self._small += self._staged
                self._loaded_count += staged
                self._staged = []
                return
            self._staged = self._small + self._staged  # outgrown: every record into the arrays
            self._small, self._loaded, self._loaded_count = [], {}, 0
            self._merge_staged()

    def _merge_staged(self) -> None:
        parts = [entries if hasattr(entries, "dtype") else np.frombuffer(entries, dtype=entry_dtype())
                 for _, entries in self._staged]
        numbers = np.concatenate(
            [np.full(len(part), number, dtype=np.uint32) for (number, _), part in zip(self._staged, parts)]
        )
        self._staged = []
        merged = np.concatenate(parts) if parts else np.zeros(0, dtype=entry_dtype())
        self._merge_arrays(merged, numbers)

    def add_pack(self, pack: str, entries: Iterable[PackEntry]) -> None:
        with self._lock:
            number = self._pack_number(pack)
            for e in entries:
                self._pending[e.blob_id] = (number, int(e.blob_type), e.offset, e.length, e.plain_length)
            if len(self._pending) + self._loaded_count > max(self.MIN_MERGE, self._merged() // 8):
                self._merge_pending()

    def _merge_pending(self) -> None:
        if self._small:  # a small loaded index becomes the arrays first, as a large one loads
            unfinished = self._staged  # staged, not finished loading: left for finish_loading
            self._staged, self._small, self._loaded, self._loaded_count = self._small, [], {}, 0
            self._merge_staged()
            self._staged = unfinished
        if not self._pending:
            return
        array = np.zeros(len(self._pending), dtype=entry_dtype())
        numbers = np.zeros(len(self._pending), dtype=np.uint32)
        for i, (blob_id, (number, blob_type, offset, length, plain)) in enumerate(self._pending.items()):
            array[i] = (blob_id, blob_type, offset, length, plain)
            numbers[i] = number
        self._pending = {}
        self._merge_arrays(array, numbers)

    def _merge_arrays(self, entries: np.ndarray, numbers: np.ndarray) -> None:
        # New entries go first and the sort is stable, so among copies of one blob
        # (a repack, two racing backups) lookups find the newest location.
        raw = np.frombuffer(entries["id"].tobytes(), dtype=np.uint8).reshape(-1, 32)
        keys = raw[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64)
        keys = np.concatenate([keys, self._keys])
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._rest = np.concatenate([raw[:, 8:], self._rest])[order]
        self._pack = np.concatenate([numbers, self._pack])[order]
        self._offset = np.concatenate([entries["offset"].astype(np.uint32), self._offset])[order]
        self._length = np.concatenate([entries["length"].astype(np.uint32), self._length])[order]
        self._plain = np.concatenate([entries["plain"].astype(np.uint32), self._plain])[order]
        self._type = np.concatenate([entries["type"].astype(np.uint8), self._type])[order]

    # -- queries ------------------------------------------------------------
    def _find(self, blob_id: bytes) -> int:
        if self._merged() == 0:
            return -1  # no arrays (yet): a small index lives in the dict alone
        key = np.uint64(int.from_bytes(blob_id[:8], "big"))
        keys = self._keys
        i = int(np.searchsorted(keys, key, side="left"))
        rest = blob_id[8:]
        while i < len(keys) and keys[i] == key:
            if self._rest[i].tobytes() == rest:
                return i
            i += 1
        return -1

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        with self._lock:
            pending = self._pending.get(blob_id)
            if pending is not None:
                number, blob_type, offset, length, plain = pending
                return BlobLocation(self.packs[number], BlobType(blob_type), offset, length, plain)
            loaded = self._loaded.get(blob_id)
            if loaded is not None:
                number, blob_type, offset, length, plain = loaded
                return BlobLocation(self.packs[number], BlobType(blob_type), offset, length, plain)
            i = self._find(blob_id)
            if i < 0:
                return None
            return BlobLocation(
                self.packs[int(self._pack[i])], BlobType(int(self._type[i])), int(self._offset[i]),
                int(self._length[i]), int(self._plain[i]),
            )

    def __contains__(self, blob_id: bytes) -> bool:
        with self._lock:
            return blob_id in self._pending or blob_id in self._loaded or self._find(blob_id) >= 0

    def __len__(self) -> int:
        with self._lock:
            return self._merged() + self._loaded_count + len(self._pending)

    def entries(self) -> Iterator[tuple[bytes, BlobLocation]]:
        """Every (id, location), duplicates included. For check and prune."""
        with self._lock:
            self._merge_pending()
            keys, rest, packs = self._keys, self._rest, self._pack
            types, offsets, lengths, plains = self._type, self._offset, self._length, self._plain
        for i in range(len(keys)):
            blob_id = int(keys[i]).to_bytes(8, "big") + rest[i].tobytes()
            yield blob_id, BlobLocation(
                self.packs[int(packs[i])], BlobType(int(types[i])), int(offsets[i]), int(lengths[i]), int(plains[i])
            )

    def memory_bytes(self) -> int:
        """The arrays' bytes, plus for the dicts (a small index, and what is pending) the size of
        the dicts and of their keys and tuples (``sys.getsizeof``; the integers not counted).
        Makes no arrays, so a small index still imports no NumPy."""
        import sys

        with self._lock:
            total = sum(array.nbytes for name in _ARRAYS if (array := self.__dict__.get(name)) is not None)
            for entries in (self._loaded, self._pending):
                total += sys.getsizeof(entries)
                total += sum(sys.getsizeof(key) + sys.getsizeof(value) for key, value in entries.items())
        return total
