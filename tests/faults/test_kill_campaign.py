"""Kill campaign (issue 13): SIGKILL a backup, a prune, a forget and a maintenance (and, once
merged, a repair) at seeded random moments, and show that nothing is lost.

Two repositories: a local one for backup, prune and forget, and an S3 one with Object Lock on
moto for maintenance (on a local repository maintenance has nothing to extend). The local one
has two targets over the same data: ``keep`` (no retention: forget keeps every snapshot, so
every earlier snapshot must restore at the end) and ``churn`` (keep_last 1, plus its own
changing folder: forget and prune always have snapshots and data to remove, some of it shared
with ``keep``). Each kill round:

1. prepares work for the command (new data to back up; a forgotten churn snapshot for prune;
   a second churn snapshot for ``forget --prune``);
2. starts the command and SIGKILLs its process group after a seeded random delay drawn
   uniformly over the command's measured duration (so kills land in start-up, in the middle
   and near the commit); every third kill of a command on the local repository waits for the
   command's lock first and comes at a random moment of its first 50 ms of work (a command
   spends most of its time starting, so uniform delays alone can miss the locked work in a
   short CI campaign: seen once, 0 of 9 such kills);
3. runs the same command again, with no unlock or other manual step: it must succeed;
4. after prune and forget (which must leave no garbage): ``check --read-data``, which must
   be clean; after a backup or maintenance the checkpoints check (garbage allowed).

Every ``keep`` snapshot (and every S3 snapshot) is restored and compared byte for byte with the
tree recorded when it was taken, at every checkpoint and at the end. A loss is a snapshot that
disappeared, a restore that differs, a next run that failed, or a check that failed.

CI: 30 kills over the commands; ``pytest -m campaign tests/faults -k kill``:
SAFEHOLD_CAMPAIGN_KILLS (default 500).
"""

from __future__ import annotations

import json
import random
import signal
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import moto_support
from e2e_support import compressible_bytes, make_dataset, tree_manifest, write_file
from faults_support import (REPAIR_IN_CAMPAIGNS, SPENT, CampaignWorkspace, campaign_seed, figures, finish, large_count,
                            make_campaign_workspace, require_campaign_marker)

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
CI_KILLS = 30
# The commands the campaign kills. `repair` joins when REPAIR_IN_CAMPAIGNS is switched on.
COMMANDS: tuple[str, ...] = ("backup", "prune", "forget", "maintenance") + (("repair",) if REPAIR_IN_CAMPAIGNS else ())
ARGUMENTS = {
    "backup": ("backup", "--target", "keep"),
    "prune": ("prune",),
    "forget": ("forget", "--prune"),
    # Renew everything each time (objects are locked for 1 day), so every run has work to do.
    "maintenance": ("maintenance", "--renew-within-days", "2"),
    # Rebuild the index from every pack header: writes new index objects and deletes the old ones.
    "repair": ("repair", "index", "--read-all-packs"),
}


@dataclass
class Tally:
    kills: Counter = field(default_factory=Counter)
    in_work: int = 0          # the lock was held when the kill came (local repository)
    finished_first: int = 0   # the command ended before the kill
    restores: int = 0
    checks: int = 0
    losses: list[str] = field(default_factory=list)


