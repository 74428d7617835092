"""Blobs (compress, encrypt, bind type and id) and packs (blobs plus an encrypted header)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.repository.crypto import Cipher, DecryptionFailed, MasterKey, OVERHEAD
from safehold.repository.pack import (
    HEADER_ENTRY,
    RAW,
    ZSTD,
    BlobType,
    PackBuilder,
    PackEntry,
    decode_blob,
    encode_blob,
    pack_name_of,
    read_pack_header,
)

CIPHER = Cipher(MasterKey.generate())

random_data = st.binary(max_size=20_000)
compressible_data = st.builds(
    lambda unit, repeat: unit * repeat, st.binary(min_size=1, max_size=64), st.integers(1, 2000)
)
any_data = st.one_of(random_data, compressible_data)
blob_types = st.sampled_from(list(BlobType))
levels = st.sampled_from([None, 1, 3, 19])


def stored_flag(stored: bytes, blob_type: BlobType, blob_id: bytes) -> int:
    """Peek at the compression flag (inside the encryption) the way decode_blob does."""
    from safehold.repository.pack import blob_associated_data

    return CIPHER.decrypt(stored, blob_associated_data(blob_type, blob_id))[0]


@settings(max_examples=150, deadline=None)
@given(data=any_data, blob_type=blob_types, level=levels)
def test_encode_decode_round_trip(data: bytes, blob_type: BlobType, level: int | None) -> None:
    blob_id = CIPHER.blob_id(data)
    stored = encode_blob(CIPHER, blob_type, blob_id, data, level)
    assert decode_blob(CIPHER, blob_type, blob_id, stored, len(data)) == data
    assert decode_blob(CIPHER, blob_type, blob_id, memoryview(stored)) == data  # no length hint
    # Compression only when it shrinks: the stored blob is never bigger than raw plus overhead.
    assert len(stored) <= len(data) + 1 + OVERHEAD


@settings(max_examples=50, deadline=None)
@given(data=compressible_data.filter(lambda d: len(d) >= 4096))
def test_compressible_data_is_stored_compressed(data: bytes) -> None:
    blob_id = CIPHER.blob_id(data)
    stored = encode_blob(CIPHER, BlobType.DATA, blob_id, data)
    assert stored_flag(stored, BlobType.DATA, blob_id) == ZSTD
    assert len(stored) < len(data) // 4


def test_random_data_and_disabled_compression_are_stored_raw() -> None:
    data = os.urandom(100_000)
    blob_id = CIPHER.blob_id(data)
    stored = encode_blob(CIPHER, BlobType.DATA, blob_id, data)
    assert stored_flag(stored, BlobType.DATA, blob_id) == RAW
    text = b"compressible " * 1000
    text_id = CIPHER.blob_id(text)
    assert stored_flag(encode_blob(CIPHER, BlobType.DATA, text_id, text, None), BlobType.DATA, text_id) == RAW


@settings(max_examples=50, deadline=None)
@given(data=any_data, other=st.binary(min_size=32, max_size=32), blob_type=blob_types)
def test_a_blob_moved_to_another_id_or_type_fails(data: bytes, other: bytes, blob_type: BlobType) -> None:
    blob_id = CIPHER.blob_id(data)
    stored = encode_blob(CIPHER, blob_type, blob_id, data)
    if other != blob_id:
        with pytest.raises(DecryptionFailed):
            decode_blob(CIPHER, blob_type, other, stored)
    wrong_type = BlobType.TREE if blob_type is BlobType.DATA else BlobType.DATA
    with pytest.raises(DecryptionFailed):
        decode_blob(CIPHER, wrong_type, blob_id, stored)


def test_a_blob_stored_under_an_id_that_is_not_its_content_fails() -> None:
    # An encrypter with the key (a buggy writer) stores data under the wrong id: the reader notices.
    data, other = b"actual content", b"claimed content"
    wrong_id = CIPHER.blob_id(other)
    stored = encode_blob(CIPHER, BlobType.DATA, wrong_id, data)
    with pytest.raises(DecryptionFailed, match="id"):
        decode_blob(CIPHER, BlobType.DATA, wrong_id, stored)


def test_a_blob_from_another_repository_fails() -> None:
    data = b"x" * 1000
    other = Cipher(MasterKey.generate())
    stored = encode_blob(other, BlobType.DATA, CIPHER.blob_id(data), data)
    with pytest.raises(DecryptionFailed):
        decode_blob(CIPHER, BlobType.DATA, CIPHER.blob_id(data), stored)


def test_a_flipped_byte_in_a_compressed_blob_fails() -> None:
    data = b"abc" * 10_000
    blob_id = CIPHER.blob_id(data)
    stored = bytearray(encode_blob(CIPHER, BlobType.DATA, blob_id, data))
    stored[len(stored) // 2] ^= 0x40
    with pytest.raises(DecryptionFailed):
        decode_blob(CIPHER, BlobType.DATA, blob_id, bytes(stored))


# --- packs -------------------------------------------------------------------------------------

blob_lists = st.lists(st.tuples(any_data, blob_types), max_size=12)


def build(blobs: list[tuple[bytes, BlobType]]) -> tuple[str, bytes, list[PackEntry]]:
    builder = PackBuilder()
    for data, blob_type in blobs:
        blob_id = CIPHER.blob_id(data)
        builder.add(blob_type, blob_id, encode_blob(CIPHER, blob_type, blob_id, data), len(data))
    assert len(builder) == len(blobs)
    name, parts, entries = builder.finish(CIPHER)
    return name, b"".join(parts), entries


@settings(max_examples=60, deadline=None)
@given(blobs=blob_lists)
def test_pack_builder_and_header_round_trip(blobs: list[tuple[bytes, BlobType]]) -> None:
    name, pack, entries = build(blobs)
    assert name == pack_name_of(pack)
    assert read_pack_header(CIPHER, pack) == entries
    offset = 0
    for (data, blob_type), entry in zip(blobs, entries):
        assert entry.offset == offset and entry.blob_type is blob_type and entry.plain_length == len(data)
        stored = pack[entry.offset : entry.offset + entry.length]
        assert decode_blob(CIPHER, blob_type, entry.blob_id, stored, entry.plain_length) == data
        offset += entry.length


def test_pack_name_is_the_hash_of_its_bytes() -> None:
    name, pack, _ = build([(b"a" * 100, BlobType.DATA)])
    damaged = bytearray(pack)
    damaged[0] ^= 1
    assert pack_name_of(bytes(damaged)) != name


def test_header_reveals_nothing_in_the_clear() -> None:
    data = b"plain text that must not appear" * 10
    _, pack, entries = build([(data, BlobType.DATA)])
    assert entries[0].blob_id not in pack
    assert b"plain text" not in pack


@pytest.mark.parametrize("where", ["header", "length", "blob-region"])
def test_damaged_header_is_detected(where: str) -> None:
    _, pack, entries = build([(os.urandom(500), BlobType.DATA), (b"t" * 300, BlobType.TREE)])
    damaged = bytearray(pack)
    if where == "header":
        damaged[-10] ^= 1
    elif where == "length":
        (header_length,) = struct.unpack("<I", pack[-4:])
        damaged[-4:] = struct.pack("<I", header_length + 1)
    else:
        # A changed blob region leaves the header valid (blobs authenticate themselves) ...
        damaged[3] ^= 1
        assert read_pack_header(CIPHER, bytes(damaged)) == entries
        stored = bytes(damaged[entries[0].offset : entries[0].offset + entries[0].length])
        with pytest.raises(DecryptionFailed):  # ... but the blob does not decode
            decode_blob(CIPHER, BlobType.DATA, entries[0].blob_id, stored)
        return
    with pytest.raises(DecryptionFailed):
        read_pack_header(CIPHER, bytes(damaged))


@pytest.mark.parametrize("size", [0, 3, 4, 20])
def test_truncated_pack_is_detected(size: int) -> None:
    _, pack, _ = build([(b"x" * 100, BlobType.DATA)])
    with pytest.raises(DecryptionFailed):
        read_pack_header(CIPHER, pack[:size])


def test_pack_with_bytes_prepended_is_detected() -> None:
    # The header must cover the whole pack, so extra bytes anywhere are noticed.
    _, pack, _ = build([(b"x" * 100, BlobType.DATA)])
    with pytest.raises(DecryptionFailed, match="cover"):
        read_pack_header(CIPHER, b"junk" + pack)


def test_header_of_another_repository_fails() -> None:
    _, pack, _ = build([(b"x" * 100, BlobType.DATA)])
    with pytest.raises(DecryptionFailed):
        read_pack_header(Cipher(MasterKey.generate()), pack)


def test_header_entry_layout_is_fixed() -> None:
    # Part of the on-disk format (docs/repository-format.md): changing it needs a new format version.
    assert HEADER_ENTRY.format == "<B32sII" and HEADER_ENTRY.size == 41
    assert [t.value for t in BlobType] == [0, 1]
