"""Blobs and packs.

A blob is one chunk of file or image content (``DATA``) or of a snapshot's
item stream (``TREE``). Stored form::

    encrypt( flag || body , associated = "safehold-blob" || type || id )

where ``flag`` is 0 for a raw body and 1 for a zstd frame (used only when it
shrinks the blob). Binding type and id into the associated data means a blob
moved to another id or type fails authentication.

A pack is a sequence of stored blobs followed by an encrypted header and the
header's length (4 bytes, little endian)::

    blob_1 ... blob_n  encrypt(header, "safehold-pack-header")  uint32(len)

The header lists, in pack order, each blob's type (1 byte), id (32), stored
length (4) and plaintext length (4); offsets follow from the order. A pack is
named by the BLAKE3 hash of its bytes, so ``check --read-data`` can tell a
damaged pack from its name alone.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable

import blake3
import zstandard

from .crypto import Cipher, DecryptionFailed, ID_SIZE


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


RAW, ZSTD = 0, 1
HEADER_ENTRY = struct.Struct("<B32sII")  # type, id, stored length, plaintext length
_HEADER_AAD = b"safehold-pack-header"
_BLOB_AAD = b"safehold-blob"
DEFAULT_COMPRESSION_LEVEL = 3


def blob_associated_data(blob_type: BlobType, blob_id: bytes) -> bytes:
    return _BLOB_AAD + bytes((blob_type,)) + blob_id


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; one per thread and level.
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def encode_blob(cipher: Cipher, blob_type: BlobType, blob_id: bytes, data: bytes | memoryview,
                compression: int | None = DEFAULT_COMPRESSION_LEVEL) -> bytes | bytearray:
    """Compress when it helps, then encrypt. Safe to call from many threads. The stored blob may
    be a bytearray (``Cipher.encrypt_buffer``)."""
    body: bytes | memoryview = data
    flag = RAW
    if compression is not None and len(data) > 64:
        packed = _compressor(compression).compress(data)
        if len(packed) < len(data):
            body, flag = packed, ZSTD
    return cipher.encrypt_buffer(bytes((flag,)) + bytes(body), blob_associated_data(blob_type, blob_id))


def encode_blob_body(cipher: Cipher, blob_type: BlobType, blob_id: bytes, body: bytes) -> bytes:
    """Encrypt a body that ``decode_blob_body`` returned (its flag byte and payload, compressed or
    not, proven to decode to the plaintext of ``blob_id``) as it is: a copy between repositories
    that compress alike moves the zstd frame without compressing it again."""
    return cipher.encrypt(body, blob_associated_data(blob_type, blob_id))


def decode_blob_body(cipher: Cipher, blob_type: BlobType, blob_id: bytes, stored: bytes | memoryview,
                     plain_length: int | None = None) -> tuple[bytes, bytes]:
    """Decrypt, decompress and verify the id; returns (the body: flag byte and payload as stored,
    the plaintext). Raises DecryptionFailed on any mismatch."""
    body = cipher.decrypt(stored, blob_associated_data(blob_type, blob_id))
    if body[0] == ZSTD:
        data = _decompressor().decompress(memoryview(body)[1:], max_output_size=plain_length or 0)
    elif body[0] == RAW:
        data = body[1:]
    else:
        raise DecryptionFailed(f"unknown blob flag {body[0]}")
    if cipher.blob_id(data) != blob_id:
        raise DecryptionFailed("content does not match its id")
    return body, data


def decode_blob(cipher: Cipher, blob_type: BlobType, blob_id: bytes, stored: bytes | memoryview,
                plain_length: int | None = None) -> bytes:
    """Decrypt, decompress and verify the id. Raises DecryptionFailed on any mismatch."""
    return decode_blob_body(cipher, blob_type, blob_id, stored, plain_length)[1]


@dataclass(frozen=True)
class PackEntry:
    blob_type: BlobType
    blob_id: bytes
    offset: int
    length: int
    plain_length: int


class PackBuilder:
    """Accumulates stored blobs until the pack is full. Not thread-safe.

    ``spool``: makes a file-like object (``write``) that the pack is written into blob by blob, hashed
    as it goes, instead of holding its blobs in memory (a local repository's temporary file,
    ``LocalBackend.spool``); called on the first ``add``, so an empty builder touches nothing.
    ``finish`` then returns no parts and the spool is in ``self.spool``."""

    def __init__(self, spool: Callable[[], Any] | None = None) -> None:
        self.parts: list[bytes] = []
        self.entries: list[PackEntry] = []
        self.size = 0
        self._open_spool = spool
        self.spool: Any = None
        self._hasher: Any = None
        self._failed: BaseException | None = None

    def add(self, blob_type: BlobType, blob_id: bytes, stored: bytes, plain_length: int) -> None:
        if self._open_spool is not None:
            if self._failed is not None:  # a pack that failed to write stays failed
                raise self._failed
            if self.spool is None:
                self.spool = self._open_spool()
                self._hasher = blake3.blake3()
            try:
                self.spool.write(stored)
            except BaseException as exc:
                # A partly written blob: the pack is lost; its temporary file goes now, not at exit.
                self._failed = exc
                self.spool.discard()
                raise
            self._hasher.update(stored)
        else:
            self.parts.append(stored)
        self.entries.append(PackEntry(blob_type, blob_id, self.size, len(stored), plain_length))
        self.size += len(stored)

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, cipher: Cipher) -> tuple[str, list[bytes], list[PackEntry]]:
        """Return (pack name, the pack as a list of parts, entries).

        The parts are handed to the backend as they are: joining them would hold
        a second copy of every pack in memory while it is written. With a spool the
        header goes into it too and the list is empty: the pack is ``self.spool``.
        """
        header = b"".join(
            HEADER_ENTRY.pack(e.blob_type, e.blob_id, e.length, e.plain_length) for e in self.entries
        )
        sealed = cipher.encrypt(header, _HEADER_AAD)
        if self.spool is not None:
            if self._failed is not None:
                raise self._failed
            try:
                for part in (sealed, struct.pack("<I", len(sealed))):
                    self.spool.write(part)
                    self._hasher.update(part)
            except BaseException:
                self.spool.discard()
                raise
            return self._hasher.hexdigest(), [], self.entries
        parts = self.parts + [sealed, struct.pack("<I", len(sealed))]
        self.parts = []
        hasher = blake3.blake3()
        for part in parts:
            hasher.update(part)
        return hasher.hexdigest(), parts, self.entries


def pack_name_of(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def read_pack_header(cipher: Cipher, data: bytes) -> list[PackEntry]:
    """Parse the header of a whole pack held in memory; raises DecryptionFailed when damaged."""
    return read_pack_header_from_tail(cipher, data, len(data))


# The last bytes of a pack that hold its header in one read: 41 bytes a blob, so about 1,500 blobs
# (a pack of 1 MiB chunks holds 16 to 32). A longer header costs a second, exact read.
HEADER_TAIL_READ = 64 * 1024


def header_length_of(tail: bytes, pack_size: int) -> int:
    """The encrypted header's length from a pack's last bytes; raises DecryptionFailed if it cannot be."""
    if pack_size < 4 or len(tail) < 4:
        raise DecryptionFailed("pack too short")
    (header_length,) = struct.unpack("<I", tail[-4:])
    if header_length + 4 > pack_size:
        raise DecryptionFailed("pack header length out of range")
    return header_length


def read_pack_header_from_tail(cipher: Cipher, tail: bytes, pack_size: int) -> list[PackEntry]:
    """Parse a pack's header from the last ``len(tail)`` bytes of a pack of ``pack_size`` bytes.

    The tail must hold the whole encrypted header and its length (see :func:`header_length_of`).
    Everything here is hostile input: the length is bounded by the pack's size, the header is
    authenticated before it is parsed, and its entries must cover the pack exactly. Raises
    DecryptionFailed when the header is damaged or does not match the pack."""
    header_length = header_length_of(tail, pack_size)
    if header_length + 4 > len(tail):
        raise DecryptionFailed("pack header is longer than the bytes read")
    header = cipher.decrypt(tail[len(tail) - 4 - header_length : len(tail) - 4], _HEADER_AAD)
    if len(header) % HEADER_ENTRY.size:
        raise DecryptionFailed("pack header has a partial entry")
    entries = []
    offset = 0
    for blob_type, blob_id, length, plain_length in HEADER_ENTRY.iter_unpack(header):
        if blob_type not in (BlobType.DATA, BlobType.TREE):
            raise DecryptionFailed(f"pack header names an unknown blob type {blob_type}")
        entries.append(PackEntry(BlobType(blob_type), blob_id, offset, length, plain_length))
        offset += length
    if offset != pack_size - 4 - header_length:
        raise DecryptionFailed("pack header does not cover the pack")
    return entries


assert HEADER_ENTRY.size == 1 + ID_SIZE + 8
