"""A drill with a postgres step (database first) and a files step after it: the chosen dump is
restored into a throwaway cluster, checked with sql, and the cluster is gone afterwards."""

from __future__ import annotations

import glob
import json

from safehold import errors


def clusters() -> set[str]:
    return set(glob.glob("/tmp/safehold-pg-*"))


def test_a_drill_restores_the_database_first_and_checks_it_with_sql(pg_url, make_database, safehold, tmp_path):
    import pytest

    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.drill import plan_drill, run_drill

    database = make_database(rows=300)
    first = safehold(f'{{type: postgres, dsn: "{pg_url}", databases: [{database}]}}')
    path = first.config.path
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.ini").write_text(f"database = {database}\n")
    drill = {"name": "db-host-lost", "scenario": "on_prem_host_failure", "steps": [
        {"target": "db", "check": {"type": "sql", "query": "select count(*) from orders", "expect": "=300"}},
        {"target": "app", "after": ["db"], "check": {"type": "command", "run": f"grep -q {database} */app.ini"}}]}
    with path.open("a") as file:
        file.write(f"  - {json.dumps({'name': 'app', 'tier': 3, 'source': {'type': 'files', 'paths': [str(app)]}})}\n"
                   f"drills:\n  - {json.dumps(drill)}\n")
    context = Context.load(path)
    try:
        backup_target(context, "db")
        backup_target(context, "app")
        plan = plan_drill(context, "db-host-lost")
        assert plan.problems == [] and plan.waves == [["db"], ["app"]]
        before = clusters()
        result = run_drill(context, "db-host-lost", report_dir=tmp_path / "report")
        db, app_step = result.evidence["steps"]
        assert db["outcome"] == app_step["outcome"] == "passed" and "returned 300" in db["detail"]
        assert db["ended"] <= app_step["started"] and db["snapshot_id"] == plan.steps[0].snapshot_id
        assert {item["kind"] for item in result.evidence["created"]} == {"sandbox folder", "throwaway PostgreSQL cluster"}
        assert result.evidence["left_behind"] == [] and clusters() == before

        drill["steps"][0]["check"]["expect"] = "=7"
        text = path.read_text()
        path.write_text(text[:text.index("drills:")] + f"drills:\n  - {json.dumps(drill)}\n")
        context.close()
        context = Context.load(path)
        with pytest.raises(errors.DrillFailed, match="db failed, app skipped"):
            run_drill(context, "db-host-lost", report_dir=tmp_path / "report2")
        assert clusters() == before
    finally:
        context.close()
