"""Targets of one ``backup --all`` backed up side by side (engine/backup.py ``backup_targets``,
``parallel``): a target that fails in the middle (its job fenced after it stored packs) beside
one that succeeds, both holding the same file. The good target's snapshot is committed, restores
and passes ``check --read-data`` (it never refers to a blob only the failed target's dropped pack
held); the failed one commits nothing; each job row holds its own target's statistics; the next
run backs up both. With the catalog's ORM and with the light recorder (catalog/light.py). Real
repository (local backend), real catalog."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from safehold import errors
from safehold.catalog import Catalog
from safehold.catalog.light import SqliteJobs
from safehold.config import load_config
from safehold.engine.backup import backup_targets
from safehold.engine.context import Context
from safehold.engine.restore import restore_snapshot
from safehold.repository.check import check

from control_support import files_workspace  # noqa: E402

SHARED = os.urandom(3 * 1024 * 1024)  # in both targets: blobs either may store first


def workspace(tmp_path: Path, light: bool):
    config = load_config(files_workspace(tmp_path, ["docs", "mail"]))
    for name in ("docs", "mail"):
        (tmp_path / name / "shared.bin").write_bytes(SHARED)
    (tmp_path / "docs" / "more.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    if light:  # a current catalog: jobs recorded through sqlite3, without SQLAlchemy
        Path(config.state_dir).mkdir(parents=True, exist_ok=True)
        Catalog.open(config.catalog_url).close()
    return config


def restored(context: Context, tmp_path: Path, snapshot_id: str) -> dict[str, bytes]:
    (tmp_path / "restored").mkdir(exist_ok=True)
    destination = tmp_path / "restored" / f"{snapshot_id}-{len(list((tmp_path / 'restored').glob('*')))}"
    restore_snapshot(context, snapshot_id, str(destination))
    return {path.name: path.read_bytes() for path in destination.rglob("*") if path.is_file()}


@pytest.mark.parametrize("light", [False, True], ids=["orm", "light"])
def test_a_target_failing_beside_a_good_one_loses_nothing_of_it(tmp_path: Path, light: bool):
    config = workspace(tmp_path, light)
    fenced: list[int] = []
    guard = threading.Lock()

    def fence_mail(event: dict) -> None:
        """mail's job is recorded 'interrupted' by another process while it reads (a reaped
        worker): it reaches its commit with packs stored and stops there (JobFenced)."""
        if event.get("target") != "mail" or not event.get("bytes_done"):
            return
        with guard:
            if fenced:
                return
            with Catalog.open(config.catalog_url, recover=False) as catalog:
                [running] = [job for job in catalog.list_jobs(status="running") if job.target == "mail"]
                fenced.append(running.id)
                assert catalog.interrupt_job(running.id, "worker 7 stopped sending heartbeats")

    context = Context(config, threads=2, progress=fence_mail)
    try:
        run = backup_targets(context, ["docs", "mail"], parallel=2)
        assert isinstance(context.jobs, SqliteJobs) == light
        assert list(run.failures) == ["mail"] and isinstance(run.failures["mail"], errors.JobFenced), run.failures
        [docs] = run.results
        repository = context.open_repository()
        assert [snapshot.id for snapshot in repository.list_snapshots()] == [docs.snapshot_id]
        report = check(repository, read_data_percent=100)
        assert report.ok and not report.missing_blobs, report.as_dict()
        assert restored(context, tmp_path, docs.snapshot_id) == {
            "a": b"docs" * 1000, "shared.bin": SHARED, "more.bin": (tmp_path / "docs" / "more.bin").read_bytes()}
    finally:
        context.close()
    with Catalog.open(config.catalog_url, recover=False) as catalog:
        docs_job, mail_job = catalog.get_job(docs.job_id), catalog.get_job(fenced[0])
    assert (docs_job.status, docs_job.snapshot_id, docs_job.files, docs_job.bytes_read, docs_job.bytes_added) == (
        "succeeded", docs.snapshot_id, 3, docs.summary["bytes_read"], docs.summary["bytes_added"])
    assert docs.summary["bytes_read"] == 1000 * 4 + len(SHARED) + 2 * 1024 * 1024
    assert (mail_job.status, mail_job.snapshot_id) == ("interrupted", None)

    # The next run backs up both (mail from scratch, docs on its snapshot); everything restores.
    context = Context(config, threads=2)
    try:
        again = backup_targets(context, ["docs", "mail"], parallel=2)
        assert not again.failures
        by_target = {result.target: result for result in again.results}
        assert by_target["docs"].parent_id == docs.snapshot_id and by_target["mail"].parent_id is None
        assert restored(context, tmp_path, by_target["mail"].snapshot_id) == {"a": b"mail" * 1000,
                                                                             "shared.bin": SHARED}
        assert restored(context, tmp_path, docs.snapshot_id)["shared.bin"] == SHARED
        assert check(context.open_repository(), read_data_percent=100).ok
    finally:
        context.close()


def test_a_target_named_twice_waits_for_itself_and_results_keep_the_named_order(tmp_path: Path):
    config = load_config(files_workspace(tmp_path, ["docs", "mail", "www"]))
    context = Context(config)
    try:
        run = backup_targets(context, ["docs", "mail", "docs", "www"], parallel=3)
    finally:
        context.close()
    assert not run.failures
    assert [result.target for result in run.results] == ["docs", "mail", "docs", "www"]
    first, second = run.results[0], run.results[2]
    assert first.parent_id is None and second.parent_id == first.snapshot_id


@pytest.mark.parametrize("light", [False, True], ids=["orm", "light"])
def test_a_target_failing_before_its_pack_is_stored_takes_no_blob_of_another(tmp_path: Path, light: bool):
    """'dump' (a command source) writes the shared file and then fails (exit 3) before its pack
    is stored; 'docs' reads the same file meanwhile. Had 'docs' deduplicated against the blobs
    'dump' held unstored, its snapshot would refer to data that was never stored: its own pack
    writer stores them again, so its snapshot restores and ``check --read-data`` finds nothing
    missing. (With the blobs in flight shared between the writers this test fails.)"""
    config_path = files_workspace(tmp_path, ["docs"])
    (tmp_path / "docs" / "shared.bin").write_bytes(SHARED)
    (tmp_path / "docs" / "more.bin").write_bytes(os.urandom(4 * 1024 * 1024))  # read before shared.bin
    (tmp_path / "dump.bin").write_bytes(SHARED)
    with open(config_path, "a") as file:
        file.write('  - {"name": "dump", "tier": 1, "source": {"type": "command", "name": "dump.bin", '
                   f'"run": "for i in 1 2 3 4; do cat {tmp_path / "dump.bin"}; done; touch {tmp_path / "written"}; '
                   'sleep 0.5; exit 3"}}\n')
    config = load_config(config_path)
    if light:
        Path(config.state_dir).mkdir(parents=True, exist_ok=True)
        Catalog.open(config.catalog_url).close()

    def after_dump_wrote(event: dict) -> None:
        """'docs' reads shared.bin only once 'dump' has written its output (its chunks in its
        pack writer, not stored: it has not failed yet)."""
        if event.get("target") == "docs" and str(event.get("current", "")).endswith("more.bin"):
            deadline = time.monotonic() + 10
            while not (tmp_path / "written").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)

    context = Context(config, threads=2, progress=after_dump_wrote)
    try:
        run = backup_targets(context, ["dump", "docs"], parallel=2)
        assert isinstance(context.jobs, SqliteJobs) == light
        assert list(run.failures) == ["dump"] and isinstance(run.failures["dump"], errors.CommandFailed)
        [docs] = run.results
        repository = context.open_repository()
        report = check(repository, read_data_percent=100)
        assert report.ok and not report.missing_blobs, report.as_dict()
        assert restored(context, tmp_path, docs.snapshot_id)["shared.bin"] == SHARED
    finally:
        context.close()
    with Catalog.open(config.catalog_url, recover=False) as catalog:
        jobs = {job.target: job for job in catalog.list_jobs(kind="backup")}
    assert (jobs["dump"].status, jobs["dump"].snapshot_id) == ("failed", None)
    assert (jobs["docs"].status, jobs["docs"].snapshot_id, jobs["docs"].files) == ("succeeded", docs.snapshot_id, 3)


def test_ctrl_c_stops_the_targets_running_in_other_threads(tmp_path: Path):
    """Ctrl-C reaches the main thread only; the target streaming in another thread stops at its next
    chunk (its job recorded interrupted, no snapshot), the lock is released, and the run raises
    KeyboardInterrupt at once rather than after the other target's whole backup."""
    import signal

    config_path = files_workspace(tmp_path, ["docs"])
    with open(config_path, "a") as file:
        file.write('  - {"name": "dump", "tier": 1, "source": {"type": "command", "name": "zeros", '
                   '"run": "head -c 20000000000 /dev/zero"}}\n')
    config = load_config(config_path)
    sent: list[float] = []

    def interrupt_when_docs_is_done(event: dict) -> None:
        if event.get("target") == "docs" and not sent:
            sent.append(time.monotonic())
            time.sleep(0.2)  # 'dump' is streaming by now
            os.kill(os.getpid(), signal.SIGINT)

    context = Context(config, threads=2, progress=interrupt_when_docs_is_done)
    try:
        with pytest.raises(KeyboardInterrupt):
            backup_targets(context, ["docs", "dump"], parallel=2)
        assert time.monotonic() - sent[0] < 10
        assert not list((tmp_path / "repo" / "locks").iterdir())
        assert all(snapshot.target == "docs" for snapshot in context.open_repository().list_snapshots())
    finally:
        context.close()
    with Catalog.open(config.catalog_url, recover=False) as catalog:
        jobs = {job.target: job for job in catalog.list_jobs(kind="backup")}
    assert (jobs["dump"].status, jobs["dump"].snapshot_id) == ("interrupted", None)


