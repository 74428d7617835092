"""Repository copies (issue 15): ``init --copy-params-from`` and ``safehold copy`` between two real
local repositories, driven through the CLI as a user would."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from e2e_support import (Workspace, assert_clean_error, assert_same_tree, make_dataset, make_tree, make_workspace,
                         wait_for, write_file)

DEST_PASSWORD = "the destination's own password"
EXCLUDED = [b"ignored.tmp"]


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every object of a repository folder (name -> size, mtime_ns): what 'never modified' compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and "locks" not in p.parts}


def make_destination(tmp_path: Path, source: Workspace, copy_params: bool = True) -> Workspace:
    """A second workspace whose repository is the copy's destination, created with
    'init --copy-params-from' the source (or a plain init)."""
    dest = make_workspace(tmp_path / "dest")
    dest.password = DEST_PASSWORD
    if copy_params:
        dest.run("init", "--copy-params-from", source.repo, "--from-password-env", "SOURCE_PASSWORD",
                 env={"SOURCE_PASSWORD": source.password})
    else:
        dest.run("init")
    return dest


def copy(source: Workspace, dest: Workspace, *args: str, **kwargs):
    [result] = source.json("copy", "--to", dest.repo, "--to-password-env", "DEST_PASSWORD", *args,
                           env={"DEST_PASSWORD": dest.password}, **kwargs)
    return result


@pytest.fixture
def source(workspace: Workspace) -> Workspace:
    make_tree(workspace.data)
    workspace.run("init")
    workspace.run("backup", "--target", "files")
    return workspace


def test_copy_restores_identical_and_second_copy_sends_nothing(source: Workspace, tmp_path: Path):
    dest = make_destination(tmp_path, source)
    before = listing(source.repo)
    first = copy(source, dest)
    assert first["snapshots_copied"] == 1 and first["blobs_sent"] == first["blobs_total"] > 0
    assert first["blobs_verified"] == first["blobs_sent"]
    # The copy is a snapshot of the destination that names where it came from.
    [original] = source.snapshots()
    [copied] = dest.snapshots()
    assert copied["copied_from"]["snapshot"] == original["id"] and copied["id"] != original["id"]
    assert f"copy of {original['short_id']}" in dest.run("snapshots").stdout
    # ... and the source's listing says where its snapshot also lives (from the catalog's copy jobs).
    assert source.snapshots()[0]["copies"] == [str(dest.repo)]
    assert f"also in {dest.repo}" in source.run("snapshots").stdout
    out = tmp_path / "restored"
    dest.run("restore", "latest:files", "--to", out)
    assert_same_tree(source.data, out / "data", exclude=EXCLUDED)
    # Second copy of the same snapshot: nothing to send.
    second = copy(source, dest)
    assert second["snapshots_copied"] == 0 and second["snapshots_skipped"] == 1 and second["blobs_sent"] == 0
    # A new backup with a small change: only its new blobs travel.
    write_file(source.data / "new.txt", os.urandom(200_000))
    source.run("backup", "--target", "files")
    third = copy(source, dest, "--snapshot", "latest:files")
    assert third["snapshots_copied"] == 1 and 0 < third["blobs_sent"] < first["blobs_sent"]
    assert third["blobs_present"] > 0
    assert len(dest.snapshots()) == 2 and dest.snapshots()[1]["parent"] == copied["id"]
    # The source was only read (lock objects aside, which come and go).
    backed_up = listing(source.repo)
    assert {k: v for k, v in backed_up.items() if k in before} == before
    after = listing(source.repo)
    copy(source, dest)
    assert listing(source.repo) == after
    dest.run("check", "--read-data")
    source.run("check", "--read-data")


def test_copy_refuses_different_params(source: Workspace, tmp_path: Path):
    dest = make_destination(tmp_path, source, copy_params=False)
    proc = source.run("copy", "--to", dest.repo, "--to-password-env", "DEST_PASSWORD", code=41,
                      env={"DEST_PASSWORD": dest.password})
    assert_clean_error(proc, 41, "does not share the chunking parameters")
    assert "--copy-params-from" in proc.stderr
    assert dest.snapshots() == []


def test_copy_wrong_destination_password(source: Workspace, tmp_path: Path):
    dest = make_destination(tmp_path, source)
    proc = source.run("copy", "--to", dest.repo, "--to-password-env", "DEST_PASSWORD", code=42,
                      env={"DEST_PASSWORD": "not it"})
    assert_clean_error(proc, 42, "$DEST_PASSWORD", str(dest.repo))
    # The destination has its own password: the source's does not open it.
    proc = source.run("copy", "--to", dest.repo, code=42)
    assert_clean_error(proc, 42)


def test_copy_into_itself_is_refused(source: Workspace):
    proc = source.run("copy", "--to", source.repo, "--to-password-env", "SAFEHOLD_PASSWORD", code=43)
    assert_clean_error(proc, 43, "a copy needs another one")


def test_killed_copy_resumes_and_both_check_clean(workspace: Workspace, tmp_path: Path):
    rng = random.Random(15)
    make_dataset(workspace.data, rng, random_files=24, compressible_files=0, file_size=5 * 1024 * 1024)
    workspace.run("init")
    workspace.run("backup", "--target", "files")
    dest = make_destination(tmp_path, workspace)
    process = workspace.start("copy", "--to", dest.repo, "--to-password-env", "DEST_PASSWORD", "--threads", "1",
                              env={"DEST_PASSWORD": dest.password})
    # Kill after some packs (and at least one index object) reached the destination.
    try:
        wait_for(lambda: len(list((dest.repo / "index").iterdir())) >= 1
                 and len([p for p in (dest.repo / "data").glob("*/*")]) >= 6, timeout=120, what="packs written")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert dest.snapshots() == []  # never a half-copied snapshot
    packs_before = len(list((dest.repo / "data").glob("*/*")))
    resumed = copy(workspace, dest)
    assert resumed["snapshots_copied"] == 1
    assert resumed["blobs_present"] > 0 and resumed["blobs_sent"] < resumed["blobs_total"], resumed
    assert packs_before > 0
    dest.run("check", "--read-data")
    workspace.run("check", "--read-data")
    out = tmp_path / "restored"
    dest.run("restore", "latest:files", "--to", out)
    assert_same_tree(workspace.data, out / "data")
    # What the killed run wrote and no index names is what prune removes.
    dest.run("prune")
    dest.run("check", "--read-data")


def test_copy_job_is_recorded(source: Workspace, tmp_path: Path):
    dest = make_destination(tmp_path, source)
    copy(source, dest)
    jobs = [job for job in source.json("jobs") if job["kind"] == "copy"]
    assert jobs and jobs[0]["status"] == "succeeded"


def test_one_configuration_file_for_source_and_copy(workspace: Workspace, tmp_path: Path):
    """'copies:' names the destination; 'init --for-copy' creates it with the source's parameters and
    the copy's own password, and 'copy --to NAME' copies each covered target as its own job."""
    make_tree(workspace.data)
    offsite = tmp_path / "offsite"
    text = workspace.config.read_text() + (
        f"copies:\n  - {{name: offsite, targets: [files], repository: {{url: {offsite}, "
        "password_env: OFFSITE_PASSWORD}}\n")
    workspace.write_config(text=text)
    env = {"OFFSITE_PASSWORD": DEST_PASSWORD}
    workspace.run("init")
    proc = workspace.run("init", "--for-copy", "nope", code=44, env=env)
    assert "no copy named 'nope'" in proc.stderr
    workspace.run("init", "--for-copy", "offsite", env=env)
    workspace.run("backup", "--target", "files")
    [result] = workspace.json("copy", "--to", "offsite", env=env)
    assert result["destination"] == "offsite" and result["snapshots_copied"] == 1
    jobs = [job for job in workspace.json("jobs") if job["kind"] == "copy"]
    assert [job["target"] for job in jobs] == ["files"]
    status = {entry["name"]: entry for entry in workspace.json("status")["targets"]}
    assert status["files"]["copies"]["offsite"] is not None and status["disk"]["copies"] == {}
    assert "offsite 20" in workspace.run("status").stdout  # the copies column: name and date
    # The copy is a repository of its own: its password, not the source's.
    dest = make_workspace(tmp_path / "dest")
    dest.password = DEST_PASSWORD
    dest.write_config(repository_url=str(offsite))
    [copied] = dest.snapshots()
    assert copied["target"] == "files" and copied["copied_from"]["url"].endswith("repo")
    dest.run("check", "--read-data")


