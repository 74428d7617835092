"""The requests of an incremental two-target ``backup --all`` on a real S3 repository (moto), and
how many of them go out one after the other (issue 19: at 20 ms a request, the incremental's time
was mostly serial round trips). Every HTTP request boto3 sends is recorded where it is sent
(``botocore.endpoint.Endpoint._send``: retries and listing pages included), held for a fixed
delay first, so requests that overlap are told apart from requests made in sequence whatever the
machine's load. One open, one shared lock and one reading of the history serve both targets; the
commit's proofs read side by side (engine/backup.py, Repository.commit_index).

Before this work (commit 3d2179b) the same run sent 40 requests in 33 rounds one after the other
(per target: the config GET, the lock's claim, listing and rewrite, the four listings, the
proofs' lock GET, heartbeat and HEAD, twice, and the release); now 29 in 16."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

import moto_support
from safehold.catalog import Catalog
from safehold.config import load_config
from safehold.engine.backup import backup_targets
from safehold.engine.context import Context
from safehold.engine.maintenance import init_repository
from safehold.repository.backends import Kind, open_backend
from safehold.repository import Repository

DELAY = 0.03  # seconds each request is held before it is sent: a round trip


class Requests:
    """Every HTTP request sent through botocore while recording: (start, end, method, path)."""

    def __init__(self) -> None:
        self.recording = False
        self.sent: list[tuple[float, float, str, str]] = []
        self._guard = threading.Lock()

    def rounds(self) -> int:
        """How many rounds of requests went out one after the other: a request that starts after
        every earlier one ended begins a new round (the critical path's length in requests)."""
        rounds, end = 0, float("-inf")
        for start, stop, _method, _path in sorted(self.sent):
            if start >= end:
                rounds += 1
                end = stop
            else:
                end = max(end, stop)
        return rounds

    def by_kind(self) -> Counter:
        """(method, kind) -> requests; kind: the object kind of the key, or 'list' for a listing."""
        counted: Counter = Counter()
        for _start, _stop, method, path in self.sent:
            if "list-type=2" in path:
                prefix = path.split("prefix=")[-1].split("&")[0].replace("%2F", "/").rstrip("/")
                counted[(method, "list " + prefix.rsplit("/", 1)[-1])] += 1
                continue
            parts = path.split("?")[0].strip("/").split("/")
            kind = next((part for part in reversed(parts[:-1]) if part in {k.value for k in Kind}), parts[-1])
            counted[(method, kind)] += 1
        return counted


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Requests:
    from botocore.endpoint import Endpoint

    recorded = Requests()
    real_send = Endpoint._send

    def send(self, request):
        if not recorded.recording:
            return real_send(self, request)
        start = time.monotonic()
        time.sleep(DELAY)
        try:
            return real_send(self, request)
        finally:
            with recorded._guard:
                recorded.sent.append((start, time.monotonic(), request.method, request.url.split("://", 1)[-1]
                                      .split("/", 1)[-1]))

    monkeypatch.setattr(Endpoint, "_send", send)
    return recorded


def make_context(root: Path, moto, bucket: str) -> Context:
    (root / "password").write_text("round trips correct horse\n")
    (root / "password").chmod(0o600)
    targets = []
    for name in ("docs", "mail"):
        (root / name).mkdir(parents=True)
        for number in range(5):
            (root / name / f"{number}.txt").write_bytes(f"{name} {number} ".encode() * 4000)
        targets.append({"name": name, "tier": 3, "source": {"type": "files", "paths": [name]}})
    repository = {"url": f"s3://{bucket}/{uuid.uuid4().hex[:8]}", "endpoint_url": moto.url,
                  "region": moto_support.REGION, "password_file": "password"}
    path = root / "targets.yml"
    path.write_text(yaml.safe_dump({"repository": repository, "state_dir": "state", "targets": targets}))
    config = load_config(path)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context = Context(config, threads=2, _catalog=Catalog.open(config.catalog_url))
    init_repository(context)
    return context


def test_an_incremental_backup_all_opens_locks_and_reads_once(moto, plain_bucket, aws_env, fast_kdf, requests,
                                                              tmp_path):
    context = make_context(tmp_path, moto, plain_bucket)
    try:
        full = backup_targets(context, ["docs", "mail"])
        assert not full.failures
        for name in ("docs", "mail"):  # a change in each target
            (tmp_path / name / "new.txt").write_text(f"changed {name}\n")
        context.close()
        # A new process's context (the key derivation's result is not kept), as 'safehold backup --all' is.
        context = Context(context.config, threads=2, _catalog=Catalog.open(context.config.catalog_url))
        requests.recording = True
        run = backup_targets(context, ["docs", "mail"])
        requests.recording = False
    finally:
        context.close()
    assert not run.failures
    by_target = {result.target: result for result in run.results}
    assert {name: by_target[name].parent_id for name in by_target} == {
        result.target: result.snapshot_id for result in full.results}
    counted = requests.by_kind()
    print(f"{len(requests.sent)} requests in {requests.rounds()} rounds: {sorted(counted.items())}")
    # Once for the run, not once per target: the config, the lock (claim, listing, rewrite,
    # release) and each of the history's listings.
    assert counted[("GET", "config")] == 1, counted
    assert counted[("GET", "list snapshots")] == 1 and counted[("GET", "list index")] == 1, counted
    assert counted[("GET", "list locks")] == 1 and counted[("DELETE", "locks")] == 1, counted
    # Per target: the pack and the index; per target a snapshot. Then the lock: claim, rewrite,
    # one heartbeat per commit.
    assert counted[("PUT", "snapshots")] == 2 and counted[("PUT", "index")] == 2, counted
    assert counted[("PUT", "locks")] == 2 + 2, counted
    assert len(requests.sent) <= 30, (len(requests.sent), counted)  # 40 before
    # One after the other (16): the open (the key listing, the config and the key file that opened
    # it last time side by side), the lock's claim, its listing beside the history's listings, its
    # rewrite; then per target the parent's tree, the last pack, the first proof, the index beside
    # the heartbeat, the second proof, the snapshot; the release.
    assert requests.rounds() <= 17, (requests.rounds(), sorted(requests.sent))  # 33 before

    # Every snapshot restorable, both targets' new files in them.
    repository = Repository.open(open_backend(context.config.repository.url,
                                              **context.config.repository.backend_options()),
                                 b"round trips correct horse")
    repository.load_index()
    for result in run.results:
        snapshot = repository.load_snapshot(result.snapshot_id)
        paths = {item["path"] for item in repository.read_tree(snapshot)}
        assert any(path.endswith(b"new.txt") if isinstance(path, bytes) else path.endswith("new.txt")
                   for path in paths), paths
