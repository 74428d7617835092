"""Files: source tree -> FilesSource -> Archiver -> LocalBackend -> DirectoryRestorer, compared exactly.

Runs as root in CI (it chowns files to 1234:5678 and expects them back); the
ownership checks are skipped otherwise.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehold import errors
from safehold.repository import Repository, Snapshot
from safehold.repository.archiver import Archiver, Summary
from safehold.repository.backends.local import LocalBackend
from safehold.restore.directory import DirectoryRestorer
from safehold.sources.files import FilesSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"pw"
IS_ROOT = os.geteuid() == 0
MiB = 1024 * 1024
BASE_NS = 1_600_000_000_123_456_789  # mtimes with nanoseconds that must survive
EXCLUDE = ["*.tmp", "tree/cache"]

root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root to chown")


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def build_tree(tree: Path) -> None:
    rng = __import__("random").Random(42)
    tree.mkdir()
    write(tree / "a.txt", b"hello\n")
    write(tree / "empty", b"")
    write(tree / "secret.key", b"private" * 10, 0o600)
    write(tree / "sub" / "b.txt", b"bee " * 1000)
    write(tree / "sub" / "deeper" / "c.bin", rng.randbytes(3000))
    write(tree / "random.bin", rng.randbytes(5 * MiB))
    write(tree / "compressible.log", b"".join(b"%08d GET /index.html 200\n" % i for i in range(300_000)))
    write(tree / "junk.tmp", b"excluded")
    write(tree / "sub" / "more.tmp", b"excluded too")
    write(tree / "cache" / "x.txt", b"excluded dir")
    os.link(tree / "a.txt", tree / "sub" / "hard.txt")
    os.symlink("a.txt", tree / "link")
    os.symlink("nowhere/missing", tree / "dangling")
    os.symlink("../a.txt", tree / "sub" / "up")
    os.mkfifo(tree / "fifo", 0o640)
    (tree / bytes_path(b"caf\xe9.txt")).write_bytes(b"latin-1 name\n")
    (tree / "private").mkdir(mode=0o750)
    write(tree / "private" / "owned.txt", b"owned by someone else")
    (tree / "private").chmod(0o750)
    (tree / "shared").mkdir()
    (tree / "shared").chmod(0o2775)
    write(tree / "shared" / "doc.txt", b"in a setgid dir")
    write(tree / "bin" / "tool", b"#!/bin/sh\n", 0o755)
    if IS_ROOT:
        os.chown(tree / "bin" / "tool", 1234, 5678)  # chown clears set-id bits: set them after
        os.chown(tree / "private" / "owned.txt", 1234, 5678)
        os.chown(tree / "private", 1234, 5678)
        os.lchown(tree / "dangling", 1234, 5678)
        os.chown(tree / "secret.key", 0, 5678)
    (tree / "bin" / "tool").chmod(0o4755)
    # Distinct nanosecond mtimes everywhere; directories last, deepest first.
    entries = sorted(walk(tree), key=lambda p: (p.is_dir() and not p.is_symlink(), -len(p.parts)))
    for n, path in enumerate(entries):
        mtime = BASE_NS + n * 1_000_000_007
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def bytes_path(name: bytes) -> str:
    return os.fsdecode(name)


def walk(root: Path) -> list[Path]:
    found = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(Path(directory) / name)
    return found


def relative_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in walk(root)}


def describe(path: Path) -> dict:
    st = os.lstat(path)
    result = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
              "gid": st.st_gid, "mtime_ns": st.st_mtime_ns}
    if stat.S_ISLNK(st.st_mode):
        result["target"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        result["size"] = st.st_size
        result["content"] = path.read_bytes()
    return result


def is_excluded(relative: str) -> bool:
    return relative.endswith(".tmp") or relative == "cache" or relative.startswith("cache/")


@dataclass
class Backup:
    source: Path  # the directory that contains "tree"
    repository_path: Path
    repository: Repository
    snapshot: Snapshot
    summary: Summary


def backup(repository: Repository, paths: list[Path], parent: Snapshot | None = None,
           opened: list[bytes] | None = None, **source_options) -> tuple[Snapshot, Summary]:
    source = FilesSource([str(p) for p in paths], **source_options)
    archiver = Archiver(repository, threads=2)
    with source.open() as view:
        if opened is not None:
            original_items = view.items

            def counting_items():
                for item in original_items():
                    if item.open is not None:
                        real_open = item.open

                        def counted(path=item.path, real_open=real_open):
                            opened.append(path)
                            return real_open()

                        item.open = counted
                    yield item

            view.items = counting_items
        snapshot = archiver.snapshot(view, "files-target", parent)
    return snapshot, archiver.summary


def restore(repository: Repository, snapshot: Snapshot, destination: Path, **options):
    # An exact round trip, setuid bits and device nodes included, is what special_files asks for.
    options.setdefault("special_files", True)
    restorer = DirectoryRestorer(repository, destination, threads=2, **options)
    return restorer.restore(repository.read_tree(snapshot))


@pytest.fixture(scope="module")
def first_backup(tmp_path_factory: pytest.TempPathFactory) -> Backup:
    base = tmp_path_factory.mktemp("files")
    build_tree(base / "tree")
    repository = Repository.init(LocalBackend(base / "repo"), PASSWORD, FAST_KDF)
    snapshot, summary = backup(repository, [base / "tree"], exclude=EXCLUDE)
    return Backup(base, base / "repo", repository, snapshot, summary)


@pytest.fixture
def reopened(first_backup: Backup) -> Repository:
    """A fresh process's view: opened with the password, index loaded from storage."""
    repository = Repository.open(LocalBackend(first_backup.repository_path), PASSWORD)
    repository.load_index()
    return repository


