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


def test_copy_retention_forgets_on_the_destination_and_never_resends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copy's own 'retention:' (issue 15): applied on the destination after the copy job, which
    prunes there; a copy it dropped is not sent again (its drop record), also when named, and a
    snapshot the source forgot stays on the copy while the copy's retention keeps it."""
    from safehold.engine.backup import backup_target
    from safehold.engine.copy import copy_to
    from safehold.engine.maintenance import forget_snapshots
    from safehold.repository.retention import RetentionPolicy

    monkeypatch.setenv("OFFSITE_PASSWORD", "offsite")
    target = files_target(tmp_path, "web")
    copies = [{"name": "offsite", "repository": {"url": str(tmp_path / "offsite"), "password_env": "OFFSITE_PASSWORD"},
               "retention": {"keep_last": 2}}]
    context = Context(load_config(write(tmp_path / "ws", [target], copies)))
    Path(context.config.state_dir).mkdir(parents=True, exist_ok=True)
    context._catalog = Catalog.open(context.config.catalog_url, clock=FakeClock())
    init_repository(context)
    Repository.init(open_backend(str(tmp_path / "offsite")), b"offsite", FAST_KDF,
                    params_from=context.open_repository(load_index=False))
    data = Path(target["source"]["paths"][0])
    sources = []
    for number in range(3):
        (data / "changing.bin").write_bytes(bytes([number]) * 200_000)  # each snapshot's own data
        sources.append(backup_target(context, "web").snapshot_id)
    destination = context.with_repository("offsite")

    def copies_of_sources() -> list[str]:
        return [s.copied_from["snapshot"] for s in destination.open_repository(load_index=False).list_snapshots()]

    [first] = copy_to(context, "offsite")
    assert first["snapshots_copied"] == 3
    [retention] = first["retention"]
    assert [entry["source"] for entry in retention["forgotten"]] == sources[:1]
    assert retention["prune"]["bytes_freed"] > 0  # the first snapshot's own data went with it
    assert copies_of_sources() == sources[1:]
    # Dropped on purpose: never sent again, also when named.
    [again] = copy_to(context, "offsite")
    assert (again["snapshots_copied"], again["snapshots_dropped"], again["blobs_sent"]) == (0, 1, 0)
    assert again["retention"][0]["forgotten"] == [] and again["retention"][0]["prune"] is None
    [named] = copy_to(context, "offsite", snapshot_ref=sources[0])
    assert (named["snapshots_copied"], named["snapshots_dropped"]) == (0, 1)
    # The source forgets all but its newest: the copy keeps what its own retention keeps.
    forget_snapshots(context, target="web", override=RetentionPolicy(keep_last=1), and_prune=True)
    [kept] = copy_to(context, "offsite")
    assert kept["snapshots_copied"] == 0 and kept["retention"][0]["forgotten"] == []
    assert copies_of_sources() == sources[1:]
    # A new backup reaches the copy and pushes the oldest copy out.
    (data / "changing.bin").write_bytes(b"\x03" * 200_000)
    newest = backup_target(context, "web").snapshot_id
    [last] = copy_to(context, "offsite")
    assert last["snapshots_copied"] == 1 and [e["source"] for e in last["retention"][0]["forgotten"]] == sources[1:2]
    assert copies_of_sources() == [sources[2], newest]
    from safehold.repository.check import check

    report = check(destination.open_repository(), read_data_percent=100.0)
    assert not report.errors, report.errors
    context.close()
