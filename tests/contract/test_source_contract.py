"""One contract every source driver passes (``sources.base.Source``), run against the real thing:
local files, an image file, PostgreSQL (a throwaway cluster of the suite's own, initdb/pg_ctl) and
a real program (``command``).

- ``open`` yields a ``View`` whose items (or disks) the archiver stores, and a token that is plain
  JSON for the next run;
- leaving the view releases what the driver made (no child process, no platform object left);
- a source that fails while it is read fails the backup: the archiver writes no snapshot, and the
  error is a SafeholdError naming the source.
- A view always carries a ``SkippedItems`` (empty by default: drivers of disk images fail instead
  of skipping); a healthy source skips nothing and its snapshot records a zero count; what a file
  driver cannot list reaches the snapshot's summary.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest

from safehold import errors
from safehold.items import SkippedItems, View
from safehold.repository import Repository
from safehold.repository.archiver import Archiver
from safehold.repository.backends.local import LocalBackend
from safehold.sources import REGISTRY
from safehold.sources.files import FilesSource
from safehold.sources.image import ImageSource


def children() -> set[int]:
    """This process's live child processes (zombies excluded: they are reaped)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:
            continue
    alive = set()
    for pid in found:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


class Harness:
    expected: dict[bytes, bytes] = {}  # stored path -> content, for file sources
    failure = ""  # what the failing source's error says

    def source(self) -> Any: ...

    def failing_source(self) -> Any: ...

    def close(self) -> None:
        pass


class FilesHarness(Harness):
    failure = "no such file"
    def __init__(self, tmp_path: Path) -> None:
        root = tmp_path / "tree"
        root.mkdir()
        (root / "a").write_bytes(b"alpha")
        self.root = root
        self.expected = {b"tree/a": b"alpha"}

    def source(self) -> Any:
        from safehold.sources.files import FilesSource

        return FilesSource([str(self.root)])

    def failing_source(self) -> Any:
        from safehold.sources.files import FilesSource

        return FilesSource([str(self.root / "missing")])


class ImageHarness(Harness):
    failure = "no such file"
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "disk.img"
        self.path.write_bytes(os.urandom(128 * 1024))

    def source(self) -> Any:
        from safehold.sources.image import ImageSource

        return ImageSource(str(self.path), 64 * 1024)

    def failing_source(self) -> Any:
        from safehold.sources.image import ImageSource

        return ImageSource(str(self.path) + ".missing", 64 * 1024)


class PostgresHarness(Harness):
    failure = "pg_dump of database 'shop' failed: exit status 1 after 0 bytes: .*permission denied for table secret"
    def __init__(self) -> None:
        from safehold.platforms.postgres.cluster import TemporaryCluster

        self.cluster = TemporaryCluster(150000)
        self.server = self.cluster.start()
        self.server.execute(None, "create database shop")
        self.server.execute("shop", "create table t (x int); insert into t select generate_series(1, 1000)")
        self.dsn = f"host={self.server.host} port={self.server.port} user=postgres dbname=postgres"

    def source(self) -> Any:
        from safehold.sources.postgres import PostgresSource

        return PostgresSource(dsn=self.dsn, databases=["shop"])

    def failing_source(self) -> Any:
        from safehold.sources.postgres import PostgresSource

        # A role that may connect but not read one table: pg_dump fails once it reaches it, after
        # it has started writing the dump.
        self.server.execute(None, "create role reader login")
        self.server.execute("shop", "create table secret (x int); revoke all on secret from public")
        self.server.execute("shop", "grant select on t to reader")
        return PostgresSource(dsn=self.dsn + " user=reader", databases=["shop"], globals=False)

    def close(self) -> None:
        self.cluster.stop()


class CommandHarness(Harness):
    expected = {b"out.txt": b"hello\n"}
    failure = "exit status 4 after 6888896 bytes"

    def source(self) -> Any:
        from safehold.sources.command import CommandSource

        return CommandSource(run="echo hello", name="out.txt")

    def failing_source(self) -> Any:
        from safehold.sources.command import CommandSource

        return CommandSource(run="seq 1 1000000; exit 4", name="out.txt")


