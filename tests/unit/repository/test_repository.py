"""Repository: init/open, keys, encrypted objects, blob storage and write order, snapshots."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import repository as repository_module
from safehold.repository import FORMAT_VERSION, Repository, Snapshot
from safehold.repository.backends import Kind, ObjectNotFound
from safehold.repository.backends.local import LocalBackend
from safehold.repository.backends.memory import MemoryBackend
from safehold.repository.crypto import MasterKey, wrap_master_key
from safehold.repository.pack import BlobType, read_pack_header
from safehold.repository.repository import TreeWriter

pytestmark = pytest.mark.usefixtures("fast_kdf")

PASSWORD = b"correct horse battery staple"


class RecordingBackend(MemoryBackend):
    """Remembers the order of puts, to check the write-order rule."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[tuple[Kind, str]] = []

    def put(self, kind, name, data, *, exclusive=False, retain_until=None) -> None:
        super().put(kind, name, data, exclusive=exclusive, retain_until=retain_until)
        self.puts.append((kind, name))


def snapshot(repository: Repository, target: str = "web", when: datetime | None = None, **fields) -> Snapshot:
    tree = TreeWriter(repository)
    tree.add({"path": b"x", "type": "file", "chunks": b""})
    ids = tree.finish()
    repository.flush()
    item = Snapshot(id="", time=when or datetime.now(timezone.utc), target=target, kind="files",
                    hostname="host", paths=["/x"], tree=ids, **fields)
    repository.save_snapshot(item)
    return item


# --- init and open ---------------------------------------------------------------------------


def test_init_then_open_gives_the_same_keys_and_config() -> None:
    backend = MemoryBackend()
    created = Repository.init(backend, PASSWORD)
    opened = Repository.open(backend, PASSWORD)
    assert opened.master == created.master
    assert opened.id == created.id and len(created.id) == 32
    assert opened.config["version"] == FORMAT_VERSION
    assert opened.key_name == created.key_name
    config = json.loads(backend.get(Kind.CONFIG, "config"))
    assert config["id"] == created.id and "enc" not in json.dumps(config)


def test_init_writes_the_config_last() -> None:
    backend = RecordingBackend()
    Repository.init(backend, PASSWORD)
    assert [kind for kind, _ in backend.puts] == [Kind.KEYS, Kind.CONFIG]


def test_open_with_a_wrong_password_raises_wrong_password() -> None:
    backend = MemoryBackend()
    Repository.init(backend, PASSWORD)
    with pytest.raises(errors.WrongPassword) as caught:
        Repository.open(backend, b"wrong")
    assert caught.value.exit_code == 13 and backend.url in str(caught.value)


def test_open_where_nothing_exists_raises_repository_does_not_exist(tmp_path: Path) -> None:
    for backend in (MemoryBackend(), LocalBackend(tmp_path / "missing")):
        with pytest.raises(errors.RepositoryDoesNotExist) as caught:
            Repository.open(backend, PASSWORD)
        assert backend.url in str(caught.value)


def test_init_twice_raises_repository_already_exists(tmp_path: Path) -> None:
    for backend in (MemoryBackend(), LocalBackend(tmp_path / "repo")):
        first = Repository.init(backend, PASSWORD)
        with pytest.raises(errors.RepositoryAlreadyExists):
            Repository.init(backend, b"another password")
        assert Repository.open(backend, PASSWORD).master == first.master  # untouched
        with pytest.raises(errors.WrongPassword):
            Repository.open(backend, b"another password")


def test_init_into_a_non_empty_foreign_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "borg-repo"
    root.mkdir()
    (root / "README").write_text("This is a Borg Backup repository.\n")
    (root / "data").mkdir()
    with pytest.raises(errors.ForeignRepository) as caught:
        Repository.init(LocalBackend(root), PASSWORD)
    assert "README" in str(caught.value)
    assert sorted(p.name for p in root.iterdir()) == ["README", "data"]  # nothing written


def test_init_into_an_empty_existing_directory_works(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)
    assert LocalBackend(tmp_path / "repo").exists()


def test_an_interrupted_init_can_be_run_again() -> None:
    backend = MemoryBackend()
    backend.create()
    # What an init killed before writing the config leaves behind: a key for another master key.
    orphan = wrap_master_key(MasterKey.generate(), PASSWORD)
    backend.put(Kind.KEYS, "0" * 64, orphan)
    created = Repository.init(backend, PASSWORD)
    assert Repository.open(backend, PASSWORD).master == created.master


