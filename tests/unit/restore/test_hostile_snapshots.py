"""Hostile snapshots: one regression test per way a crafted snapshot escaped the destination.

Each snapshot is written into a real repository with the project's own tree writer (the attacker
holds the password, so any item stream is possible), restored for real, and a sentinel tree beside
the destination is compared before and after (inode, mode, owner, mtime, link count, content).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from control_support import files_target, make_context
from hostile_support import (base, directory, disk, file, fingerprint, hardlink, make_sentinel, symlink,
                             write_snapshot)

from safehold import errors
from safehold.catalog.tokens import TokenStore
from safehold.engine.jobs import run_job
from safehold.engine.restore import restore_snapshot
from safehold.restore.directory import DirectoryRestorer
from safehold.server.app import create_app

pytestmark = pytest.mark.usefixtures("fast_kdf")
ROOT = os.geteuid() == 0


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sentinel tree beside the destination: nothing in it may change."""
    return make_sentinel(tmp_path / "outside")


def restore_items(repository, items: list[dict], destination: Path, **options):
    snapshot = write_snapshot(repository, items)
    restorer = DirectoryRestorer(repository, destination, threads=2, **options)
    try:
        return restorer.restore(repository.read_tree(snapshot))
    except errors.DestinationError as exc:  # refusing the whole restore is safe too
        return exc


def assert_untouched(outside: Path, before: dict) -> None:
    assert fingerprint(outside) == before


# --- directory restores ---------------------------------------------------------------------


def test_a_parent_remembered_as_inside_then_replaced_by_a_symlink(tmp_path, memory_repository, outside) -> None:
    before = fingerprint(outside)
    # 'x' does not exist when the socket item's parent is checked; then 'x' becomes a symlink out.
    items = [base(b"x/s", "socket"), symlink(b"x", outside), file(b"x/evil", b"pwned")]
    restore_items(memory_repository, items, tmp_path / "dest")
    assert_untouched(outside, before)
    assert not (outside / "evil").exists()


def test_a_hard_link_through_a_parent_that_became_a_symlink(tmp_path, memory_repository, outside) -> None:
    before = fingerprint(outside)
    items = [file(b"f", b"data"), hardlink(b"d/h", b"f"), symlink(b"d", outside)]
    restore_items(memory_repository, items, tmp_path / "dest")
    assert_untouched(outside, before)


def test_the_hard_link_fallback_writes_neither_through_a_symlink_nor_a_refused_item(
        tmp_path, memory_repository, outside) -> None:
    before = fingerprint(outside)
    items = [file(b"../f", b"refused content"), hardlink(b"d/h", b"../f"), symlink(b"d", outside),
             hardlink(b"h", b"../f")]
    restore_items(memory_repository, items, tmp_path / "dest")  # refused items, or refused as a whole
    assert_untouched(outside, before)
    assert not os.path.lexists(tmp_path / "dest" / "h")  # the content of a refused item is not restored
    result = restore_items(memory_repository, [file(b"../f", b"refused"), hardlink(b"h", b"../f")],
                           tmp_path / "second")
    assert not os.path.lexists(tmp_path / "second" / "h") and "h" in result.damaged


def test_a_directory_item_over_a_symlink_does_not_chmod_its_target(tmp_path, memory_repository, outside) -> None:
    before = fingerprint(outside)
    items = [symlink(b"d", outside), directory(b"d", 0o6777), symlink(b"e", outside / "dir"), directory(b"e")]
    restore_items(memory_repository, items, tmp_path / "dest")
    assert_untouched(outside, before)
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o750


def test_a_directory_over_an_existing_symlink_in_the_destination(tmp_path, memory_repository, outside) -> None:
    destination = tmp_path / "dest"
    destination.mkdir()
    os.symlink(outside, destination / "d")
    before = fingerprint(outside)
    items = [directory(b"d", 0o777), file(b"d/new", b"pwned")]
    restore_items(memory_repository, items, destination, overwrite=True)
    assert_untouched(outside, before)


@pytest.mark.skipif(not ROOT, reason="device nodes and foreign owners need root")
def test_devices_and_setuid_bits_need_the_explicit_option(tmp_path, memory_repository) -> None:
    items = [base(b"mem", "chardev", 0o666, rdev=os.makedev(1, 1)), file(b"suid", b"#!", mode=0o4755),
             directory(b"shared", 0o2775)]
    result = restore_items(memory_repository, items, tmp_path / "plain")
    assert not os.path.lexists(tmp_path / "plain" / "mem")
    assert stat.S_IMODE(os.stat(tmp_path / "plain" / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "plain" / "shared").st_mode) == 0o775
    assert sorted(line.split(":")[0] for line in result.special) == ["mem", "shared", "suid"]
    result = restore_items(memory_repository, items, tmp_path / "special", special_files=True)
    assert stat.S_ISCHR(os.lstat(tmp_path / "special" / "mem").st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "special" / "suid").st_mode) == 0o4755
    assert result.special == []


# --- image restores into a directory ----------------------------------------------------------


