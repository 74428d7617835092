"""repair index, prune with a lost index object, repair snapshots, forget records and replays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, Snapshot
from safehold.repository import repository as repository_module
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.check import check
from safehold.repository.forgotten import live_snapshots, record_name, replayed_records
from safehold.repository.pack import HEADER_TAIL_READ, BlobType, PackBuilder, encode_blob
from safehold.repository.prune import ForgetDecision, forget, plan_forget, plan_forget_ids, prune
from safehold.repository.reindex import read_pack_header, repair_index
from safehold.repository.repair import REPAIRED_TAG, repair_snapshots
from safehold.restore.directory import DirectoryRestorer
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"pw"


def backup(repository: Repository, tree: Path, parent: Snapshot | None = None) -> Snapshot:
    with FilesSource([str(tree)]).open() as view:
        return Archiver(repository, threads=2).snapshot(view, "docs", parent)


def reopen(repository: Repository) -> Repository:
    fresh = Repository.open(repository.backend, PASSWORD)
    fresh.load_index()
    return fresh


def restore(repository: Repository, snapshot: Snapshot, destination: Path):
    return DirectoryRestorer(repository, destination, threads=2).restore(repository.read_tree(snapshot))


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def file_chunks(repository: Repository, snapshot: Snapshot, path: bytes) -> list[bytes]:
    [item] = [i for i in repository.read_tree(snapshot) if i["path"] == path]
    return [item["chunks"][i : i + 32] for i in range(0, len(item["chunks"]), 32)]


def objects(repository: Repository, kind: Kind) -> set[str]:
    return {info.name for info in repository.backend.list(kind)}


@pytest.fixture
def repository() -> Repository:
    return Repository.init(MemoryBackend(), PASSWORD, FAST_KDF)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "data"
    tree.mkdir()
    (tree / "keep.txt").write_bytes(b"kept by both snapshots\n" * 2000)
    (tree / "gone.bin").write_bytes(os.urandom(300_000))
    (tree / "small.txt").write_bytes(b"small\n")
    return tree


@pytest.fixture
def two_snapshots(repository: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch):
    """Small packs and one index object per backup, so losing one index object loses the
    index of one backup's packs."""
    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", 40_000)
    first = backup(repository, tree)
    (tree / "gone.bin").unlink()
    (tree / "other.bin").write_bytes(os.urandom(200_000))
    second = backup(repository, tree, parent=first)
    return first, second


def index_naming(repository: Repository, pack: str) -> str:
    for name in objects(repository, Kind.INDEX):
        if any(p == pack for p, _ in repository.load_object(Kind.INDEX, name)["packs"]):
            return name
    raise AssertionError(f"no index object names {pack}")


def lose_index_of(repository: Repository, snapshot: Snapshot, path: bytes) -> str:
    """Delete the index object naming the pack of ``path``'s first chunk; returns the pack."""
    pack = repository.locate(file_chunks(repository, snapshot, path)[0]).pack
    repository.backend.delete(Kind.INDEX, index_naming(repository, pack))
    return pack


# --- pack headers ------------------------------------------------------------------------------


def test_pack_header_is_read_from_the_tail_alone(repository: Repository, two_snapshots) -> None:
    pack = sorted(objects(repository, Kind.DATA))[0]
    size = repository.backend.stat(Kind.DATA, pack).size
    reads: list[tuple[int, int | None]] = []
    backend_get = repository.backend.get

    def counting_get(kind, name, offset=0, length=None):
        reads.append((offset, length))
        return backend_get(kind, name, offset, length)

    repository.backend.get = counting_get
    entries = read_pack_header(repository, pack, size)
    assert entries and all(e.offset + e.length <= size for e in entries)
    assert reads == [(max(0, size - HEADER_TAIL_READ), min(size, HEADER_TAIL_READ))]
    expected = {blob_id: loc for blob_id, loc in repository.index.entries() if loc.pack == pack}
    assert {e.blob_id: (e.offset, e.length) for e in entries} == {b: (l.offset, l.length) for b, l in expected.items()}


def test_a_header_longer_than_the_first_read_costs_one_more(repository: Repository, monkeypatch) -> None:
    monkeypatch.setattr("safehold.repository.reindex.HEADER_TAIL_READ", 64)
    builder = PackBuilder()
    for _ in range(20):
        data = os.urandom(100)
        blob_id = repository.cipher.blob_id(data)
        builder.add(BlobType.DATA, blob_id, encode_blob(repository.cipher, BlobType.DATA, blob_id, data), 100)
    name, parts, written = builder.finish(repository.cipher)
    repository.backend.put(Kind.DATA, name, parts)
    entries = read_pack_header(repository, name, repository.backend.stat(Kind.DATA, name).size)
    assert entries == written


