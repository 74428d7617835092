"""Extended attributes (ACLs, SELinux labels, user.*) survive a backup and restore."""

import os

import pytest

from safehold.repository.archiver import Archiver
from safehold.restore.directory import DirectoryRestorer
from safehold.sources.files import FilesSource


def _supports_user_xattrs(path) -> bool:
    probe = path / ".probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def test_extended_attributes_round_trip_and_show_in_the_item(memory_repository, tmp_path):
    if not _supports_user_xattrs(tmp_path):
        pytest.fail(f"{tmp_path} has no user xattr support; run the tests on ext4/xfs/tmpfs")
    tree = tmp_path / "tree"
    (tree / "dir").mkdir(parents=True)
    (tree / "dir" / "file").write_bytes(b"content")
    os.setxattr(tree / "dir" / "file", "user.owner-team", b"payments")
    os.setxattr(tree / "dir", "user.binary", bytes(range(256)))
    (tree / "plain").write_bytes(b"no attributes")

    with FilesSource([str(tree)]).open() as view:
        snapshot = Archiver(memory_repository).snapshot(view, "t", None)
    items = {item["path"]: item for item in memory_repository.read_tree(snapshot)}
    assert items[b"tree/dir/file"]["xattrs"] == {b"user.owner-team": b"payments"}
    assert "xattrs" not in items[b"tree/plain"]

    result = DirectoryRestorer(memory_repository, tmp_path / "out").restore(memory_repository.read_tree(snapshot))
    assert result.warnings == []
    assert os.getxattr(tmp_path / "out" / "tree" / "dir" / "file", "user.owner-team") == b"payments"
    assert os.getxattr(tmp_path / "out" / "tree" / "dir", "user.binary") == bytes(range(256))
    assert os.listxattr(tmp_path / "out" / "tree" / "plain") == []
