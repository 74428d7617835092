"""``safehold repair index`` and ``safehold repair snapshots``.

Contract for scripts (documented in docs/cli.md): exit 0 when the command did its work (also when
there was nothing to repair), the error's exit code otherwise; ``--json`` prints the report on
stdout; ``--dry-run`` writes nothing.
"""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOption, context

repair_app = typer.Typer(help="Repair a damaged repository: rebuild the index, rewrite damaged snapshots.",
                         no_args_is_help=True)

WaitOption = typer.Option(0.0, "--wait", help="Seconds to wait for a conflicting lock.")


@repair_app.command("index")
def repair_index(
    read_all_packs: bool = typer.Option(False, "--read-all-packs", help="Read the header of every pack and rebuild "
                                        "the index from headers alone (default: only packs no index names)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Report what would change; write nothing."),
    wait: float = WaitOption,
    json_output: bool = JsonOption,
) -> None:
    """Rebuild the index from the pack headers (a lost or damaged index object). Reads pack headers, not data."""
    from ..engine.repair import repair_index_job
    from .output import error_console, print_json

    ctx, display = context(json_output)
    with display:
        report = repair_index_job(ctx, read_all_packs=read_all_packs, dry_run=dry_run, wait=wait)
    if json_output:
        print_json(report.as_dict())
        return
    for damaged in report.index_objects_damaged:
        error_console.print(f"[yellow]damaged index object[/] {damaged['name'][:16]}: {damaged['reason']}",
                            highlight=False, soft_wrap=True)
    for pack in report.packs_added:
        typer.echo(f"added:   pack {pack} (indexed from its header)")
    for removed in report.packs_removed:
        typer.echo(f"removed: pack {removed['pack']}: {removed['reason']}")
    for unreadable in report.packs_unreadable:
        error_console.print(f"[yellow]unreadable[/]: pack {unreadable['pack']}: {unreadable['reason']}",
                            highlight=False, soft_wrap=True)
    typer.echo(f"{report.packs_stored} pack(s) found, {report.headers_read} header(s) read; "
               f"{len(report.packs_added)} added to the index, {len(report.packs_removed)} removed from it")
    if not report.changed:
        typer.echo("the index is complete: nothing to do")
    elif dry_run:
        typer.echo("dry run: nothing written")
    else:
        typer.echo(f"wrote {report.index_objects_written} index object(s), replaced {report.index_objects_removed}"
                   + (f", {len(report.retained)} kept under Object Lock" if report.retained else ""))


@repair_app.command("snapshots")
def repair_snapshots(
    snapshot_ids: Optional[list[str]] = typer.Argument(
        None, metavar="ID", help="Only these snapshots (ids or unique prefixes; default: all)."),
    forget: bool = typer.Option(False, "--forget", help="Forget each damaged original once its repaired copy is "
                                "written (default: keep the originals)."),
    read_data: bool = typer.Option(False, "--read-data", help="Also read the packs the snapshots use and drop files "
                                   "whose data fails verification (default: only missing or truncated data)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Name the files that would be dropped; write nothing."),
    wait: float = WaitOption,
    json_output: bool = JsonOption,
) -> None:
    """Write damaged snapshots again without their damaged files, tagged 'repaired'; name every file dropped."""
    from ..engine.repair import repair_snapshots_job
    from ..text import printable
    from .output import error_console, print_json

    ctx, display = context(json_output)
    with display:
        report = repair_snapshots_job(ctx, list(snapshot_ids or []) or None, read_data=read_data,
                                      forget_originals=forget, dry_run=dry_run, wait=wait)
    if json_output:
        print_json(report.as_dict())
        return
    for record in report.repaired:
        if record.repaired:
            outcome = f"repaired as {record.repaired[:8]}" + (", original forgotten" if record.forgotten else "")
        else:
            outcome = "would be repaired"
        typer.echo(f"snapshot {record.original[:8]} ({record.target}, {record.time[:19].replace('T', ' ')}): "
                   f"{outcome}; {len(record.dropped)} file(s) dropped, {record.items_kept} item(s) kept")
        for path in record.dropped:
            typer.echo(f"  dropped {printable(path)}")
        if record.stream_damaged:
            typer.echo(f"  item stream damaged: {printable(record.stream_damaged)}")
    for record in report.nothing_left:
        error_console.print(f"[red]snapshot {record.original[:8]}[/] ({record.target}): {record.note}",
                            highlight=False, soft_wrap=True)
    for done in report.already_repaired:
        typer.echo(f"snapshot {done['original'][:8]}: repaired before as {done['repaired'][:8]}")
    for warning in report.warnings:
        error_console.print(f"[yellow]warning[/]: {warning}", highlight=False, soft_wrap=True)
    typer.echo(f"{report.snapshots_checked} snapshot(s) checked: {len(report.intact)} intact, "
               f"{len(report.repaired)} repaired, {len(report.nothing_left)} with nothing left"
               + (" (dry run: nothing written)" if dry_run else ""))
    if report.repaired and not forget and not dry_run:
        typer.echo("the damaged originals are kept: 'safehold forget ID' (or 'repair snapshots --forget') removes them")


def register(app: typer.Typer) -> None:
    app.add_typer(repair_app, name="repair")