@pytest.fixture(scope="module")
def restored(first_backup: Backup, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    repository = Repository.open(LocalBackend(first_backup.repository_path), PASSWORD)
    repository.load_index()
    destination = tmp_path_factory.mktemp("restored")
    result = restore(repository, first_backup.snapshot, destination)
    return destination, result


# --- the first backup --------------------------------------------------------------------


def test_summary_of_the_first_backup(first_backup: Backup) -> None:
    summary = first_backup.summary
    kept_files = [p for p in relative_paths(first_backup.source / "tree")
                  if not is_excluded(p) and (first_backup.source / "tree" / p).is_file()
                  and not (first_backup.source / "tree" / p).is_symlink()]
    assert summary.files == len(kept_files) - 1  # the second name of the hard link is not a file
    assert summary.files_new == summary.files and summary.files_unchanged == 0
    assert summary.bytes_read == summary.bytes_total
    assert summary.bytes_total == sum((first_backup.source / "tree" / p).stat().st_size for p in kept_files) - 6
    assert summary.warnings == []
    # The 6.6 MiB log compresses well; random data does not: stored is much less than read.
    assert summary.bytes_added < 5 * MiB + 1 * MiB
    assert summary.directories == 6  # tree, bin, sub, sub/deeper, private, shared; not the excluded cache


def test_snapshot_records_what_it_came_from(first_backup: Backup) -> None:
    snapshot = first_backup.snapshot
    assert snapshot.kind == "files" and snapshot.target == "files-target" and snapshot.parent is None
    assert snapshot.paths == [str(first_backup.source / "tree")]
    assert snapshot.source == {"incremental": "mtime"}
    assert snapshot.summary["files"] == first_backup.summary.files
    stored = first_backup.repository.find_snapshot("latest")
    assert stored.id == snapshot.id


def test_excluded_paths_are_not_in_the_snapshot(first_backup: Backup) -> None:
    paths = {item["path"] for item in first_backup.repository.read_tree(first_backup.snapshot)}
    assert b"tree/junk.tmp" not in paths and b"tree/sub/more.tmp" not in paths
    assert not any(p.startswith(b"tree/cache") for p in paths)
    assert b"tree/caf\xe9.txt" in paths


def test_round_trip_restores_everything_exactly(first_backup: Backup, restored) -> None:
    destination, result = restored
    source = first_backup.source / "tree"
    expected = {p for p in relative_paths(source) if not is_excluded(p)}
    assert relative_paths(destination / "tree") == expected
    assert result.damaged == [] and result.warnings == []
    for relative in sorted(expected) + ["."]:
        assert describe(destination / "tree" / relative) == describe(source / relative), relative
    assert describe(destination / "tree") == describe(source)


def test_special_entries_come_back_as_what_they_were(restored) -> None:
    destination, _ = restored
    tree = destination / "tree"
    assert os.readlink(tree / "dangling") == "nowhere/missing" and not (tree / "dangling").exists()
    assert (tree / "link").read_bytes() == b"hello\n"
    assert stat.S_ISFIFO(os.lstat(tree / "fifo").st_mode)
    assert (tree / bytes_path(b"caf\xe9.txt")).read_bytes() == b"latin-1 name\n"
    assert stat.S_IMODE(os.stat(tree / "shared").st_mode) == 0o2775
    assert stat.S_IMODE(os.stat(tree / "private").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tree / "secret.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tree / "bin" / "tool").st_mode) == 0o4755
    assert (tree / "empty").read_bytes() == b""


def test_without_special_files_setuid_bits_are_masked_and_named(first_backup: Backup, tmp_path: Path) -> None:
    result = restore(first_backup.repository, first_backup.snapshot, tmp_path / "out", special_files=False)
    tree = tmp_path / "out" / "tree"
    assert stat.S_IMODE(os.stat(tree / "bin" / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tree / "shared").st_mode) == 0o775
    assert any("bin/tool" in line for line in result.special), result.special


def test_hard_links_are_restored_as_hard_links(restored) -> None:
    destination, _ = restored
    first, second = os.stat(destination / "tree" / "a.txt"), os.stat(destination / "tree" / "sub" / "hard.txt")
    assert first.st_ino == second.st_ino and first.st_nlink == 2


@root_only
def test_owners_are_restored(restored) -> None:
    destination, _ = restored
    tree = destination / "tree"
    for path, owner in [(tree / "private" / "owned.txt", (1234, 5678)), (tree / "private", (1234, 5678)),
                        (tree / "secret.key", (0, 5678)), (tree / "bin" / "tool", (1234, 5678))]:
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == owner, path
    st = os.lstat(tree / "dangling")
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_nanosecond_mtimes_are_restored(first_backup: Backup, restored) -> None:
    destination, _ = restored
    for relative in ("a.txt", "sub/deeper", "dangling", "fifo", "random.bin", "."):
        source_ns = os.lstat(first_backup.source / "tree" / relative).st_mtime_ns
        assert source_ns % 1_000_000_000 != 0
        assert os.lstat(destination / "tree" / relative).st_mtime_ns == source_ns


def test_restore_refuses_a_non_empty_destination(first_backup: Backup, reopened: Repository,
                                                 tmp_path: Path) -> None:
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "keep.txt").write_bytes(b"mine")
    with pytest.raises(errors.DestinationError):
        restore(reopened, first_backup.snapshot, tmp_path / "occupied")
    assert os.listdir(tmp_path / "occupied") == ["keep.txt"]
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(errors.DestinationError):
        restore(reopened, first_backup.snapshot, tmp_path / "file")


def test_restore_with_overwrite_replaces_files(first_backup: Backup, reopened: Repository, tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_bytes(b"local edit that is much longer")
    (tmp_path / "tree" / "unrelated").write_bytes(b"left alone")
    restore(reopened, first_backup.snapshot, tmp_path, includes=["tree/a.txt"], overwrite=True)
    assert (tmp_path / "tree" / "a.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "tree" / "unrelated").read_bytes() == b"left alone"


# --- include patterns -----------------------------------------------------------------------------


def test_include_at_restore(first_backup: Backup, reopened: Repository, tmp_path: Path) -> None:
    result = restore(reopened, first_backup.snapshot, tmp_path, includes=["tree/sub"])
    assert relative_paths(tmp_path) == {"tree", "tree/sub", "tree/sub/b.txt", "tree/sub/deeper",
                                        "tree/sub/deeper/c.bin", "tree/sub/hard.txt", "tree/sub/up"}
    # The hard link's first name was not selected: the second comes back as a file with the content.
    assert (tmp_path / "tree" / "sub" / "hard.txt").read_bytes() == b"hello\n"
    assert result.files == 3


def test_include_of_a_single_file_at_restore(first_backup: Backup, reopened: Repository, tmp_path: Path) -> None:
    restore(reopened, first_backup.snapshot, tmp_path, includes=["/tree/sub/deeper/c.bin"])
    assert relative_paths(tmp_path) == {"tree", "tree/sub", "tree/sub/deeper", "tree/sub/deeper/c.bin"}
    assert describe(tmp_path / "tree/sub/deeper/c.bin") == describe(first_backup.source / "tree/sub/deeper/c.bin")


def test_include_and_exclude_at_backup(first_backup: Backup, tmp_path: Path) -> None:
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, FAST_KDF)
    snapshot, summary = backup(repository, [first_backup.source / "tree"], include=["*.txt"], exclude=["sub"])
    paths = {item["path"] for item in repository.read_tree(snapshot)}
    assert paths == {b"tree", b"tree/a.txt", b"tree/caf\xe9.txt", b"tree/cache", b"tree/cache/x.txt",
                     b"tree/private", b"tree/private/owned.txt", b"tree/shared", b"tree/shared/doc.txt"}
    assert summary.files == 5


def test_exclude_with_a_path_pattern(first_backup: Backup, tmp_path: Path) -> None:
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, FAST_KDF)
    snapshot, _ = backup(repository, [first_backup.source / "tree"], exclude=["tree/sub/deeper", "*.bin", "*.log"])
    paths = {item["path"] for item in repository.read_tree(snapshot)}
    assert b"tree/sub" in paths and b"tree/sub/b.txt" in paths
    assert not any(p.startswith(b"tree/sub/deeper") for p in paths)
    assert b"tree/random.bin" not in paths and b"tree/compressible.log" not in paths


# --- incremental backups --------------------------------------------------------------------------


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "data"
    for n in range(6):
        write(tree / f"file{n}.txt", (f"file {n} " * (500 + n)).encode())
    write(tree / "nested" / "big.bin", os.urandom(600_000))
    return tree


@pytest.fixture
def small_repository(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, FAST_KDF)


def test_second_backup_reuses_unchanged_files_unread(small_tree: Path, small_repository: Repository) -> None:
    parent, _ = backup(small_repository, [small_tree])
    changed = small_tree / "file3.txt"
    changed.write_bytes(b"new content of another size")
    opened: list[bytes] = []
    child, summary = backup(small_repository, [small_tree], parent=parent, opened=opened)
    assert opened == [b"data/file3.txt"]
    assert summary.files_unchanged == 6 and summary.files_changed == 1 and summary.files_new == 0
    assert summary.bytes_read == len(b"new content of another size")
    assert child.parent == parent.id
    restored = small_repository.backend.root.parent / "restored"
    restore(small_repository, child, restored)
    for path in walk(small_tree):
        relative = path.relative_to(small_tree)
        assert describe(restored / "data" / relative) == describe(path)


def test_a_changed_file_of_the_same_size_with_a_new_mtime_is_read_again(small_tree: Path,
                                                                         small_repository: Repository) -> None:
    parent, _ = backup(small_repository, [small_tree])
    target = small_tree / "file2.txt"
    old = target.stat()
    target.write_bytes(b"X" * old.st_size)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns + 1_000))
    opened: list[bytes] = []
    child, summary = backup(small_repository, [small_tree], parent=parent, opened=opened)
    assert opened == [b"data/file2.txt"]
    assert summary.files_changed == 1 and summary.bytes_read == old.st_size
    items = {item["path"]: item for item in small_repository.read_tree(child)}
    chunks = items[b"data/file2.txt"]["chunks"]
    assert small_repository.read_blob(chunks[:32]) == b"X" * old.st_size


