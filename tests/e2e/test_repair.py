"""repair index, repair snapshots, forget by id and replayed snapshots, through the real CLI.

Each test damages a fresh repository the way an operator or an attacker could from outside
(deleting an index object or a pack, copying a forgotten snapshot object back) and checks what
the commands print, exit with and leave behind, down to restores compared byte for byte.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e_support import (
    Workspace,
    assert_clean_error,
    flip_byte,
    make_workspace,
    parse_table,
    tree_manifest,
    write_file,
)

MiB = 1024 * 1024


@dataclass
class Damaged:
    ws: Workspace
    first: dict
    second: dict
    manifests: dict[str, dict]  # snapshot id -> manifest of data/ when it was taken


@pytest.fixture
def repo(tmp_path: Path) -> Damaged:
    """Two snapshots of 'files': a 20 MiB random file fills a pack of its own (the largest pack
    holds only its data), small files and the item streams go to the last pack."""
    ws = make_workspace(tmp_path / "ws")
    ws.write_config([{"name": "files", "tier": 2, "source": {"type": "files", "paths": ["data"]}}])
    rng = random.Random(5)
    write_file(ws.data / "big.bin", rng.randbytes(20 * MiB))
    write_file(ws.data / "small.txt", b"small\n")
    ws.run("init")
    ws.run("backup", "--target", "files")
    manifests = {}
    first = ws.snapshots()[-1]
    manifests[first["id"]] = tree_manifest(ws.data)
    write_file(ws.data / "later.txt", b"written after the first snapshot\n")
    ws.run("backup", "--target", "files")
    second = ws.snapshots()[-1]
    manifests[second["id"]] = tree_manifest(ws.data)
    return Damaged(ws, first, second, manifests)


def index_files(ws: Workspace) -> list[Path]:
    return sorted(p for p in (ws.repo / "index").iterdir() if not p.name.startswith("."))


def largest_pack(ws: Workspace) -> Path:
    return max(ws.pack_files(), key=lambda p: p.stat().st_size)


def restore_and_compare(ws: Workspace, snapshot_id: str, manifest: dict, tmp: Path) -> None:
    destination = tmp / f"restored-{snapshot_id[:8]}"
    ws.run("restore", snapshot_id, "--to", destination)
    assert tree_manifest(destination / "data") == manifest


# --- repair index ------------------------------------------------------------------------------


def test_prune_after_a_lost_index_object_keeps_every_pack(repo: Damaged, tmp_path: Path):
    ws = repo.ws
    packs = ws.pack_files()
    index_files(ws)[0].unlink()  # one of the two backups' index objects
    report = ws.json("prune")
    assert report["packs_deleted"] == report["unindexed_packs_deleted"] == 0
    assert report["unindexed_packs_read"] >= 1
    assert ws.pack_files() == packs
    check = ws.json("check", "--read-data")
    assert check["ok"] is True and check["errors"] == []
    for snapshot in (repo.first, repo.second):
        restore_and_compare(ws, snapshot["id"], repo.manifests[snapshot["id"]], tmp_path)


def test_repair_index_rebuilds_from_pack_headers(repo: Damaged, tmp_path: Path):
    ws = repo.ws
    lost = index_files(ws)[-1]
    lost.unlink()
    broken = ws.run("check", "--json", code=19)
    assert "safehold repair index" in broken.stdout or "repair index" in broken.stderr
    assert ws.json("repair", "index", "--dry-run")["changed"] is True
    assert lost.name not in {p.name for p in index_files(ws)}  # the dry run wrote nothing

    report = ws.json("repair", "index")
    assert report["changed"] is True and report["packs_added"] and report["packs_removed"] == []
    assert report["headers_read"] == len(report["packs_added"])  # only packs no index named
    assert report["packs_indexed_after"] == report["packs_stored"] == len(ws.pack_files())
    assert ws.json("check")["ok"] is True
    packs = ws.pack_files()
    assert ws.json("prune")["packs_deleted"] == 0 and ws.pack_files() == packs
    assert ws.json("check", "--read-data")["ok"] is True
    for snapshot in (repo.first, repo.second):
        restore_and_compare(ws, snapshot["id"], repo.manifests[snapshot["id"]], tmp_path)

    again = ws.run("repair", "index")  # idempotent
    assert "the index is complete: nothing to do" in again.stdout
    assert ws.json("repair", "index", "--read-all-packs")["changed"] is False


def test_repair_index_names_added_packs_in_text(repo: Damaged):
    ws = repo.ws
    index_files(ws)[0].unlink()
    out = ws.run("repair", "index").stdout
    assert "added:   pack " in out and "header(s) read" in out and "wrote 1 index object(s)" in out


# --- repair snapshots ------------------------------------------------------------------------------


def test_repair_snapshots_drops_the_damaged_file_and_names_it(repo: Damaged, tmp_path: Path):
    ws = repo.ws
    largest_pack(ws).unlink()  # big.bin's data
    ws.run("check", code=19)
    dry = ws.json("repair", "snapshots", "--dry-run")
    assert dry["dry_run"] is True and len(dry["repaired"]) == 2
    assert all(r["dropped"] == ["data/big.bin"] and r["repaired"] is None for r in dry["repaired"])
    assert len(ws.snapshots()) == 2

    text = ws.run("repair", "snapshots", repo.second["short_id"]).stdout
    assert "dropped data/big.bin" in text and "repaired as" in text
    assert "the damaged originals are kept" in text
    rows = ws.snapshots()
    [repaired] = [r for r in rows if r["original"] == repo.second["id"]]
    assert "repaired" in repaired["tags"] and repaired["time"] == repo.second["time"]
    assert {r["id"] for r in rows} == {repo.first["id"], repo.second["id"], repaired["id"]}
    table = {r[0]: r for r in parse_table(ws.run("snapshots").stdout)}
    assert table[repaired["short_id"]][-1] == f"repaired from {repo.second['short_id']}"

    # latest is the repaired one; it restores everything but big.bin, byte for byte
    destination = tmp_path / "restored"
    ws.run("restore", "latest:files", "--to", destination)
    expected = {path: entry for path, entry in repo.manifests[repo.second["id"]].items() if path != b"big.bin"}
    assert tree_manifest(destination / "data") == expected

    again = ws.json("repair", "snapshots", repo.second["short_id"])
    assert again["repaired"] == [] and again["already_repaired"] == [
        {"original": repo.second["id"], "repaired": repaired["id"], "forgotten": False}]


def test_repair_index_then_repair_snapshots_forget_leaves_a_clean_repository(repo: Damaged, tmp_path: Path):
    ws = repo.ws
    largest_pack(ws).unlink()
    index = ws.json("repair", "index")
    assert [r["reason"] for r in index["packs_removed"]] == ["missing from storage"]
    report = ws.json("repair", "snapshots", "--forget")
    assert all(r["forgotten"] for r in report["repaired"]) and len(report["repaired"]) == 2
    rows = ws.snapshots()
    assert {r["original"] for r in rows} == {repo.first["id"], repo.second["id"]}
    assert len(list((ws.repo / "forgotten").iterdir())) == 2
    assert ws.json("check")["ok"] is True
    ws.run("prune")
    assert ws.json("check", "--read-data")["ok"] is True


def test_repair_snapshots_refuses_while_an_index_object_is_lost(repo: Damaged):
    ws = repo.ws
    index_files(ws)[0].unlink()
    proc = ws.run("repair", "snapshots", code=29)
    assert_clean_error(proc, 29, "repair snapshots refused")
    assert "safehold repair index" in proc.stderr
    assert len(ws.snapshots()) == 2


# --- forget by id, replayed snapshots ---------------------------------------------------------------


def test_forget_by_id_prefix_dry_run_and_json(repo: Damaged):
    ws = repo.ws
    dry = ws.json("forget", repo.first["short_id"], "--dry-run")
    assert dry["dry_run"] is True and dry["removed"] == []
    assert [(d["id"], d["keep"]) for d in dry["decisions"]] == [(repo.first["id"], False)]
    assert len(ws.snapshots()) == 2
    done = ws.json("forget", repo.first["id"][:6])
    assert done["removed"] == [repo.first["id"]]
    assert [r["id"] for r in ws.snapshots()] == [repo.second["id"]]
    assert_clean_error(ws.run("forget", "ffffffff", code=16), 16, "ffffffff")
    proc = ws.run("forget", repo.second["short_id"], "--keep-last", "1", code=2)
    assert "not both" in proc.stderr
    assert [r["id"] for r in ws.snapshots()] == [repo.second["id"]]


def test_forget_refuses_an_ambiguous_prefix(repo: Damaged):
    ws = repo.ws
    folder = ws.repo / "snapshots"
    twin = folder / (repo.first["id"][:4] + "0" * 60)  # another object whose name shares the prefix
    shutil.copy(folder / repo.first["id"], twin)
    proc = ws.run("forget", repo.first["id"][:4], code=16)
    assert_clean_error(proc, 16, "matches 2 snapshots")
    assert (folder / repo.first["id"]).exists()


def test_a_forgotten_and_pruned_snapshot_copied_back_is_flagged(repo: Damaged, tmp_path: Path):
    ws = repo.ws
    saved = (ws.repo / "snapshots" / repo.first["id"]).read_bytes()
    ws.run("forget", repo.first["short_id"])
    ws.run("prune")
    (ws.repo / "snapshots" / repo.first["id"]).write_bytes(saved)  # the replay

    rows = {r["id"]: r for r in ws.snapshots()}
    record = rows[repo.first["id"]]["replayed"]
    assert record and record["snapshot"] == repo.first["id"] and record["reason"] == "forget by id"
    assert rows[repo.second["id"]]["replayed"] is None
    proc = ws.run("snapshots")
    table = {r[0]: r for r in parse_table(proc.stdout)}
    assert table[repo.first["short_id"]][-1] == "REPLAYED (forgotten before)"
    assert f"replayed: snapshot {repo.first['short_id']}" in proc.stderr

    check = ws.run("check", "--json", code=19)
    assert f"snapshot {repo.first['short_id']} was forgotten and is present again" in check.stdout
    assert record["name"][:16] in check.stdout

    refused = ws.run("restore", repo.first["short_id"], "--to", tmp_path / "r1", code=28)
    assert_clean_error(refused, 28, repo.first["short_id"], "replayed", record["name"][:16])
    assert not (tmp_path / "r1").exists()
    ws.run("restore", repo.first["short_id"], "--to", tmp_path / "r2", "--allow-replayed")
    assert tree_manifest(tmp_path / "r2" / "data") == repo.manifests[repo.first["id"]]
    # Forgetting it again (the record exists already) clears the error.
    ws.run("forget", repo.first["short_id"])
    assert ws.json("check")["ok"] is True


def test_latest_skips_a_replayed_snapshot(repo: Damaged, tmp_path: Path):
    ws = repo.ws
    saved = (ws.repo / "snapshots" / repo.second["id"]).read_bytes()
    ws.run("forget", repo.second["short_id"])
    (ws.repo / "snapshots" / repo.second["id"]).write_bytes(saved)
    ws.run("restore", "latest:files", "--to", tmp_path / "r")
    assert tree_manifest(tmp_path / "r" / "data") == repo.manifests[repo.first["id"]]
    # a policy forget removes the replay again
    outcome = ws.json("forget", "--keep-last", "5", "--target", "files")
    assert outcome["removed"] == [repo.second["id"]]


def test_repair_snapshots_read_data_drops_a_file_with_a_flipped_bit(repo: Damaged, tmp_path: Path):
    ws = repo.ws
    pack = largest_pack(ws)
    flip_byte(pack, pack.stat().st_size // 2)  # inside big.bin's data, not the header
    assert ws.run("check", "--read-data", "--json", code=19)
    assert ws.json("repair", "snapshots")["repaired"] == []  # sizes and index look fine: --read-data finds it
    report = ws.json("repair", "snapshots", "--read-data")
    assert report["packs_read"] >= 1 and sorted(r["original"] for r in report["repaired"]) == sorted(
        [repo.first["id"], repo.second["id"]])
    assert all(r["dropped"] == ["data/big.bin"] for r in report["repaired"])
    destination = tmp_path / "restored"
    ws.run("restore", "latest:files", "--to", destination)
    expected = {path: entry for path, entry in repo.manifests[repo.second["id"]].items() if path != b"big.bin"}
    assert tree_manifest(destination / "data") == expected


def test_a_damaged_snapshot_object_blocks_nothing_and_forget_removes_it(repo: Damaged, tmp_path: Path):
    """Found by the damage campaign: one unreadable snapshot object failed every backup (the
    parent lookup read it), 'snapshots', 'repair snapshots' and 'forget ID', and prune refuses
    while it is there, so nothing short of deleting the file by hand helped."""
    ws = repo.ws
    flip_byte(ws.repo / "snapshots" / repo.first["id"], 40)
    # A backup still runs (a full one would too: the damaged object may be its parent) and says why.
    write_file(ws.data / "new.txt", b"after the damage\n")
    ws.run("backup", "--target", "files")
    [job] = [j for j in ws.json("jobs") if j["kind"] == "backup"][:1]
    log = ws.run("jobs", "--id", str(job["id"])).stdout
    assert f"snapshot {repo.first['short_id']} cannot be read" in log
    # snapshots lists the others, names the damaged one and fails with the damage's exit code.
    listed = ws.run("snapshots", "--json", code=17)
    assert f"unreadable: snapshot {repo.first['short_id']}" in listed.stderr
    assert "'safehold forget ID' removes each" in listed.stderr
    listed_ids = {row["id"] for row in json.loads(listed.stdout)}
    assert repo.second["id"] in listed_ids and repo.first["id"] not in listed_ids and len(listed_ids) == 2
    # repair snapshots names it and repairs nothing else (nothing else is damaged).
    report = ws.json("repair", "snapshots")
    assert report["unreadable"] == [repo.first["id"]] and report["repaired"] == []
    ws.run("prune", code=27)  # it cannot tell what an unreadable snapshot uses: deletes nothing
    forgotten = ws.json("forget", repo.first["short_id"])
    assert forgotten["removed"] == [repo.first["id"]]
    ws.run("prune")
    ws.run("check", "--read-data")
    destination = tmp_path / "restored"
    ws.run("restore", repo.second["short_id"], "--to", destination)
    assert tree_manifest(destination / "data") == repo.manifests[repo.second["id"]]
