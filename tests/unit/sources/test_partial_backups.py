"""Partial backups on a real file system: what cannot be read is left out and listed, never fails
the whole target, and never blocks it; the snapshot holds everything readable and restores it.

Unreadable entries need a process that permissions apply to. Tests run as root here, and root
reads a mode-000 file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so the backup runs in a
child process without those two capabilities (util-linux ``setpriv``): still uid 0, so it owns the
repository it writes, but mode bits now bind it. As another user the child runs as it is.

Races (an entry vanishing, changing or being swapped for a FIFO between the walk's ``lstat`` and
the archiver's ``open``) are made deterministic by acting on the real file system from inside the
item stream: the walk is a generator, so what the test does after an item is yielded happens
before the walk or the archiver go on.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from safehold.items import ItemSkipped, SkippedItems
from safehold.repository import Repository, Snapshot
from safehold.repository.archiver import Archiver
from safehold.repository.backends.local import LocalBackend
from safehold.restore.directory import DirectoryRestorer
from safehold.sources.files import FilesSource, open_listed_file

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"pw"
TIMEOUT = 60  # seconds a backup may take before it counts as blocked


def without_permission_override() -> list[str]:
    """A command prefix that makes file modes bind the process (see the module docstring)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root bypasses file modes and setpriv (util-linux) is missing to drop that")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


BACKUP_SCRIPT = """
import json, sys
from safehold.repository import Repository
from safehold.repository.archiver import Archiver
from safehold.repository.backends.local import LocalBackend
from safehold.sources.files import FilesSource
repository = Repository.open(LocalBackend(sys.argv[1]), sys.argv[2].encode())
repository.load_index()
with FilesSource([sys.argv[3]]).open() as view:
    snapshot = Archiver(repository, threads=2).snapshot(view, "t", None)
print(json.dumps({"id": snapshot.id}))
"""