# --- repair index ----------------------------------------------------------------------------------


def test_repair_index_after_a_lost_index_object(repository: Repository, two_snapshots, tree: Path,
                                                tmp_path: Path) -> None:
    _, second = two_snapshots
    pack = lose_index_of(repository, second, b"data/other.bin")
    broken = check(reopen(repository))
    assert not broken.ok and broken.missing_blobs >= 1
    # The lost object also listed the item stream's pack: that is what check finds missing first.
    assert broken.unindexed_packs_in_use and set(broken.unindexed_packs_in_use) <= set(broken.unreferenced_packs)
    assert pack in broken.unreferenced_packs
    assert any("safehold repair index" in line for line in broken.errors)

    damaged = reopen(repository)
    with damaged.lock(exclusive=True, purpose="repair index"):
        report = repair_index(damaged)
    assert report.changed and pack in report.packs_added and report.packs_removed == []
    assert report.headers_read == len(report.packs_added)  # only packs no index named were read
    assert report.packs_indexed_after == report.packs_stored == len(objects(repository, Kind.DATA))
    fixed = check(reopen(repository), read_data_percent=100)
    assert fixed.ok and fixed.unreferenced_packs == [] and fixed.unused_blobs == 0
    result = restore(reopen(repository), second, tmp_path / "restored")
    assert result.damaged == [] and files_of(tmp_path / "restored" / "data") == files_of(tree)