@pytest.fixture
def context(tmp_path):
    return make_context(tmp_path / "ws", [files_target(tmp_path, "web")])


def restore_disks(context, disks: list[dict], destination: Path, **options):
    with context.locked() as repository:
        snapshot = write_snapshot(repository, disks, kind="image", target="web")
    try:
        return restore_snapshot(context, snapshot.id, str(destination), images_into_directory=True, **options)
    except errors.SafeholdError as exc:
        return exc


def test_disk_names_are_single_components_and_parents_are_not_followed(tmp_path, context, outside) -> None:
    destination = tmp_path / "dest"
    destination.mkdir()
    os.symlink(outside, destination / "sub")
    before = fingerprint(outside)
    outcome = restore_disks(context, [disk(b"sub/d1", b"pwned"), disk(b"d2", b"fine")], destination,
                            overwrite=True)
    assert_untouched(outside, before)
    assert isinstance(outcome, errors.RestoreIncomplete) and "sub/d1" in str(outcome)
    assert (destination / "d2").read_bytes()[:4] == b"fine"


def test_a_disk_name_that_is_an_existing_symlink_is_not_written_through(tmp_path, context, outside) -> None:
    destination = tmp_path / "dest"
    destination.mkdir()
    os.symlink(outside / "secret", destination / "d1")
    before = fingerprint(outside)
    restore_disks(context, [disk(b"d1", b"pwned"), disk(b"d2", b"fine")], destination, overwrite=True)
    assert_untouched(outside, before)


def test_disks_into_a_non_empty_directory_need_overwrite(tmp_path, context) -> None:
    destination = tmp_path / "dest"
    destination.mkdir()
    (destination / "keep").write_bytes(b"mine")
    outcome = restore_disks(context, [disk(b"d1", b"a"), disk(b"d2", b"b")], destination)
    assert isinstance(outcome, errors.DestinationError), outcome
    assert sorted(os.listdir(destination)) == ["keep"]


def test_disk_modes_are_masked(tmp_path, context) -> None:
    restore_disks(context, [disk(b"d1", b"a", mode=0o6777), disk(b"d2", b"b", mode=0o1600)], tmp_path / "dest")
    assert stat.S_IMODE(os.stat(tmp_path / "dest" / "d1").st_mode) == 0o777
    assert stat.S_IMODE(os.stat(tmp_path / "dest" / "d2").st_mode) == 0o600


# --- the API's restore root, checked when the job runs -----------------------------------------


def test_a_queued_restore_into_a_symlink_made_by_an_earlier_restore(tmp_path, context, outside) -> None:
    root = tmp_path / "restores"
    before = fingerprint(outside)
    with context.locked() as repository:
        planting = write_snapshot(repository, [symlink(b"link", outside)], target="web")
        payload = write_snapshot(repository, [file(b"evil", b"pwned")], target="web")
    _, token = TokenStore(context.catalog).create("t", "operator")
    with TestClient(create_app(context, restore_root=root)) as client:
        ids = []
        for snapshot, where in ((planting, "a"), (payload, "a/link")):
            answer = client.post("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}, json={
                "kind": "restore", "target": "web",
                "params": {"snapshot": snapshot.id, "destination": where, "overwrite": True}})
            assert answer.status_code == 202, answer.text  # both pass the check made when queued
            ids.append(answer.json()["id"])
    first, second = (run_job(context, job_id) for job_id in ids)
    assert_untouched(outside, before)
    assert first.status == "succeeded", first
    assert second.status == "failed" and second.error_type == "DestinationError", second


def test_an_image_restore_below_the_restore_root_never_follows_a_symlink(tmp_path, context, outside) -> None:
    root = tmp_path / "restores"
    (root / "a").mkdir(parents=True)
    os.symlink(outside, root / "a" / "link")
    os.symlink(outside / "secret", root / "a" / "secret.img")
    before = fingerprint(outside)
    with context.locked() as repository:
        snapshot = write_snapshot(repository, [disk(b"disk", b"pwned")], kind="image", target="web")
    for where in ("a/link/disk.img", "a/secret.img", "../outside/x.img", "a/link"):
        with pytest.raises(errors.DestinationError):
            restore_snapshot(context, snapshot.id, str(root / where), restore_root=str(root), overwrite=True)
    assert_untouched(outside, before)
    restore_snapshot(context, snapshot.id, str(root / "a" / "new" / "ok.img"), restore_root=str(root))
    assert (root / "a" / "new" / "ok.img").read_bytes()[:5] == b"pwned"


def test_a_files_restore_outside_the_restore_root_is_refused_when_it_runs(tmp_path, context, outside) -> None:
    root = tmp_path / "restores"
    root.mkdir()
    with context.locked() as repository:
        snapshot = write_snapshot(repository, [file(b"f", b"x")], target="web")
    before = fingerprint(outside)
    with pytest.raises(errors.DestinationError):
        restore_snapshot(context, snapshot.id, str(tmp_path / "outside"), restore_root=str(root), overwrite=True)
    assert_untouched(outside, before)
