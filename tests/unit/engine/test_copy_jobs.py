"""``copies:`` in targets.yml: config checks, queued 'copy' jobs, copies after a backup, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from control_support import FakeClock, files_target
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from safehold import errors
from safehold.catalog import Catalog
from safehold.config import load_config
from safehold.engine.context import Context
from safehold.engine.jobs import run_job, submit_job
from safehold.engine.maintenance import init_repository
from safehold.repository import Repository
from safehold.repository.backends import open_backend
from safehold.server.metrics import create_registry

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def write(root: Path, targets: list[dict], copies: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "password").write_text("pw\n")
    lines = ['repository: {"url": "repo", "password_file": "password"}', "state_dir: state", "targets:"]
    lines += [f"  - {json.dumps(target)}" for target in targets]
    lines.append(f"copies: {json.dumps(copies)}")
    path = root / "targets.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OFFSITE_PASSWORD", "offsite")
    targets = [files_target(tmp_path, "web"), files_target(tmp_path, "docs")]
    copies = [{"name": "offsite", "repository": {"url": str(tmp_path / "offsite"), "password_env": "OFFSITE_PASSWORD"},
               "after_backup": True, "targets": ["web"]}]
    config = load_config(write(tmp_path / "ws", targets, copies))
    context = Context(config)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context._catalog = Catalog.open(config.catalog_url, clock=FakeClock())
    init_repository(context)
    Repository.init(open_backend(str(tmp_path / "offsite")), b"offsite", FAST_KDF,
                    params_from=context.open_repository(load_index=False))
    yield context
    context.close()


def test_config_refuses_unknown_targets_and_duplicate_names(tmp_path: Path):
    targets = [files_target(tmp_path, "web")]
    copy = {"name": "offsite", "repository": {"url": "/srv/offsite"}, "targets": ["nope"]}
    with pytest.raises(errors.SafeholdError) as caught:
        load_config(write(tmp_path / "ws", targets, [copy, dict(copy, targets=["web"])]))
    text = str(caught.value)
    assert "target 'nope' is not defined" in text and "duplicate copy name 'offsite'" in text


def test_a_backup_job_copies_after_itself_and_metrics_show_it(context: Context, tmp_path: Path):
    run_job(context, submit_job(context, "backup", "web"))
    [copy_job] = context.catalog.list_jobs(kind="copy")
    assert (copy_job.status, copy_job.target) == ("succeeded", "web")
    assert copy_job.details["destination"] == "offsite" and copy_job.details["blobs_sent"] > 0
    destination = Repository.open(open_backend(str(tmp_path / "offsite")), b"offsite")
    [copied] = destination.list_snapshots()
    assert copied.target == "web" and copied.copied_from["repository"] == context.open_repository(False).id
    # docs is not covered by the copy: its backup copies nothing.
    run_job(context, submit_job(context, "backup", "docs"))
    assert len(context.catalog.list_jobs(kind="copy")) == 1
    text = generate_latest(create_registry(context, repository_ttl=0)).decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "safehold_copy_last_success_timestamp_seconds"]
    assert {(s.labels["target"], s.labels["destination"]) for s in samples} == {("web", "offsite")}
    assert samples[0].value > 0
    from safehold.engine.status import target_statuses

    statuses = {status.name: status for status in target_statuses(context)}
    assert statuses["web"].copies["offsite"] is not None and statuses["docs"].copies == {}


def test_a_queued_copy_job_names_a_configured_copy(context: Context):
    with pytest.raises(errors.CopyNotFound, match="no copy named 'elsewhere'") as caught:
        submit_job(context, "copy", "web", {"to": "elsewhere"})
    assert caught.value.exit_code == 44 and "offsite" in caught.value.hint  # the API answers 404
    run_job(context, submit_job(context, "backup", "docs"))
    record = run_job(context, submit_job(context, "copy", "docs", {"to": "offsite"}))
    assert record.status == "succeeded" and record.details["snapshots_copied"] == 1
    record = run_job(context, submit_job(context, "copy", "docs", {"to": "offsite"}))
    assert record.details["snapshots_copied"] == 0 and record.details["blobs_sent"] == 0


def test_a_failing_copy_does_not_fail_the_backup(context: Context, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OFFSITE_PASSWORD", "wrong")
    record = run_job(context, submit_job(context, "backup", "web"))
    assert record.status == "succeeded"
    [copy_job] = context.catalog.list_jobs(kind="copy")
    assert copy_job.status == "failed" and copy_job.error_type == "CopyDestinationPassword"
    assert any("copy to offsite failed" in line.message for line in context.catalog.job_logs(record.id))


def test_a_replayed_snapshot_is_not_copied(context: Context, tmp_path: Path):
    """A snapshot that forget removed and someone put back (a rollback) does not spread to copies."""
    from safehold.engine.copy import copy_to
    from safehold.engine.maintenance import forget_snapshots

    run_job(context, submit_job(context, "backup", "docs"))
    [snapshot] = context.open_repository(load_index=False).list_snapshots()
    [stored] = [p for p in (tmp_path / "ws" / "repo" / "snapshots").rglob("*") if p.is_file()]
    saved = stored.read_bytes()
    forget_snapshots(context, snapshot_ids=[snapshot.id])
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(saved)  # put back
    with pytest.raises(errors.SnapshotReplayed):
        copy_to(context, "offsite", "docs", snapshot.id)
    [result] = copy_to(context, "offsite", "docs")
    assert result["snapshots_copied"] == 0