def test_an_init_killed_while_writing_the_config_can_be_run_again(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    backend.create()
    (tmp_path / "repo" / ".tmp-config-1a2b3c4d").write_bytes(b'{"vers')  # torn temporary config
    created = Repository.init(backend, PASSWORD)
    assert Repository.open(backend, PASSWORD).id == created.id


def test_a_config_that_is_not_safeholds_raises_foreign_repository() -> None:
    backend = MemoryBackend()
    backend.put(Kind.CONFIG, "config", b"[repository]\nversion = 1\n")
    with pytest.raises(errors.ForeignRepository):
        Repository.open(backend, PASSWORD)


def test_an_unsupported_format_version_is_refused() -> None:
    backend = MemoryBackend()
    Repository.init(backend, PASSWORD)
    config = json.loads(backend.get(Kind.CONFIG, "config"))
    config["version"] = 99
    backend.put(Kind.CONFIG, "config", json.dumps(config).encode())
    with pytest.raises(errors.UnsupportedRepositoryVersion) as caught:
        Repository.open(backend, PASSWORD)
    assert "99" in str(caught.value) and "99" in caught.value.hint


# --- keys --------------------------------------------------------------------------------------


def test_add_list_remove_keys() -> None:
    backend = MemoryBackend()
    repository = Repository.init(backend, PASSWORD)
    second = repository.add_key(b"second password")
    keys = repository.list_keys()
    assert {k["id"] for k in keys} == {repository.key_name, second}
    assert [k["current"] for k in keys if k["id"] == repository.key_name] == [True]
    assert all(k["kdf"] == "argon2id" and k["created"] for k in keys)
    assert Repository.open(backend, b"second password").master == repository.master
    assert Repository.open(backend, PASSWORD).master == repository.master

    assert repository.remove_key(second[:8]) == second
    with pytest.raises(errors.WrongPassword):
        Repository.open(backend, b"second password")
    with pytest.raises(errors.KeyNotFound):
        repository.remove_key("ffff" if not repository.key_name.startswith("ffff") else "0000")


def test_the_last_key_cannot_be_removed() -> None:
    backend = MemoryBackend()
    repository = Repository.init(backend, PASSWORD)
    with pytest.raises(errors.LastKey):
        repository.remove_key(repository.key_name)
    assert Repository.open(backend, PASSWORD).master == repository.master


def test_change_password() -> None:
    backend = MemoryBackend()
    repository = Repository.open(Repository.init(backend, PASSWORD).backend, PASSWORD)
    old_key = repository.key_name
    new_key = repository.change_password(b"new password")
    assert new_key != old_key and repository.key_name == new_key
    with pytest.raises(errors.WrongPassword):
        Repository.open(backend, PASSWORD)
    reopened = Repository.open(backend, b"new password")
    assert reopened.master == repository.master and reopened.key_name == new_key
    assert [k["id"] for k in reopened.list_keys()] == [new_key]


# --- encrypted objects --------------------------------------------------------------------------


def test_objects_are_encrypted_and_named_by_their_hash(memory_repository: Repository) -> None:
    name = memory_repository.save_object(Kind.SNAPSHOTS, {"secret": "plain text value"})
    stored = memory_repository.backend.get(Kind.SNAPSHOTS, name)
    assert b"plain text value" not in stored
    assert memory_repository.load_object(Kind.SNAPSHOTS, name) == {"secret": "plain text value"}


def test_a_damaged_object_raises_integrity_error(memory_repository: Repository) -> None:
    name = memory_repository.save_object(Kind.SNAPSHOTS, {"a": 1})
    backend = memory_repository.backend
    data = bytearray(backend.get(Kind.SNAPSHOTS, name))
    data[-1] ^= 1
    backend.put(Kind.SNAPSHOTS, name, bytes(data))
    with pytest.raises(errors.IntegrityError):
        memory_repository.load_object(Kind.SNAPSHOTS, name)
    with pytest.raises(errors.IntegrityError, match="missing"):
        memory_repository.load_object(Kind.SNAPSHOTS, "ab" * 32)


def test_an_object_cannot_be_moved_to_another_kind(memory_repository: Repository) -> None:
    # The kind is bound into the associated data: an index object is not accepted as a snapshot.
    name = memory_repository.save_object(Kind.INDEX, {"packs": []})
    backend = memory_repository.backend
    backend.put(Kind.SNAPSHOTS, name, backend.get(Kind.INDEX, name))
    with pytest.raises(errors.IntegrityError):
        memory_repository.load_object(Kind.SNAPSHOTS, name)


def test_storage_errors_map_to_safehold_errors(memory_repository: Repository, monkeypatch) -> None:
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(memory_repository.backend, "put", full)
    with pytest.raises(errors.StorageFull):
        memory_repository.save_object(Kind.SNAPSHOTS, {"a": 1})


# --- blobs and write order ----------------------------------------------------------------------


def test_save_blob_deduplicates(memory_repository: Repository) -> None:
    data = os.urandom(5000)
    blob_id, added = memory_repository.save_blob(BlobType.DATA, data)
    assert added is True and blob_id == memory_repository.cipher.blob_id(data)
    assert memory_repository.save_blob(BlobType.DATA, data) == (blob_id, False)  # in flight
    memory_repository.flush()
    assert memory_repository.save_blob(BlobType.DATA, data) == (blob_id, False)  # in the index
    assert memory_repository.stats.blobs_added == 1
    assert memory_repository.read_blob(blob_id) == data
    assert memory_repository.has_blob(blob_id)


def test_dedup_across_sessions(fast_kdf: dict) -> None:
    backend = MemoryBackend()
    first = Repository.init(backend, PASSWORD, fast_kdf)
    blob_id, _ = first.save_blob(BlobType.DATA, b"shared" * 100)
    first.flush()
    second = Repository.open(backend, PASSWORD)
    second.load_index()
    assert second.save_blob(BlobType.DATA, b"shared" * 100) == (blob_id, False)
    assert second.read_blob(blob_id) == b"shared" * 100


def test_flush_writes_packs_then_the_index(fast_kdf: dict) -> None:
    backend = RecordingBackend()
    repository = Repository.init(backend, PASSWORD, fast_kdf)
    backend.puts.clear()
    blobs = {repository.save_blob(BlobType.DATA, os.urandom(1000 + n))[0] for n in range(10)}
    assert backend.puts == []  # nothing stored until the pack is full or flushed
    repository.flush()
    assert [kind for kind, _ in backend.puts] == [Kind.DATA, Kind.INDEX]
    pack_name = backend.puts[0][1]
    entries = read_pack_header(repository.cipher, backend.get(Kind.DATA, pack_name))
    assert {e.blob_id for e in entries} == blobs
    index = repository.load_object(Kind.INDEX, backend.puts[1][1])
    assert [name for name, _ in index["packs"]] == [pack_name]
    repository.flush()  # nothing new: nothing written
    assert len(backend.puts) == 2


def test_full_packs_are_written_before_the_flush(fast_kdf: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository_module, "PACK_TARGET_SIZE", 10_000)
    monkeypatch.setattr(repository_module, "INDEX_EVERY_PACKS", 3)
    backend = RecordingBackend()
    repository = Repository.init(backend, PASSWORD, fast_kdf)
    backend.puts.clear()
    ids = [repository.save_blob(BlobType.DATA, os.urandom(4000))[0] for _ in range(20)]
    kinds = [kind for kind, _ in backend.puts]
    assert kinds.count(Kind.DATA) >= 6 and Kind.INDEX in kinds  # an index every 3 packs
    repository.flush()
    kinds = [kind for kind, _ in backend.puts]
    # Every index object comes after the packs it names.
    written: set[str] = set()
    for kind, name in backend.puts:
        if kind is Kind.DATA:
            written.add(name)
        else:
            named = {pack for pack, _ in repository.load_object(Kind.INDEX, name)["packs"]}
            assert named <= written
    fresh = Repository.open(backend, PASSWORD)
    fresh.load_index()
    assert all(fresh.read_blob(i) for i in ids)


def test_snapshot_is_written_after_its_packs_and_index(fast_kdf: dict) -> None:
    backend = RecordingBackend()
    repository = Repository.init(backend, PASSWORD, fast_kdf)
    backend.puts.clear()
    snapshot(repository)
    assert [kind for kind, _ in backend.puts] == [Kind.DATA, Kind.INDEX, Kind.SNAPSHOTS]


def test_read_blob_of_an_unknown_id_raises_integrity_error(memory_repository: Repository) -> None:
    with pytest.raises(errors.IntegrityError, match="not in the index"):
        memory_repository.read_blob(os.urandom(32))


def test_read_blob_names_the_damaged_pack(memory_repository: Repository) -> None:
    blob_id, _ = memory_repository.save_blob(BlobType.DATA, os.urandom(3000))
    memory_repository.flush()
    location = memory_repository.locate(blob_id)
    backend = memory_repository.backend
    data = bytearray(backend.get(Kind.DATA, location.pack))
    data[location.offset + 100] ^= 1
    backend.objects[(Kind.DATA, location.pack)] = bytes(data)
    with pytest.raises(errors.IntegrityError) as caught:
        memory_repository.read_blob(blob_id)
    assert location.pack in str(caught.value) and caught.value.fields["pack"] == location.pack


def test_concurrent_saves_store_each_blob_once(memory_repository: Repository) -> None:
    from concurrent.futures import ThreadPoolExecutor

    payloads = [os.urandom(2000) for _ in range(50)] * 6
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda d: memory_repository.save_blob(BlobType.DATA, d), payloads))
    assert sum(added for _, added in results) == 50
    memory_repository.flush()
    assert len(memory_repository.index) == 50


