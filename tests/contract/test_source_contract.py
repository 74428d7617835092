"""What every source driver's view promises the archiver about skipped items (``items.View.skipped``).

- A view always carries a ``SkippedItems`` (the dataclass default): drivers of disk images leave it
  empty, since a disk that cannot be read fails the backup instead.
- A healthy source skips nothing, and its snapshot records a zero count (a complete snapshot).
- A file driver records what it cannot list in the view and goes on; the snapshot's summary carries it.

Run here against the drivers that need no platform (files, image); the platform drivers build
their views from the same ``View`` dataclass, so they inherit the empty default (checked below
on the registry, without connecting anywhere).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from safehold.items import SkippedItems, View
from safehold.repository import Repository
from safehold.repository.archiver import Archiver
from safehold.repository.backends.local import LocalBackend
from safehold.sources import REGISTRY
from safehold.sources.files import FilesSource
from safehold.sources.image import ImageSource

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def files_source(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"a" * 100)
    return FilesSource([str(tmp_path / "data")])


def image_source(tmp_path: Path):
    (tmp_path / "disk.img").write_bytes(b"\x01" * 4096 + bytes(65536))
    return ImageSource(str(tmp_path / "disk.img"), chunk_size=4096)


@pytest.mark.parametrize("make_source", [files_source, image_source], ids=["files", "image"])
def test_a_healthy_source_skips_nothing_and_its_snapshot_says_so(tmp_path: Path, make_source) -> None:
    repository = Repository.init(LocalBackend(tmp_path / "repo"), b"pw", FAST_KDF)
    with make_source(tmp_path).open(None) as view:
        assert isinstance(view.skipped, SkippedItems) and not view.skipped
        snapshot = Archiver(repository, threads=1).snapshot(view, "t", None)
    assert snapshot.summary["skipped"] == {"count": 0, "reasons": {}, "items": []}


def test_what_a_file_driver_cannot_list_reaches_the_snapshot(tmp_path: Path) -> None:
    source = files_source(tmp_path)
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
