"""Repository-level copies: shared parameters, blob transfer, write order, tampered blobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, Snapshot
from safehold.repository import copy as copy_module
from safehold.repository import repository as repository_module
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.check import check
from safehold.repository.copy import CopyStats, copied_ids, copy_snapshot
from safehold.repository.pack import BlobType
from safehold.repository.repository import same_params
from safehold.restore.directory import DirectoryRestorer
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def backup(repository: Repository, tree: Path) -> Snapshot:
    with FilesSource([str(tree)]).open() as view:
        return Archiver(repository, threads=2).snapshot(view, "docs", None)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "data"
    tree.mkdir()
    (tree / "a.bin").write_bytes(os.urandom(700_000))
    (tree / "b.txt").write_bytes(b"log line\n" * 50_000)
    return tree


@pytest.fixture
def pair() -> tuple[Repository, Repository]:
    source = Repository.init(MemoryBackend(), b"source", FAST_KDF)
    destination = Repository.init(MemoryBackend(), b"destination", FAST_KDF, params_from=source)
    return source, destination


def test_params_are_shared_but_not_the_encryption_key(pair):
    source, destination = pair
    assert same_params(source, destination)
    assert destination.master.encryption_key != source.master.encryption_key
    assert destination.id != source.id and destination.config["params_from"] == source.id
    assert source.cipher.blob_id(b"same data") == destination.cipher.blob_id(b"same data")
    assert not same_params(source, Repository.init(MemoryBackend(), b"x", FAST_KDF))
    # Its own password only: the source's password opens nothing there.
    with pytest.raises(errors.WrongPassword):
        Repository.open(destination.backend, b"source")
    Repository.open(destination.backend, b"destination")


def test_a_source_key_file_does_not_open_the_destination(pair):
    """The id key is shared, so the key check also binds the encryption key: a key file of the
    source put into the destination's keys/ must not be taken for one of its own."""
    source, destination = pair
    [name] = [info.name for info in source.backend.list(Kind.KEYS)]
    destination.backend.put(Kind.KEYS, name, source.backend.get(Kind.KEYS, name))
    # The password opens that key file, yet its key matches no key check of the config: refused,
    # named as a key file of another repository (or a damaged config), never used.
    with pytest.raises(errors.IntegrityError, match="belong to another repository"):
        Repository.open(destination.backend, b"source")


def test_copy_sends_missing_blobs_reencrypted_then_snapshot(pair, tree: Path, tmp_path: Path):
    source, destination = pair
    snapshot = backup(source, tree)
    source.load_index()
    stats = CopyStats()
    copied = copy_snapshot(source, destination, snapshot, stats, None, "memory://source", threads=2)
    assert stats.blobs_sent == stats.blobs_total == stats.blobs_verified > 0
    assert copied.copied_from == {"repository": source.id, "snapshot": snapshot.id, "url": "memory://source"}
    assert copied.tree == snapshot.tree
    # Different ciphertexts: no stored pack is shared between the two repositories.
    assert not {i.name for i in source.backend.list(Kind.DATA)} & {i.name for i in destination.backend.list(Kind.DATA)}
    reopened = Repository.open(destination.backend, b"destination")
    assert check(reopened, read_data_percent=100).ok
    assert copied_ids(reopened, source.id) == {snapshot.id: copied.id}
    # The source's id (or a prefix of it) finds its copy there; an id neither has is still not found.
    assert reopened.find_snapshot(snapshot.id[:8]).id == copied.id == reopened.find_snapshot(snapshot.id).id
    assert reopened.find_snapshot(copied.id[:8]).id == copied.id
    with pytest.raises(errors.SnapshotNotFound):
        reopened.find_snapshot(next(prefix for prefix in ("0000", "1111", "2222")
                                    if not snapshot.id.startswith(prefix) and not copied.id.startswith(prefix)))
    out = tmp_path / "out"
    reopened.load_index()
    DirectoryRestorer(reopened, out, threads=2).restore(reopened.read_tree(reopened.load_snapshot(copied.id)))
    assert (out / "data" / "a.bin").read_bytes() == (tree / "a.bin").read_bytes()
    again = CopyStats()
    copy_snapshot(source, reopened, snapshot, again, None, "memory://source")
    assert again.blobs_sent == 0 and again.blobs_present == stats.blobs_total


