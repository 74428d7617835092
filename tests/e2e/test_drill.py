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