def test_copy_of_a_pruned_source(source: Workspace, tmp_path: Path):
    """Prune on the source (packs repacked, snapshots gone) does not disturb what is copied next."""
    dest = make_destination(tmp_path, source)
    (source.data / "gone.bin").write_bytes(os.urandom(2_000_000))
    source.run("backup", "--target", "files")
    assert copy(source, dest)["snapshots_copied"] == 2
    (source.data / "gone.bin").unlink()
    write_file(source.data / "later.bin", os.urandom(500_000))
    source.run("backup", "--target", "files")
    source.run("forget", "--prune")  # keep_last 2: the first snapshot goes, its data is pruned
    assert len(source.snapshots()) == 2
    result = copy(source, dest)
    assert result["snapshots_copied"] == 1 and result["snapshots_skipped"] == 1
    assert len(dest.snapshots()) == 3  # the copy keeps what the source forgot
    out = tmp_path / "restored"
    dest.run("restore", "latest:files", "--to", out)
    assert_same_tree(source.data, out / "data", exclude=EXCLUDED)
    dest.run("check", "--read-data")


REGION_DRILL = """\
drills:
  - name: region-lost
    scenario: aws_region_failure
    repository: offsite
    steps:
      - {target: disk, check: {type: command, run: "test -s restore"}}
      - {target: files, after: [disk], check: {type: file_exists, path: data/small.txt}}
"""


