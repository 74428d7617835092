"""``safehold drill plan NAME`` and ``safehold drill run NAME`` (logic in ``engine.drill``).

Contract for scripts: ``plan`` exits 0 when the drill is ready to run and DrillNotReady's code
when its plan lists problems (the plan is printed either way); ``run`` exits 0 when every step
passed within its RTO, DrillFailed's code otherwise (the evidence report is written in both
cases). ``--json`` prints the plan or the evidence on stdout.

``run --for-real`` recovers into production (each step's ``recover_to``) after a confirmation on
the terminal; ``--yes`` answers it for scripts. Without a terminal and without ``--yes`` it
refuses (DrillNotConfirmed) before anything is restored.
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
               repository: Optional[str] = RepositoryOption,
               for_real: bool = typer.Option(False, "--for-real", help="Plan the real recovery: each step into its "
                                             "recover_to (production)."),
               json_output: bool = JsonOption) -> None:
    """Show what 'safehold drill run NAME' would do: order, snapshots and their age, what is missing. Writes nothing."""
    from .. import errors
    from ..engine.drill import plan_drill
    from .output import print_json

    ctx, display = context(json_output)
    with display:
        plan = plan_drill(ctx, name, repository=repository, for_real=for_real)
    if json_output:
        print_json(plan.as_dict())
    else:
        _print_plan(plan)
    if plan.problems:
        raise errors.DrillNotReady(name=name, detail="; ".join(plan.problems))


def _print_plan(plan) -> None:
    typer.echo(f"drill {plan.drill}: scenario {plan.scenario} (runbook {plan.runbook})")
    where = ("FOR REAL: into production (recover_to), nothing removed" if plan.for_real
             else f"sandboxes under {plan.sandbox_directory}")
    typer.echo(f"{where}; RPO measured from {plan.reference_time}"
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
                       + (f"; brought up in EC2 {step.ec2_region}" if step.ec2_region else "")
                       + (f"; RECOVERS TO {step.recover_to}" if step.recover_to else ""))
    for problem in plan.problems:
        typer.echo(f"missing: {problem}")
    typer.echo("ready to run" if not plan.problems else f"{len(plan.problems)} problem(s): not ready")


@drill_app.command("run")
def drill_run(
    name: str = typer.Argument(..., help="Name of the drill."),
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for the evidence report "
                                          "(report.json, report.md, report.html); default <state_dir>/drills/NAME-jobID."),
    repository: Optional[str] = RepositoryOption,
    for_real: bool = typer.Option(False, "--for-real", help="A real recovery: restore each step into its "
                                  "recover_to (production) and keep it, after a confirmation."),
    yes: bool = typer.Option(False, "--yes", help="With --for-real: do not ask (for scripts)."),
    json_output: bool = JsonOption,
) -> None:
    """Run the drill in sandboxes: restore in dependency order, check, measure ART and RPO, clean up, report."""
    from .. import errors
    from ..engine.drill import plan_drill, run_drill
    from .output import print_json

    ctx, display = context(json_output)
    if for_real and not yes:
        import sys

        if not sys.stdin.isatty():
            raise errors.DrillNotConfirmed(name=name, detail="no terminal to ask on and no --yes")
        with display:
            plan = plan_drill(ctx, name, repository=repository, for_real=True)
        if plan.problems:
            raise errors.DrillNotReady(name=name, detail="; ".join(plan.problems))
        _print_plan(plan)
        typer.echo("This restores into production and removes nothing afterwards.", err=True)
        answer = typer.prompt(f"Type the drill's name ({name}) to recover for real", default="", show_default=False,
                              err=True)
        if answer.strip() != name:
            raise errors.DrillNotConfirmed(name=name, detail=f"the answer was {answer.strip()!r}, not {name!r}")
    try:
        with display:
            result = run_drill(ctx, name, report_dir=report, repository=repository, for_real=for_real)
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
    typer.echo(f"drill {name} passed{' (FOR REAL: recovered into production)' if for_real else ''}; "
               f"evidence report in {result.report_dir}")


def _print_failed_evidence(error) -> None:
    import json

    from .output import print_json

    path = Path(str(error.fields.get("report", ""))) / "report.json"
    if path.is_file():
        print_json(json.loads(path.read_text(encoding="utf-8")))


def register(app: typer.Typer) -> None:
    app.add_typer(drill_app, name="drill")
