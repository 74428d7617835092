"""Damage campaign (issue 13): one bit flip or truncation at a time in a copy of a real
repository, in its packs, indexes, snapshots, keys and config.

Each trial damages one object of a working copy of a pristine repository (two file snapshots
sharing most data, one disk image snapshot, two key files) at a seeded random place, and then
(before the next trial puts that object's pristine bytes back):

- ``check --read-data`` must name the damage: exit 19 with the damaged object in its report
  (a pack among ``damaged_packs`` or in an error line, the index, snapshot or key by name),
  or, when the damage leaves the repository unopenable (the config, the key this password
  opens), a clean error (no traceback) whose line names the config or the key file;
- a restore of one snapshot (the damaged pack's snapshot when there is one, else a seeded
  choice) must never write a wrong byte: it restores everything byte-identical (exit 0), or
  leaves out and names the damaged files (exit 18, every other file identical), or refuses
  with a clean error before writing a wrong byte (a damaged index or the snapshot itself);
  a file left out must be one that uses a blob of the damaged pack;
- ``repair`` (when merged, see ``faults_support.REPAIR_IN_CAMPAIGNS``) must bring back
  everything that was not damaged.

CI runs 200 trials; ``pytest -m campaign tests/faults -k damage`` runs
SAFEHOLD_CAMPAIGN_TRIALS (default 5000).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e2e_support import make_dataset, make_sparse_image, sha256_file, tree_manifest
from faults_support import (REPAIR_IN_CAMPAIGNS, CampaignWorkspace, campaign_seed, figures, large_count,
                            make_campaign_workspace, require_campaign_marker)

pytestmark = pytest.mark.slow

KINDS = ("data", "index", "snapshots", "keys", "config")
CI_TRIALS = 200
# Repair runs after every REPAIR_EVERY-th trial (two repairs and a restore of every snapshot each):
# 40 of the CI's 200 trials; SAFEHOLD_CAMPAIGN_REPAIR_EVERY=1 repairs after every one.
REPAIR_EVERY = large_count("SAFEHOLD_CAMPAIGN_REPAIR_EVERY", 5)
SECOND_PASSWORD = "the second key's password"
IMAGE_SIZE = 4 * 1024 * 1024
IMAGE_CHUNK = 512 * 1024


@dataclass
class Pristine:
    ws: CampaignWorkspace
    copy: Path                       # the untouched repository
    snapshots: dict[str, dict]       # id -> {"target", "kind", "files" or "image"}
    pack_users: dict[str, set]       # pack -> {(snapshot id, path)} whose data or item stream is in it
    objects: dict[str, list[str]] = field(default_factory=dict)  # kind -> object names


def _objects(repo: Path) -> dict[str, list[str]]:
    found = {"config": ["config"]}
    for kind in ("keys", "snapshots", "index"):
        found[kind] = sorted(n for n in os.listdir(repo / kind) if not n.startswith("."))
    found["data"] = sorted(p.name for p in (repo / "data").glob("*/*") if not p.name.startswith("."))
    return found


def _path_of(repo: Path, kind: str, name: str) -> Path:
    if kind == "config":
        return repo / "config"
    if kind == "data":
        return repo / "data" / name[:2] / name
    return repo / kind / name


def _pack_users(ws: CampaignWorkspace) -> dict[str, set]:
    """Which snapshot items (and item streams) use each pack, read through the Python API."""
    from safehold.items import HOLE
    from safehold.repository import Repository
    from safehold.repository.backends import open_backend

    repository = Repository.open(open_backend(str(ws.repo)), ws.password.encode())
    repository.load_index()
    users: dict[str, set] = {}
    for snapshot in repository.list_snapshots():
        for hex_id in snapshot.tree:
            users.setdefault(repository.locate(bytes.fromhex(hex_id)).pack, set()).add((snapshot.id, "<tree>"))
        for item in repository.read_tree(snapshot):
            chunks = item.get("chunks") or b""
            for i in range(0, len(chunks), 32):
                blob_id = chunks[i:i + 32]
                if blob_id != HOLE:
                    path = item["path"].decode("utf-8", "surrogateescape")
                    users.setdefault(repository.locate(blob_id).pack, set()).add((snapshot.id, path))
    return users


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Pristine:
    from safehold.repository import Repository
    from safehold.repository.backends import open_backend

    root = tmp_path_factory.mktemp("damage")
    ws = make_campaign_workspace(root / "ws", targets=[
        {"name": "files", "tier": 2, "source": {"type": "files", "paths": ["data"]}},
        {"name": "disk", "tier": 3, "source": {"type": "image", "path": "disk.img", "chunk_size": "512KiB"}},
    ])
    rng = random.Random(campaign_seed(1313))
    paths = make_dataset(ws.data, rng, random_files=4, compressible_files=4, file_size=200_000, folders=2)
    (ws.data / "tiny.txt").write_bytes(b"small enough to share a pack with the rest\n")
    make_sparse_image(ws.image, IMAGE_SIZE, rng, [(0, 300_000), (1_600_000, 700_000), (3_500_000, 100_000)])
    # A cheap key derivation (the real one costs ~0.15 s per command; the format is the same).
    fast = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
    repository = Repository.init(open_backend(str(ws.repo)), ws.password.encode(), fast)
    repository.add_key(SECOND_PASSWORD.encode(), fast)
    snapshots: dict[str, dict] = {}

    def backup(target: str) -> None:
        before = ws.snapshot_names()
        ws.run("backup", "--target", target)
        (new,) = ws.snapshot_names() - before
        if target == "files":
            snapshots[new] = {"target": target, "files": tree_manifest(ws.data, metadata=False)}
        else:
            copy = root / f"image-{new[:12]}"
            shutil.copyfile(ws.image, copy)
            snapshots[new] = {"target": target, "image": sha256_file(ws.image), "copy": str(copy)}

    backup("files")
    backup("disk")
    paths[0].write_bytes(rng.randbytes(200_000))  # the second snapshot shares all but one file
    backup("files")
    assert ws.json("check", "--read-data")["ok"] is True
    copy = root / "pristine"
    shutil.copytree(ws.repo, copy)
    return Pristine(ws, copy, snapshots, _pack_users(ws), _objects(copy))


@dataclass
class Damage:
    kind: str
    name: str
    how: str        # "flip" or "truncate"
    offset: int     # the flipped byte, or the new length
    size: int

    def describe(self) -> str:
        return f"{self.how} {self.kind}/{self.name[:12]} at {self.offset}/{self.size}"


def damage_one(rng: random.Random, repo: Path, objects: dict[str, list[str]]) -> Damage:
    kind = rng.choice(KINDS)
    name = rng.choice(objects[kind])
    path = _path_of(repo, kind, name)
    data = bytearray(path.read_bytes())
    size = len(data)
    how = rng.choice(("flip", "truncate"))
    if how == "flip":
        offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
    else:
        offset = rng.randrange(len(data))
        del data[offset:]
    path.write_bytes(bytes(data))
    return Damage(kind, name, how, offset, size)


def undo(pristine: Pristine, damage: Damage, repaired: bool = False) -> None:
    """Put the working copy back to the pristine repository: the damaged object's bytes (check and
    restore write nothing else but their locks, which they remove). After a repair, which rewrites
    index and snapshot objects, the whole copy is made again."""
    repo = pristine.ws.repo
    if repaired:
        shutil.rmtree(repo)
        shutil.copytree(pristine.copy, repo)
        return
    shutil.copyfile(_path_of(pristine.copy, damage.kind, damage.name), _path_of(repo, damage.kind, damage.name))
    assert pristine.ws.lock_files() == [], f"a lock was left behind after {damage.describe()}"


def check_names(damage: Damage, code: int, report: dict | None, stderr: str) -> bool:
    """Whether ``check --read-data`` named the damaged object."""
    if "Traceback" in stderr or "internal error" in stderr:
        return False
    if report is not None:
        if code != 19 or report.get("ok") is not False:
            return False
        lines = " ".join(report.get("errors", []))
        if damage.kind == "data":
            return damage.name in [d["pack"] for d in report["damaged_packs"]] or damage.name in lines
        if damage.kind == "snapshots":
            return f"snapshot {damage.name[:8]}" in lines
        if damage.kind == "index":
            return f"index {damage.name}" in lines
        if damage.kind == "keys":
            return f"key {damage.name[:8]}" in lines
        return "config" in lines
    # The repository did not open: the error line must name what is wrong.
    error = " ".join(line for line in stderr.splitlines() if line.startswith("error:"))
    if damage.kind == "config":
        return "config" in error or "format version" in error
    if damage.kind == "keys":
        return damage.name[:8] in error
    return False


def inert_config_damage(pristine: Pristine, damage: Damage, repo: Path) -> bool:
    """The one damage check cannot see (docs/testing.md): the config is plain JSON bound to the
    keys by its key_check, so a flip that turns its ``created`` time into another valid time no
    later than its key files allow (a minute of slack) goes unnoticed. Nothing reads that value.
    True only for exactly that: every other field unchanged, ``created`` still a time."""
    if damage.kind != "config":
        return False
    try:
        damaged = json.loads((repo / "config").read_bytes())
    except ValueError:
        return False
    original = json.loads((pristine.copy / "config").read_bytes())
    from datetime import datetime

    if {k: v for k, v in damaged.items() if k != "created"} != {k: v for k, v in original.items() if k != "created"}:
        return False
    try:
        datetime.fromisoformat(damaged["created"])
    except (TypeError, ValueError):
        return False
    return True


def verify_restore(pristine: Pristine, damage: Damage, snapshot_id: str, out: Path) -> tuple[str, list[str]]:
    """Restore one snapshot; returns (verdict, problems). Problems are losses: a wrong byte, a file
    silently missing, a file left out that the damage cannot explain, or a traceback."""
    ws = pristine.ws
    expected = pristine.snapshots[snapshot_id]
    destination = out / "disk.img" if "image" in expected else out
    proc = _run_any(ws, "restore", snapshot_id, "--to", destination, "--json")
    problems: list[str] = []
    if "Traceback" in proc.stderr or "internal error" in proc.stderr:
        return "traceback", [proc.stderr[-2000:]]
    explained = {path for snap, path in pristine.pack_users.get(damage.name, set()) if snap == snapshot_id}
    if proc.returncode in (0, 18):
        outcome = json.loads(proc.stdout) if proc.stdout.strip() else {}
        damaged = list(outcome.get("damaged", []))
        if proc.returncode == 18 and not damaged:
            problems.append("exit 18 without naming a damaged file")
        if proc.returncode == 0 and damaged:
            problems.append(f"exit 0 though files were left out: {damaged}")
        if "image" in expected:
            if not damaged:
                if sha256_file(destination) != expected["image"]:
                    problems.append("the image restored with exit 0 differs from the source")
            elif damage.kind != "data":
                problems.append(f"image ranges named damaged by a {damage.kind} damage: {damaged}")
            else:
                problems += compare_image(Path(expected["copy"]).read_bytes(), destination.read_bytes(), damaged)
            return ("damaged-named" if damaged else "identical"), problems
        unexplained = [name for name in damaged if name not in explained]
        if unexplained:
            problems.append(f"files left out that the damage does not touch: {unexplained}")
        actual = tree_manifest(out / "data", metadata=False) if (out / "data").exists() else {}
        for path, entry in expected["files"].items():
            shown = "data/" + os.fsdecode(path) if path != b"." else "data"
            if path not in actual:
                if shown not in damaged:
                    problems.append(f"{shown} is missing and not named damaged")
            elif actual[path] != entry:
                problems.append(f"{shown} restored with wrong content")
            elif shown in damaged:
                problems.append(f"{shown} named damaged but written")
        extra = set(actual) - set(expected["files"])
        if extra:
            problems.append(f"restored names the snapshot does not have: {sorted(extra)[:5]}")
        return ("damaged-named" if damaged else "identical"), problems
    # Refused: what it wrote before refusing must still be right (normally nothing at all).
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    if len(error_lines) != 1:
        problems.append(f"exit {proc.returncode} without exactly one error line:\n{proc.stderr[-1000:]}")
    if "image" in expected:
        if destination.exists() and destination.stat().st_size and damage.kind != "data":
            pass  # a refused image restore leaves its file for the operator; it is not claimed complete
        return f"refused-{proc.returncode}", problems
    actual = tree_manifest(out / "data", metadata=False) if (out / "data").exists() else {}
    for path, entry in actual.items():
        if entry[0] == "file" and expected["files"].get(path) != entry:
            problems.append(f"refused restore left data/{os.fsdecode(path)} with wrong content")
    return f"refused-{proc.returncode}", problems


def compare_image(source: bytes, restored: bytes, damaged: list[str]) -> list[str]:
    """A restored image may differ from the source only inside the ranges it names ("NAME: bytes
    START-END"), and holds zeros there (a hole, never other data)."""
    if len(restored) != len(source):
        return [f"the image restored with {len(restored)} bytes, the source has {len(source)}"]
    named = []
    for line in damaged:
        start, end = (int(x) for x in line.rsplit("bytes ", 1)[1].split("-"))
        named.append((start, end + 1))
        if restored[start:end + 1].strip(b"\0"):
            return [f"a damaged range {start}-{end} holds data, not zeros"]
    position = 0
    for start, end in sorted(named) + [(len(source), len(source))]:
        if restored[position:start] != source[position:start]:
            return [f"the image differs from the source outside the named ranges, between {position} and {start}"]
        position = max(position, end)
    return []


def _run_any(ws: CampaignWorkspace, *args) -> subprocess.CompletedProcess:
    """Run the CLI and return however it ended (the campaign judges the exit code itself)."""
    process = ws.start(*args)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_repair_brings_back_the_undamaged(pristine: Pristine, damage: Damage, out: Path) -> list[str]:
    """After ``safehold repair index`` and ``repair snapshots --read-data``: every snapshot (its
    repaired copy where one was written: repaired snapshots get new ids and record ``original``)
    restores every file that used no damaged blob, byte-identical, with exit 0."""
    ws = pristine.ws
    if damage.kind in ("keys", "config"):
        return []  # repair makes neither keys nor a config: a damaged one is named by check and open
    problems = []
    reports = {}
    for what in (("index",), ("snapshots", "--read-data")):
        proc = _run_any(ws, "repair", *what, "--json")
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            problems.append(f"repair {what[0]} -> exit {proc.returncode}: {proc.stderr[-500:]}")
            return problems
        reports[what[0]] = json.loads(proc.stdout)
    report = reports["snapshots"]
    repaired = {entry["original"]: entry["repaired"] for entry in report.get("repaired", []) if entry.get("repaired")}
    # Its item stream broke (the damaged pack held the stream's blobs): the repaired copy holds the
    # items before the break, or nothing was left to write. What it holds must be right; what is
    # gone cannot be asked back.
    broken = {entry["original"] for entry in report.get("repaired", []) + report.get("nothing_left", [])
              if entry.get("stream_damaged") is not None or entry in report.get("nothing_left", [])}
    for snapshot_id, expected in pristine.snapshots.items():
        if damage.kind == "snapshots" and snapshot_id == damage.name:
            if snapshot_id not in report.get("unreadable", []):
                problems.append(f"repair snapshots did not name the damaged snapshot object {snapshot_id[:8]}")
            continue  # its item list is gone with it
        if snapshot_id in broken and snapshot_id not in repaired:
            continue
        chosen = repaired.get(snapshot_id, snapshot_id)
        target = out / f"repaired-{snapshot_id[:8]}"
        proc = _run_any(ws, "restore", chosen, "--to", target / "disk.img" if "image" in expected else target,
                        "--json")
        lost = {path for snap, path in pristine.pack_users.get(damage.name, set()) if snap == snapshot_id}
        if chosen != snapshot_id:
            if proc.returncode != 0:  # the repaired copy left out exactly what was damaged
                problems.append(f"repaired copy {chosen[:8]} of {snapshot_id[:8]} restores with exit "
                                f"{proc.returncode}: {proc.stderr[-300:]}")
                continue
        elif proc.returncode not in (0, 18) or (proc.returncode == 18 and not lost):
            problems.append(f"after repair, snapshot {snapshot_id[:8]} restores with exit {proc.returncode}")
            continue
        if "files" in expected:
            actual = tree_manifest(target / "data", metadata=False)
            for path, entry in expected["files"].items():
                shown = "data/" + os.fsdecode(path)
                if path == b"." or shown in lost or (snapshot_id in broken and path not in actual):
                    continue
                if actual.get(path) != entry:
                    problems.append(f"after repair, {snapshot_id[:8]}:{shown} is not back")
    return problems


def run_damage_campaign(pristine: Pristine, trials: int, seed: int, scratch: Path) -> dict:
    rng = random.Random(seed)
    ws = pristine.ws
    counts: Counter = Counter()
    spent: Counter = Counter()
    undetected: list[str] = []
    losses: list[str] = []
    started = time.monotonic()
    for trial in range(trials):
        damage = damage_one(rng, ws.repo, pristine.objects)
        counts[f"{damage.kind}"] += 1
        moment = time.monotonic()
        proc = _run_any(ws, "check", "--read-data", "--json")
        spent["check"] += time.monotonic() - moment
        try:
            report = json.loads(proc.stdout) if proc.returncode in (0, 19) and proc.stdout.strip() else None
        except ValueError:
            report = None
        if check_names(damage, proc.returncode, report, proc.stderr):
            counts["named"] += 1
        elif proc.returncode == 0 and inert_config_damage(pristine, damage, ws.repo):
            counts["inert"] += 1
        else:
            undetected.append(f"trial {trial}: {damage.describe()}: check exit {proc.returncode} "
                              f"{(proc.stderr.strip().splitlines() or [''])[-1][:200]}")
        users = sorted({snap for snap, _ in pristine.pack_users.get(damage.name, set())})
        if damage.kind == "snapshots" and damage.name in pristine.snapshots:
            choice = damage.name
        elif users:
            choice = rng.choice(users)
        else:
            choice = rng.choice(sorted(pristine.snapshots))
        out = scratch / f"out-{trial}"
        moment = time.monotonic()
        verdict, problems = verify_restore(pristine, damage, choice, out)
        spent["restore"] += time.monotonic() - moment
        counts[verdict] += 1
        losses += [f"trial {trial}: {damage.describe()}, restore {choice[:8]}: {p}" for p in problems]
        repair_now = REPAIR_IN_CAMPAIGNS and trial % REPAIR_EVERY == 0
        if repair_now:
            repaired = assert_repair_brings_back_the_undamaged(pristine, damage, scratch / f"repair-{trial}")
            counts["repaired"] += not repaired
            losses += [f"trial {trial}: {damage.describe()}: {p}" for p in repaired]
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(scratch / f"repair-{trial}", ignore_errors=True)
        undo(pristine, damage, repaired=repair_now)
        if (trial + 1) % 500 == 0 and trial + 1 < trials:  # a long run reports as it goes
            figures("damage-progress", trials=trial + 1, named=counts["named"], inert=counts["inert"],
                    undetected=len(undetected), lost=len(losses), seconds=time.monotonic() - started)
    elapsed = time.monotonic() - started
    by_kind = {kind: counts[kind] for kind in KINDS}
    repairs = sum(1 for trial in range(trials) if REPAIR_IN_CAMPAIGNS and trial % REPAIR_EVERY == 0)
    line = figures("damage", trials=trials, named=f"{counts['named']}/{trials}", inert=counts["inert"],
                   lost=len(losses),
                   restores={k: v for k, v in sorted(counts.items()) if k.startswith(("identical", "damaged",
                                                                                        "refused"))},
                   kinds=by_kind, repaired=f"{counts['repaired']}/{repairs}",
                   seed=seed, seconds=elapsed,
                   spent={k: round(v, 1) for k, v in spent.items()})
    return {"line": line, "undetected": undetected, "losses": losses, "counts": counts}


def _assert_campaign(result: dict) -> None:
    problems = result["losses"] + result["undetected"]
    assert not problems, (f"{result['line']}\n{len(result['losses'])} loss(es), {len(result['undetected'])} "
                          "damage(s) check did not name:\n" + "\n".join(problems[:40]))


def test_damage_campaign(pristine: Pristine, tmp_path: Path):
    _assert_campaign(run_damage_campaign(pristine, large_count("SAFEHOLD_CAMPAIGN_CI_TRIALS", CI_TRIALS), campaign_seed(2026), tmp_path))


@pytest.mark.campaign
def test_damage_campaign_large(pristine: Pristine, tmp_path: Path, request):
    require_campaign_marker(request)
    trials = large_count("SAFEHOLD_CAMPAIGN_TRIALS", 5000)
    _assert_campaign(run_damage_campaign(pristine, trials, campaign_seed(5000), tmp_path))