def test_repair_index_is_idempotent(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    lose_index_of(repository, second, b"data/other.bin")
    repair_index(reopen(repository))
    stored = dict(repository.backend.objects)
    again = repair_index(reopen(repository))
    assert not again.changed and again.packs_added == [] and again.headers_read == 0
    assert again.index_objects_written == again.index_objects_removed == 0
    assert repository.backend.objects == stored


def test_repair_index_dry_run_writes_nothing(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    pack = lose_index_of(repository, second, b"data/other.bin")
    stored = dict(repository.backend.objects)
    report = repair_index(reopen(repository), dry_run=True)
    assert report.dry_run and report.changed and pack in report.packs_added
    assert repository.backend.objects == stored


def test_repair_index_drops_missing_packs_and_replaces_a_damaged_index_object(repository: Repository,
                                                                              two_snapshots) -> None:
    _, second = two_snapshots
    gone = repository.locate(file_chunks(repository, second, b"data/other.bin")[0]).pack
    repository.backend.delete(Kind.DATA, gone)
    damaged_name = sorted(objects(repository, Kind.INDEX))[0]
    data = bytearray(repository.backend.get(Kind.INDEX, damaged_name))
    data[40] ^= 1
    repository.backend.objects[(Kind.INDEX, damaged_name)] = bytes(data)
    report = repair_index(Repository.open(repository.backend, PASSWORD))
    assert [d["name"] for d in report.index_objects_damaged] == [damaged_name]
    assert damaged_name not in objects(repository, Kind.INDEX)
    fresh = reopen(repository)
    assert gone not in fresh.index.packs
    assert set(fresh.index.packs) == objects(repository, Kind.DATA)


def test_repair_index_read_all_packs_rebuilds_from_headers(repository: Repository, two_snapshots) -> None:
    before = {(b, l.pack, l.offset, l.length) for b, l in reopen(repository).index.entries()}
    report = repair_index(reopen(repository), read_all_packs=True)
    assert report.headers_read == report.packs_stored and not report.changed
    assert {(b, l.pack, l.offset, l.length) for b, l in reopen(repository).index.entries()} == before


def test_repair_index_keeps_packs_whose_header_is_damaged_in_storage(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    pack = lose_index_of(repository, second, b"data/other.bin")
    data = bytearray(repository.backend.get(Kind.DATA, pack))
    data[-10] ^= 1  # inside the encrypted header
    repository.backend.objects[(Kind.DATA, pack)] = bytes(data)
    report = repair_index(reopen(repository))
    assert pack in {u["pack"] for u in report.packs_unreadable}
    assert pack in objects(repository, Kind.DATA)


# --- prune with a lost index object -----------------------------------------------------------------


def test_prune_never_deletes_packs_whose_index_object_was_lost(repository: Repository, two_snapshots, tree: Path,
                                                                tmp_path: Path) -> None:
    """Fails on the code before the fix: prune deleted every pack no index named."""
    _, second = two_snapshots
    lose_index_of(repository, second, b"data/other.bin")
    packs_before = objects(repository, Kind.DATA)
    exclusive = reopen(repository)
    with exclusive.lock(exclusive=True, purpose="prune"):
        report = prune(exclusive)
    assert report.packs_reindexed >= 1 and report.unindexed_packs_read >= 1
    assert objects(repository, Kind.DATA) == packs_before  # nothing was garbage
    fresh = reopen(repository)
    assert check(fresh, read_data_percent=100).ok
    result = restore(fresh, second, tmp_path / "restored")
    assert result.damaged == [] and files_of(tmp_path / "restored" / "data") == files_of(tree)


def test_prune_keeps_a_data_pack_whose_own_index_object_was_lost(repository: Repository, tree: Path,
                                                                  tmp_path: Path, monkeypatch) -> None:
    """The case the old prune lost data in: an index object naming only data packs is lost, every
    item stream still reads, and the old prune deleted the pack as 'unindexed'."""
    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", 40_000)
    monkeypatch.setattr(repository_module, "INDEX_EVERY_PACKS", 1)  # one index object per pack
    first = backup(repository, tree)
    (tree / "other.bin").write_bytes(os.urandom(200_000))
    second = backup(repository, tree, parent=first)
    pack = lose_index_of(repository, second, b"data/other.bin")
    assert all(repository.locate(bytes.fromhex(h)).pack != pack for h in second.tree)
    packs_before = objects(repository, Kind.DATA)
    report = prune(reopen(repository))
    assert pack in objects(repository, Kind.DATA) and objects(repository, Kind.DATA) == packs_before
    assert report.packs_reindexed == 1 and report.unindexed_packs_deleted == 0
    fresh = reopen(repository)
    assert pack in fresh.index.packs  # indexed again by the index prune wrote
    assert check(fresh, read_data_percent=100).ok
    result = restore(fresh, second, tmp_path / "restored")
    assert result.damaged == [] and files_of(tmp_path / "restored" / "data") == files_of(tree)


def test_prune_refuses_when_an_item_stream_cannot_be_read(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    tree_blob = bytes.fromhex(second.tree[0])
    pack = repository.locate(tree_blob).pack
    repository.backend.delete(Kind.DATA, pack)
    stored = dict(repository.backend.objects)
    with pytest.raises(errors.PruneRefused, match="nothing was deleted"):
        prune(reopen(repository))
    assert repository.backend.objects == stored


def test_prune_refuses_with_a_damaged_index_object(repository: Repository, two_snapshots) -> None:
    name = sorted(objects(repository, Kind.INDEX))[0]
    data = bytearray(repository.backend.get(Kind.INDEX, name))
    data[40] ^= 1
    repository.backend.objects[(Kind.INDEX, name)] = bytes(data)
    stored = dict(repository.backend.objects)
    with pytest.raises(errors.PruneRefused, match="index object is damaged"):
        prune(Repository.open(repository.backend, PASSWORD))
    assert repository.backend.objects == stored


# --- repair snapshots ----------------------------------------------------------------------------------


def test_repair_snapshots_drops_the_damaged_file_and_keeps_the_original(repository: Repository, two_snapshots,
                                                                        tree: Path, tmp_path: Path) -> None:
    first, second = two_snapshots
    pack = repository.locate(file_chunks(repository, second, b"data/other.bin")[0]).pack
    repository.backend.delete(Kind.DATA, pack)
    fresh = reopen(repository)
    dry = repair_snapshots(fresh, dry_run=True)
    assert [r.original for r in dry.repaired] == [second.id] and dry.repaired[0].repaired is None
    assert "data/other.bin" in dry.repaired[0].dropped
    assert len(objects(repository, Kind.SNAPSHOTS)) == 2

    report = repair_snapshots(reopen(repository))
    [record] = report.repaired
    assert record.original == second.id and record.repaired and "data/other.bin" in record.dropped
    assert first.id in report.intact
    fresh = reopen(repository)
    repaired = fresh.load_snapshot(record.repaired)
    assert repaired.original == second.id and REPAIRED_TAG in repaired.tags and repaired.time == second.time
    assert second.id in objects(repository, Kind.SNAPSHOTS)  # the original is kept
    assert fresh.find_snapshot("latest").id == repaired.id  # sorts after its original
    result = restore(fresh, repaired, tmp_path / "restored")
    assert result.damaged == []
    restored = files_of(tmp_path / "restored" / "data")
    expected = files_of(tree)
    pack_files = {p for p in expected if p not in restored}
    assert pack_files and all(p in record.dropped[0] or f"data/{p}" in record.dropped for p in pack_files)
    assert {p: expected[p] for p in restored} == restored

    again = repair_snapshots(reopen(repository))
    assert again.repaired == [] and again.already_repaired == [
        {"original": second.id, "repaired": repaired.id, "forgotten": False}]


def test_repair_snapshots_forget_removes_originals_with_a_record(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    repository.backend.delete(Kind.DATA, repository.locate(file_chunks(repository, second, b"data/other.bin")[0]).pack)
    report = repair_snapshots(reopen(repository), forget_originals=True)
    assert report.repaired[0].forgotten
    assert second.id not in objects(repository, Kind.SNAPSHOTS)
    assert record_name(repository, second.id) in objects(repository, Kind.FORGOTTEN)


def test_repair_snapshots_with_read_data_finds_a_flipped_bit(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    chunk = file_chunks(repository, second, b"data/other.bin")[0]
    location = repository.locate(chunk)
    data = bytearray(repository.backend.get(Kind.DATA, location.pack))
    data[location.offset + 20] ^= 1
    repository.backend.objects[(Kind.DATA, location.pack)] = bytes(data)
    assert repair_snapshots(reopen(repository), dry_run=True).repaired == []  # headers and sizes look fine
    report = repair_snapshots(reopen(repository), read_data=True)
    assert [r.original for r in report.repaired] == [second.id] and report.packs_read >= 1
    assert "data/other.bin" in report.repaired[0].dropped


def test_repair_snapshots_refuses_while_an_index_object_is_lost(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    lose_index_of(repository, second, b"data/other.bin")
    stored = dict(repository.backend.objects)
    with pytest.raises(errors.RepairRefused, match="no index"):
        repair_snapshots(reopen(repository))
    assert repository.backend.objects == stored


# --- forget records and replays ---------------------------------------------------------------------


def test_forget_writes_a_record_and_a_copied_back_snapshot_is_flagged(repository: Repository,
                                                                      two_snapshots) -> None:
    first, second = two_snapshots
    saved = repository.backend.get(Kind.SNAPSHOTS, first.id)
    forget(repository, [ForgetDecision(first, False, [])], "test")
    name = record_name(repository, first.id)
    assert objects(repository, Kind.FORGOTTEN) == {name}
    assert check(reopen(repository)).ok
    prune(reopen(repository))
    repository.backend.put(Kind.SNAPSHOTS, first.id, saved)  # the replay

    fresh = reopen(repository)
    [(snapshot_id, record)] = replayed_records(fresh, fresh.list_snapshots()).items()
    assert snapshot_id == first.id and record.name == name and record.reason == "test" and record.target == "docs"
    report = check(fresh)
    assert not report.ok and report.replayed[0]["snapshot"] == first.id
    assert any(first.id[:8] in line and "replayed" in line and name[:16] in line for line in report.errors)
    assert [s.id for s in live_snapshots(fresh)] == [second.id]
    # A policy forget removes it again, whatever the policy says.
    decisions = plan_forget(fresh, {})
    assert [d.snapshot.id for d in decisions if not d.keep] == [first.id]


def test_a_record_cannot_be_forged_without_the_key(repository: Repository, two_snapshots) -> None:
    first, _ = two_snapshots
    other = Repository.init(MemoryBackend(), PASSWORD, FAST_KDF)
    forged = record_name(other, first.id)  # the same snapshot id, another key
    repository.backend.put(Kind.FORGOTTEN, forged, b"x")
    assert replayed_records(reopen(repository), reopen(repository).list_snapshots()) == {}
    assert check(reopen(repository)).ok


def test_a_damaged_record_still_flags_the_snapshot(repository: Repository, two_snapshots) -> None:
    first, _ = two_snapshots
    saved = repository.backend.get(Kind.SNAPSHOTS, first.id)
    forget(repository, [ForgetDecision(first, False, [])])
    name = record_name(repository, first.id)
    repository.backend.objects[(Kind.FORGOTTEN, name)] = b"garbage"
    repository.backend.put(Kind.SNAPSHOTS, first.id, saved)
    [record] = replayed_records(reopen(repository), reopen(repository).list_snapshots()).values()
    assert record.unreadable


def test_forget_by_ids_resolves_every_ref_first(repository: Repository, two_snapshots) -> None:
    first, second = two_snapshots
    decisions = plan_forget_ids(repository, [first.id[:8], first.id])
    assert [d.snapshot.id for d in decisions] == [first.id] and not decisions[0].keep
    with pytest.raises(errors.SnapshotNotFound):
        plan_forget_ids(repository, [second.id[:8], "ffffffffff"])
    assert len(objects(repository, Kind.SNAPSHOTS)) == 2


def test_repair_snapshots_names_hostile_items_and_a_lost_item_stream_blob(repository: Repository, tree: Path,
                                                                         monkeypatch) -> None:
    """Items are hostile input: a map with chunks that are not bytes, or no map at all, is dropped
    and named; a TREE blob that is lost keeps the items before it."""
    from safehold.repository.repository import TreeWriter

    good = backup(repository, tree)
    writer = TreeWriter(repository)
    items = list(repository.read_tree(good))
    writer.add({"path": b"data/evil", "type": "file", "chunks": 12345})
    writer.add([1, 2, 3])
    for item in items:
        writer.add(item)
    ids = writer.finish()
    repository.flush()
    hostile = Snapshot(id="", time=good.time, target="docs", kind="files", hostname="h", paths=good.paths, tree=ids)
    repository.save_snapshot(hostile)
    report = repair_snapshots(reopen(repository), [reopen(repository).load_snapshot(hostile.id)])
    [record] = report.repaired
    assert record.dropped == ["data/evil", "<malformed item 1>"] and record.items_kept == len(items)


def test_a_snapshot_whose_item_stream_is_lost_has_nothing_left(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    pack = repository.locate(bytes.fromhex(second.tree[0])).pack
    repository.backend.delete(Kind.DATA, pack)
    repair_index(reopen(repository))  # the pack is gone: its entries leave the index
    report = repair_snapshots(reopen(repository))
    lost = {r.original: r for r in report.nothing_left}
    assert second.id in lost and "unreadable" in lost[second.id].stream_damaged
    assert lost[second.id].repaired is None and "forget" in lost[second.id].note


def test_an_unreadable_unindexed_pack_is_kept_only_while_a_blob_is_missing(repository: Repository,
                                                                          two_snapshots) -> None:
    _, second = two_snapshots
    repository.backend.put(Kind.DATA, "ee" * 32, b"not a pack")
    report = prune(reopen(repository))
    assert "ee" * 32 not in objects(repository, Kind.DATA) and report.unindexed_packs_deleted == 1

    pack = lose_index_of(repository, second, b"data/other.bin")
    data = bytearray(repository.backend.get(Kind.DATA, pack))
    data[-10] ^= 1  # its header no longer reads: the blobs it holds are missing
    repository.backend.objects[(Kind.DATA, pack)] = bytes(data)
    try:
        report = prune(reopen(repository))
    except errors.PruneRefused:
        pass  # the lost index object also listed an item stream: prune may not go on at all
    else:
        assert [u["pack"] for u in report.unreadable_packs_kept] == [pack]
    assert pack in objects(repository, Kind.DATA)


def test_repair_snapshots_forget_finishes_a_run_killed_before_it_forgot(repository: Repository,
                                                                        two_snapshots) -> None:
    _, second = two_snapshots
    repository.backend.delete(Kind.DATA, repository.locate(file_chunks(repository, second, b"data/other.bin")[0]).pack)
    first_run = repair_snapshots(reopen(repository))  # as if killed before --forget got to the originals
    assert second.id in objects(repository, Kind.SNAPSHOTS)
    report = repair_snapshots(reopen(repository), forget_originals=True)
    assert report.repaired == [] and report.already_repaired == [
        {"original": second.id, "repaired": first_run.repaired[0].repaired, "forgotten": True}]
    assert second.id not in objects(repository, Kind.SNAPSHOTS)


def test_prune_prefers_the_indexed_copy_of_a_blob_over_an_unindexed_one(repository: Repository,
                                                                        two_snapshots) -> None:
    """Two racing backups can store one blob twice; the copy in a pack no index names is garbage."""
    _, second = two_snapshots
    chunk = file_chunks(repository, second, b"data/other.bin")[0]
    data = repository.read_blob(chunk)
    builder = PackBuilder()
    builder.add(BlobType.DATA, chunk, encode_blob(repository.cipher, BlobType.DATA, chunk, data), len(data))
    name, parts, _ = builder.finish(repository.cipher)
    repository.backend.put(Kind.DATA, name, parts)  # a duplicate no index names (a killed racing backup)
    indexed = objects(repository, Kind.DATA) - {name}
    report = prune(reopen(repository))
    assert report.unindexed_packs_deleted == 1 and report.packs_reindexed == 0
    assert objects(repository, Kind.DATA) == indexed
    assert check(reopen(repository), read_data_percent=100).ok