@pytest.mark.parametrize("kind", ["image-zeros", "unchanged-files"])
def test_ctrl_c_stops_a_target_that_stores_no_chunk(tmp_path: Path, kind: str):
    """A target that reads without storing chunks (an image of written zeros, or a tree whose files
    are all unchanged) stops at Ctrl-C too, not only once its whole walk is done: the check of
    ``Repository.stop`` must not wait for a chunk to be stored. Its job is recorded interrupted."""
    import signal

    config_path = files_workspace(tmp_path, ["docs", "tree"])
    for i in range(1000):  # 'tree': files unchanged once backed up
        (tmp_path / "tree" / f"f{i}").write_bytes(b"%d" % i)
    (tmp_path / "disk.img").write_bytes(bytes(32 << 20))  # allocated zeros: read, never stored
    with open(config_path, "a") as file:
        file.write('  - {"name": "disk", "tier": 1, "source": {"type": "image", '
                   f'"path": "{tmp_path / "disk.img"}", "chunk_size": "64KiB"}}}}\n')
    config = load_config(config_path)
    slow = "disk" if kind == "image-zeros" else "tree"
    if slow == "tree":
        context = Context(config)
        try:
            assert not backup_targets(context, ["tree"]).failures
        finally:
            context.close()
    after: list[dict] = []
    handled = threading.Event()

    def interrupt(signum, frame):  # Python's own handler, once the test knows the main thread runs it
        handled.set()
        signal.default_int_handler(signum, frame)

    def events(event: dict) -> None:
        if event.get("target") == slow and event.get("bytes_done"):
            if not after:
                os.kill(os.getpid(), signal.SIGINT)  # to the main thread, which sets the stop
                assert handled.wait(10)
                time.sleep(0.2)
            after.append(event)

    context = Context(config, threads=2, progress=events)
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            backup_targets(context, ["docs", slow], parallel=2)
    finally:
        signal.signal(signal.SIGINT, previous)
        context.close()
    # Progress comes every 64 chunks of the image, every file of the tree; the stop is checked as often.
    assert len(after) <= (2 if slow == "disk" else 66), f"{len(after)} progress events of {slow!r} after Ctrl-C"
    with Catalog.open(config.catalog_url, recover=False) as catalog:
        jobs = [job for job in catalog.list_jobs(kind="backup") if job.target == slow]
    assert (jobs[0].status, jobs[0].snapshot_id) == ("interrupted", None), (jobs[0].error_type, jobs[0].error)