@pytest.fixture(params=["files", "image", "postgres", "command"])
def harness(request, tmp_path):
    kind = request.param
    made: Harness
    if kind == "files":
        made = FilesHarness(tmp_path)
    elif kind == "image":
        made = ImageHarness(tmp_path)
    elif kind == "postgres":
        made = PostgresHarness()
    else:
        made = CommandHarness()
    yield made
    made.close()


def test_a_view_is_stored_and_its_token_is_plain_json(harness, memory_repository) -> None:
    before = children()
    with harness.source().open(None) as view:
        assert view.kind in ("files", "image")
        snapshot = Archiver(memory_repository, threads=2).snapshot(view, "contract", None)
    json.dumps(snapshot.source)  # stored in the snapshot, handed to the next run
    assert children() <= before
    items = list(memory_repository.read_tree(snapshot))
    assert items
    for path, content in harness.expected.items():
        item = next(i for i in items if i["path"] == path)
        data = b"".join(memory_repository.read_blob(item["chunks"][i : i + 32])
                        for i in range(0, len(item["chunks"]), 32))
        assert data == content


def test_leaving_the_view_early_releases_everything(harness) -> None:
    before = children()
    with pytest.raises(RuntimeError):
        with harness.source().open(None) as view:
            if view.items is not None:
                for item in view.items():
                    if item.open is not None:
                        stream = item.open()
                        stream.read(10)  # started, then abandoned
                        stream.close()
                        break
            raise RuntimeError("the backup stopped")
    assert children() <= before


def test_a_failing_source_writes_no_snapshot(harness, memory_repository) -> None:
    """At open (a missing path) or while it is read (a dump that fails midway, a program's exit status)."""
    before = children()
    with pytest.raises(errors.SafeholdError, match=harness.failure):
        with harness.failing_source().open(None) as view:
            Archiver(memory_repository, threads=2).snapshot(view, "contract", None)
    assert memory_repository.list_snapshots() == []
    assert children() <= before


# --- skipped items ----------------------------------------------------------

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def small_files_source(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"a" * 100)
    return FilesSource([str(tmp_path / "data")])


def image_source(tmp_path: Path):
    (tmp_path / "disk.img").write_bytes(b"\x01" * 4096 + bytes(65536))
    return ImageSource(str(tmp_path / "disk.img"), chunk_size=4096)


@pytest.mark.parametrize("make_source", [small_files_source, image_source], ids=["files", "image"])
def test_a_healthy_source_skips_nothing_and_its_snapshot_says_so(tmp_path: Path, make_source) -> None:
    repository = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", FAST_KDF)
    with make_source(tmp_path).open(None) as view:
        assert isinstance(view.skipped, SkippedItems) and not view.skipped
        snapshot = Archiver(repository, threads=1).snapshot(view, "t", None)
    assert snapshot.summary["skipped"] == {"count": 0, "reasons": {}, "items": []}


def test_what_a_file_driver_cannot_list_reaches_the_snapshot(tmp_path: Path) -> None:
    source = small_files_source(tmp_path)
    repository = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", FAST_KDF)
    with source.open(None) as view:
        view.skipped.add(b"data/gone", "dir", "vanished", "removed since its directory was listed")
        snapshot = Archiver(repository, threads=1).snapshot(view, "t", None)
    assert snapshot.summary["skipped"]["count"] == 1
    assert snapshot.summary["skipped"]["items"][0]["path"] == b"data/gone"


def test_every_registered_driver_builds_its_view_from_the_view_dataclass() -> None:
    """So every view has ``skipped`` (empty by default) whatever the driver."""
    for kind, (module_name, class_name, _restore) in REGISTRY.items():
        module = importlib.import_module(module_name)
        assert getattr(module, class_name), kind
        source_text = inspect.getsource(module)
        assert "View(" in source_text, f"{kind}: its views are not safehold.items.View"
        assert getattr(module, "View", View) is View, f"{kind}: View is not safehold.items.View"
    assert isinstance(View(kind="image", paths=[]).skipped, SkippedItems)
