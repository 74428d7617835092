"""``safehold drill plan NAME`` and ``safehold drill run NAME`` (logic in ``engine.drill``).

Contract for scripts: ``plan`` exits 0 when the drill is ready to run and DrillNotReady's code
when its plan lists problems (the plan is printed either way); ``run`` exits 0 when every step
passed within its RTO, DrillFailed's code otherwise (the evidence report is written in both
cases). ``--json`` prints the plan or the evidence on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import JsonOption, RepositoryOption, context

drill_app = typer.Typer(help="Disaster-recovery drills defined under 'drills:' in targets.yml.",
                        no_args_is_help=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    from ..config.durations import format_duration
    import datetime as dt

    return format_duration(dt.timedelta(seconds=max(0, round(seconds)))) if seconds >= 1 else f"{seconds:.1f}s"


@drill_app.command("plan")
def drill_plan(name: str = typer.Argument(..., help="Name of the drill."),
               repository: Optional[str] = RepositoryOption, json_output: bool = JsonOption) -> None:
    """Show what 'safehold drill run NAME' would do: order, snapshots and their age, what is missing. Writes nothing."""
    from .. import errors
    from ..engine.drill import plan_drill
    from .output import print_json

    ctx, display = context(json_output)
    with display:
        plan = plan_drill(ctx, name, repository=repository)
    if json_output:
        print_json(plan.as_dict())
    else:
        typer.echo(f"drill {plan.drill}: scenario {plan.scenario} (runbook {plan.runbook})")
        typer.echo(f"sandboxes under {plan.sandbox_directory}; RPO measured from {plan.reference_time}"
                   + (f"; restoring from copy {plan.repository}" if plan.repository else ""))
        for number, wave in enumerate(plan.waves, 1):
            typer.echo(f"wave {number}:")
            for target in wave:
                step = next(step for step in plan.steps if step.target == target)
                snapshot = (f"snapshot {step.snapshot_id[:8]} of {step.snapshot_time} (age {_age(step.snapshot_age_seconds)}"
                            f", RPO {_age(step.rpo_objective_seconds)} {'met' if step.rpo_met else 'MISSED'})"
                            if step.snapshot_id else "no snapshot")
                after = f" after {', '.join(step.after)}" if step.after else ""
                typer.echo(f"  {step.target} ({step.source}, tier {step.tier}){after}: {snapshot}; "
                           f"check: {step.check}; RTO {_age(step.rto_seconds)}"
                           + (f"; boots from {step.boot_from}" if step.boot_from else "")
                           + (f"; brought up in EC2 {step.ec2_region}" if step.ec2_region else ""))
        for problem in plan.problems:
            typer.echo(f"missing: {problem}")
        typer.echo("ready to run" if not plan.problems else f"{len(plan.problems)} problem(s): not ready")
    if plan.problems:
        raise errors.DrillNotReady(name=name, detail="; ".join(plan.problems))


@drill_app.command("run")
def drill_run(
    name: str = typer.Argument(..., help="Name of the drill."),
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for the evidence report "
                                          "(report.json, report.md, report.html); default <state_dir>/drills/NAME-jobID."),
    repository: Optional[str] = RepositoryOption,
    json_output: bool = JsonOption,
) -> None:
    """Run the drill in sandboxes: restore in dependency order, check, measure ART and RPO, clean up, report."""
    from .. import errors
    from ..engine.drill import run_drill
    from .output import print_json

    ctx, display = context(json_output)
    try:
        with display:
            result = run_drill(ctx, name, report_dir=report, repository=repository)
    except errors.DrillFailed as failed:
        if json_output:
            _print_failed_evidence(failed)
        raise
    if json_output:
        print_json(result.as_dict())
        return
    for step in result.evidence["steps"]:
        typer.echo(f"{step['target']}: {step['outcome']}, ART {step['art_seconds']}s (RTO {step['rto_seconds']:.0f}s "
                   f"{'met' if step['rto_met'] else 'MISSED'}), RPO {_age(step['rpo_seconds'])}")
    typer.echo(f"drill {name} passed; evidence report in {result.report_dir}")


def _print_failed_evidence(error) -> None:
    import json

    from .output import print_json

    path = Path(str(error.fields.get("report", ""))) / "report.json"
    if path.is_file():
        print_json(json.loads(path.read_text(encoding="utf-8")))


def register(app: typer.Typer) -> None:
    app.add_typer(drill_app, name="drill")