def test_a_blob_that_does_not_hash_to_its_id_is_refused(pair, tree: Path, monkeypatch):
    """A source blob whose plaintext is not what its id says (a bug, or a source with other
    parameters slipped past the check) never reaches the destination, nor does the snapshot."""
    source, destination = pair
    snapshot = backup(source, tree)
    source.load_index()
    real = source.decode_blob_body

    def tampered(blob_id, location, stored):
        body, data = real(blob_id, location, stored)
        return body, data + (b"!" if location.blob_type == BlobType.DATA else b"")

    # Every read decodes through decode_blob_body (blob by blob or prefetched ranges); the item
    # stream (TREE blobs) stays intact, the file contents do not hash to their ids.
    monkeypatch.setattr(source, "decode_blob_body", tampered)
    with pytest.raises(errors.IntegrityError, match="does not hash to its id"):
        copy_snapshot(source, destination, snapshot, CopyStats(), None, "memory://source")
    assert list(destination.backend.list(Kind.SNAPSHOTS)) == []


def test_index_is_written_every_few_packs(pair, tree: Path, monkeypatch):
    """So that a killed copy's rerun skips what reached the destination before the kill."""
    source, destination = pair
    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", 60_000)
    monkeypatch.setattr(copy_module, "INDEX_EVERY_PACKS", 2)
    for number in range(10):
        (tree / f"part{number}.bin").write_bytes(os.urandom(50_000))
    snapshot = backup(source, tree)
    source.load_index()
    stats = CopyStats()
    copy_snapshot(source, destination, snapshot, stats, None, "memory://source", threads=1)
    assert stats.packs_written >= 4
    assert len(list(destination.backend.list(Kind.INDEX))) >= stats.packs_written // 2


def test_stored_frames_pass_through_when_both_compress_alike(pair, tree: Path, tmp_path: Path, monkeypatch):
    """Same compression on both sides: each blob's stored body (its zstd frame, or raw bytes) is
    re-encrypted as it is, never compressed again; a destination that does not compress gets the
    plaintext. Both restore the same bytes and check clean."""
    source, destination = pair
    snapshot = backup(source, tree)
    source.load_index()
    real = repository_module.encode_blob
    encoded: list[int] = []
    monkeypatch.setattr(repository_module, "encode_blob", lambda *args: encoded.append(1) or real(*args))
    copy_snapshot(source, destination, snapshot, CopyStats(), None, "memory://source")
    assert encoded == []  # nothing compressed (or even encoded) again
    for blob_id, location in source.index.entries():
        assert destination.locate(blob_id).length == location.length
    assert check(Repository.open(destination.backend, b"destination"), read_data_percent=100).ok

    plain = Repository.init(MemoryBackend(), b"plain", FAST_KDF, params_from=source)
    plain.compression = None
    copy_snapshot(source, plain, snapshot, CopyStats(), None, "memory://source")
    assert len(encoded) > 0  # compressions differ: the destination's own setting applies
    longer = [blob_id for blob_id, location in source.index.entries() if plain.locate(blob_id).length > location.length]
    assert longer  # b.txt compresses in the source, not in the plain destination
    reopened = Repository.open(plain.backend, b"plain")
    assert check(reopened, read_data_percent=100).ok
    reopened.load_index()
    out = tmp_path / "out"
    DirectoryRestorer(reopened, out, threads=2).restore(reopened.read_tree(reopened.load_snapshot(
        copied_ids(reopened, source.id)[snapshot.id])))
    assert (out / "data" / "b.txt").read_bytes() == (tree / "b.txt").read_bytes()


