"""check (structure and data), forget and prune, and restore of damaged snapshots."""

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
from safehold.repository.pack import BlobType, PackBuilder, encode_blob
from safehold.repository.prune import ForgetDecision, forget, prune
from safehold.restore.directory import DirectoryRestorer
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"pw"


def backup(repository: Repository, tree: Path, parent: Snapshot | None = None) -> Snapshot:
    with FilesSource([str(tree)]).open() as view:
        return Archiver(repository, threads=2).snapshot(view, "docs", parent)


def restore(repository: Repository, snapshot: Snapshot, destination: Path):
    return DirectoryRestorer(repository, destination, threads=2).restore(repository.read_tree(snapshot))


def reopen(repository: Repository) -> Repository:
    fresh = Repository.open(repository.backend, PASSWORD)
    fresh.load_index()
    return fresh


def file_chunks(repository: Repository, snapshot: Snapshot, path: bytes) -> list[bytes]:
    [item] = [i for i in repository.read_tree(snapshot) if i["path"] == path]
    return [item["chunks"][i : i + 32] for i in range(0, len(item["chunks"]), 32)]


def flip_byte(backend: MemoryBackend, kind: Kind, name: str, position: int) -> None:
    data = bytearray(backend.get(kind, name))
    data[position] ^= 0x01
    backend.objects[(kind, name)] = bytes(data)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


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
    """Snapshot 1 holds gone.bin; snapshot 2 (its child) holds other.bin instead. Small packs, so that
    prune meets packs that are wholly unused as well as packs that are partly used."""
    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", 40_000)
    first = backup(repository, tree)
    (tree / "gone.bin").unlink()
    (tree / "other.bin").write_bytes(os.urandom(200_000))
    second = backup(repository, tree, parent=first)
    return first, second


# --- structure -----------------------------------------------------------------------------


def test_a_healthy_repository_checks_clean(repository: Repository, two_snapshots) -> None:
    report = check(reopen(repository), read_data_percent=100)
    assert report.ok and report.errors == [] and report.damaged_packs == []
    assert report.snapshots == 2 and report.unused_blobs == 0 and report.unreferenced_packs == []
    assert report.packs_read == report.packs == len(list(repository.backend.list(Kind.DATA)))
    assert report.bytes_read == sum(info.size for info in repository.backend.list(Kind.DATA))


def test_forget_leaves_garbage_that_check_reports_but_does_not_call_an_error(repository: Repository,
                                                                             two_snapshots) -> None:
    first, second = two_snapshots
    removed = forget(repository, [ForgetDecision(first, False, []), ForgetDecision(second, True, ["last"])])
    assert [s.id for s in removed] == [first.id]
    report = check(reopen(repository), read_data_percent=100)
    assert report.ok and report.errors == []
    assert report.snapshots == 1
    assert report.unused_blobs >= 2  # gone.bin's chunk(s) and the first item stream


def test_prune_removes_garbage_and_the_kept_snapshot_still_restores(repository: Repository, two_snapshots,
                                                                    tree: Path, tmp_path: Path) -> None:
    first, second = two_snapshots
    forget(repository, [ForgetDecision(first, False, [])])
    gone_chunks = file_chunks(repository, first, b"data/gone.bin")
    before = sum(info.size for info in repository.backend.list(Kind.DATA))

    exclusive = reopen(repository)
    with exclusive.lock(exclusive=True, purpose="prune"):
        report = prune(exclusive)
    # Which packs gone.bin's chunks share with others depends on thread timing: deleted or
    # repacked, the freed bytes are what must hold.
    assert report.packs_deleted + report.packs_repacked >= 1
    assert report.bytes_freed >= 300_000
    after = sum(info.size for info in repository.backend.list(Kind.DATA))
    assert after <= before - 300_000

    fresh = reopen(repository)
    assert all(blob_id not in fresh.index for blob_id in gone_chunks)
    report = check(fresh, read_data_percent=100)
    assert report.ok and report.unused_blobs == 0 and report.unreferenced_packs == []
    destination = tmp_path / "restored"
    result = restore(fresh, second, destination)
    assert result.damaged == []
    assert files_of(destination / "data") == files_of(tree)


def test_prune_with_nothing_to_do_changes_nothing(repository: Repository, two_snapshots) -> None:
    objects = dict(repository.backend.objects)
    report = prune(reopen(repository))
    assert report.packs_deleted == report.packs_repacked == report.blobs_removed == 0
    assert repository.backend.objects == objects


def test_prune_dry_run_reports_but_changes_nothing(repository: Repository, two_snapshots) -> None:
    first, _ = two_snapshots
    forget(repository, [ForgetDecision(first, False, [])])
    objects = dict(repository.backend.objects)
    report = prune(reopen(repository), dry_run=True)
    assert report.dry_run and report.packs_deleted + report.packs_repacked >= 1 and report.blobs_removed >= 2
    assert report.bytes_freed >= 300_000
    assert repository.backend.objects == objects


def test_packs_left_by_a_killed_backup_are_reported_and_pruned(repository: Repository, two_snapshots) -> None:
    builder = PackBuilder()
    data = os.urandom(1000)
    blob_id = repository.cipher.blob_id(data)
    builder.add(BlobType.DATA, blob_id, encode_blob(repository.cipher, BlobType.DATA, blob_id, data), len(data))
    name, pack, _ = builder.finish(repository.cipher)
    repository.backend.put(Kind.DATA, name, pack)  # written, but the index never was
    report = check(reopen(repository))
    assert report.ok and report.unreferenced_packs == [name]
    pruned = prune(reopen(repository))
    assert pruned.unindexed_packs_deleted == 1
    assert name not in {info.name for info in repository.backend.list(Kind.DATA)}


