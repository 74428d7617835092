"""Generated hostile snapshots: whatever the item stream, a restore changes nothing outside its destination.

Hypothesis builds trees from the escape classes of issue 12 and their combinations: symlinks
pointing out (absolute, relative, through ``..``), hard links to outside paths and through parents
that become symlinks, directory items over symlinks, setuid and world-writable modes, device nodes,
names with ``..``, ``/``, NUL and control characters, duplicate paths, any order; optionally with
symlinks out planted in the destination beforehand (restored with ``--overwrite``). Each tree is
written as a real snapshot with the project's tree writer, restored for real, and a sentinel tree
beside the destination is compared by inode, mode, owner, mtime, link count and content.

CI runs a bounded number of examples; ``pytest -m hostile tests/unit/restore`` runs many more
(``SAFEHOLD_HOSTILE_EXAMPLES``, default 10000).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile_support import (base, directory, disk, file, fingerprint, hardlink, make_sentinel, symlink,
                             write_snapshot)

from safehold import errors
from safehold.repository import Repository
from safehold.repository.backends.memory import MemoryBackend
from safehold.restore.directory import DirectoryRestorer
from safehold.restore.image import restore_image

OUT = b"@OUT"  # replaced by the sentinel's absolute path when the tree is built
NAMES = [b"a", b"b", b"c", b"..", b".", b"", b"a/..", b"../a", b"x\0y", b"\x1b[2J", b"/a", b"d\n", b"\xff"]
LINK_TARGETS = [OUT, OUT + b"/secret", OUT + b"/dir", b"..", b"../..", b"../outside", b"../outside/secret",
                b"/", b"a", b"a/b", b"", b"../../outside/dir"]
MODES = [0o644, 0o755, 0o777, 0o4755, 0o6777, 0o2775, 0o1777, 0o000]

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(b"/".join) | st.sampled_from(
    [OUT, OUT + b"/secret", OUT + b"/new", b"../outside/secret", b"../outside/dir/new"])
items = st.one_of(
    st.builds(lambda p, c, m: file(p, c, m), paths, st.binary(max_size=64), st.sampled_from(MODES)),
    st.builds(directory, paths, st.sampled_from(MODES)),
    st.builds(symlink, paths, st.sampled_from(LINK_TARGETS)),
    st.builds(hardlink, paths, paths),
    st.builds(lambda p, m: base(p, "fifo", m), paths, st.sampled_from(MODES)),
    st.builds(lambda p, kind: base(p, kind, 0o4666, rdev=os.makedev(1, 1)), paths,
              st.sampled_from(["chardev", "blockdev"])),
    st.builds(lambda p: base(p, "socket"), paths),
)
#: Valid items with one or two fields replaced by any msgpack value: wrong types, huge numbers, None.
junk_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=8),
                        st.text(max_size=4), st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo", "x"]),
                        st.dictionaries(st.binary(max_size=4), st.binary(max_size=4), max_size=2))
junk = st.builds(lambda item, patch: {**item, **patch}, items, st.dictionaries(
    st.sampled_from(["path", "type", "mode", "mtime", "atime", "uid", "gid", "chunks", "target", "xattrs", "rdev"]),
    junk_values, min_size=1, max_size=2))
trees = st.lists(items | junk, max_size=12)
#: Symlinks out that may already stand in the destination (a restore with --overwrite).
planted = st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.sampled_from([OUT, OUT + b"/secret"])),
                   max_size=2, unique_by=lambda pair: pair[0])


def _resolve(value: object, outside: bytes) -> object:
    return value.replace(OUT, outside) if isinstance(value, bytes) else value


@contextmanager
def _beside_a_sentinel(plant: list[tuple[bytes, bytes]]) -> Iterator[tuple[Path, Path]]:
    """(sentinel, destination): an empty destination beside a sentinel tree, with the ``plant``
    symlinks out already in it. After the body nothing outside the destination may have changed."""
    base_dir = Path(tempfile.mkdtemp(prefix="safehold-hostile-"))
    try:
        outside = make_sentinel(base_dir / "outside")
        destination = base_dir / "dest"
        destination.mkdir()
        for name, target in plant:
            os.symlink(_resolve(target, os.fsencode(outside)), os.fsencode(destination) + b"/" + name)
        before, beside = fingerprint(outside), sorted(os.listdir(base_dir))
        yield outside, destination
        assert fingerprint(outside) == before
        assert sorted(os.listdir(base_dir)) == beside
    finally:
        shutil.rmtree(base_dir)


_repository: Repository | None = None


def repository() -> Repository:
    global _repository
    if _repository is None:
        from safehold.repository import crypto

        _repository = Repository.init(MemoryBackend(), b"attacker knows it",
                                      {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1})
        assert crypto  # the fast KDF is passed explicitly: no fixture inside @given
    return _repository


def check_directory_restore(tree: list[dict], plant: list[tuple[bytes, bytes]], special_files: bool) -> None:
    with _beside_a_sentinel(plant) as (outside, destination):
        tree = [{key: _resolve(value, os.fsencode(outside)) for key, value in item.items()} for item in tree]
        snapshot = write_snapshot(repository(), tree)
        options = {"special_files": True} if special_files else {}  # (also runs against the old restorer)
        restorer = DirectoryRestorer(repository(), destination, threads=2, overwrite=True, **options)
        try:
            restorer.restore(repository().read_tree(snapshot))
        except errors.DestinationError:
            pass  # refusing the whole restore is safe; anything else is a bug
        if not special_files:
            for root, names, files in os.walk(destination):
                for name in [*names, *files]:
                    mode = os.lstat(os.path.join(root, name)).st_mode
                    assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), name
                    assert stat.S_ISLNK(mode) or not mode & 0o6000, (name, oct(mode))


def check_image_restore(names: list[bytes], plant: list[tuple[bytes, bytes]]) -> None:
    """Disk names into a directory, as the engine does it: single names below a directory fd."""
    from safehold.restore.directory import valid_name

    with _beside_a_sentinel(plant) as (outside, destination):
        snapshot = write_snapshot(repository(), [disk(_resolve(n, os.fsencode(outside)), b"pwned", mode=0o6777)
                                                 for n in names], kind="image")
        fd = os.open(destination, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for item in repository().read_tree(snapshot):
                if not valid_name(item["path"]):
                    continue  # the engine refuses these before opening anything
                try:
                    restore_image(repository(), item, os.fsdecode(item["path"]), dir_fd=fd, overwrite=True)
                except errors.DestinationError:
                    pass
        finally:
            os.close(fd)
        for name in os.listdir(destination):
            assert not os.lstat(destination / name).st_mode & 0o7000


FEW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FEW
@given(trees, planted, st.booleans())
def test_no_generated_tree_changes_anything_outside_the_destination(tree, plant, special_files) -> None:
    check_directory_restore(tree, plant, special_files)


@FEW
@given(st.lists(paths, max_size=4), planted)
def test_no_generated_disk_name_writes_outside_the_directory(names, plant) -> None:
    check_image_restore(names, plant)


@pytest.mark.hostile
def test_many_generated_trees(request) -> None:
    """The long run: ``pytest -m hostile``; SAFEHOLD_HOSTILE_EXAMPLES examples (default 10000)."""
    if "hostile" not in (request.config.option.markexpr or ""):
        pytest.skip("the long run of generated hostile snapshots: select it with -m hostile")
    examples = int(os.environ.get("SAFEHOLD_HOSTILE_EXAMPLES", "10000"))
    many = settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
    many(given(trees, planted, st.booleans())(check_directory_restore))()
    many(given(st.lists(paths, max_size=4), planted)(check_image_restore))()