def backup_without_override(repository_path: Path, tree: Path) -> str:
    proc = subprocess.run([*without_permission_override(), sys.executable, "-c", BACKUP_SCRIPT,
                           str(repository_path), PASSWORD.decode(), str(tree)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["id"]


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def repository_path(tmp_path: Path) -> Path:
    Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, FAST_KDF)
    return tmp_path / "repo"


def open_repository(path: Path) -> Repository:
    repository = Repository.open(LocalBackend(path), PASSWORD)
    repository.load_index()
    return repository


def paths_in(repository: Repository, snapshot: Snapshot) -> set[bytes]:
    return {item["path"] for item in repository.read_tree(snapshot)}


def restore(repository: Repository, snapshot: Snapshot, destination: Path) -> None:
    DirectoryRestorer(repository, destination, threads=2).restore(repository.read_tree(snapshot))


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def tree(tmp_path: Path):
    """data/{a.txt, open/b.txt, open/private.txt (mode 000), locked/ (mode 000, holding s.txt), z.txt};
    the modes are given back afterwards so pytest can clean up."""
    root = tmp_path / "data"
    write(root / "a.txt", b"a" * 5000)
    write(root / "open" / "b.txt", b"b" * 7000)
    write(root / "open" / "private.txt", b"private")
    write(root / "locked" / "s.txt", b"secret")
    write(root / "z.txt", b"z")
    (root / "open" / "private.txt").chmod(0)
    (root / "locked").chmod(0)
    yield root
    (root / "locked").chmod(0o755)
    (root / "open" / "private.txt").chmod(0o644)


def test_an_unreadable_directory_and_file_leave_a_partial_snapshot_of_everything_else(
        tree: Path, repository_path: Path, tmp_path: Path) -> None:
    """Before: the unreadable directory failed the whole backup (SourceError, no snapshot)."""
    snapshot_id = backup_without_override(repository_path, tree)
    repository = open_repository(repository_path)
    snapshot = repository.load_snapshot(snapshot_id)
    skipped = snapshot.summary["skipped"]
    assert skipped == {
        "count": 2, "reasons": {"unreadable": 2},
        "items": [
            {"path": b"data/locked", "type": "dir", "reason": "unreadable", "detail": "Permission denied"},
            {"path": b"data/open/private.txt", "type": "file", "reason": "unreadable",
             "detail": "Permission denied"},
        ]}
    assert snapshot.summary["warnings"] == []  # said once, as skipped items, not also as warning lines
    assert snapshot.summary["files"] == 3  # what the snapshot holds
    assert paths_in(repository, snapshot) == {b"data", b"data/a.txt", b"data/open", b"data/open/b.txt", b"data/z.txt"}

    # A restore of the partial snapshot brings back everything that was readable, exactly.
    restore(repository, snapshot, tmp_path / "out")
    assert files_under(tmp_path / "out" / "data") == {"a.txt": b"a" * 5000, "open/b.txt": b"b" * 7000, "z.txt": b"z"}


def test_an_unreadable_root_still_fails_the_target(tmp_path: Path, repository_path: Path) -> None:
    """Nothing of the target can be read: that is a failure (SourceError), not a partial backup."""
    root = tmp_path / "data"
    write(root / "x", b"x")
    root.chmod(0)
    try:
        proc = subprocess.run([*without_permission_override(), sys.executable, "-c", BACKUP_SCRIPT,
                               str(repository_path), PASSWORD.decode(), str(root)],
                              capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        root.chmod(0o755)
    assert proc.returncode != 0
    assert "SourceError" in proc.stderr and "permission denied" in proc.stderr.lower()
    assert not list((repository_path / "snapshots").iterdir())


def in_stream(view, act) -> None:
    """Call ``act(item)`` on the real file system after the walk yields each item and before the
    archiver (or the walk) goes on."""
    items = view.items

    def acting():
        for item in items():
            act(item)
            yield item

    view.items = acting


def test_a_directory_that_vanishes_during_the_walk_is_reported_as_vanished(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root / "a" / "1.txt", b"1")
    write(root / "b" / "1.txt", b"b1")
    write(root / "b" / "2.txt", b"b2")
    write(root / "c" / "1.txt", b"c1")
    write(root / "d" / "1.txt", b"d1")
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, FAST_KDF)

    def act(item) -> None:
        if item.path == b"data/a/1.txt":
            shutil.rmtree(root / "c")  # listed in data/, not walked yet
        if item.path == b"data/b/1.txt":
            shutil.rmtree(root / "b")  # being walked: this file (not opened yet) and the others go with it

    with FilesSource([str(root)]).open() as view:
        in_stream(view, act)
        snapshot = Archiver(repository, threads=2).snapshot(view, "t", None)
    skipped = snapshot.summary["skipped"]
    assert skipped["reasons"] == {"vanished": 3}
    # Files are opened by the archiver's worker threads: their entries come in the order the reads
    # failed, which is not the walk's order, so the list is compared as a set.
    assert sorted((entry["path"], entry["type"], entry["reason"]) for entry in skipped["items"]) == [
        (b"data/b/1.txt", "file", "vanished"), (b"data/b/2.txt", "file", "vanished"), (b"data/c", "dir", "vanished")]
    assert all("removed" in entry["detail"] for entry in skipped["items"])
    paths = paths_in(repository, snapshot)
    assert {b"data/a/1.txt", b"data/d/1.txt"} <= paths and not any(p.startswith(b"data/c") for p in paths)


def test_a_file_that_changes_while_read_is_stored_as_read_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root / "log.txt", b"first line\n" * 1000)
    write(root / "other.txt", b"other")
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, FAST_KDF)
    listed_size = (root / "log.txt").stat().st_size

    def act(item) -> None:
        if item.path == b"data/log.txt":
            real_open = item.open

            def open_then_append():
                stream = real_open()  # the file is open: now a writer appends to it
                with open(root / "log.txt", "ab") as writer:
                    writer.write(b"appended while the backup read the file\n")
                return stream

            item.open = open_then_append

    with FilesSource([str(root)]).open() as view:
        in_stream(view, act)
        snapshot = Archiver(repository, threads=2).snapshot(view, "t", None)
    skipped = snapshot.summary["skipped"]
    assert skipped["count"] == 1 and skipped["reasons"] == {"changed": 1}
    entry = skipped["items"][0]
    assert (entry["path"], entry["reason"]) == (b"data/log.txt", "changed")
    assert f"size {listed_size} -> {listed_size + 40} bytes" in entry["detail"]
    # Stored as read (the snapshot is still written), with the metadata listed before the read, so the
    # next backup reads the file again instead of trusting a possibly torn copy.
    records = {item["path"]: item for item in repository.read_tree(snapshot)}
    assert records[b"data/log.txt"]["size"] == listed_size + 40
    restore(repository, snapshot, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "log.txt").read_bytes() == (root / "log.txt").read_bytes()
    assert (tmp_path / "out" / "data" / "other.txt").read_bytes() == b"other"