class Campaign:
    def __init__(self, local: CampaignWorkspace, s3: CampaignWorkspace, rng: random.Random, tally: Tally) -> None:
        self.local, self.s3, self.rng, self.tally = local, s3, rng, tally
        self.expected: dict[str, dict] = {}       # keep snapshot id -> tree manifest (local)
        self.expected_s3: dict[str, dict] = {}    # snapshot id -> tree manifest (S3)
        self.verified: set[str] = set()
        self.duration: dict[str, float] = {}
        self.paths: list[Path] = []

    # -- set-up -------------------------------------------------------------------------
    def start(self) -> None:
        ws = self.local
        self.paths = make_dataset(ws.data, self.rng, random_files=6, compressible_files=4, file_size=600_000)
        (ws.root / "churn").mkdir()
        self._new_churn()
        ws.run("init")
        self.backup_keep()
        ws.run("backup", "--target", "churn")
        for command in COMMANDS:
            self.duration[command] = 1.0
        s3 = self.s3
        make_dataset(s3.data, self.rng, random_files=3, compressible_files=2, file_size=300_000)
        s3.run("init")
        for _ in range(2):
            self._s3_backup()

    def _new_churn(self) -> None:
        for i in range(3):
            write_file(self.local.root / "churn" / f"c{i}.bin", self.rng.randbytes(700_000))

    def _snapshot_ids(self, ws: CampaignWorkspace) -> set[str]:
        return {s["id"] for s in ws.json("snapshots")}

    def backup_keep(self) -> None:
        ws = self.local
        before = ws.snapshot_names()
        ws.run("backup", "--target", "keep")
        for name in ws.snapshot_names() - before:
            self.expected[name] = tree_manifest(ws.data, metadata=False)

    def _s3_backup(self) -> None:
        before = self._snapshot_ids(self.s3)
        write_file(self.s3.data / f"extra{len(self.expected_s3)}.log", compressible_bytes(self.rng, 200_000))
        self.s3.run("backup", "--target", "keep")
        for name in self._snapshot_ids(self.s3) - before:
            self.expected_s3[name] = tree_manifest(self.s3.data, metadata=False)

    # -- one kill ---------------------------------------------------------------------
    def prepare(self, command: str) -> None:
        ws = self.local
        if command == "backup":
            for path in self.rng.sample(self.paths, 3):
                data = self.rng.randbytes(path.stat().st_size) if path.suffix == ".bin" else \
                    compressible_bytes(self.rng, path.stat().st_size)
                write_file(path, data)
        elif command == "prune":
            self._new_churn()
            ws.run("backup", "--target", "churn")
            ws.run("forget")  # the older churn snapshot goes; prune finds its data unused
        elif command == "forget":
            self._new_churn()
            ws.run("backup", "--target", "churn")

    def kill_round(self, number: int, command: str) -> None:
        ws = self.s3 if command == "maintenance" else self.local
        self.prepare(command)
        before = ws.snapshot_names() if ws is self.local else None
        delay = self.rng.uniform(0.0, self.duration[command])
        in_lock = ws is self.local and self.tally.kills[command] % 3 == 2
        after_lock = self.rng.uniform(0.0, 0.05)  # drawn every round: the seeded sequence stays the same
        process = ws.start(*ARGUMENTS[command])
        if in_lock:
            deadline = time.monotonic() + max(5.0, 4 * self.duration[command])
            while not ws.lock_files() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(after_lock)
        else:
            time.sleep(delay)
        held = bool(ws.lock_files()) if ws is self.local else False
        process.send_signal(signal.SIGKILL)
        outcome = finish(process)
        self.tally.kills[command] += 1
        if outcome.code == -signal.SIGKILL:
            self.tally.in_work += held
        else:
            self.tally.finished_first += 1
            if outcome.code != 0 or outcome.traceback:
                self.loss(number, command, f"ended by itself with exit {outcome.code}: {outcome.stderr[-800:]}")
        if command == "backup":  # a backup that committed before the kill must restore what it read
            for name in ws.snapshot_names() - before:
                self.expected[name] = tree_manifest(ws.data, metadata=False)
        self.next_run(number, command)

    def next_run(self, number: int, command: str) -> None:
        """The same command again, as the scheduler would run it: no unlock, no manual step."""
        ws = self.s3 if command == "maintenance" else self.local
        started = time.monotonic()
        if command == "backup":
            before = ws.snapshot_names()
        process = ws.start(*ARGUMENTS[command])
        outcome = finish(process)
        self.duration[command] = 0.5 * self.duration[command] + 0.5 * (time.monotonic() - started)
        if outcome.code != 0:
            self.loss(number, command, f"the next run failed (exit {outcome.code}): {outcome.stderr[-800:]}")
            return
        if command == "backup":
            for name in ws.snapshot_names() - before:
                self.expected[name] = tree_manifest(ws.data, metadata=False)
        if command not in ("prune", "forget", "repair"):
            return  # what a killed backup or maintenance leaves is checked at the checkpoints
        report = self.check(ws, read_data=True)
        if report is not None and not report.get("ok"):
            self.loss(number, command, f"check --read-data after the next run: "
                      f"{report.get('errors')} {report.get('damaged_packs')}")
        elif report is not None and report.get("unreferenced_packs"):
            self.loss(number, command, f"garbage left after a completed {command}: {report['unreferenced_packs']}")

    def check(self, ws: CampaignWorkspace, read_data: bool) -> dict | None:
        self.tally.checks += 1
        process = ws.start("check", "--json", *(["--read-data"] if read_data else []))
        outcome = finish(process)
        try:
            return json.loads(outcome.stdout)
        except ValueError:
            self.loss(-1, "check", f"exit {outcome.code}: {outcome.stderr[-800:]}")
            return None

    def loss(self, number: int, command: str, what: str) -> None:
        self.tally.losses.append(f"kill {number} ({command}): {what}")

    # -- verification ---------------------------------------------------------------------
    def verify(self, scratch: Path, everything: bool) -> None:
        """Every recorded snapshot still exists and restores byte-identical (new ones only, unless
        ``everything``)."""
        for ws, expected in ((self.local, self.expected), (self.s3, self.expected_s3)):
            present = self._snapshot_ids(ws)
            for name, manifest in sorted(expected.items()):
                if name not in present:
                    self.loss(-1, "verify", f"snapshot {name[:8]} is gone")
                    continue
                if name in self.verified and not everything:
                    continue
                out = scratch / f"restore-{name[:12]}"
                outcome = finish(ws.start("restore", name, "--to", out, "--overwrite"))
                self.tally.restores += 1
                if outcome.code != 0:
                    self.loss(-1, "verify", f"restore {name[:8]} exit {outcome.code}: {outcome.stderr[-500:]}")
                elif tree_manifest(out / "data", metadata=False) != manifest:
                    self.loss(-1, "verify", f"snapshot {name[:8]} does not restore what was backed up")
                else:
                    self.verified.add(name)
                _remove(out)
        for ws in (self.local, self.s3):
            report = self.check(ws, read_data=True)
            if report is not None and not report.get("ok"):
                self.loss(-1, "verify", f"check --read-data: {report.get('errors')} {report.get('damaged_packs')}")


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def s3_workspace(root: Path, moto) -> CampaignWorkspace:
    bucket = moto_support.make_bucket(moto, object_lock=True)
    ws = make_campaign_workspace(root)
    ws.write_config(text=textwrap.dedent(f"""\
        repository:
          url: s3://{bucket}/safehold
          endpoint_url: {moto.url}
          region: {moto_support.REGION}
          password_env: SAFEHOLD_PASSWORD
          object_lock: {{mode: GOVERNANCE, days: 1}}
        state_dir: state
        targets:
          - {{name: keep, tier: 2, source: {{type: files, paths: [data]}}}}
        """))
    ws.env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return ws


