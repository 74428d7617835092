"""Drills on files targets (engine.drill): the planner's choices and gaps, a run in dependency
order with ART/RPO and its evidence report, failures and skipped dependants, no sandbox left."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from control_support import FakeClock, files_target, write_config

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.drill import plan_drill, render_html, render_markdown, run_drill
from safehold.engine.restore_test import sandbox_root


def drill_context(root: Path, drills: list[dict], targets: list[dict] | None = None, init: bool = True):
    from safehold.catalog import Catalog
    from safehold.config import load_config
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    root.mkdir(parents=True, exist_ok=True)
    targets = targets if targets is not None else [files_target(root, "db", tier=1), files_target(root, "web", tier=2)]
    path = write_config(root, targets)
    with path.open("a") as file:
        file.write("drills:" + ("\n" if drills else " []\n") + "".join(f"  - {json.dumps(drill)}\n" for drill in drills))
    config = load_config(path)
    context = Context(config)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context._catalog = Catalog.open(config.catalog_url, clock=FakeClock())
    if init:
        init_repository(context)
    return context


DRILL = {"name": "site-lost", "scenario": "on_prem_host_failure",
         "steps": [{"target": "web", "after": ["db"], "check": {"type": "command", "run": "grep -qx web */hostname"}},
                   {"target": "db", "check": {"type": "file_exists", "path": "db/hostname"}}]}


def leftovers(context) -> list[Path]:
    root = sandbox_root(context)
    return list(root.iterdir()) if root.exists() else []


def test_plan_lists_order_snapshots_and_what_is_missing(tmp_path) -> None:
    context = drill_context(tmp_path, [DRILL])
    plan = plan_drill(context, "site-lost")
    assert plan.waves == [["db"], ["web"]]
    assert plan.problems == [f"{name}: no snapshot: back it up ('safehold backup --target {name}')"
                             for name in ("web", "db")]
    backup_target(context, "db")
    backup_target(context, "web")
    plan = plan_drill(context, "site-lost")
    assert plan.problems == [] and plan.as_dict()["ready"] is True
    web = plan.steps[0]
    assert web.target == "web" and web.snapshot_id and web.rto_seconds == 4 * 3600
    assert 0 <= web.snapshot_age_seconds < 60 and web.rpo_met is True and web.rpo_objective_seconds == 12 * 3600
    assert plan.runbook == "runbooks/on_prem_host_failure.md"
    assert leftovers(context) == []


def test_before_chooses_the_newest_snapshot_older_than_it(tmp_path) -> None:
    context = drill_context(tmp_path, [])
    first = backup_target(context, "db").snapshot_id
    cut = dt.datetime.now(dt.timezone.utc)
    (tmp_path / "data" / "db" / "hostname").write_text("encrypted by ransomware\n")
    second = backup_target(context, "db").snapshot_id
    assert first != second
    context = drill_context(tmp_path, [{"name": "bad-day", "scenario": "data_corruption", "before": cut.isoformat(),
                                        "steps": [{"target": "db", "check": {"type": "command",
                                                                             "run": "grep -qx db db/hostname"}}]}],
                            init=False)
    plan = plan_drill(context, "bad-day")
    assert plan.steps[0].snapshot_id == first and plan.reference_time == cut.isoformat()
    result = run_drill(context, "bad-day", report_dir=tmp_path / "report")
    assert result.passed and result.evidence["steps"][0]["snapshot_id"] == first
    early = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    context = drill_context(tmp_path, [{"name": "bad-day", "scenario": "data_corruption",
                                        "before": early.isoformat(), "steps": [{"target": "db"}]}], init=False)
    assert plan_drill(context, "bad-day").problems == [
        "db: no snapshot taken before 2000-01-01T00:00:00+00:00: back it up ('safehold backup --target db')"]
    with pytest.raises(errors.DrillNotReady):
        run_drill(context, "bad-day")


def test_a_drill_runs_in_dependency_order_and_writes_its_evidence(tmp_path) -> None:
    context = drill_context(tmp_path, [DRILL])
    backup_target(context, "db")
    backup_target(context, "web")
    result = run_drill(context, "site-lost", report_dir=tmp_path / "report")
    assert result.passed
    evidence = json.loads((tmp_path / "report" / "report.json").read_text())
    assert evidence == json.loads(json.dumps(result.evidence))
    web, db = evidence["steps"]
    assert (web["target"], db["target"]) == ("web", "db")
    assert db["outcome"] == web["outcome"] == "passed" and db["rto_met"] and web["rto_met"]
    assert db["ended"] <= web["started"]  # the database first
    assert 0 < db["art_seconds"] <= web["art_seconds"]  # ART from the drill's start: web waited for db
    assert 0 <= web["rpo_seconds"] < 60 and web["rpo_met"]
    assert {item["kind"] for item in evidence["created"]} == {"sandbox folder"}
    assert evidence["created"] == evidence["removed"] and evidence["left_behind"] == []
    job = context.catalog.get_job(result.job_id)
    assert job.kind == "drill" and job.status == "succeeded" and job.details["drill"] == "site-lost"
    assert job.details["steps"][1]["art_seconds"] == db["art_seconds"]
    assert "## Steps" in (tmp_path / "report" / "report.md").read_text()
    assert "<table>" in (tmp_path / "report" / "report.html").read_text()
    assert leftovers(context) == []


def test_a_failing_step_fails_the_drill_skips_its_dependants_and_still_cleans_up(tmp_path) -> None:
    drill = {"name": "site-lost", "scenario": "on_prem_host_failure",
             "steps": [{"target": "db", "check": {"type": "command", "run": "exit 3"}},
                       {"target": "web", "after": ["db"]}]}
    context = drill_context(tmp_path, [drill])
    backup_target(context, "db")
    backup_target(context, "web")
    with pytest.raises(errors.DrillFailed) as caught:
        run_drill(context, "site-lost")
    assert caught.value.exit_code == 82 and "db failed" in caught.value.message and "web skipped" in caught.value.message
    job = context.catalog.get_job(caught.value.fields["job_id"])
    assert job.kind == "drill" and job.status == "failed"
    db, web = job.details["steps"]
    assert db["outcome"] == "failed" and "exit status 3" in db["detail"] and db["rto_met"] is False
    assert web["outcome"] == "skipped" and "db did not pass" in web["detail"] and web["created"] == []
    report = Path(caught.value.fields["report"])
    assert report == Path(context.config.state_dir) / "drills" / f"site-lost-job{job.id}"
    assert json.loads((report / "report.json").read_text())["passed"] is False
    assert leftovers(context) == []


def test_a_step_over_its_rto_fails_the_drill(tmp_path) -> None:
    drill = {"name": "slow", "scenario": "on_prem_host_failure",
             "steps": [{"target": "db", "rto": "1s", "check": {"type": "command", "run": "sleep 1.5"}}]}
    context = drill_context(tmp_path, [drill])
    backup_target(context, "db")
    with pytest.raises(errors.DrillFailed, match="db passed \\(RTO missed\\)"):
        run_drill(context, "slow", report_dir=tmp_path / "r")
    step = json.loads((tmp_path / "r" / "report.json").read_text())["steps"][0]
    assert step["outcome"] == "passed" and step["rto_met"] is False and step["art_seconds"] > 1


def test_the_reports_escape_what_comes_from_snapshots_and_configuration() -> None:
    hostile = "<script>alert(1)</script>|x"
    step = {"target": hostile, "after": [], "snapshot_id": hostile, "started": None, "ended": None,
            "outcome": "failed", "art_seconds": 1.0, "rto_seconds": 60.0, "rto_met": False, "rpo_seconds": 5.0,
            "rpo_objective_seconds": 60.0, "rpo_met": True, "check": hostile, "detail": hostile,
            "created": [], "removed": []}
    evidence = {"drill": "d", "scenario": "data_corruption", "runbook": "r", "description": hostile, "passed": False,
                "started": "s", "ended": "e", "duration_seconds": 1.0, "reference_time": "t", "job_id": 1,
                "steps": [step], "created": [{"kind": "sandbox folder", "name": hostile}], "removed": []}
    page = render_html(evidence)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "src=" not in page and "href=" not in page and "http" not in page.replace("http-equiv", "")
    markdown = render_markdown(evidence)
    assert "<script>" not in markdown and "\\|x" in markdown


def test_drill_metrics_follow_the_newest_drills_in_the_catalog(tmp_path) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from safehold.server.metrics import create_registry

    def scrape() -> dict[str, dict[tuple, float]]:
        text = generate_latest(create_registry(context)).decode()
        return {family.name: {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}
                for family in text_string_to_metric_families(text) if family.name.startswith("safehold_drill")}

    context = drill_context(tmp_path, [DRILL])
    labels = (("drill", "site-lost"), ("scenario", "on_prem_host_failure"))
    assert scrape() == {"safehold_drill_last_success_timestamp_seconds": {labels: 0.0},
                        "safehold_drill_last_duration_seconds": {}, "safehold_drill_last_status": {},
                        "safehold_drill_target_art_seconds": {}, "safehold_drill_interval_seconds": {}}
    backup_target(context, "db")
    backup_target(context, "web")
    result = run_drill(context, "site-lost", report_dir=tmp_path / "r1")
    found = scrape()
    job = context.catalog.get_job(result.job_id)
    assert found["safehold_drill_last_success_timestamp_seconds"] == {labels: job.finished_at.timestamp()}
    assert found["safehold_drill_last_duration_seconds"] == {labels: result.evidence["duration_seconds"]}
    assert found["safehold_drill_last_status"] == {labels: 1.0}
    assert found["safehold_drill_target_art_seconds"] == {
        (*labels[:1], *labels[1:], ("target", step["target"])): step["art_seconds"]
        for step in result.evidence["steps"]}
    (tmp_path / "data" / "db" / "hostname").unlink()  # the next backup lacks the file db's check wants
    backup_target(context, "db")
    with pytest.raises(errors.DrillFailed):
        run_drill(context, "site-lost", report_dir=tmp_path / "r2")
    failed = scrape()
    assert failed["safehold_drill_last_status"] == {labels: 0.0}
    assert failed["safehold_drill_last_success_timestamp_seconds"] == found["safehold_drill_last_success_timestamp_seconds"]


def test_a_killed_drill_s_sandbox_is_removed_by_the_next_run_and_a_live_one_is_kept(tmp_path) -> None:
    import subprocess

    from safehold.engine.boot_check import make_owner

    drill = {"name": "site-lost", "scenario": "on_prem_host_failure", "restore_to": {"directory": "dr"},
             "steps": [{"target": "db"}]}
    context = drill_context(tmp_path, [drill])
    backup_target(context, "db")
    root = tmp_path / "dr"
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed, live = root / "safehold-restore-test-killed", root / "safehold-restore-test-live"
    for folder, pid in ((killed, dead.pid), (live, None)):
        (folder / "restore").mkdir(parents=True)
        attributes = make_owner(folder, 1).as_attributes()
        if pid is not None:
            attributes["pid"] = str(pid) if isinstance(attributes["pid"], str) else pid
        (folder / "owner.json").write_text(json.dumps(attributes))
    result = run_drill(context, "site-lost", report_dir=tmp_path / "r")
    assert result.evidence["leftovers_removed"] == [f"folder {killed}"]
    assert sorted(root.iterdir()) == [live]


def test_a_drill_is_a_job_like_any_other_queued_then_run_by_a_worker(tmp_path) -> None:
    from safehold.engine.jobs import run_job, submit_job

    context = drill_context(tmp_path, [DRILL])
    with pytest.raises(errors.DrillNotFound):
        submit_job(context, "drill", None, {"drill": "nope"})
    with pytest.raises(errors.UsageError, match="unknown parameter 'target' for a drill job"):
        submit_job(context, "drill", None, {"drill": "site-lost", "target": "db"})
    not_ready = run_job(context, submit_job(context, "drill", None, {"drill": "site-lost"}, trigger="scheduler"))
    assert not_ready.status == "failed" and not_ready.error_type == "DrillNotReady"
    backup_target(context, "db")
    backup_target(context, "web")
    job_id = submit_job(context, "drill", None, {"drill": "site-lost"}, trigger="api")
    record = run_job(context, job_id)
    assert (record.id, record.kind, record.status) == (job_id, "drill", "succeeded")
    assert record.details["trigger"] == "api" and record.details["passed"] is True
    assert [step["outcome"] for step in record.details["steps"]] == ["passed", "passed"]
    assert Path(record.details["report"]["json"]).parent == Path(context.config.state_dir) / "drills" / \
        f"site-lost-job{job_id}"


def test_the_api_queues_a_drill_and_names_an_unknown_one(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from safehold.server.app import create_app
    from safehold.server.auth import TokenStore

    context = drill_context(tmp_path, [DRILL])
    _, token = TokenStore(context.catalog).create("t", "operator")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        missing = client.post("/api/v1/jobs", json={"kind": "drill", "params": {"drill": "nope"}}, headers=auth)
        assert missing.status_code == 404 and missing.json()["error"] == "DrillNotFound", missing.text
        queued = client.post("/api/v1/jobs", json={"kind": "drill", "params": {"drill": "site-lost"}}, headers=auth)
        assert queued.status_code == 202, queued.text
    job = context.catalog.list_jobs(kind="drill")[0]
    assert job.details["params"] == {"drill": "site-lost"} and job.details["trigger"] == "api"


def test_parallel_runs_the_steps_of_a_wave_at_the_same_time(tmp_path) -> None:
    """Two independent steps whose checks each take a second: with parallel: 2 their runs overlap
    (the drill takes about one check, not two), each keeps its own record; by default they do not."""
    slow = {"type": "command", "run": "sleep 1 && test -f */hostname"}
    steps = [{"target": "db", "check": slow}, {"target": "web", "check": slow}]
    context = drill_context(tmp_path, [{"name": "together", "scenario": "on_prem_host_failure", "parallel": 2,
                                        "steps": steps},
                                       {"name": "apart", "scenario": "on_prem_host_failure", "steps": steps}])
    backup_target(context, "db")
    backup_target(context, "web")

    def intervals(name: str) -> list[tuple[dt.datetime, dt.datetime]]:
        result = run_drill(context, name, report_dir=tmp_path / name)
        assert result.passed and result.evidence["left_behind"] == []
        assert [step["detail"] for step in result.evidence["steps"]] == ["exit status 0", "exit status 0"]
        assert len(result.evidence["created"]) == 2 and len(set(map(str, result.evidence["created"]))) == 2
        return [(dt.datetime.fromisoformat(step["started"]), dt.datetime.fromisoformat(step["ended"]))
                for step in result.evidence["steps"]]

    (db_start, db_end), (web_start, web_end) = intervals("together")
    assert db_start < web_end and web_start < db_end  # they overlap
    (db_start, db_end), (web_start, web_end) = intervals("apart")
    assert db_end <= web_start or web_end <= db_start  # one after the other
    assert leftovers(context) == []


def test_a_worker_runs_no_drill_step_its_own_targets_yml_does_not_have(tmp_path) -> None:
    """A drill-step row is written by the drill's host from its targets.yml; the worker that runs
    it checks the step against its own (checked at run time, not only when the drill queued it)."""
    import dataclasses
    import time

    from safehold.engine.drill import StepPlan
    from safehold.engine.jobs import run_job

    only_db = {**DRILL, "steps": [{"target": "db", "check": {"type": "file_exists", "path": "db/hostname"}}]}
    context = drill_context(tmp_path, [only_db])
    step = StepPlan(target="web", source="files", tier=2, after=[], wave=0, check="command", rto_seconds=3600,
                    rpo_objective_seconds=86400)
    job_id = context.catalog.queue_job("drill-step", "web", {
        "params": {"drill": "site-lost", "step": dataclasses.asdict(step), "wall_start": time.time(),
                   "reference": dt.datetime.now(dt.timezone.utc).isoformat()}, "trigger": "drill"})
    record = run_job(context, job_id)
    assert (record.status, record.error_type) == ("failed", "DrillNotReady")
    assert "step 'web' is not a step of this drill in the targets.yml of worker" in record.error
    assert leftovers(context) == []
