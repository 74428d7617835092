"""FilesSource: walking, patterns, hard links, errors; and the sparse-file extents of ImageSource."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from safehold import errors
from safehold.sources.base import Source
from safehold.sources.files import FilesSource, Patterns
from safehold.sources.image import ImageSource, allocated_extents, disk_size


def items(source: FilesSource) -> dict[bytes, object]:
    with source.open() as view:
        return {item.path: item for item in view.items()}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "a" / "node_modules" / "pkg").mkdir(parents=True)
    (root / "a" / "node_modules" / "pkg" / "index.js").write_text("js")
    (root / "a" / "keep.md").write_text("md")
    (root / "a" / "scratch.tmp").write_text("tmp")
    (root / "cache" / "deep").mkdir(parents=True)
    (root / "cache" / "deep" / "x.md").write_text("cached")
    (root / "b.md").write_text("b")
    (root / "c.txt").write_text("c")
    return root


@pytest.mark.parametrize("cls", [FilesSource, ImageSource])
def test_sources_satisfy_the_protocol(cls: type) -> None:
    # Source is not runtime_checkable: compare the open() signature with the protocol's.
    expected = inspect.signature(Source.open).parameters["parent_token"]
    actual = inspect.signature(cls.open).parameters
    assert list(actual)[:2] == ["self", "parent_token"]
    assert actual["parent_token"].kind == expected.kind
    assert all(p.default is not inspect.Parameter.empty for name, p in actual.items() if name != "self")


@pytest.mark.parametrize(
    ("exclude", "absent", "present"),
    [
        (["*.tmp"], [b"docs/a/scratch.tmp"], [b"docs/a/keep.md"]),
        (["node_modules"], [b"docs/a/node_modules", b"docs/a/node_modules/pkg/index.js"], [b"docs/a"]),
        (["docs/cache"], [b"docs/cache", b"docs/cache/deep/x.md"], [b"docs/b.md"]),
        (["/docs/cache/"], [b"docs/cache"], [b"docs/b.md"]),
        (["docs/a/*"], [b"docs/a/keep.md", b"docs/a/node_modules"], [b"docs/a", b"docs/b.md"]),
    ],
)
def test_exclude_patterns(tree: Path, exclude: list[str], absent: list[bytes], present: list[bytes]) -> None:
    found = items(FilesSource([str(tree)], exclude=exclude))
    assert not set(absent) & set(found)
    assert set(present) <= set(found)


def test_include_keeps_matching_files_and_the_directories_leading_to_them(tree: Path) -> None:
    found = set(items(FilesSource([str(tree)], include=["*.md"], exclude=["cache"])))
    assert found == {b"docs", b"docs/a", b"docs/a/keep.md", b"docs/b.md"}


def test_include_of_a_directory_keeps_everything_under_it(tree: Path) -> None:
    found = set(items(FilesSource([str(tree)], include=["docs/cache"])))
    assert found == {b"docs", b"docs/cache", b"docs/cache/deep", b"docs/cache/deep/x.md"}


def test_patterns_match_bytes_names() -> None:
    patterns = Patterns(exclude=[b"caf\xe9*"], include=[])
    assert patterns.excluded(b"docs/caf\xe9.txt")
    assert not patterns.excluded(b"docs/cafe.txt")


def test_several_roots_and_a_single_file_root(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("n")
    found = items(FilesSource([str(tree), str(tmp_path / "notes.txt")]))
    assert b"notes.txt" in found and found[b"notes.txt"].type == "file"
    assert b"docs/b.md" in found


def test_roots_with_the_same_base_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x" / "etc").mkdir(parents=True)
    (tmp_path / "y" / "etc").mkdir(parents=True)
    with pytest.raises(errors.SourceError, match="base name"):
        FilesSource([str(tmp_path / "x" / "etc"), str(tmp_path / "y" / "etc")])


def test_a_missing_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(errors.SourceError, match="no such"):
        with FilesSource([str(tmp_path / "missing")]).open():
            pass


def test_hard_links_are_stored_once(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "one").write_bytes(b"x" * 10)
    os.link(root / "one", root / "two")
    os.link(root / "one", root / "three")
    found = items(FilesSource([str(root)]))
    assert found[b"r/one"].type == "file" and found[b"r/one"].size == 10
    assert (found[b"r/three"].type, found[b"r/three"].link_target) == ("hardlink", b"r/one")
    assert (found[b"r/two"].type, found[b"r/two"].link_target) == ("hardlink", b"r/one")
    assert found[b"r/two"].open is None


def test_file_items_open_their_own_content(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    for n in range(5):
        (root / f"f{n}").write_bytes(bytes([n]) * (n + 1))
    found = items(FilesSource([str(root)]))
    for n in range(5):
        with found[f"r/f{n}".encode()].open() as stream:
            assert stream.read() == bytes([n]) * (n + 1)


def test_sparse_file_extents(tmp_path: Path) -> None:
    image = tmp_path / "sparse.img"
    with open(image, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
        handle.seek(1024 * 1024)
        handle.write(b"z" * 65536)
    extents = allocated_extents(str(image))
    if extents is None:
        pytest.skip("filesystem cannot report holes")
    assert len(extents) == 1
    offset, length = extents[0]
    assert offset <= 1024 * 1024 and offset + length >= 1024 * 1024 + 65536
    assert length < 1024 * 1024
    assert disk_size(str(image)) == 8 * 1024 * 1024
    (tmp_path / "empty.img").write_bytes(b"")
    assert allocated_extents(str(tmp_path / "empty.img")) == []
