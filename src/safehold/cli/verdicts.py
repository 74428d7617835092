"""``safehold scan`` and ``safehold mark``: the ransomware verdict of a snapshot.

Contract for scripts: ``scan`` exits 0 whatever the verdict (the verdict is in its output and
``--json``); ``mark`` exits 0 once the record is written. Errors keep their exit codes.
"""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOption, context


def scan(
    snapshot: str = typer.Argument(..., help="Snapshot id (prefix), 'latest:TARGET' or 'latest-clean:TARGET'."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="With 'latest': the target's newest."),
    json_output: bool = JsonOption,
) -> None:
    """Recompute a snapshot's ransomware signals and verdict against its parent (for snapshots written
    before verdicts existed); the result is recorded beside it, the snapshot is not changed."""
    from ..engine.verdicts import scan_snapshot
    from .output import print_json

    ctx, display = context(json_output)
    with display:
        result = scan_snapshot(ctx, snapshot, target)
    if json_output:
        print_json(result)
        return
    _print(result)


def mark(
    snapshot: str = typer.Argument(..., help="Snapshot id (prefix) or 'latest:TARGET'."),
    verdict: str = typer.Argument(..., help="clean or suspicious."),
    note: Optional[str] = typer.Option(None, "--note", help="Why (kept with the record)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="With 'latest': the target's newest."),
    json_output: bool = JsonOption,
) -> None:
    """Record an operator's judgement of a snapshot: it overrides the computed verdict, feeds the target's
    baseline, and 'clean' ends an alarm (later snapshots are restore points again)."""
    from ..engine.verdicts import mark_snapshot
    from .output import print_json

    ctx, _ = context(json_output, progress=False)
    result = mark_snapshot(ctx, snapshot, verdict, note=note, target=target)
    if json_output:
        print_json(result)
        return
    _print(result)


def _print(result: dict) -> None:
    from ..text import printable

    verdict = result["verdict"]
    line = f"snapshot {result['snapshot'][:8]} of {printable(result['target'])}: {verdict['verdict']}"
    if verdict["source"] == "operator":
        line += " (marked by the operator)"
    else:
        line += f", score {verdict['score']:g}"
    typer.echo(line)
    for reason in verdict["reasons"]:
        extension = f" .{reason['extension']}" if reason.get("extension") else ""
        typer.echo(f"  {reason['signal']}{extension}: {reason['value']:g} (threshold {reason['threshold']:g})"
                   + ("  [context]" if reason["context"] else ""))
        for path in reason["files"]:
            typer.echo(f"    {path}")
    state = result.get("state") or {}
    if state.get("suspicious"):
        typer.echo(f"target {printable(result['target'])} is suspicious since snapshot {state['since'][:8]}")
    clean = state.get("latest_clean")
    typer.echo(f"latest-clean:{printable(result['target'])} is {clean[:8] if clean else 'none'}")


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
    app.command("mark")(mark)
