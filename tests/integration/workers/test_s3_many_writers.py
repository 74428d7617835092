"""Many writers into one S3 repository: real ``safehold worker`` processes on loopback back up
different targets into one bucket on the moto server at the same time, then a prune runs while a
second round of backups is in flight.

What must hold (issue 18): the repository's shared locks work across processes (every writer
holds its own lock object; none waits for another), the index objects that concurrent writers
add side by side all count (blobs two writers stored twice included), a prune takes the
exclusive lock against all of them (it waits for the writers, they wait or retry for it), and
afterwards ``check --read-data`` is clean and every snapshot restores.

About a minute on this 2-core machine (a dozen CLI processes), so it runs when selected:
``pytest -m campaign tests/integration/workers/test_s3_many_writers.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # --import-mode=importlib: the harnesses are beside us and in tests/aws
sys.path.insert(0, str(HERE.parent.parent / "aws"))

from worker_harness import ADMIN_URL, CLI, PASSWORD, database_fixture, install_fixture, psycopg  # noqa: E402

pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="needs SAFEHOLD_TEST_POSTGRES_URL (scripts/services.sh start)")
database = pytest.fixture(database_fixture)
install = pytest.fixture(install_fixture)
TARGETS = 4
SHARED = os.urandom(700_000)  # the same file in every tree: concurrent writers store its chunk twice


@pytest.fixture(scope="module")
def moto():
    moto_support = pytest.importorskip("moto_support")
    return moto_support.shared_server()


def _tree(root: Path, index: int, round_: int) -> None:
    tree = root / f"t{index}"
    tree.mkdir(exist_ok=True)
    (tree / "shared.bin").write_bytes(SHARED)
    (tree / f"own-{round_}.bin").write_bytes(os.urandom(50_000 + 20_000 * index))
    (tree / "round.txt").write_text(f"target {index} round {round_}\n")


def _overlapping(jobs: list[dict]) -> bool:
    """Did two of these jobs run at the same time in different processes?"""
    spans = sorted((job["started_at"], job["finished_at"], job["pid"]) for job in jobs)
    return any(later[0] < earlier[1] and later[2] != earlier[2]
               for index, earlier in enumerate(spans) for later in spans[index + 1:])


@pytest.mark.campaign
def test_workers_write_one_s3_repository_at_once_and_prune_waits_for_all_of_them(install, moto, tmp_path: Path,
                                                                                  monkeypatch, request) -> None:
    if "campaign" not in (request.config.option.markexpr or ""):
        pytest.skip("about a minute of worker processes: select it with -m campaign")
    import moto_support

    from safehold.engine.context import Context
    from safehold.engine.jobs import submit_job
    from safehold.scheduler.queue import ProcrastinateExecutor

    bucket = moto_support.make_bucket(moto)
    for index in range(TARGETS):
        _tree(tmp_path, index, 1)
    targets = [{"name": f"t{index}", "tier": 1, "source": {"type": "files", "paths": [f"t{index}"]},
                "retention": {"keep_last": 1}} for index in range(TARGETS)]
    site = install(targets, {"max_concurrent": TARGETS, "max_per_host": TARGETS, "retries": 3, "worker_timeout": "10s"},
                   init=False, repository={"url": f"s3://{bucket}/safehold", "endpoint_url": moto.url,
                                           "region": moto_support.REGION})
    site.env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                    AWS_DEFAULT_REGION=moto_support.REGION)
    site.run("init")
    workers = [site.start("worker", "--apply-schema", "--concurrency", "2")]
    site.wait_for_workers(1)
    workers.append(site.start("worker", "--concurrency", "2"))
    site.wait_for_workers(2)

    # Round 1: the scheduler queues every target, two workers write the bucket at once.
    once = site.run("scheduler", "run", "--once")
    assert f"ran {TARGETS}" in once.stdout, once.stdout + once.stderr
    first = [job for job in _jobs(site) if job["kind"] == "backup"]
    assert [job["status"] for job in first] == ["succeeded"] * TARGETS, first
    assert len({job["pid"] for job in first}) >= 2 and {job["pid"] for job in first} <= {w.pid for w in workers}
    assert _overlapping(first), "no two backups overlapped: the test proves nothing about concurrent writers"
    s3 = moto.client("s3")
    indexes = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="safehold/index/").get("Contents", [])]
    assert len(indexes) >= TARGETS  # one index object per writer, side by side, none merged away

    # Round 2, then forget the first round's snapshots: their own files become prunable data.
    monkeypatch.setenv("SAFEHOLD_QUEUE_DSN", site.dsn)
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    context = Context.load(tmp_path / "targets.yml")
    executor = ProcrastinateExecutor(context)
    try:
        _round(context, executor, tmp_path, 2, submit_job)
        site.run("forget")
        # Round 3 with a prune started while its backups are in flight: the prune waits for every
        # writer's shared lock, the writers that come after it wait (or retry) for its exclusive one.
        futures = _submit_round(context, executor, tmp_path, 3, submit_job)
        site.wait_for(lambda: [job for job in _jobs(site) if job["status"] == "running"], 60, "a round-3 backup")
        pruned = subprocess.run([*CLI, "prune", "--wait", "300", "--json"], cwd=tmp_path, env=site.env,
                                capture_output=True, text=True, timeout=360)
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        report = json.loads(pruned.stdout)
        assert report["blobs_removed"] > 0, report  # it removed the forgotten round's data...
        results = [future.result(timeout=300) for future in futures]
    finally:
        executor.shutdown()
    third = [job for job in _jobs(site) if job["kind"] == "backup" and job["id"] > max(j["id"] for j in first)]
    good = {job["target"] for job in third if job["status"] == "succeeded"}
    assert good == {f"t{index}" for index in range(TARGETS)}, (results, third, site.logs())
    assert not [job for job in _jobs(site) if job["status"] == "running"]
    # ...and none that a writer beside it used: the check reads every blob every snapshot names.

    site.stop()
    site.run("check", "--read-data")
    snapshots = json.loads(site.run("snapshots", "--json").stdout)
    snapshots = snapshots["snapshots"] if isinstance(snapshots, dict) else snapshots
    assert len(snapshots) >= TARGETS
    from safehold.engine.restore import restore_snapshot

    for snapshot in snapshots:  # in this process: a CLI run per snapshot costs seconds each
        out = tmp_path / "restored" / snapshot["id"]
        restore_snapshot(context, snapshot["id"], str(out))
        restored = {path.name: path.read_bytes() for path in out.rglob("*") if path.is_file()}
        assert restored["shared.bin"] == SHARED
        name = snapshot["target"]
        assert restored["round.txt"].decode().startswith(f"target {name[1:]} round ")


def _submit_round(context, executor, root: Path, round_: int, submit_job) -> list:
    futures = []
    for index in range(TARGETS):
        _tree(root, index, round_)
        job_id = submit_job(context, "backup", f"t{index}", trigger="scheduler")
        futures.append(executor.submit_job(job_id, "backup", f"t{index}"))
    return futures


def _round(context, executor, root: Path, round_: int, submit_job) -> None:
    for future in _submit_round(context, executor, root, round_, submit_job):
        assert future.result(timeout=300).status == "succeeded"


def _jobs(site) -> list[dict]:
    with psycopg.connect(site.dsn) as connection:
        rows = connection.execute("SELECT id, kind, target, status, pid, started_at, finished_at, error "
                                  "FROM jobs ORDER BY id")
        return [dict(zip(("id", "kind", "target", "status", "pid", "started_at", "finished_at", "error"), row))
                for row in rows]
