"""Repositories written by released format versions stay readable (docs/repository-format.md)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from safehold.repository import Repository
from safehold.repository.backends.local import LocalBackend
from safehold.repository.check import check
from safehold.restore.directory import DirectoryRestorer
from safehold.restore.image import restore_image

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "repository-v1"


@pytest.fixture
def repository(tmp_path):
    # A copy: opening takes locks, and the fixture must never change.
    shutil.copytree(FIXTURE / "repo", tmp_path / "repo")
    expected = json.loads((FIXTURE / "expected.json").read_text())
    repository = Repository.open(LocalBackend(tmp_path / "repo"), expected["password"].encode())
    repository.load_index()
    return repository, expected


def test_version_1_restores_byte_identical(repository, tmp_path):
    repository, expected = repository
    assert repository.config["version"] == expected["format_version"] == 1
    snapshots = {s.target: s for s in repository.list_snapshots()}
    assert set(snapshots) == {"files", "image"}

    DirectoryRestorer(repository, tmp_path / "out").restore(repository.read_tree(snapshots["files"]))
    image_item = next(repository.read_tree(snapshots["image"]))
    restore_image(repository, image_item, tmp_path / "disk.img")

    found = {
        str(path.relative_to(tmp_path / "out")): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((tmp_path / "out").rglob("*")) if path.is_file() and not path.is_symlink()
    }
    found["disk.img"] = hashlib.sha256((tmp_path / "disk.img").read_bytes()).hexdigest()
    assert found == expected["sha256"]
    assert (tmp_path / "out" / "tree" / "link").readlink() == Path("etc/hostname")


def test_version_1_passes_check_with_data(repository):
    repository, _ = repository
    report = check(repository, read_data_percent=100)
    assert report.ok, report.errors
    assert report.packs_read >= 1 and not report.unreferenced_packs


def test_version_1_without_forget_records_needs_no_repair(repository, tmp_path):
    """A repository of the first release has no forgotten/ folder: nothing is flagged as replayed,
    repair index finds nothing to change, and forget by id adds the folder and a record."""
    from safehold.repository.backends import Kind
    from safehold.repository.forgotten import live_snapshots, record_name, replayed_records
    from safehold.repository.prune import forget, plan_forget_ids
    from safehold.repository.reindex import repair_index
    from safehold.repository.repair import repair_snapshots

    repository, _ = repository
    assert not (tmp_path / "repo" / "forgotten").exists()
    snapshots = repository.list_snapshots()
    assert replayed_records(repository, snapshots) == {} and live_snapshots(repository) == snapshots
    report = repair_index(repository)
    assert not report.changed and report.headers_read == 0 and report.packs_added == []
    assert repair_snapshots(repository, dry_run=True).repaired == []
    [decision] = plan_forget_ids(repository, [snapshots[0].id[:8]])
    forget(repository, [decision], "test")
    assert (tmp_path / "repo" / "forgotten" / record_name(repository, snapshots[0].id)).is_file()
    assert [info.name for info in repository.backend.list(Kind.FORGOTTEN)] == [record_name(repository, snapshots[0].id)]
    assert check(repository).ok
