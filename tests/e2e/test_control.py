"""The control-plane commands as a user runs them: status, restore-test and the scheduler in the
foreground, stopped by SIGTERM and killed by SIGKILL."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from e2e_support import Workspace, assert_clean_error


def targets(ws: Workspace, check: dict | None = None) -> list[dict]:
    (ws.data / "etc").mkdir(parents=True, exist_ok=True)
    (ws.data / "etc" / "hostname").write_text("web-01\n")
    restore_test = {"every": "1d", **({"health_check": check} if check else {})}
    return [{"name": "web", "tier": 1, "source": {"type": "files", "paths": ["data"]},
             "retention": {"keep_last": 2}, "restore_test": restore_test}]


def scheduler_settings(ws: Workspace) -> None:
    text = ws.config.read_text().replace(
        "state_dir: state", 'state_dir: state\nscheduler: {jitter: 1s, prune_schedule: null, check_schedule: null}')
    ws.config.write_text(text)


def wait_for(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_status_and_restore_test(workspace: Workspace) -> None:
    ws = workspace
    ws.write_config(targets(ws, {"type": "command", "run": "grep -qx web-01 data/etc/hostname"}))
    ws.run("init")
    before = ws.json("status")["targets"][0]
    assert before["name"] == "web" and before["compliant"] is False and before["last_success"] is None
    proc = ws.run("restore-test", "--target", "web", ok=False)
    assert_clean_error(proc, 16, "no snapshot matches")
    ws.run("backup", "--target", "web")
    result = ws.json("restore-test", "--target", "web")
    assert result["passed"] and result["rto_met"] and result["rto_seconds"] == 3600
    status = ws.json("status")["targets"][0]
    assert status["compliant"] is True and status["last_status"] == "succeeded"
    assert status["last_restore_test"]["passed"] is True
    assert status["last_restore_test"]["art_seconds"] == pytest.approx(result["art_seconds"], abs=0.001)
    assert status["art"]["latest_seconds"] == pytest.approx(result["art_seconds"], abs=0.001)
    assert status["art"]["history"][0]["kind"] == "restore-test" and status["art"]["state"] == "ok"
    table = ws.run("status").stdout
    assert "web" in table and "1 of 1 target(s) within their RPO" in table and "passed" in table
    assert "ART trend" in table and "of RTO (restore-test)" in table
    assert list((ws.state / "restore-tests").iterdir()) == []


def test_failing_restore_test_exit_code(workspace: Workspace) -> None:
    ws = workspace
    ws.write_config(targets(ws, {"type": "file_exists", "path": "data/etc/missing"}))
    ws.run("init")
    ws.run("backup", "--target", "web")
    proc = ws.run("restore-test", "--target", "web", ok=False)
    assert_clean_error(proc, 22, "restore test of web failed: data/etc/missing does not exist")
    assert ws.json("status")["targets"][0]["last_restore_test"]["passed"] is False


def test_scheduler_once_runs_due_jobs(workspace: Workspace) -> None:
    ws = workspace
    ws.write_config(targets(ws, {"type": "file_exists", "path": "data/etc/hostname"}))
    scheduler_settings(ws)
    ws.run("init")
    proc = ws.run("scheduler", "run", "--once")
    assert "queued 2 job(s), ran 2" in proc.stdout, proc.stdout + proc.stderr
    jobs = {job["kind"]: job for job in ws.json("jobs")}
    assert jobs["backup"]["status"] == "succeeded" and jobs["restore-test"]["status"] == "succeeded"
    assert jobs["forget"]["status"] == "succeeded"  # retention applied after the backup
    # Nothing is due a moment later.
    assert "queued 0 job(s), ran 0" in ws.run("scheduler", "run", "--once").stdout


def start_scheduler_with_a_long_health_check(ws: Workspace, marker: Path, seconds: int):
    ws.write_config(targets(ws, {"type": "command", "run": f"touch {marker} && sleep {seconds}"}))
    scheduler_settings(ws)
    ws.run("init")
    process = ws.start("scheduler", "run", "--poll", "0.2", "--stop-timeout", "1")
    wait_for(marker.exists, what="the restore test's health check to start")
    return process


def sandboxes(ws: Workspace) -> list[Path]:
    return list((ws.state / "restore-tests").iterdir())


def test_sigterm_records_the_running_job_interrupted(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    process = start_scheduler_with_a_long_health_check(ws, tmp_path / "started", 60)
    try:
        assert sandboxes(ws) != []
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert time.monotonic() - stopped < 15
    assert process.returncode == 0, stderr
    assert "received SIGTERM; stopping" in stderr
    jobs = {job["kind"]: job for job in ws.json("jobs")}
    assert jobs["backup"]["status"] == "succeeded"
    assert jobs["restore-test"]["status"] == "interrupted"
    assert all(job["status"] != "running" for job in ws.json("jobs"))
    assert sandboxes(ws) == []


def test_sigkill_then_restart_marks_interrupted_and_cleans_the_sandbox(workspace: Workspace,
                                                                       tmp_path: Path) -> None:
    ws = workspace
    process = start_scheduler_with_a_long_health_check(ws, tmp_path / "started", 3)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert len(sandboxes(ws)) == 1  # nothing could clean up after SIGKILL...
    jobs = {job["kind"]: job for job in ws.json("jobs")}  # ...but opening the catalog notices the dead process
    assert jobs["restore-test"]["status"] == "interrupted"
    assert jobs["restore-test"]["error_type"] == "ProcessGone"
    ws.run("scheduler", "run", "--once")  # and the next start removes the sandbox
    assert sandboxes(ws) == []


def test_a_second_scheduler_on_the_catalog_is_refused_and_the_holder_named(workspace: Workspace,
                                                                           tmp_path: Path) -> None:
    """Two schedulers on one catalog would queue every due job twice: the second is refused
    (scheduler run, and serve with its scheduler), and the lease goes with the holder's death."""
    ws = workspace
    # The lease lasts as long as the process, not the job; a short health check keeps the
    # '--once' run at the end quick (it runs the interrupted restore test again).
    process = start_scheduler_with_a_long_health_check(ws, tmp_path / "started", 3)
    try:
        once = ws.run("scheduler", "run", "--once", ok=False)
        assert_clean_error(once, 24, "another scheduler already runs", f"pid {process.pid} on ")
        serve = ws.run("serve", "--port", "0", ok=False, timeout=60)
        assert_clean_error(serve, 24, f"pid {process.pid} on ")
        # The API alone (no scheduler) may run beside it; it only queues jobs.
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert "queued" in ws.run("scheduler", "run", "--once").stdout  # the kernel released the dead holder's lease


