"""Round trips through the real ``safehold`` CLI, as a user runs it.

The module-scoped ``populated`` workspace holds one repository with two
snapshots of a files target (with a diff between them) and one of a sparse disk
image; read-only tests share it. Tests that change the repository (forget,
prune, keys, locks) build their own.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e2e_support import (
    CLI,
    Workspace,
    allocated_bytes,
    assert_clean_error,
    assert_same_tree,
    compressible_bytes,
    make_sparse_image,
    make_tree,
    make_workspace,
    parse_human,
    parse_table,
    tree_manifest,
    write_file,
)

MiB = 1024 * 1024
CHUNK = 512 * 1024
IMAGE_SIZE = 64 * MiB
# (offset, length) of the data written into the sparse image; the third is not chunk aligned.
IMAGE_EXTENTS = [(1 * MiB, 300_000), (20 * MiB, 1_500_000), (40 * MiB + 100, 700_000)]
EXCLUDED = [b"ignored.tmp"]


@dataclass
class Populated:
    ws: Workspace
    init_output: str
    backup_all_output: str
    backup_files_output: str
    first: dict = field(default_factory=dict)     # snapshots --json rows
    second: dict = field(default_factory=dict)
    disk: dict = field(default_factory=dict)
    first_manifest: dict = field(default_factory=dict)


def touched_chunks(extents) -> int:
    chunks = set()
    for offset, length in extents:
        chunks.update(range(offset // CHUNK, (offset + length - 1) // CHUNK + 1))
    return len(chunks)


def modify_between_snapshots(data: Path) -> None:
    """The changes the diff test expects (see EXPECTED_DIFF)."""
    with open(data / "var" / "log" / "access.log", "ab") as handle:       # M: content
        handle.write(b"2024-06-01 GET /new 200\n")
    write_file(data / "new.txt", b"added after the first snapshot\n")   # +
    os.unlink(data / "secret.key")                                        # -
    os.chmod(data / "run.sh", 0o700)                                      # U: mode only
    os.unlink(data / "hostname-link")                                     # T: symlink -> file
    write_file(data / "hostname-link", b"now a regular file\n")


EXPECTED_DIFF = {
    ("M", "data/var/log/access.log"), ("+", "data/new.txt"), ("-", "data/secret.key"),
    ("U", "data/run.sh"), ("T", "data/hostname-link"),
}


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Populated:
    ws = make_workspace(tmp_path_factory.mktemp("populated") / "ws")
    make_tree(ws.data)
    # Explicit zeros (allocated in the source) must come back as holes.
    rng = random.Random(7)
    make_sparse_image(ws.image, IMAGE_SIZE, rng, IMAGE_EXTENTS)
    with open(ws.image, "r+b") as handle:
        handle.seek(50 * MiB)
        handle.write(bytes(2 * MiB))
    init = ws.run("init")
    backup_all = ws.run("backup", "--all")
    first_manifest = tree_manifest(ws.data, exclude=EXCLUDED)
    modify_between_snapshots(ws.data)
    backup_files = ws.run("backup", "--target", "files")
    rows = ws.snapshots()
    files = [r for r in rows if r["target"] == "files"]
    disk = [r for r in rows if r["target"] == "disk"]
    assert len(files) == 2 and len(disk) == 1, rows
    return Populated(ws, init.stdout, backup_all.stdout, backup_files.stdout, files[0], files[1], disk[0],
                     first_manifest)


# --- init and backup ---------------------------------------------------------------------


def test_init_creates_repository_and_catalog(workspace: Workspace):
    proc = workspace.run("init")
    assert re.search(r"created repository [0-9a-f]{8} at file://" + re.escape(str(workspace.repo)), proc.stdout)
    assert (workspace.repo / "config").is_file()
    assert len(os.listdir(workspace.repo / "keys")) == 1
    assert (workspace.state / "catalog.db").is_file()
    assert workspace.json("snapshots") == []
    again = workspace.run("init", ok=False)
    assert_clean_error(again, 11, "already exists")


def test_backup_all_and_target_output(populated: Populated):
    lines = populated.backup_all_output.splitlines()
    assert any(re.match(r"files: snapshot [0-9a-f]{8} \(full\): \d+ new, 0 changed, 0 unchanged", l) for l in lines)
    assert any(re.match(r"disk: snapshot [0-9a-f]{8} \(full\): .*hole", l) for l in lines)
    assert re.match(rf"files: snapshot {populated.second['short_id']} \(incremental on "
                    rf"{populated.first['short_id']}\): 2 new, 2 changed, \d+ unchanged file",
                    populated.backup_files_output), populated.backup_files_output


def test_snapshots_table_and_json(populated: Populated):
    ws = populated.ws
    table = ws.run("snapshots").stdout
    rows = parse_table(table)
    # Oldest first; the two targets of 'backup --all' ran side by side, so either committed first.
    first_two = {populated.first["short_id"]: "files", populated.disk["short_id"]: "disk"}
    assert {r[0] for r in rows[:2]} == set(first_two) and rows[2][0] == populated.second["short_id"]
    assert [r[2] for r in rows] == [first_two[rows[0][0]], first_two[rows[1][0]], "files"]
    assert table.rstrip().endswith("3 snapshot(s)")
    data = ws.snapshots()
    assert [d["short_id"] for d in data] == [r[0] for r in rows]
    assert {d["id"] for d in data[:2]} == {populated.first["id"], populated.disk["id"]}
    assert data[2]["id"] == populated.second["id"]
    for row in data:
        assert len(row["id"]) == 64 and row["id"].startswith(row["short_id"])
        assert row["hostname"] and row["time"]
    assert populated.second["parent"] == populated.first["id"]
    assert populated.disk["kind"] == "image" and populated.disk["bytes_total"] == IMAGE_SIZE
    assert [d["id"] for d in ws.snapshots("disk")] == [populated.disk["id"]]


def test_ls_table_json_and_path(populated: Populated):
    ws = populated.ws
    short = populated.second["short_id"]
    items = ws.json("ls", short)
    by_path = {i["path"]: i for i in items}
    assert by_path["data"]["type"] == "dir"
    assert by_path["data/random.bin"]["size"] == 3 * MiB + 17
    assert (by_path["data/dangling-link"]["type"], by_path["data/dangling-link"]["target"]) == \
        ("symlink", "does/not/exist")
    assert by_path["data/run.sh"]["mode"] == oct(0o700)
    assert by_path["data/var/fifo"]["type"] == "fifo"
    assert "data/caf\udce9-latin1.txt" in by_path  # the non-UTF-8 name survives in JSON
    assert "data/ignored.tmp" not in by_path and "data/secret.key" not in by_path

    table = ws.run("ls", short).stdout
    assert re.search(r"^file\s+0o644\s+3\.0 MiB\s+data/random\.bin$", table, re.M), table
    assert re.search(r"^syml\s+0o777\s+0 B\s+data/dangling-link -> does/not/exist$", table, re.M), table
    assert re.search(r"^file\s+0o700\s+\d+ B\s+data/run\.sh$", table, re.M), table
    assert re.search(r"^dir .*data/etc/$", table, re.M)

    sub = ws.json("ls", short, "data/etc")
    assert sorted(i["path"] for i in sub) == ["data/etc", "data/etc/app", "data/etc/app/settings.ini",
                                             "data/etc/hostname"]
    latest = ws.json("ls", "latest:files", "data/etc/hostname")
    assert [i["path"] for i in latest] == ["data/etc/hostname"]
    missing = ws.run("ls", short, "data/nope", ok=False)
    assert_clean_error(missing, 16, "data/nope")


def test_ls_image_snapshot(populated: Populated):
    items = populated.ws.json("ls", "latest:disk")
    assert [(i["path"], i["type"], i["size"]) for i in items] == [("disk.img", "image", IMAGE_SIZE)]


def test_diff_between_snapshots(populated: Populated):
    ws = populated.ws
    first, second = populated.first["short_id"], populated.second["short_id"]
    changes = {(d["change"], d["path"]) for d in ws.json("diff", first, second)}
    directories = {p for c, p in changes if c == "U" and p in ("data", "data/var/log")}
    assert changes - {("U", d) for d in directories} == EXPECTED_DIFF
    text = ws.run("diff", first, second).stdout
    assert re.search(r"^M\s+data/var/log/access\.log$", text, re.M)
    assert text.rstrip().endswith(f"{len(changes)} difference(s)")
    # Reversed, additions become removals.
    reverse = {(d["change"], d["path"]) for d in ws.json("diff", second, first)}
    assert ("-", "data/new.txt") in reverse and ("+", "data/secret.key") in reverse
    assert ws.json("diff", first, first) == []


def test_restore_latest_matches_source_with_metadata(populated: Populated, tmp_path: Path):
    ws = populated.ws
    out = tmp_path / "restored"
    proc = ws.run("restore", "latest:files", "--to", out)
    assert re.search(rf"restored snapshot {populated.second['short_id']} \(files\) to ", proc.stdout)
    assert_same_tree(ws.data, out / "data", exclude=EXCLUDED)
    restored = out / "data"
    assert os.readlink(restored / "dangling-link") == "does/not/exist"
    assert os.stat(restored / "etc" / "hostname").st_ino == os.stat(restored / "hostname-hardlink").st_ino
    assert b"caf\xe9-latin1.txt" in os.listdir(os.fsencode(restored))  # the exact bytes of the name
    assert not (restored / "ignored.tmp").exists()


def test_restore_older_snapshot_by_id_prefix(populated: Populated, tmp_path: Path):
    out = tmp_path / "first"
    populated.ws.run("restore", populated.first["id"][:10], "--to", out)
    actual = tree_manifest(out / "data")
    assert actual == populated.first_manifest


def test_restore_include_only_selected_paths(populated: Populated, tmp_path: Path):
    ws = populated.ws
    out = tmp_path / "partial"
    ws.run("restore", "latest:files", "--to", out, "--include", "data/etc/app", "--include", "data/random.bin")
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert found == ["data", "data/etc", "data/etc/app", "data/etc/app/settings.ini", "data/random.bin"]
    assert filecmp.cmp(out / "data" / "random.bin", ws.data / "random.bin", shallow=False)
    assert filecmp.cmp(out / "data/etc/app/settings.ini", ws.data / "etc/app/settings.ini", shallow=False)


def test_restore_refuses_non_empty_directory(populated: Populated, tmp_path: Path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = populated.ws.run("restore", "latest:files", "--to", out, ok=False)
    assert_clean_error(proc, 33, str(out))
    assert os.listdir(out) == ["keep.txt"]


def test_image_restore_is_identical_and_sparse(populated: Populated, tmp_path: Path):
    ws = populated.ws
    out = tmp_path / "restored.img"
    ws.run("restore", "latest:disk", "--to", out)
    assert subprocess.run(["cmp", str(ws.image), str(out)]).returncode == 0
    assert out.stat().st_size == IMAGE_SIZE
    # Only the chunks holding data are allocated; the explicit zeros came back as a hole.
    assert allocated_bytes(out) <= touched_chunks(IMAGE_EXTENTS) * CHUNK + 64 * 1024, allocated_bytes(out)
    assert allocated_bytes(out) < allocated_bytes(ws.image)
    again = ws.run("restore", "latest:disk", "--to", out, ok=False)
    assert_clean_error(again, 33, "exists")
    ws.run("restore", "latest:disk", "--to", out, "--overwrite")
    assert filecmp.cmp(ws.image, out, shallow=False)


def test_restore_all_brings_every_target_back_in_one_command(populated: Populated, tmp_path: Path):
    ws = populated.ws
    out = tmp_path / "estate"
    result = ws.json("restore", "--all", "--to", out)
    assert result["failures"] == {} and result["skipped"] == {}
    by_target = {r["target"]: r for r in result["results"]}
    assert set(by_target) == {"files", "disk"}
    assert by_target["files"]["snapshot_id"] == populated.second["id"]  # the newest of each target
    assert by_target["disk"]["snapshot_id"] == populated.disk["id"]
    assert_same_tree(ws.data, out / "files" / "data", exclude=EXCLUDED)
    assert filecmp.cmp(ws.image, out / "disk" / "disk.img", shallow=False)
    assert sorted(os.listdir(out)) == ["disk", "files"]
    jobs = [j for j in ws.json("jobs", "--kind", "restore") if j["id"] in
            {by_target["files"]["job_id"], by_target["disk"]["job_id"]}]
    assert sorted((j["target"], j["status"]) for j in jobs) == [("disk", "succeeded"), ("files", "succeeded")]

    # Again into the same directory: each target refuses, nothing already there is touched.
    before = tree_manifest(out)
    again = ws.run("restore", "--all", "--to", out, ok=False)
    assert again.returncode == 3, again.stderr
    assert "files: " in again.stderr and "disk: " in again.stderr and "2 of 2 target(s) failed" in again.stderr
    assert "Traceback" not in again.stderr
    assert tree_manifest(out) == before

    mixed = ws.run("restore", "latest", "--all", "--to", tmp_path / "x", ok=False)
    assert_clean_error(mixed, 2, "--all", hint=False)


def test_check_structure_and_data(populated: Populated):
    ws = populated.ws
    plain = ws.run("check").stdout
    assert "3 snapshot(s)" in plain and "no errors found" in plain
    full = ws.json("check", "--read-data")
    assert full["ok"] is True and full["errors"] == [] and full["damaged_packs"] == []
    assert full["packs_read"] == full["packs"] >= 1
    assert full["bytes_read"] == sum(p.stat().st_size for p in ws.pack_files())
    subset = ws.json("check", "--read-data-subset", "50%")
    assert subset["ok"] is True
    assert 1 <= subset["packs_read"] <= max(1, round(full["packs"] / 2) + 1)
    text = ws.run("check", "--read-data").stdout
    assert re.search(r"read \d+ pack\(s\)", text) and "no errors found" in text
    bad = ws.run("check", "--read-data-subset", "150%", ok=False)
    assert_clean_error(bad, 2, "150%", hint=False)


def test_stats_json(populated: Populated):
    ws = populated.ws
    stats = ws.json("stats")
    assert stats["snapshots"] == 3
    assert stats["targets"] == {"files": 2, "disk": 1}
    assert stats["packs"] == len(ws.pack_files())
    assert stats["stored_bytes"] == sum(p.stat().st_size for p in ws.pack_files())
    assert stats["logical_bytes"] == populated.first["bytes_total"] + populated.second["bytes_total"] + IMAGE_SIZE
    # Two nearly identical snapshots and a mostly empty image deduplicate well.
    assert stats["deduplication_ratio"] > 2
    assert stats["url"] == f"file://{ws.repo}"


# --- incremental backups -------------------------------------------------------------------


def test_second_backup_is_incremental(workspace: Workspace):
    ws = workspace
    rng = random.Random(3)
    for i in range(6):
        write_file(ws.data / f"file{i}.bin", rng.randbytes(2 * MiB))
    write_file(ws.data / "log.txt", compressible_bytes(rng, MiB))
    make_sparse_image(ws.image, 16 * MiB, rng, [(0, 2 * MiB), (8 * MiB, MiB)])
    ws.run("init")
    first = ws.json("backup", "--all")
    assert not first["failures"]
    total_added = sum(r["summary"]["bytes_added"] for r in first["results"])
    assert total_added > 12 * MiB

    unchanged = ws.run("backup", "--target", "files").stdout
    assert re.search(r"\(incremental on [0-9a-f]{8}\): 0 new, 0 changed, 7 unchanged file\(s\); read 0 B of "
                     r"[\d.]+ MiB, added [\d.]+ (B|KiB)", unchanged), unchanged

    write_file(ws.data / "file3.bin", rng.randbytes(2 * MiB))
    with open(ws.data / "log.txt", "ab") as handle:
        handle.write(b"one more line\n")
    with open(ws.image, "r+b") as handle:
        handle.seek(8 * MiB + 4096)
        handle.write(rng.randbytes(4096))
    result = ws.json("backup", "--all")
    by_target = {r["target"]: r for r in result["results"]}
    files = by_target["files"]["summary"]
    assert (files["files_new"], files["files_changed"], files["files_unchanged"]) == (0, 2, 5)
    assert files["bytes_read"] < 4 * MiB
    assert 2 * MiB <= files["bytes_added"] < 3 * MiB
    image = by_target["disk"]["summary"]
    assert image["bytes_added"] < 2 * CHUNK  # one changed 512 KiB chunk
    rows = ws.snapshots("files")
    assert rows[-1]["bytes_added"] == files["bytes_added"] and rows[1]["bytes_added"] < 64 * 1024
    assert rows[-1]["parent"] == rows[-2]["id"]


# --- forget, prune and the job history ----------------------------------------------------------


@dataclass
class Retention:
    ws: Workspace
    before: list          # snapshots --json before forgetting
    dry_json: dict
    dry_text: str
    snapshots_after_dry_run: list
    stored_before: int
    forget_output: str
    after: list
    stored_after: int
    prune_json: dict
    prune_text: str
    check: dict
    restored: Path


@pytest.fixture(scope="module")
def retention(tmp_path_factory) -> Retention:
    """Three snapshots of 'files' (keep_last: 2 in targets.yml) and one of 'disk' (no rule),
    then forget --dry-run, forget --keep-last 1 --prune, prune, check and a restore."""
    ws = make_workspace(tmp_path_factory.mktemp("retention") / "ws")
    rng = random.Random(11)
    make_sparse_image(ws.image, 8 * MiB, rng, [(0, MiB)])
    ws.run("init")
    for _ in range(3):
        write_file(ws.data / "round.bin", rng.randbytes(MiB))  # new content each round
        ws.run("backup", "--target", "files")
    ws.run("backup", "--target", "disk")
    before = ws.snapshots()
    dry_json = ws.json("forget", "--dry-run")
    dry_text = ws.run("forget", "--dry-run").stdout
    snapshots_after_dry_run = ws.snapshots()
    stored_before = sum(p.stat().st_size for p in ws.pack_files())
    forget_output = ws.run("forget", "--keep-last", "1", "--prune").stdout
    after = ws.snapshots()
    stored_after = sum(p.stat().st_size for p in ws.pack_files())
    prune_json = ws.json("prune")
    prune_text = ws.run("prune").stdout
    check = ws.json("check", "--read-data")
    restored = ws.root.parent / "restored"
    ws.run("restore", "latest:files", "--to", restored)
    return Retention(ws, before, dry_json, dry_text, snapshots_after_dry_run, stored_before, forget_output, after,
                     stored_after, prune_json, prune_text, check, restored)


def split_targets(snapshots: list[dict]) -> tuple[list[dict], list[dict]]:
    return [s for s in snapshots if s["target"] == "files"], [s for s in snapshots if s["target"] == "disk"]


def test_forget_dry_run_lists_what_would_go_and_why_the_rest_stays(retention: Retention):
    files, disk = split_targets(retention.before)
    dry = retention.dry_json
    decisions = {d["id"]: d for d in dry["decisions"]}
    assert dry["dry_run"] is True and dry["removed"] == []
    assert set(decisions) == {s["id"] for s in retention.before}
    assert decisions[files[0]["id"]]["keep"] is False
    for kept in files[1:]:
        assert decisions[kept["id"]]["keep"] is True
        assert any("last" in reason for reason in decisions[kept["id"]]["reasons"])
    assert decisions[disk[0]["id"]]["keep"] is True
    assert decisions[disk[0]["id"]]["reasons"] == ["no retention policy"]
    rows = {r[0]: r for r in parse_table(retention.dry_text)}
    assert rows[files[0]["short_id"]][3] == "would remove"
    assert rows[files[2]["short_id"]][3] == "keep" and "last" in rows[files[2]["short_id"]][4]
    assert rows[disk[0]["short_id"]][3:5] == ["keep", "no retention policy"]
    assert retention.snapshots_after_dry_run == retention.before  # a dry run removes nothing


def test_forget_keep_last_with_prune_then_prune(retention: Retention):
    files, disk = split_targets(retention.before)
    rows = {r[0]: r for r in parse_table(retention.forget_output)}
    assert rows[files[0]["short_id"]][3] == "removed" and rows[files[1]["short_id"]][3] == "removed"
    assert rows[files[2]["short_id"]][3] == "keep" and rows[disk[0]["short_id"]][3] == "keep"
    assert re.search(r"\d+ pack\(s\) deleted, \d+ repacked, [1-9]\d* unused blob\(s\); freed [\d.]+ MiB",
                     retention.forget_output), retention.forget_output
    assert sorted(s["id"] for s in retention.after) == sorted([disk[0]["id"], files[2]["id"]])
    # The first two versions of round.bin (1 MiB of random data each) are gone.
    assert retention.stored_after < retention.stored_before - 1.5 * MiB
    # Nothing left for a second prune.
    assert retention.prune_json["packs_deleted"] == 0 and retention.prune_json["blobs_removed"] == 0
    assert retention.prune_json["bytes_freed"] == 0
    assert retention.prune_text.startswith("0 pack(s) deleted, 0 repacked, 0 unused blob(s)")
    assert retention.check["ok"] is True and retention.check["unused_blobs"] == 0
    assert retention.check["unreferenced_packs"] == []
    assert_same_tree(retention.ws.data, retention.restored / "data")


JOB_COLUMNS = ["id", "kind", "target", "status", "started", "duration", "read", "added", "error"]


def job_rows(ws: Workspace, *args: str) -> list[dict]:
    proc = ws.run("jobs", "--limit", "100", *args)
    header = proc.stdout.splitlines()[0]
    assert [c.strip() for c in header.split("┃")] == JOB_COLUMNS, header
    return [dict(zip(JOB_COLUMNS, row)) for row in parse_table(proc.stdout)]


def test_jobs_table_records_every_operation(retention: Retention):
    rows = job_rows(retention.ws)
    assert all(r["status"] == "succeeded" and r["error"] == "" for r in rows), rows
    kinds = [r["kind"] for r in reversed(rows)]  # oldest first
    assert kinds[0] == "init"
    assert kinds.count("backup") == 4 and kinds.count("forget") == 3
    assert kinds.count("prune") == 2 and kinds.count("check") == 1 and kinds.count("restore") == 1
    backups = [r for r in reversed(rows) if r["kind"] == "backup"]
    assert [r["target"] for r in backups] == ["files", "files", "files", "disk"]
    for row in backups:
        assert parse_human(row["read"]) >= MiB and parse_human(row["added"]) >= MiB // 2, row
    check = next(r for r in rows if r["kind"] == "check")
    assert parse_human(check["read"]) > 0
    restore = next(r for r in rows if r["kind"] == "restore")
    assert parse_human(restore["read"]) >= MiB
    assert [r["kind"] for r in job_rows(retention.ws, "--kind", "prune")] == ["prune", "prune"]
    assert {r["target"] for r in job_rows(retention.ws, "--target", "disk")} == {"disk"}


def test_jobs_json_lists_records(retention: Retention):
    records = retention.ws.json("jobs", "--limit", "100")
    assert all(isinstance(r, dict) for r in records), records[:1]
    backups = [r for r in records if r["kind"] == "backup"]
    assert len(backups) == 4 and all(r["status"] == "succeeded" for r in backups)
    assert {r["target"] for r in backups} == {"files", "disk"}
    assert all(r["bytes_read"] > 0 and r["bytes_added"] > 0 and r["snapshot_id"] for r in backups)
    kinds = {r["kind"] for r in records}
    assert {"init", "backup", "forget", "prune", "check", "restore"} <= kinds


def test_jobs_show_one_job_with_its_log(retention: Retention):
    rows = job_rows(retention.ws, "--kind", "backup")
    proc = retention.ws.run("jobs", "--id", rows[-1]["id"])
    assert "kind: backup" in proc.stdout and "parent snapshot: none (full backup)" in proc.stdout


def test_restore_job_records_the_snapshot_target(retention: Retention):
    rows = job_rows(retention.ws, "--kind", "restore")
    assert [r["target"] for r in rows] == ["files"]


# --- keys ------------------------------------------------------------------------------------------------


def key_ids(ws: Workspace, password: str) -> tuple[list[str], str]:
    keys = ws.json("key", "list", password=password)
    current = [k["id"] for k in keys if k["current"]]
    assert len(current) == 1, keys
    return [k["id"] for k in keys], current[0]


def test_keys_add_list_passwd_remove(workspace: Workspace, tmp_path: Path):
    ws = workspace
    write_file(ws.data / "note.txt", b"readable with every key\n")
    ws.run("init")
    ws.run("backup", "--target", "files")
    first_key = os.listdir(ws.repo / "keys")[0]

    added = ws.run("key", "add", env={"SAFEHOLD_NEW_PASSWORD": "second password"}).stdout
    second_key = re.fullmatch(r"added key ([0-9a-f]{8})\n", added).group(1)
    password_file = tmp_path / "third"
    password_file.write_text("third password\n")
    third_key = re.fullmatch(r"added key ([0-9a-f]{8})\n",
                             ws.run("key", "add", "--new-password-file", password_file).stdout).group(1)
    ids, current = key_ids(ws, "second password")
    assert len(ids) == 3 and {first_key[:8], second_key, third_key} == {i[:8] for i in ids}
    assert current.startswith(second_key)
    # The file's trailing newline is not part of the password.
    assert ws.json("snapshots", password="third password")[0]["files"] == 1

    changed = ws.run("key", "passwd", password="third password", env={"SAFEHOLD_NEW_PASSWORD": "fourth"}).stdout
    fourth_key = re.search(r"password changed; new key ([0-9a-f]{8})", changed).group(1)
    old = ws.run("key", "list", password="third password", ok=False)
    assert_clean_error(old, 13, "password does not open")
    ids, current = key_ids(ws, "fourth")
    assert current.startswith(fourth_key) and not any(i.startswith(third_key) for i in ids) and len(ids) == 3

    unknown = ws.run("key", "remove", "ffffffff", ok=False)
    assert_clean_error(unknown, 15, "no key ffffffff")
    in_use = ws.run("key", "remove", first_key[:8], ok=False)  # the key this password opened
    assert_clean_error(in_use, 2, first_key[:8], hint=False)
    assert ws.run("key", "remove", second_key).stdout.startswith(f"removed key {second_key}")
    assert ws.run("key", "remove", fourth_key).stdout.startswith(f"removed key {fourth_key}")
    # The last key is never removed, and the repository still opens.
    last = ws.run("key", "remove", first_key[:8], ok=False)
    assert_clean_error(last, 15, f"refusing to remove key {first_key[:8]}", "only key")
    assert os.listdir(ws.repo / "keys") == [first_key]
    assert ws.snapshots()[0]["files"] == 1


# --- locks ------------------------------------------------------------------------------------------------


def test_unlock_removes_only_stale_locks(workspace: Workspace, lock_holder):
    ws = workspace
    ws.run("init")
    dead = lock_holder(ws)
    dead.kill()
    assert len(ws.lock_files()) == 1
    live = lock_holder(ws)
    assert len(ws.lock_files()) == 2
    proc = ws.run("unlock")
    assert f"removed lock: e2e lock holder (pid {dead.pid} on " in proc.stdout
    assert proc.stdout.rstrip().endswith("1 lock(s) removed")
    assert len(ws.lock_files()) == 1  # the live holder's lock stays
    live.release()
    assert ws.lock_files() == []
    assert ws.run("unlock").stdout.rstrip().endswith("0 lock(s) removed")


# --- configuration ------------------------------------------------------------------------------------------


TYPO_CONFIG = """\
repository:
  url: repo
  password_env: SAFEHOLD_PASSWORD