def test_restore_listing_restore_test_and_drill_from_a_copy(workspace: Workspace, tmp_path: Path):
    """'--repository NAME' reads the copy named under 'copies:' (issue 15): with the source repository
    gone, snapshots, ls, restore, restore-test and the region-failure drill all work from the copy, and
    a source snapshot id still finds its copy."""
    make_tree(workspace.data)
    write_file(workspace.data / "small.txt", b"small\n")
    disk = os.urandom(1024 * 1024) + bytes(512 * 1024) + os.urandom(512 * 1024)
    workspace.image.write_bytes(disk)
    offsite = tmp_path / "offsite"
    text = workspace.config.read_text() + (
        f"copies:\n  - {{name: offsite, repository: {{url: {offsite}, password_env: OFFSITE_PASSWORD}}}}\n"
        + REGION_DRILL)
    workspace.write_config(text=text)
    env = {"OFFSITE_PASSWORD": DEST_PASSWORD}
    workspace.run("init")
    workspace.run("init", "--for-copy", "offsite", env=env)
    workspace.run("backup", "--all")
    workspace.json("copy", "--to", "offsite", env=env)
    originals = {snapshot["target"]: snapshot["id"] for snapshot in workspace.snapshots()}

    proc = workspace.run("snapshots", "--repository", "nope", code=44, env=env)
    assert_clean_error(proc, 44, "no copy named 'nope'")
    assert "offsite" in proc.stderr
    # The site (and its repository) is lost: only the copy is left.
    workspace.repo.rename(tmp_path / "repository-lost")
    copies = workspace.json("snapshots", "--repository", "offsite", env=env)
    assert {c["target"]: c["copied_from"]["snapshot"] for c in copies} == originals
    assert all(c["id"] != originals[c["target"]] for c in copies)
    # A source snapshot's id (what the source's listing, job logs and runbooks show) finds its copy.
    listed = workspace.json("ls", originals["files"][:10], "data/small.txt", "--repository", "offsite", env=env)
    assert [item["path"] for item in listed] == ["data/small.txt"]
    out = tmp_path / "restored"
    workspace.run("restore", originals["files"][:12], "--to", out, "--repository", "offsite", env=env)
    assert_same_tree(workspace.data, out / "data", exclude=EXCLUDED)
    workspace.run("restore", "latest:disk", "--to", tmp_path / "disk.img", "--repository", "offsite", env=env)
    assert (tmp_path / "disk.img").read_bytes() == disk
    tested = workspace.json("restore-test", "--target", "files", "--repository", "offsite", env=env)
    assert tested["passed"] and tested["snapshot_id"] != originals["files"]

    # The region-failure drill restores from the copy its configuration names.
    report = workspace.json("drill", "run", "region-lost", env=env)
    assert report["passed"] and report["repository"] == "offsite" and report["left_behind"] == []
    assert [step["outcome"] for step in report["steps"]] == ["passed", "passed"]
    assert {step["target"]: step["snapshot_id"] for step in report["steps"]} == {c["target"]: c["id"] for c in copies}