def test_a_fifo_swapped_in_before_the_open_never_blocks_the_backup(tmp_path: Path) -> None:
    """Before: the archiver's open() of the FIFO waited for a writer forever."""
    root = tmp_path / "data"
    write(root / "a.txt", b"a")
    write(root / "swapped", b"a regular file when listed")
    write(root / "z.txt", b"z")
    repository = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD, FAST_KDF)

    def act(item) -> None:
        if item.path == b"data/swapped":  # listed (lstat) as a regular file; not opened yet
            os.unlink(root / "swapped")
            os.mkfifo(root / "swapped")

    outcome: dict = {}

    def run() -> None:
        try:
            with FilesSource([str(root)]).open() as view:
                in_stream(view, act)
                outcome["snapshot"] = Archiver(repository, threads=2).snapshot(view, "t", None)
        except BaseException as error:  # reported below, in the test's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    if worker.is_alive():
        # Blocked in open(): a writer end lets it go on, so the test ends instead of hanging.
        fd = os.open(root / "swapped", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(TIMEOUT)
        pytest.fail("the backup blocked on a FIFO swapped in for a listed regular file")
    assert "error" not in outcome, outcome.get("error")
    snapshot = outcome["snapshot"]
    assert snapshot.summary["skipped"]["items"] == [
        {"path": b"data/swapped", "type": "file", "reason": "replaced",
         "detail": "replaced by a fifo since it was listed"}]
    assert paths_in(repository, snapshot) == {b"data", b"data/a.txt", b"data/z.txt"}


@pytest.mark.parametrize("swap", ["fifo", "symlink", "another file", "removed", "directory"])
def test_open_listed_file_judges_what_it_opened_on_the_descriptor(tmp_path: Path, swap: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"listed")
    listed = os.lstat(path)
    os.unlink(path)
    expected = {"fifo": ("replaced", "replaced by a fifo since it was listed"),
                "symlink": ("replaced", "replaced by a symlink since it was listed"),
                "another file": ("replaced", "replaced by another file since it was listed"),
                "removed": ("vanished", "removed since it was listed"),
                "directory": ("replaced", "replaced by a dir since it was listed")}[swap]
    if swap == "fifo":
        os.mkfifo(path)
    elif swap == "symlink":
        (tmp_path / "elsewhere").write_bytes(b"not what was listed")
        os.symlink(tmp_path / "elsewhere", path)
    elif swap == "another file":
        (tmp_path / "keep-inode-busy").write_bytes(b"")  # so the new file cannot reuse the inode
        path.write_bytes(b"new")
        if os.lstat(path).st_ino == listed.st_ino:
            pytest.skip("the file system reused the inode")
    elif swap == "directory":
        path.mkdir()
    with pytest.raises(ItemSkipped) as raised:
        open_listed_file(os.fsencode(path), listed)
    assert (raised.value.reason, raised.value.detail) == expected


def test_a_regular_file_opens_blocking_and_reports_no_change(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    with open_listed_file(os.fsencode(path), os.lstat(path)) as stream:
        assert os.get_blocking(stream.fileno())
        assert stream.read() == b"x" * 100
        assert stream.changed_while_read() is None


def test_a_hard_link_to_a_file_left_out_is_left_out_too(tmp_path: Path, repository_path: Path) -> None:
    """The later name would point at a path the snapshot does not hold."""
    root = tmp_path / "data"
    write(root / "a-first", b"secret")
    os.link(root / "a-first", root / "b-second")
    write(root / "c.txt", b"c")
    (root / "a-first").chmod(0)
    try:
        snapshot_id = backup_without_override(repository_path, root)
    finally:
        (root / "a-first").chmod(0o644)
    repository = open_repository(repository_path)
    snapshot = repository.load_snapshot(snapshot_id)
    assert [(e["path"], e["type"], e["reason"]) for e in snapshot.summary["skipped"]["items"]] == [
        (b"data/a-first", "file", "unreadable"), (b"data/b-second", "hardlink", "unreadable")]
    assert paths_in(repository, snapshot) == {b"data", b"data/c.txt"}
    restore(repository, snapshot, tmp_path / "out")
    assert files_under(tmp_path / "out") == {"data/c.txt": b"c"}


def test_the_skipped_list_is_bounded_and_the_count_exact(tmp_path: Path, repository_path: Path) -> None:
    root = tmp_path / "data"
    for n in range(130):
        write(root / f"f{n:03}", b"x")
        (root / f"f{n:03}").chmod(0)
    try:
        snapshot_id = backup_without_override(repository_path, root)
    finally:
        for n in range(130):
            (root / f"f{n:03}").chmod(0o644)
    skipped = open_repository(repository_path).load_snapshot(snapshot_id).summary["skipped"]
    assert skipped["count"] == 130 and skipped["reasons"] == {"unreadable": 130}
    assert len(skipped["items"]) == 100 and skipped["items"][-1]["path"] == b"data/f099"


def test_a_directory_swapped_for_a_symlink_is_not_walked_into(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root / "a.txt", b"a")
    write(root / "sub" / "inside.txt", b"inside")
    outside = tmp_path / "outside"
    write(outside / "private.txt", b"not part of this target")
    source = FilesSource([str(root)])
    listed = os.lstat(root / "sub")
    shutil.rmtree(root / "sub")
    os.symlink(outside, root / "sub")
    # The walk listed data/sub as a directory (lstat above): walk into it as the walk would.
    skipped = SkippedItems()
    found = list(source._walk(os.fsencode(root / "sub"), b"data/sub", listed, {}, listed.st_dev, skipped))
    assert found == []
    assert skipped.items == [{"path": b"data/sub", "type": "dir", "reason": "replaced",
                              "detail": "replaced by a symlink since it was listed"}]
    assert stat.S_ISLNK(os.lstat(root / "sub").st_mode)


def test_names_are_still_walked_in_bytewise_order(tmp_path: Path) -> None:
    """Listing through a descriptor gives str names; the walk order stays that of the bytes
    (docs/repository-format.md): an undecodable byte 0xff sorts after UTF-8's 0xee lead byte."""
    root = tmp_path / "data"
    root.mkdir()
    names = [b"a", b"\xee\x80\x80", b"\xff", b"B"]
    for name in names:
        Path(os.fsdecode(os.fsencode(root) + b"/" + name)).write_bytes(b"x")
    with FilesSource([str(root)]).open() as view:
        walked = [item.path for item in view.items()]
    assert walked == [b"data"] + [b"data/" + name for name in sorted(names)]