def test_neighbouring_blobs_of_a_pack_are_read_in_one_request(pair, tmp_path: Path, monkeypatch):
    """The copy reads the source (and reads back the destination) a pack range at a time, not one
    request per blob; ``SAFEHOLD_COPY_PREFETCH=0`` reads blob by blob."""
    source, destination = pair
    tree = tmp_path / "many"
    tree.mkdir()
    for number in range(40):
        (tree / f"f{number}.bin").write_bytes(os.urandom(20_000))  # one small chunk each
    snapshot = backup(source, tree)
    source.load_index()
    calls = {"source": 0, "destination": 0}
    for name, repository in (("source", source), ("destination", destination)):
        real = repository.backend.get

        def counted(kind, object_name, offset=0, length=None, real=real, name=name):
            if kind is Kind.DATA:
                calls[name] += 1
            return real(kind, object_name, offset, length)

        monkeypatch.setattr(repository.backend, "get", counted)
    stats = CopyStats()
    copy_snapshot(source, destination, snapshot, stats, None, "memory://source")
    assert stats.blobs_sent >= 40 and stats.blobs_verified == stats.blobs_sent
    assert calls["source"] <= 4 and calls["destination"] <= 4, calls
    # Blob by blob when prefetching is turned off (one more snapshot of the same data: nothing to
    # send, so copy to a fresh destination).
    monkeypatch.setenv("SAFEHOLD_COPY_PREFETCH", "0")
    other = Repository.init(MemoryBackend(), b"other", FAST_KDF, params_from=source)
    calls["source"] = 0
    copy_snapshot(source, other, snapshot, CopyStats(), None, "memory://source", verify=False)
    assert calls["source"] >= 40


class RottingBackend(MemoryBackend):
    """Stores a pack with one byte flipped in the middle: the storage does not hold what was written."""

    def put(self, kind, name, data, **options):
        if kind == Kind.DATA:
            data = bytearray(data if isinstance(data, (bytes, bytearray, memoryview)) else b"".join(data))
            data[len(data) // 2] ^= 0x01
            data = bytes(data)
        super().put(kind, name, data, **options)


@pytest.mark.parametrize("mode, caught", [("packs", "does not hash to its name"), ("full", "damaged data"),
                                          ("none", None)])
def test_a_pack_damaged_in_the_destination_is_caught_before_the_snapshot(tree: Path, mode: str, caught: str | None):
    """Each verification mode reads what was written back before the snapshot is committed: a pack
    the storage holds damaged fails the copy (no snapshot on the destination) in 'packs' (its bytes
    no longer hash to its name) and 'full' (its blobs no longer decrypt); 'none' does not look."""
    source = Repository.init(MemoryBackend(), b"source", FAST_KDF)
    destination = Repository.init(RottingBackend(), b"destination", FAST_KDF, params_from=source)
    snapshot = backup(source, tree)
    source.load_index()
    stats = CopyStats()
    if caught is None:
        copy_snapshot(source, destination, snapshot, stats, None, "memory://source", verify=mode)
        assert (stats.verify, stats.blobs_verified, stats.packs_verified) == ("none", 0, 0)
        assert len(list(destination.backend.list(Kind.SNAPSHOTS))) == 1
        return
    with pytest.raises(errors.IntegrityError, match=caught):
        copy_snapshot(source, destination, snapshot, stats, None, "memory://source", verify=mode)
    assert list(destination.backend.list(Kind.SNAPSHOTS)) == []


@pytest.mark.parametrize("mode", ["packs", "full"])
def test_each_verification_mode_counts_what_it_checked(pair, tree: Path, mode: str):
    source, destination = pair
    snapshot = backup(source, tree)
    source.load_index()
    stats = CopyStats()
    copy_snapshot(source, destination, snapshot, stats, None, "memory://source", verify=mode)
    assert stats.verify == mode
    assert stats.blobs_verified == stats.blobs_sent > 0
    assert stats.packs_verified == stats.packs_written > 0
    with pytest.raises(errors.UsageError, match="expected one of packs, full, none"):
        copy_snapshot(source, destination, snapshot, CopyStats(), None, "memory://source", verify="sometimes")
