"""``safehold drill plan`` / ``drill run`` as a user runs them, on files targets (fast): the exit
codes of the contract (0, 80, 81, 82), the evidence report in its default folder, clean errors,
and no sandbox left."""

from __future__ import annotations

import json
from pathlib import Path

from e2e_support import assert_clean_error, write_file

DRILLS = """\
drills:
  - name: site-lost
    scenario: on_prem_host_failure
    steps:
      - {target: app, after: [db], check: {type: command, run: "grep -q orders */app.ini"}}
      - {target: db, check: {type: checksum, path: db/rows.csv, sha256: %s}}
"""


def with_drills(workspace, db_digest: str) -> None:
    for name, content in (("db", b"1,orders\n"), ("app", b"database = orders\n")):
        folder = workspace.root / name
        folder.mkdir(exist_ok=True)
        write_file(folder / ("rows.csv" if name == "db" else "app.ini"), content)
    workspace.write_config([
        {"name": "db", "tier": 1, "source": {"type": "files", "paths": ["db"]}},
        {"name": "app", "tier": 2, "source": {"type": "files", "paths": ["app"]}},
    ])
    with workspace.config.open("a") as file:
        file.write(DRILLS % db_digest)


def test_plan_run_and_report_through_the_cli(workspace) -> None:
    import hashlib

    with_drills(workspace, hashlib.sha256(b"1,orders\n").hexdigest())
    workspace.run("init")
    assert_clean_error(workspace.run("drill", "run", "nope", code=80), 80, "no drill named 'nope'")
    not_ready = workspace.run("drill", "plan", "site-lost", code=81)
    assert "missing: db: no snapshot" in not_ready.stdout and "missing: app: no snapshot" in not_ready.stdout
    assert_clean_error(workspace.run("drill", "run", "site-lost", code=81), 81, "drill site-lost cannot run")
    workspace.run("backup", "--all")

    plan = json.loads(workspace.run("drill", "plan", "site-lost", "--json").stdout)
    assert plan["ready"] and plan["waves"] == [["db"], ["app"]] and plan["problems"] == []
    ran = workspace.run("drill", "run", "site-lost")
    folder = Path(ran.stdout.strip().splitlines()[-1].rpartition("evidence report in ")[2])
    assert folder.parent == workspace.state / "drills" and sorted(p.name for p in folder.iterdir()) == [
        "report.html", "report.json", "report.md"]
    report = json.loads((folder / "report.json").read_text())
    assert report["passed"] and [step["outcome"] for step in report["steps"]] == ["passed", "passed"]
    assert report["left_behind"] == [] and len(report["created"]) == 2
    jobs = workspace.json("jobs", "--kind", "drill", "--json")
    assert [job["status"] for job in (jobs["jobs"] if isinstance(jobs, dict) else jobs)] == ["succeeded"]

    # A check the restored database does not meet fails the drill, and its dependant is skipped.
    with_drills(workspace, "f" * 64)
    failed = workspace.run("drill", "run", "site-lost", "--json", code=82)
    evidence = json.loads(failed.stdout)
    assert evidence["passed"] is False
    assert [step["outcome"] for step in evidence["steps"]] == ["skipped", "failed"]
    assert_clean_error(failed, 82, "drill site-lost failed: app skipped, db failed")
    sandboxes = workspace.state / "restore-tests"
    assert not sandboxes.exists() or list(sandboxes.iterdir()) == []


def _jobs(workspace) -> list:
    jobs = workspace.json("jobs", "--kind", "drill")
    return jobs["jobs"] if isinstance(jobs, dict) else jobs


def _answer_on_terminal(workspace, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run the CLI with a pty as its terminal; type ``answer`` at the confirmation prompt."""
    import os
    import pty
    import select
    import subprocess

    from e2e_support import CLI

    controller, terminal = pty.openpty()
    process = subprocess.Popen(CLI + args, cwd=workspace.root, env=workspace.environment(), stdin=terminal,
                               stdout=terminal, stderr=terminal, close_fds=True, start_new_session=True)
    os.close(terminal)
    output, answered = b"", False
    while True:
        ready, _, _ = select.select([controller], [], [], 120)
        if not ready:
            process.kill()
            raise AssertionError(f"no output for 120 s; so far: {output!r}")
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"to recover for real: " in output:
            os.write(controller, answer + b"\n")
            answered = True
    os.close(controller)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_for_real_asks_on_a_terminal_and_recovers_into_production(workspace, tmp_path) -> None:
    """--for-real: refused without a terminal and without --yes, and without recover_to; on a
    terminal, a wrong answer restores nothing, the drill's name recovers into the recover_to folders
    (kept), recorded as for real in the job and the report."""
    import hashlib
    import subprocess

    from e2e_support import CLI

    with_drills(workspace, hashlib.sha256(b"1,orders\n").hexdigest())
    workspace.run("init")
    workspace.run("backup", "--all")
    no_terminal = subprocess.run([*CLI, "drill", "run", "site-lost", "--for-real"], cwd=workspace.root,
                                 env=workspace.environment(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert_clean_error(no_terminal, 38, "drill site-lost --for-real was not confirmed: no terminal to ask on and no "
                                        "--yes; nothing was restored")
    no_destination = workspace.run("drill", "run", "site-lost", "--for-real", "--yes", code=81)
    assert "no recover_to" in no_destination.stderr
    # A sandbox drill ignores recover_to; --for-real needs it on every step.
    production = tmp_path / "production"
    text = workspace.config.read_text()
    text = text.replace("{target: app, after: [db],", f"{{target: app, recover_to: {production / 'app'}, after: [db],")
    text = text.replace("{target: db,", f"{{target: db, recover_to: {production / 'db'},")
    workspace.config.write_text(text)
    plan = workspace.run("drill", "plan", "site-lost", "--for-real").stdout
    assert f"RECOVERS TO {production / 'db'}" in plan and "FOR REAL" in plan

    code, output = _answer_on_terminal(workspace, ["drill", "run", "site-lost", "--for-real"], b"yes")
    assert code == 38 and "the answer was 'yes', not 'site-lost'" in output, output
    assert not production.exists() and _jobs(workspace) == []

    code, output = _answer_on_terminal(workspace, ["drill", "run", "site-lost", "--for-real"], b"site-lost")
    assert code == 0, output
    assert "RECOVERS TO" in output and "passed (FOR REAL: recovered into production)" in output
    assert (production / "db" / "db" / "rows.csv").read_bytes() == b"1,orders\n"
    assert (production / "app" / "app" / "app.ini").read_bytes() == b"database = orders\n"
    [job] = _jobs(workspace)
    assert job["details"]["for_real"] is True and job["details"]["passed"] is True
    folder = Path(job["details"]["report"]["json"]).parent
    report = json.loads((folder / "report.json").read_text())
    assert report["for_real"] is True and report["left_behind"] == []
    assert {item["kind"] for item in report["created"]} == {"recovered in production"}
    assert [step["detail"] for step in report["steps"]] == ["exit status 0", "db/rows.csv has the expected SHA-256"]
    assert "FOR REAL" in (folder / "report.md").read_text() and "kept (production)" in (folder / "report.html").read_text()