def test_same_size_and_mtime_but_new_ctime_is_read_again(small_tree: Path, small_repository: Repository) -> None:
    # A tool that restores the mtime after editing (touch -r, rsync -t) cannot fake the ctime.
    parent, _ = backup(small_repository, [small_tree])
    target = small_tree / "file1.txt"
    old = target.stat()
    target.write_bytes(b"Y" * old.st_size)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert target.stat().st_mtime_ns == old.st_mtime_ns and target.stat().st_ctime_ns != old.st_ctime_ns
    opened: list[bytes] = []
    _, summary = backup(small_repository, [small_tree], parent=parent, opened=opened)
    assert opened == [b"data/file1.txt"] and summary.files_changed == 1


def test_new_and_deleted_files_in_an_incremental_backup(small_tree: Path, small_repository: Repository) -> None:
    parent, _ = backup(small_repository, [small_tree])
    (small_tree / "file0.txt").unlink()
    write(small_tree / "nested" / "new.txt", b"brand new")
    opened: list[bytes] = []
    child, summary = backup(small_repository, [small_tree], parent=parent, opened=opened)
    assert opened == [b"data/nested/new.txt"]
    assert summary.files_new == 1 and summary.files_unchanged == 6
    paths = {item["path"] for item in small_repository.read_tree(child)}
    assert b"data/file0.txt" not in paths and b"data/nested/new.txt" in paths