# --- snapshots ---------------------------------------------------------------------------------------


def test_snapshot_round_trip(memory_repository: Repository) -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    saved = snapshot(memory_repository, "db", when, tags=["daily"], parent="ab" * 32,
                     summary={"files": 1}, source={"incremental": "mtime"})
    loaded = memory_repository.load_snapshot(saved.id)
    assert loaded == saved
    assert loaded.short_id == saved.id[:8]
    assert list(memory_repository.read_tree(loaded)) == [{"path": b"x", "type": "file", "chunks": b""}]


def test_find_snapshot_by_prefix_latest_and_target(memory_repository: Repository) -> None:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    web_old = snapshot(memory_repository, "web", base)
    db = snapshot(memory_repository, "db", base + timedelta(hours=2))
    web_new = snapshot(memory_repository, "web", base + timedelta(hours=1))
    find = memory_repository.find_snapshot
    assert find(web_old.id).id == web_old.id
    assert find(web_old.id[:8]).id == web_old.id
    assert find("latest").id == db.id
    assert find("latest:web").id == web_new.id
    assert find("latest", target="web").id == web_new.id
    assert [s.id for s in memory_repository.list_snapshots("web")] == [web_old.id, web_new.id]
    with pytest.raises(errors.SnapshotNotFound):
        find("latest:nope")
    with pytest.raises(errors.SnapshotNotFound):
        find(web_old.id[:3])  # too short to be safe
    unused = next(p for p in ("0000", "1111", "2222") if not any(s.id.startswith(p) for s in (web_old, db, web_new)))
    with pytest.raises(errors.SnapshotNotFound):
        find(unused)


