"""The queue executor's plain parts: where a job goes, where the DSN comes from (never targets.yml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold import errors
from safehold.config.scheduler import SchedulerConfig
from safehold.scheduler.queue import lock_for, queue_dsn, queue_for, shown_dsn, worker_queues


def test_placement_first_matching_pattern_wins_and_repository_jobs_go_to_default() -> None:
    settings = SchedulerConfig(placement={"kvm01-*": "label:kvm01", "kvm*": "kvm", "ebs-*": "aws"})
    assert queue_for(settings, "kvm01-web") == "label:kvm01"
    assert queue_for(settings, "kvm02-db") == "kvm"
    assert queue_for(settings, "ebs-data") == "aws"
    assert queue_for(settings, "docs") == "default"
    assert queue_for(settings, None) == "default"
    assert lock_for("backup", "docs") == "target:docs" and lock_for("prune", None) == "repository:prune"


def test_a_worker_takes_its_queues_and_one_per_host_label() -> None:
    assert worker_queues(None, []) == ["default"]
    assert worker_queues(["aws"], ["kvm01", "kvm01"]) == ["aws", "label:kvm01"]


def test_the_dsn_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    settings = SchedulerConfig()
    assert queue_dsn(settings, {"SAFEHOLD_QUEUE_DSN": "postgresql+psycopg://u@db/q\n"}) == "postgresql://u@db/q"
    dsn_file = tmp_path / "queue.dsn"
    dsn_file.write_text("postgresql://u:secret@db/q\n")
    from_file = SchedulerConfig(queue_dsn_file=str(dsn_file))
    assert queue_dsn(from_file, {}) == "postgresql://u:secret@db/q"
    assert shown_dsn("postgresql://u:secret@db/q") == "postgresql://u:***@db/q"
    with pytest.raises(errors.QueueNotConfigured, match="SAFEHOLD_QUEUE_DSN is unset") as raised:
        queue_dsn(settings, {})
    assert raised.value.exit_code == 96
    with pytest.raises(errors.QueueNotConfigured, match="cannot read queue_dsn_file"):
        queue_dsn(SchedulerConfig(queue_dsn_file=str(tmp_path / "missing")), {})


def test_the_default_stays_the_thread_executor() -> None:
    from safehold.scheduler.executor import ThreadExecutor
    from safehold.scheduler.queue import make_executor

    class Context:
        class config:
            scheduler = SchedulerConfig()

    assert SchedulerConfig().executor == "thread"
    executor = make_executor(Context())
    try:
        assert isinstance(executor, ThreadExecutor)
    finally:
        executor.shutdown()


@pytest.mark.parametrize("label", ["a b", "x,y", "", "l" * 41])
def test_labels_that_would_not_survive_the_worker_list_are_refused(label: str) -> None:
    from safehold.scheduler.queue import run_worker

    with pytest.raises(errors.UsageError, match="letters, digits"):
        run_worker(None, labels=[label])


def test_the_queue_executor_refuses_a_sqlite_catalog(tmp_path: Path) -> None:
    from safehold.config import load_config_text
    from safehold.scheduler.queue import make_executor

    config = load_config_text("repository: {url: repo, password_env: P}\nscheduler: {executor: procrastinate}\n"
                              "targets: []\n", tmp_path / "targets.yml")

    class Context:
        pass

    context = Context()
    context.config = config
    with pytest.raises(errors.QueueNotConfigured, match="the catalog is SQLite"):
        make_executor(context)