def test_the_same_repository_object_reads_kept_data_after_prune(repository: Repository, two_snapshots,
                                                                 tree: Path, tmp_path: Path) -> None:
    first, second = two_snapshots
    forget(repository, [ForgetDecision(first, False, [])])
    same = reopen(repository)
    report = prune(same)
    assert report.packs_repacked >= 1
    result = restore(same, second, tmp_path / "restored")
    assert result.damaged == []


# --- damage --------------------------------------------------------------------------------------


def test_a_pack_missing_from_storage_is_an_error(repository: Repository, two_snapshots, tmp_path: Path,
                                                 tree: Path) -> None:
    _, second = two_snapshots
    [chunk] = file_chunks(repository, second, b"data/other.bin")
    pack = repository.locate(chunk).pack
    repository.backend.delete(Kind.DATA, pack)
    fresh = reopen(repository)
    report = check(fresh)
    assert not report.ok
    assert any(pack in line and "missing" in line for line in report.errors)
    result = restore(fresh, second, tmp_path / "restored")
    assert result.damaged == ["data/other.bin"]
    assert not (tmp_path / "restored" / "data" / "other.bin").exists()
    assert (tmp_path / "restored" / "data" / "keep.txt").read_bytes() == (tree / "keep.txt").read_bytes()


def test_a_truncated_pack_is_an_error(repository: Repository, two_snapshots) -> None:
    _, second = two_snapshots
    [chunk] = file_chunks(repository, second, b"data/other.bin")
    pack = repository.locate(chunk).pack
    repository.backend.objects[(Kind.DATA, pack)] = repository.backend.get(Kind.DATA, pack)[:1000]
    report = check(reopen(repository))
    assert any(pack in line and "truncated" in line for line in report.errors)


@pytest.fixture
def damaged(repository: Repository, tmp_path: Path):
    """Three files in one snapshot; one byte flipped inside the stored chunk of b.bin."""
    tree = tmp_path / "data"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"alpha\n" * 1000)
    (tree / "b.bin").write_bytes(os.urandom(100_000))
    (tree / "c.txt").write_bytes(b"gamma\n" * 1000)
    snapshot = backup(repository, tree)
    [chunk] = file_chunks(repository, snapshot, b"data/b.bin")
    location = repository.locate(chunk)
    flip_byte(repository.backend, Kind.DATA, location.pack, location.offset + 50)
    return snapshot, location.pack, tree


def test_structure_check_does_not_read_data(repository: Repository, damaged) -> None:
    report = check(reopen(repository))
    assert report.ok and report.packs_read == 0


def test_read_data_names_the_damaged_pack_snapshot_and_file(repository: Repository, damaged) -> None:
    snapshot, pack, _ = damaged
    report = check(reopen(repository), read_data_percent=100)
    assert not report.ok
    [found] = report.damaged_packs
    assert found.pack == pack
    assert "hash mismatch" in found.reason and "1 blob(s) fail authentication" in found.reason
    assert found.snapshots == [snapshot.short_id]
    assert f"{snapshot.short_id}:data/b.bin" in found.files
    assert report.as_dict()["ok"] is False


def test_partial_read_data_is_reproducible_with_a_seed(repository: Repository, two_snapshots) -> None:
    packs = len(list(repository.backend.list(Kind.DATA)))
    assert packs >= 4
    first = check(reopen(repository), read_data_percent=50, seed=7)
    second = check(reopen(repository), read_data_percent=50, seed=7)
    assert first.packs_read == second.packs_read == round(packs * 0.5)
    assert first.bytes_read == second.bytes_read


def test_restore_of_a_damaged_snapshot_restores_the_rest_and_never_writes_the_damaged_file(
    repository: Repository, damaged, tmp_path: Path
) -> None:
    snapshot, _, tree = damaged
    destination = tmp_path / "restored"
    result = restore(reopen(repository), snapshot, destination)
    assert result.damaged == ["data/b.bin"]
    assert any("data/b.bin" in warning for warning in result.warnings)
    assert not (destination / "data" / "b.bin").exists()
    assert files_of(destination / "data") == {"a.txt": b"alpha\n" * 1000, "c.txt": b"gamma\n" * 1000}
    assert result.files == 2


def test_a_damaged_item_stream_fails_loudly(repository: Repository, damaged) -> None:
    snapshot, _, _ = damaged
    tree_id = bytes.fromhex(snapshot.tree[0])
    location = repository.locate(tree_id)
    flip_byte(repository.backend, Kind.DATA, location.pack, location.offset + 20)
    with pytest.raises(errors.IntegrityError):
        list(reopen(repository).read_tree(snapshot))
    report = check(reopen(repository))
    assert not report.ok and any("item stream unreadable" in line for line in report.errors)


def test_a_damaged_snapshot_object_is_reported_by_check(repository: Repository, two_snapshots) -> None:
    first, second = two_snapshots
    flip_byte(repository.backend, Kind.SNAPSHOTS, first.id, 40)
    report = check(reopen(repository))
    assert not report.ok and any(first.id[:8] in line for line in report.errors)


def test_a_damaged_index_object_is_reported_by_check(repository: Repository, two_snapshots) -> None:
    name = next(iter(repository.backend.list(Kind.INDEX))).name
    flip_byte(repository.backend, Kind.INDEX, name, 40)
    fresh = Repository.open(repository.backend, PASSWORD)
    report = check(fresh)
    assert not report.ok and any(name[:16] in line for line in report.errors)
