"""``safehold maintenance`` and ``safehold repo audit-immutability`` (S3 Object Lock)."""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOption, context


repo_app = typer.Typer(help="Repository-wide checks.", no_args_is_help=True)


def maintenance(
    renew_within_days: Optional[float] = typer.Option(
        None, "--renew-within-days", min=0,
        help="Extend objects whose lock ends within this many days (default: half of object_lock.days)."),
    json_output: bool = JsonOption,
) -> None:
    """Extend Object Lock retention on everything the kept snapshots need, before it runs out (run daily)."""
    from datetime import timedelta

    from ..engine.immutability import run_maintenance
    from .output import print_json

    ctx, _ = context(json_output)
    report = run_maintenance(ctx, None if renew_within_days is None else timedelta(days=renew_within_days))
    if json_output:
        print_json(report.as_dict())
        return
    if not report.retention_enabled:
        typer.echo("the repository has no object_lock configured: nothing to extend")
        return
    extended = ", ".join(f"{count} {kind}" for kind, count in sorted(report.objects_extended.items())) or "nothing"
    typer.echo(f"{report.snapshots_kept} kept snapshot(s), {report.objects_checked} object(s) checked; "
               f"extended {extended}" + (f" until {report.retained_until}" if report.retained_until else ""))
    if report.earliest_until:
        typer.echo(f"every checked object is now locked until at least {report.earliest_until}")
    for name in report.missing:
        typer.echo(f"missing: {name} (run 'safehold check')", err=True)


@repo_app.command("audit-immutability")
def audit_immutability(
    min_remaining_days: float = typer.Option(
        1.0, "--min-remaining-days", min=0,
        help="Fail when an object a kept snapshot needs is locked for less than this."),
    json_output: bool = JsonOption,
) -> None:
    """Check that backups cannot be deleted or altered: bucket Object Lock, lock period, every kept chain."""
    from datetime import timedelta

    from ..engine.immutability import audit_immutability as audit
    from ..errors import ImmutabilityAuditFailed


    ctx, _ = context(json_output)
    try:
        report = audit(ctx, timedelta(days=min_remaining_days))
    except ImmutabilityAuditFailed as exc:
        _print_audit(exc.fields["report"], json_output)
        raise
    _print_audit(report, json_output)


def _print_audit(report, json_output: bool) -> None:
    from .output import error_console, print_json

    if json_output:
        print_json(report.as_dict())
        return
    colours = {"error": "red", "warning": "yellow", "info": "green"}
    for finding in report.findings:
        error_console.print(f"[{colours[finding.level]}]{finding.level}[/] {finding.check}: {finding.message}",
                            highlight=False, soft_wrap=True, markup=True)
        if finding.fix:
            error_console.print(f"  fix: {finding.fix}", highlight=False, soft_wrap=True, markup=False)
    typer.echo(f"{report.snapshots_kept} kept snapshot(s), {report.objects_checked} object(s) checked; "
               + ("immutable" if report.ok else "NOT immutable"))


def register(app: typer.Typer) -> None:
    app.command("maintenance")(maintenance)
    app.add_typer(repo_app, name="repo")