state_dir: state
targets:
  - name: files
    tier: 2
    source: {type: files, paths: [data]}
    retention: {keep_lst: 3}
"""


def test_config_check_ok_and_with_a_typo(workspace: Workspace):
    ws = workspace
    proc = ws.run("config", "check")
    assert proc.stdout.strip() == f"{ws.config}: ok, 2 target(s)"
    assert json.loads(ws.run("config", "check", "--json").stdout)["targets"] == ["files", "disk"]
    bad = ws.write_config(text=TYPO_CONFIG, name="bad.yml")
    proc = ws.run("-c", bad, "config", "check", ok=False)
    assert proc.returncode == 30 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ")
    problem = next(line for line in proc.stderr.splitlines() if "keep_lst" in line)
    assert f"{bad.name}:9:" in problem, problem          # file:line of the bad key
    assert "did you mean 'keep_last'" in problem, problem
    assert "hint:" in proc.stderr
    # Every command refuses the broken file the same way.
    assert ws.run("-c", bad, "snapshots", ok=False).returncode == 30


def test_error_messages_keep_square_brackets(workspace: Workspace):
    bad = workspace.write_config(text=TYPO_CONFIG, name="bad.yml")
    proc = workspace.run("-c", bad, "config", "check", code=30)
    assert "targets[files].retention.keep_lst" in proc.stderr, proc.stderr


def test_version_flag():
    from importlib.metadata import version

    proc = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"safehold {version('safehold')}", proc
