"""S3 fault campaign (issue 13): the CLI against moto through a fault-injecting proxy on loopback
(``s3_fault_proxy.py``: 500 InternalError, 503 SlowDown, connection resets before and after
the request reached moto, stalls, truncated bodies with the true Content-Length, at 10 % of
requests, and latency on all of them).

Backup, check --read-data, restore, forget --prune and maintenance (on a second repository,
with Object Lock) each either complete or fail cleanly (a documented exit code, one error
line, no traceback); a command that failed is run again, up to three times. A backup cut off
by a network outage (every request reset for a few seconds) resumes or fails cleanly, and the
next one succeeds. At the end, straight to moto without the proxy: ``check --read-data`` is
clean and every snapshot that was not forgotten restores byte-identical.

CI: one seeded run (4 backup rounds); ``pytest -m campaign tests/faults -k s3``:
SAFEHOLD_CAMPAIGN_S3_ROUNDS rounds (default 40) with stalls past botocore's 60 s read timeout.
"""

from __future__ import annotations

import json
import random
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import moto_support
from e2e_support import compressible_bytes, make_dataset, tree_manifest, write_file
from faults_support import (SPENT, CampaignWorkspace, FaultProxy, campaign_seed, figures, finish, large_count,
                            make_campaign_workspace, require_campaign_marker)

pytestmark = pytest.mark.slow

CLEAN_FAILURES = {14, 21, 25}  # RepositoryLocked, BackendError, LockLost: all say what to do next
ATTEMPTS = 3


def s3_config(ws: CampaignWorkspace, name: str, bucket: str, endpoint: str, object_lock: bool) -> Path:
    lock = "  object_lock: {mode: GOVERNANCE, days: 1}\n" if object_lock else ""
    return ws.write_config(name=name, text=textwrap.dedent(f"""\
        repository:
          url: s3://{bucket}/safehold
          endpoint_url: {endpoint}
          region: {moto_support.REGION}
          password_env: SAFEHOLD_PASSWORD
        """) + lock + textwrap.dedent("""\
        state_dir: state
        targets:
          - {name: docs, tier: 2, source: {type: files, paths: [data]}, retention: {keep_last: 2}}
        """))


class S3Campaign:
    def __init__(self, root: Path, moto, proxy: FaultProxy, rng: random.Random) -> None:
        self.rng, self.proxy = rng, proxy
        self.outcomes: Counter = Counter()
        self.problems: list[str] = []
        self.ws = make_campaign_workspace(root / "plain")
        self.locked = make_campaign_workspace(root / "locked")
        for ws in (self.ws, self.locked):
            ws.env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        plain_bucket = moto_support.make_bucket(moto, object_lock=False)
        locked_bucket = moto_support.make_bucket(moto, object_lock=True)
        self.via_proxy = s3_config(self.ws, "targets.yml", plain_bucket, proxy.url, False)
        self.direct = s3_config(self.ws, "direct.yml", plain_bucket, moto.url, False)
        s3_config(self.locked, "targets.yml", locked_bucket, proxy.url, True)
        self.expected: dict[str, dict] = {}

    def attempt(self, ws: CampaignWorkspace, *args: str, attempts: int = ATTEMPTS, must: bool = True):
        """Run until it succeeds (at most ``attempts`` times); every failure must be clean."""
        for _ in range(attempts):
            outcome = finish(ws.start(*args))
            if outcome.code == 0:
                self.outcomes["completed"] += 1
                return outcome
            errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
            if outcome.code in CLEAN_FAILURES and not outcome.traceback and len(errors) == 1:
                self.outcomes["failed-clean"] += 1
                self.outcomes[f"exit-{outcome.code}"] += 1
                continue
            self.problems.append(f"safehold {' '.join(args)}: unclean failure, exit {outcome.code}:\n"
                                 f"{outcome.stderr[-1500:]}")
            return None
        if must:
            self.problems.append(f"safehold {' '.join(args)} failed {attempts} times in a row")
        return None

    def snapshot_ids(self) -> set[str]:
        outcome = self.attempt(self.ws, "snapshots", "--json")
        return {s["id"] for s in json.loads(outcome.stdout)} if outcome else set()

    def record(self, outcome) -> None:
        """Remember what a backup that reported its snapshot (``--json``) backed up."""
        try:
            results = json.loads(outcome.stdout)["results"]
        except (ValueError, KeyError):
            return
        for result in results:
            self.expected[result["snapshot_id"]] = tree_manifest(self.ws.data, metadata=False)

    def backup(self) -> None:
        before = set(self.expected)
        outcome = self.attempt(self.ws, "backup", "--target", "docs", "--json")
        if outcome is not None:
            self.record(outcome)
        if set(self.expected) == before or self.rng.random() < 0.25:
            # A run that failed may still have committed its snapshot before the error: ask.
            for name in self.snapshot_ids() - set(self.expected):
                self.expected[name] = tree_manifest(self.ws.data, metadata=False)

    def change_data(self, files: int = 2) -> None:
        for i in range(files):
            write_file(self.ws.data / f"new{len(self.expected)}-{i}.bin", self.rng.randbytes(400_000))
        write_file(self.ws.data / "log.txt", compressible_bytes(self.rng, 300_000))

    def restore_all(self, scratch: Path, config: Path | None = None) -> None:
        present = self.snapshot_ids() if config is None else \
            {s["id"] for s in self.ws.json("snapshots", env={"SAFEHOLD_CONFIG": str(config)})}
        names = sorted(self.expected) if config is not None else \
            [n for n in self.expected if n in present][-2:]
        for name in names:
            manifest = self.expected[name]
            if name not in present:
                self.problems.append(f"snapshot {name[:8]} is gone")
                continue
            out = scratch / f"restore-{name[:12]}-{time.monotonic_ns()}"
            if config is None:
                outcome = self.attempt(self.ws, "restore", name, "--to", out, "--overwrite")
                ok = outcome is not None
            else:
                outcome = finish(self.ws.start("restore", name, "--to", out, env={"SAFEHOLD_CONFIG": str(config)}))
                ok = outcome.code == 0
                if not ok:
                    self.problems.append(f"restore {name[:8]} straight to moto: exit {outcome.code}\n"
                                         f"{outcome.stderr[-800:]}")
            if ok and tree_manifest(out / "data", metadata=False) != manifest:
                self.problems.append(f"snapshot {name[:8]} restored different bytes")

    def outage(self) -> None:
        """A backup cut off by a network outage of a few seconds resumes or fails cleanly; the next succeeds."""
        self.change_data(4)
        process = self.ws.start("backup", "--target", "docs", "--json")
        time.sleep(self.rng.uniform(0.2, 0.8))
        self.proxy.control("outage/on")
        time.sleep(self.rng.uniform(2.0, 4.0))
        self.proxy.control("outage/off")
        outcome = finish(process)
        self.outcomes[f"outage-backup-exit-{outcome.code}"] += 1
        if outcome.code != 0 and (outcome.code not in CLEAN_FAILURES or outcome.traceback):
            self.problems.append(f"backup through an outage: exit {outcome.code}\n{outcome.stderr[-1500:]}")
        for name in self.snapshot_ids() - set(self.expected):
            self.expected[name] = tree_manifest(self.ws.data, metadata=False)
        self.change_data(1)
        after = self.attempt(self.ws, "backup", "--target", "docs", "--json", attempts=1, must=False)
        if after is None:
            self.problems.append("the backup after the outage did not succeed")
        else:
            self.record(after)