def run_kill_campaign(root: Path, moto, kills: int, seed: int, checkpoint_every: int) -> tuple[str, Tally]:
    rng = random.Random(seed)
    tally = Tally()
    SPENT.clear()
    local = make_campaign_workspace(root / "local", targets=[
        {"name": "keep", "tier": 2, "source": {"type": "files", "paths": ["data"]}},
        {"name": "churn", "tier": 3, "source": {"type": "files", "paths": ["data", "churn"]},
         "retention": {"keep_last": 1}},
    ])
    campaign = Campaign(local, s3_workspace(root / "s3", moto), rng, tally)
    started = time.monotonic()
    campaign.start()
    # The kills, spread evenly over the commands, in a seeded order.
    order = [COMMANDS[i % len(COMMANDS)] for i in range(kills)]
    rng.shuffle(order)
    for number, command in enumerate(order, 1):
        campaign.kill_round(number, command)
        if number % checkpoint_every == 0 and number != kills:
            campaign.verify(root / "scratch", everything=False)
            figures("kills-progress", kills=number, lost=len(tally.losses), killed_holding_lock=tally.in_work,
                    restores=tally.restores, seconds=time.monotonic() - started)
    campaign.verify(root / "scratch", everything=True)
    line = figures("kills", kills=sum(tally.kills.values()), lost=len(tally.losses), by_command=dict(tally.kills),
                   killed_holding_lock=tally.in_work, finished_before_kill=tally.finished_first,
                   snapshots=len(campaign.expected) + len(campaign.expected_s3), restores=tally.restores,
                   checks=tally.checks, repair="on" if REPAIR_IN_CAMPAIGNS else "off", seed=seed,
                   seconds=time.monotonic() - started, spent={k: round(v, 1) for k, v in SPENT.most_common()})
    return line, tally


def _assert_campaign(line: str, tally: Tally) -> None:
    assert not tally.losses, f"{line}\n" + "\n".join(tally.losses[:30])
    assert tally.kills and tally.in_work > 0, f"no kill landed while a command held its lock: {line}"


def test_kill_campaign(tmp_path: Path, moto):
    kills = large_count("SAFEHOLD_CAMPAIGN_CI_KILLS", CI_KILLS)
    _assert_campaign(*run_kill_campaign(tmp_path, moto, kills, campaign_seed(1337), checkpoint_every=kills))


@pytest.mark.campaign
def test_kill_campaign_large(tmp_path: Path, moto, request):
    require_campaign_marker(request)
    kills = large_count("SAFEHOLD_CAMPAIGN_KILLS", 500)
    _assert_campaign(*run_kill_campaign(tmp_path, moto, kills, campaign_seed(500), checkpoint_every=50))


def test_repair_switch_matches_the_cli():
    """When `safehold repair` is merged, switch on REPAIR_IN_CAMPAIGNS (faults_support.py)."""
    from faults_support import cli_has_repair

    assert cli_has_repair() == REPAIR_IN_CAMPAIGNS, (
        "the CLI has a 'repair' command now: set REPAIR_IN_CAMPAIGNS = True in tests/faults/faults_support.py "
        "(and check ARGUMENTS['repair'] and assert_repair_brings_back_the_undamaged against its options)"
        if cli_has_repair() else "REPAIR_IN_CAMPAIGNS is on but the CLI has no 'repair' command")