def test_find_snapshot_with_an_ambiguous_prefix(memory_repository: Repository) -> None:
    saved = snapshot(memory_repository)
    backend = memory_repository.backend
    twin = saved.id[:6] + ("0" if saved.id[6] != "0" else "1") + saved.id[7:]
    backend.put(Kind.SNAPSHOTS, twin, backend.get(Kind.SNAPSHOTS, saved.id))
    with pytest.raises(errors.AmbiguousSnapshot) as caught:
        memory_repository.find_snapshot(saved.id[:6])
    assert "2" in str(caught.value)
    assert memory_repository.find_snapshot(saved.id[:7]).id == saved.id


def test_find_latest_in_an_empty_repository(memory_repository: Repository) -> None:
    with pytest.raises(errors.SnapshotNotFound):
        memory_repository.find_snapshot("latest")


def test_deleted_snapshot_is_gone(memory_repository: Repository) -> None:
    saved = snapshot(memory_repository)
    memory_repository.delete_snapshot(saved.id)
    assert memory_repository.list_snapshots() == []
    with pytest.raises(errors.SnapshotNotFound):
        memory_repository.find_snapshot(saved.id[:8])
    with pytest.raises(ObjectNotFound):
        memory_repository.backend.stat(Kind.SNAPSHOTS, saved.id)


def test_tree_writer_splits_large_item_streams_and_reads_back_in_order(memory_repository: Repository,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TreeWriter, "FLUSH_AT", 64 * 1024)
    items = [{"path": f"dir/file{n:06d}".encode(), "type": "file", "mode": 0o644, "mtime": n,
              "chunks": os.urandom(32)} for n in range(20_000)]
    tree = TreeWriter(memory_repository)
    for item in items:
        tree.add(item)
    ids = tree.finish()
    memory_repository.flush()
    assert len(ids) > 3
    saved = Snapshot(id="", time=datetime.now(timezone.utc), target="t", kind="files", hostname="h",
                     paths=["/dir"], tree=ids)
    assert list(memory_repository.read_tree(saved)) == items