def test_unchanged_backup_adds_almost_nothing(small_tree: Path, small_repository: Repository) -> None:
    parent, first = backup(small_repository, [small_tree])
    _, second = backup(small_repository, [small_tree], parent=parent)
    assert second.bytes_read == 0 and second.files_unchanged == 7
    assert second.blobs_added == 0  # even the item stream dedups: same items, same tree blobs


def test_a_file_whose_open_fails_is_left_out_and_recorded(small_tree: Path, small_repository: Repository,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Any source's open() raising a plain OSError (not only the files driver's ItemSkipped) is
    recorded as skipped; the real file system cases are in tests/unit/sources/test_partial_backups.py."""
    source = FilesSource([str(small_tree)])
    archiver = Archiver(small_repository, threads=2)
    with source.open() as view:
        items = view.items

        def failing():
            for item in items():
                if item.path == b"data/file4.txt":
                    def refuse():
                        raise PermissionError(13, "Permission denied")
                    item.open = refuse
                yield item

        view.items = failing
        snapshot = archiver.snapshot(view, "t", None)
    assert archiver.summary.warnings == []
    assert snapshot.summary["skipped"] == {
        "count": 1, "reasons": {"unreadable": 1},
        "items": [{"path": b"data/file4.txt", "type": "file", "reason": "unreadable",
                   "detail": "open failed: Permission denied"}]}
    paths = {item["path"] for item in small_repository.read_tree(snapshot)}
    assert b"data/file4.txt" not in paths and b"data/file5.txt" in paths
