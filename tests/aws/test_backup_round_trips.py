"""The requests of an incremental two-target ``backup --all`` on a real S3 repository (moto), and
how many of them go out one after the other (issue 19: at 20 ms a request, the incremental's time
was mostly serial round trips). Every HTTP request boto3 sends is recorded where it is sent
(``botocore.endpoint.Endpoint._send``: retries and listing pages included), held for a fixed
delay first, so requests that overlap are told apart from requests made in sequence whatever the
machine's load. One open, one shared lock and one reading of the history serve both targets; the
commit's proofs read side by side (engine/backup.py, Repository.commit_index).

Before this work (commit 3d2179b) the same run sent 40 requests in 33 rounds one after the other
(per target: the config GET, the lock's claim, listing and rewrite, the four listings, the
proofs' lock GET, heartbeat and HEAD, twice, and the release); one target after the other
(``parallel=1``, the fifth round) 29 in 16; the two targets side by side (the default, sixth
round: each its own thread, archiver, job and pack writer) at most 10 rounds: the open, the
lock's claim, its listing beside the history's, its rewrite, both targets' six commit rounds
overlapping, the release. The job rows keep each target's own statistics."""

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
        self.threads: list[tuple[float, float, str]] = []  # (start, end, the sending thread's name)
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
                end = time.monotonic()
                recorded.sent.append((start, end, request.method, request.url.split("://", 1)[-1]
                                      .split("/", 1)[-1]))
                recorded.threads.append((start, end, threading.current_thread().name))

    monkeypatch.setattr(Endpoint, "_send", send)
    return recorded


def make_context(root: Path, moto, bucket: str) -> Context:
    (root / "password").write_text("round trips correct horse\n")
    (root / "password").chmod(0o600)
    targets = []
    for name, files in (("docs", 5), ("mail", 8)):  # unlike sizes: each job's statistics are its own
        (root / name).mkdir(parents=True)
        for number in range(files):
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


def incremental(context: Context, root: Path, requests: Requests, parallel: int, round_number: int):
    """One incremental ``backup --all`` of both targets (a change in each) from a new process's
    context (the key derivation's result is not kept), its requests recorded."""
    for name in ("docs", "mail"):
        (root / name / f"new-{round_number}.txt").write_text(f"changed {name} {round_number}\n")
    context = Context(context.config, threads=2, _catalog=Catalog.open(context.config.catalog_url))
    requests.sent.clear()
    requests.threads.clear()
    requests.recording = True
    try:
        return backup_targets(context, ["docs", "mail"], parallel=parallel), context
    finally:
        requests.recording = False
        context.close()


def test_an_incremental_backup_all_opens_locks_and_reads_once(moto, plain_bucket, aws_env, fast_kdf, requests,
                                                              tmp_path):
    context = make_context(tmp_path, moto, plain_bucket)
    try:
        full = backup_targets(context, ["docs", "mail"])
        assert not full.failures
    finally:
        context.close()
    serial, _ = incremental(context, tmp_path, requests, parallel=1, round_number=1)
    serial_rounds, serial_requests = requests.rounds(), len(requests.sent)
    run, context = incremental(context, tmp_path, requests, parallel=2, round_number=2)
    assert not serial.failures and not run.failures
    by_target = {result.target: result for result in run.results}
    assert [result.target for result in run.results] == ["docs", "mail"]  # the order named
    assert {name: by_target[name].parent_id for name in by_target} == {
        result.target: result.snapshot_id for result in serial.results}
    counted = requests.by_kind()
    print(f"one after the other: {serial_requests} requests in {serial_rounds} rounds; side by side: "
          f"{len(requests.sent)} in {requests.rounds()}: {sorted(counted.items())}")
    # Once for the run, not once per target: the config, the lock (claim, listing, rewrite,
    # release) and each of the history's listings.
    assert counted[("GET", "config")] == 1, counted
    assert counted[("GET", "list snapshots")] == 1 and counted[("GET", "list index")] == 1, counted
    assert counted[("GET", "list locks")] == 1 and counted[("DELETE", "locks")] == 1, counted
    # Per target a pack and a snapshot; one index object, or one each (the first commit's index
    # write names every pack stored by then, the other's waits for it). Then the lock: claim,
    # rewrite, one heartbeat per commit.
    assert counted[("PUT", "snapshots")] == 2 and counted[("PUT", "data")] == 2, counted
    assert counted[("PUT", "index")] in (1, 2), counted
    assert counted[("PUT", "locks")] == 2 + 2, counted
    assert len(requests.sent) <= 30, (len(requests.sent), counted)  # 40 before the fifth round
    # One after the other (16 with parallel=1, 33 before the fifth round): the open (the key
    # listing, the config and the key file that opened it last time side by side), the lock's
    # claim, its listing beside the history's listings, its rewrite; then per target the
    # parent's tree, the last pack, the first proof, the index beside the heartbeat, the second
    # proof, the snapshot; the release. Side by side the two targets' six overlap.
    assert serial_rounds >= 15, serial_rounds
    assert requests.rounds() <= 10, (requests.rounds(), sorted(requests.sent))
    # The overlap itself: a request each target's own thread sent (its tree, pack, index or
    # snapshot) in flight at the same moment as one of the other target's.
    own = [(start, end, name) for start, end, name in requests.threads if name.startswith("safehold-target")]
    assert len({name for _, _, name in own}) == 2, own
    assert any(a_start < b_end and b_start < a_end for a_start, a_end, a in own for b_start, b_end, b in own
               if a != b), own

    # Each job row holds its own target's statistics, as its result does (not the sum, not the other's).
    catalog = Catalog.open(context.config.catalog_url)
    try:
        for result in run.results:
            job = catalog.get_job(result.job_id)
            assert (job.status, job.snapshot_id, job.files, job.bytes_read, job.bytes_added) == (
                "succeeded", result.snapshot_id, result.summary["files"], result.summary["bytes_read"],
                result.summary["bytes_added"]), (result.target, job)
    finally:
        catalog.close()
    assert by_target["docs"].summary["files"] == 5 + 2 and by_target["mail"].summary["files"] == 8 + 2
    assert by_target["docs"].summary["blobs_added"] >= 1 and by_target["mail"].summary["blobs_added"] >= 1

    # Every snapshot restorable, both targets' new files in them.
    repository = Repository.open(open_backend(context.config.repository.url,
                                              **context.config.repository.backend_options()),
                                 b"round trips correct horse")
    repository.load_index()
    for result in run.results:
        snapshot = repository.load_snapshot(result.snapshot_id)
        paths = {item["path"] for item in repository.read_tree(snapshot)}
        assert any(path.endswith(b"new-2.txt") if isinstance(path, bytes) else path.endswith("new-2.txt")
                   for path in paths), paths
