"""The compact in-memory index: lookups across packs, batches and merges."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.repository.index import BlobLocation, Index, decode_entries, encode_entries
from safehold.repository.pack import BlobType, PackEntry

ids = st.binary(min_size=32, max_size=32)


def entry(blob_id: bytes, n: int) -> PackEntry:
    return PackEntry(BlobType(n % 2), blob_id, n * 100, 50 + n % 1000, 70 + n)


def location(pack: str, e: PackEntry) -> BlobLocation:
    return BlobLocation(pack, e.blob_type, e.offset, e.length, e.plain_length)


@settings(max_examples=80, deadline=None)
@given(
    blob_ids=st.lists(ids, unique=True, max_size=300),
    batch_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=20),
    min_merge=st.integers(1, 64),
    unknown=st.lists(ids, max_size=20),
    data=st.data(),
)
def test_every_lookup_finds_the_right_location(blob_ids, batch_sizes, min_merge, unknown, data) -> None:
    index = Index()
    index.MIN_MERGE = min_merge  # low, so batches cross the merge threshold many times
    expected: dict[bytes, BlobLocation] = {}
    position, batch = 0, 0
    while position < len(blob_ids):
        size = batch_sizes[batch % len(batch_sizes)]
        pack = f"pack{batch:04d}"
        entries = [entry(b, position + i) for i, b in enumerate(blob_ids[position : position + size])]
        index.add_pack(pack, entries)
        expected.update((e.blob_id, location(pack, e)) for e in entries)
        position += size
        batch += 1
        # Lookups interleaved with adding, while some entries are pending and some merged.
        probe = data.draw(st.sampled_from(sorted(expected)), label="probe")
        assert index.lookup(probe) == expected[probe]
    assert len(index) == len(expected)
    for blob_id, where in expected.items():
        assert index.lookup(blob_id) == where
        assert blob_id in index
    for blob_id in unknown:
        if blob_id not in expected:
            assert index.lookup(blob_id) is None
            assert blob_id not in index
    assert dict(index.entries()) == expected
    # entries() merges what was pending; lookups still agree afterwards.
    for blob_id, where in expected.items():
        assert index.lookup(blob_id) == where


@settings(max_examples=60, deadline=None)
@given(prefix=st.binary(min_size=8, max_size=8), suffixes=st.lists(st.binary(min_size=24, max_size=24),
                                                                    unique=True, min_size=2, max_size=30),
       min_merge=st.integers(1, 8))
def test_ids_sharing_the_first_8_bytes_are_told_apart(prefix: bytes, suffixes: list[bytes], min_merge: int) -> None:
    index = Index()
    index.MIN_MERGE = min_merge
    blob_ids = [prefix + s for s in suffixes]
    for n, blob_id in enumerate(blob_ids[:-1]):
        index.add_pack(f"pack{n}", [entry(blob_id, n)])
    list(index.entries())  # force a merge
    for n, blob_id in enumerate(blob_ids[:-1]):
        assert index.lookup(blob_id) == location(f"pack{n}", entry(blob_id, n))
    missing = blob_ids[-1]  # same 8-byte key as everything stored, but not stored
    assert index.lookup(missing) is None
    assert missing not in index


def test_min_merge_can_be_lowered_per_test(monkeypatch: pytest.MonkeyPatch) -> None:
    # The class attribute is what the hypothesis tests rely on: pending entries really merge.
    monkeypatch.setattr(Index, "MIN_MERGE", 2)
    index = Index()
    index.add_pack("p", [entry(os.urandom(32), n) for n in range(3)])
    assert index._pending == {} and len(index._keys) == 3


def test_stage_and_finish_loading_matches_add_pack() -> None:
    packs = {f"pack{p}": [entry(os.urandom(32), p * 10 + i) for i in range(10)] for p in range(5)}
    loaded, added = Index(), Index()
    for pack, entries in packs.items():
        loaded.stage_pack(pack, decode_entries(encode_entries(entries)))
        added.add_pack(pack, entries)
    loaded.finish_loading()
    assert dict(loaded.entries()) == dict(added.entries())
    assert loaded.packs == list(packs)


def test_encode_decode_entries_round_trip() -> None:
    entries = [entry(os.urandom(32), n) for n in range(20)]
    decoded = decode_entries(encode_entries(entries))
    assert len(decoded) == 20
    for e, row in zip(entries, decoded):
        assert (bytes(row["id"]), int(row["type"]), int(row["offset"]), int(row["length"]), int(row["plain"])) == (
            e.blob_id, int(e.blob_type), e.offset, e.length, e.plain_length
        )
    assert encode_entries([]) == b""


def test_memory_per_entry_is_compact() -> None:
    index = Index()
    entries = [entry(os.urandom(32), n) for n in range(20_000)]
    for start in range(0, len(entries), 1000):
        index.add_pack(f"pack{start}", entries[start : start + 1000])
    list(index.entries())  # merge the pending dict into the arrays
    assert len(index) == 20_000
    assert index.memory_bytes() / len(index) < 64


def test_concurrent_adds_and_lookups() -> None:
    index = Index()
    index.MIN_MERGE = 16
    batches = [[entry(os.urandom(32), b * 50 + i) for i in range(50)] for b in range(40)]
    errors: list[str] = []

    def writer(b: int) -> None:
        index.add_pack(f"pack{b}", batches[b])
        for e in batches[b]:
            if index.lookup(e.blob_id) != location(f"pack{b}", e):
                errors.append(f"pack{b}")

    threads = [threading.Thread(target=writer, args=(b,)) for b in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(index) == 2000


def test_a_blob_stored_again_is_found_at_its_newest_location() -> None:
    blob_id = os.urandom(32)
    index = Index()
    index.add_pack("old", [entry(blob_id, 1)])
    list(index.entries())  # merged into the arrays
    index.add_pack("new", [entry(blob_id, 2)])
    assert index.lookup(blob_id).pack == "new"  # pending: newest wins
    list(index.entries())  # merge again
    assert index.lookup(blob_id).pack == "new"


def test_a_small_index_is_a_dict_that_answers_as_the_arrays_do() -> None:
    """Up to MIN_MERGE entries the loaded index stays a dict (no NumPy); it must answer every
    lookup as the arrays do, with a blob stored in two packs (the first staged wins, as the arrays'
    stable merge finds it) and entries added before and after loading (newest wins)."""
    shared = os.urandom(32)
    packs = {f"pack{p}": [entry(os.urandom(32), p * 10 + i) for i in range(10)] + [entry(shared, p)]
             for p in range(6)}
    before, after = entry(os.urandom(32), 900), entry(shared, 901)
    small, large = Index(), Index()
    large.MIN_MERGE = 1  # the arrays at once
    for index in (small, large):
        index.add_pack("early", [before])
        for pack, entries in packs.items():
            index.stage_pack(pack, encode_entries(entries))  # the stored records, as load_index gives them
        index.finish_loading()
    assert small._merged() == 0 and "_keys" not in small.__dict__  # no arrays were made (no NumPy)
    assert large._merged() > 0
    unknown = os.urandom(32)
    for blob_id in [e.blob_id for entries in packs.values() for e in entries] + [before.blob_id, unknown]:
        assert small.lookup(blob_id) == large.lookup(blob_id)
        assert (blob_id in small) == (blob_id in large)
    # Every stored copy counts, as in the arrays (check and prune see the copies).
    assert small.lookup(shared).pack == "pack0" and len(small) == len(large) == 6 * 11 + 1
    for index in (small, large):
        index.add_pack("late", [after])
        assert index.lookup(shared).pack == "late"
    assert list(small.entries()) == list(large.entries())  # the same arrays, copies and order included
    assert len(small) == len(large) == 6 * 11 + 2


def test_records_encode_as_the_numpy_layout_and_bad_lengths_are_refused() -> None:
    import numpy as np

    from safehold.repository.index import ENTRY_DTYPE, ENTRY_SIZE

    entries = [entry(os.urandom(32), n * 7919) for n in range(50)]
    array = np.zeros(len(entries), dtype=ENTRY_DTYPE)
    for i, e in enumerate(entries):
        array[i] = (e.blob_id, int(e.blob_type), e.offset, e.length, e.plain_length)
    assert encode_entries(entries) == array.tobytes() and ENTRY_SIZE == ENTRY_DTYPE.itemsize
    with pytest.raises(ValueError):
        Index().stage_pack("p", encode_entries(entries)[:-1])  # hostile input: a cut record
    with pytest.raises(TypeError):
        Index().stage_pack("p", "not bytes")


def test_a_small_index_that_outgrows_the_dict_becomes_the_arrays() -> None:
    first, second = ([entry(os.urandom(32), base + i) for i in range(11)] for base in (0, 100))
    grown, large = Index(), Index()
    grown.MIN_MERGE, large.MIN_MERGE = 15, 1
    for index in (grown, large):
        index.stage_pack("first", encode_entries(first))
        index.finish_loading()
    assert grown._loaded_count == 11 and grown._merged() == 0
    for index in (grown, large):
        index.stage_pack("second", encode_entries(second))
        index.finish_loading()
    assert grown._merged() == 22 and not grown._loaded
    assert list(grown.entries()) == list(large.entries())


def test_a_small_index_reports_its_dicts_memory_without_making_arrays() -> None:
    index = Index()
    index.stage_pack("p", encode_entries([entry(os.urandom(32), n) for n in range(100)]))
    index.finish_loading()
    assert 100 * 100 < index.memory_bytes() < 100 * 400  # ~200 bytes an entry as a dict
    assert "_keys" not in index.__dict__