def run_s3_campaign(root: Path, moto, seed: int, rounds: int, stall: float) -> tuple[str, S3Campaign]:
    SPENT.clear()
    rng = random.Random(seed)
    proxy = FaultProxy(moto.url, seed, rate=0.10, stall=stall)
    started = time.monotonic()
    try:
        campaign = S3Campaign(root, moto, proxy, rng)
        make_dataset(campaign.ws.data, rng, random_files=3, compressible_files=2, file_size=300_000)
        make_dataset(campaign.locked.data, rng, random_files=2, compressible_files=1, file_size=200_000)
        campaign.attempt(campaign.ws, "init")
        campaign.attempt(campaign.locked, "init")
        for number in range(rounds):
            campaign.change_data()
            campaign.backup()
            if number % 2 == 1:
                campaign.attempt(campaign.locked, "backup", "--target", "docs")
                campaign.attempt(campaign.locked, "maintenance", "--renew-within-days", "2")
        campaign.outage()
        report = campaign.attempt(campaign.ws, "check", "--read-data", "--json")
        if report is not None and not json.loads(report.stdout)["ok"]:
            campaign.problems.append(f"check --read-data through the proxy: {report.stdout[-1500:]}")
        campaign.restore_all(root / "scratch")
        forget = campaign.attempt(campaign.ws, "forget", "--prune", "--json")
        if forget is not None:
            for name in json.loads(forget.stdout)["removed"]:
                campaign.expected.pop(name, None)
        campaign.attempt(campaign.ws, "prune")
        campaign.attempt(campaign.locked, "maintenance", "--renew-within-days", "2")
        stats = proxy.stats()
    finally:
        proxy.stop()
    # Nothing lost: straight to moto, no faults.
    direct = campaign.ws.json("check", "--read-data", env={"SAFEHOLD_CONFIG": str(campaign.direct)})
    if not direct["ok"]:
        campaign.problems.append(f"check --read-data straight to moto: {direct['errors']} {direct['damaged_packs']}")
    campaign.restore_all(root / "final", config=campaign.direct)
    faults = {k: stats.get(k, 0) for k in ("500", "503", "reset-before", "reset-after", "stall", "truncate",
                                             "outage-reset")}
    line = figures("s3", requests=stats.get("requests", 0), faults=faults, lost=len(campaign.problems),
                   outcomes=dict(campaign.outcomes), snapshots=len(campaign.expected), seed=seed,
                   seconds=time.monotonic() - started, spent={k: round(v, 1) for k, v in SPENT.most_common()})
    return line, campaign


def test_s3_fault_campaign(tmp_path: Path, moto):
    line, campaign = run_s3_campaign(tmp_path, moto, campaign_seed(33), rounds=4, stall=1.0)
    assert not campaign.problems, line + "\n" + "\n".join(campaign.problems[:20])


@pytest.mark.campaign
def test_s3_fault_campaign_large(tmp_path: Path, moto, request):
    require_campaign_marker(request)
    rounds = large_count("SAFEHOLD_CAMPAIGN_S3_ROUNDS", 40)
    line, campaign = run_s3_campaign(tmp_path, moto, campaign_seed(3300), rounds=rounds, stall=65.0)
    assert not campaign.problems, line + "\n" + "\n".join(campaign.problems[:20])