def test_status_json_is_the_engine_view(workspace: Workspace) -> None:
    ws = workspace
    ws.run("init")
    data = json.loads(ws.run("status", "--json").stdout)
    assert [entry["name"] for entry in data["targets"]] == ["files", "disk"]
    assert [entry["tier"] for entry in data["targets"]] == [2, 3]
    assert all(entry["compliant"] is False for entry in data["targets"])


def test_the_maintenance_unit_runs_its_commands_on_a_repository_without_object_lock(workspace: Workspace) -> None:
    """Every ExecStart of deploy/systemd/safehold-maintenance.service, in order, as systemd would run them:
    without object_lock `safehold maintenance` says there is nothing to extend and succeeds, so
    the prune and check after it still run."""
    ws = workspace
    ws.write_config(targets(ws))
    ws.run("init")
    ws.run("backup", "--target", "web")
    unit = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "safehold-maintenance.service"
    commands = [line.split("=", 1)[1].split()[1:] for line in unit.read_text().splitlines()
                if line.startswith("ExecStart=")]
    assert [command[0] for command in commands] == ["maintenance", "prune", "check"]
    outputs = [ws.run(*command).stdout for command in commands]  # each exits 0
    assert "nothing to extend" in outputs[0]
    kinds = {job["kind"]: job["status"] for job in ws.json("jobs")}
    assert kinds["maintenance"] == kinds["prune"] == kinds["check"] == "succeeded"
