"""The contract of the file sources, against the real thing: this host's files, and another host's
over SSH (the loopback sshd of the test services).

- ``open`` yields a files view whose items come parents first, names sorted, paths relative and
  single-component safe, with the metadata the archiver stores and contents equal to the file's;
- the incremental key (path, size, mtime, ctime, inode) is the same on a second run when nothing
  changed, and differs for a file that changed;
- leaving the view releases what the driver made (for SSH: the connection), also after an error.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from safehold.sources.files import FilesSource


def make_tree(root: Path) -> Path:
    (root / "data" / "sub" / "deeper").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("alpha")
    (root / "data" / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "data" / "sub" / "deeper" / "c").write_text("")
    (root / "data" / "link").symlink_to("a.txt")
    past = time.time() - 600
    for path in (root / "data").rglob("*"):
        os.utime(path, (past, past), follow_symlinks=False)
    return root / "data"


class FilesHarness:
    def source(self, path: Path) -> Any:
        return FilesSource([str(path)])

    def released(self) -> bool:
        return True


class SshHarness:
    def __init__(self, server: Any) -> None:
        self.server = server

    def source(self, path: Path) -> Any:
        from safehold.sources.ssh import SshSource

        return SshSource(host=self.server.host, port=self.server.port, user=self.server.user, paths=[str(path)],
                         identity_file=self.server.key, known_hosts=self.server.known_hosts)

    def released(self) -> bool:
        from ssh_support import connections

        for _ in range(50):  # the server side notices the close a moment later
            if connections(self.server) == 0:
                return True
            time.sleep(0.1)
        return False


@pytest.fixture(params=["files", "ssh"])
def harness(request) -> Any:
    if request.param == "files":
        return FilesHarness()
    return SshHarness(request.getfixturevalue("ssh_server"))


def listing(source: Any) -> list:
    with source.open(None) as view:
        assert view.kind == "files" and view.incremental in ("mtime", "none")
        found = []
        for item in view.items():
            content = None
            if item.type == "file":
                with item.open() as stream:
                    content = stream.read()
            found.append((item, content))
    return found


def test_items_come_in_order_with_metadata_and_contents(harness, tmp_path) -> None:
    data = make_tree(tmp_path)
    found = listing(harness.source(data))
    paths = [item.path for item, _ in found]
    assert paths == [b"data", b"data/a.txt", b"data/link", b"data/sub", b"data/sub/b.bin", b"data/sub/deeper",
                     b"data/sub/deeper/c"]
    for item, content in found:
        assert all(part not in (b"", b".", b"..") for part in item.path.split(b"/"))
        real = tmp_path / os.fsdecode(item.path)
        st = os.lstat(real)
        assert item.mode == st.st_mode & 0o7777 and (item.uid, item.gid) == (st.st_uid, st.st_gid)
        assert item.mtime_ns // 10**9 == int(st.st_mtime)
        if item.type == "file":
            assert content == real.read_bytes() and item.size == st.st_size
        if item.type == "symlink":
            assert item.link_target == b"a.txt"
    assert harness.released()


def test_the_incremental_key_is_stable_and_sees_a_change(harness, tmp_path) -> None:
    data = make_tree(tmp_path)

    def keys() -> dict:
        with harness.source(data).open(None) as view:
            return {i.path: (i.size, i.mtime_ns, i.ctime_ns, i.inode) for i in view.items() if i.type == "file"}

    first = keys()
    assert keys() == first
    (data / "a.txt").write_text("alpha, changed")
    second = keys()
    assert second[b"data/a.txt"] != first[b"data/a.txt"]
    assert {k: v for k, v in second.items() if k != b"data/a.txt"} == {
        k: v for k, v in first.items() if k != b"data/a.txt"}


def test_leaving_the_view_releases_also_after_an_error(harness, tmp_path) -> None:
    data = make_tree(tmp_path)
    with pytest.raises(RuntimeError, match="archiver failed"):
        with harness.source(data).open(None) as view:
            next(iter(view.items()))
            raise RuntimeError("archiver failed")
    assert harness.released()
