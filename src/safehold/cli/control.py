"""Control-plane commands: ``status``, ``restore-test`` and ``scheduler run``.

Commands parse arguments, call ``safehold.engine`` / ``safehold.scheduler`` and print.
"""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOption, RepositoryOption, context
from .output import human_bytes, print_json, print_table


scheduler_app = typer.Typer(help="The job scheduler without the HTTP server.", no_args_is_help=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _art_cell(trend) -> str:
    """The newest passing ART as a share of the RTO, its trend and verdict: '41% of RTO, rising'."""
    if trend is None or trend.latest is None:
        return "-"
    latest = trend.latest
    share = f"{latest.art_seconds / trend.rto_seconds:.0%}" if trend.rto_seconds else "?"
    parts = [f"{latest.art_seconds:.1f}s = {share} of RTO ({latest.kind})"]
    if trend.trend:
        parts.append(trend.trend)
    if trend.state in ("approaching", "at-risk", "could-tighten"):
        parts.append(trend.state.upper() if trend.state != "could-tighten" else trend.state)
    return ", ".join(parts)


def status(json_output: bool = JsonOption) -> None:
    """Each target's tier, RPO, age of its last good backup, compliance and last restore test."""
    from ..engine.status import target_statuses

    ctx, _ = context(json_output, progress=False)
    statuses = target_statuses(ctx)
    if json_output:
        print_json({"targets": [entry.as_dict() for entry in statuses]})
        return
    rows = []
    for entry in statuses:
        test = entry.last_restore_test
        if test is None:
            drill = "never"
        else:
            art = f"{test.art_seconds:.1f}s" if test.art_seconds is not None else "?"
            drill = (f"{'passed' if test.passed else 'FAILED'} {test.time:%Y-%m-%d %H:%M}, ART {art} / "
                     f"RTO {_age(test.rto_seconds)} {'ok' if test.rto_met else 'MISSED'}")
        last = entry.last_status or ""
        if entry.skipped_items:
            last += f" ({entry.skipped_items} skipped)"
        copies = ", ".join(f"{name} {f'{when:%Y-%m-%d %H:%M}' if when else 'never'}"
                           for name, when in entry.copies.items())
        state = entry.ransomware or {}
        verdict = "SUSPICIOUS" if state.get("suspicious") else state.get("verdict", "")
        rows.append([entry.name, entry.tier, entry.source_type, _age(entry.rpo_seconds), _age(entry.age_seconds),
                     "yes" if entry.compliant else "NO", last, drill, _art_cell(entry.art), verdict]
                    + ([copies] if ctx.config.copies else []))
    print_table(["target", "tier", "source", "rpo", "age", "compliant", "last backup", "restore test", "ART trend",
                 "verdict"]
                + (["copies (last)"] if ctx.config.copies else []), rows)
    bad = [entry.name for entry in statuses if not entry.compliant]
    typer.echo(f"{len(statuses) - len(bad)} of {len(statuses)} target(s) within their RPO")
    suspicious = [entry for entry in statuses if (entry.ransomware or {}).get("suspicious")]
    for entry in suspicious:
        state = entry.ransomware or {}
        clean = state.get("latest_clean")
        typer.echo(f"SUSPICIOUS: {entry.name}: possible ransomware since snapshot {str(state.get('since'))[:8]} "
                   f"(score {state.get('score', 0):g}); last clean: {clean[:8] if clean else 'none'} "
                   f"('safehold snapshots --target {entry.name}', then 'safehold mark ID clean' or restore "
                   f"latest-clean:{entry.name})")
    partial = [entry.name for entry in statuses if entry.skipped_items]
    if partial:
        typer.echo(f"{len(partial)} target(s) whose newest backup left items out: {', '.join(partial)} "
                   "(safehold jobs --status partial)")
    for entry in statuses:
        trend = entry.art
        if trend is None or trend.latest is None:
            continue
        percent = f"{trend.latest.art_seconds / trend.rto_seconds:.0%}" if trend.rto_seconds else "?"
        if trend.state == "approaching":
            typer.echo(f"{entry.name}: recovery takes {percent} of its RTO ({_age(trend.rto_seconds)}): speed it up or "
                       "raise the RTO before it is missed (runbooks/RTOApproaching.md)")
        elif trend.state == "at-risk":
            typer.echo(f"{entry.name}: recovery takes {percent} of its RTO ({_age(trend.rto_seconds)}): the RTO is "
                       "missed (runbooks/RTOAtRisk.md)")
        elif trend.state == "could-tighten":
            typer.echo(f"{entry.name}: the last {len(trend.passing)} recoveries took at most "
                       f"{_age(max(sample.art_seconds for sample in trend.passing))} of an RTO of "
                       f"{_age(trend.rto_seconds)}: the RTO (tier {entry.tier}) could be tightened")


def restore_test(
    target: str = typer.Option(..., "--target", "-t", help="Target whose newest snapshot to test."),
    repository: Optional[str] = RepositoryOption,
    snapshot: str = typer.Option("latest", "--snapshot", help="Another snapshot of the target: an id (prefix) or "
                                 "'latest-clean' (the newest judged clean of ransomware)."),
    json_output: bool = JsonOption,
) -> None:
    """Restore the newest snapshot into a sandbox, run the health check, compare the ART with the RTO."""
    from ..engine.restore_test import run_restore_test

    ctx, _ = context(json_output, progress=False, repository=repository)
    result = run_restore_test(ctx, target, snapshot_ref=snapshot)
    if json_output:
        print_json(result.as_dict())
        return
    typer.echo(f"{result.target}: snapshot {result.snapshot_id[:8]} restored ({result.files} item(s), "
               f"{human_bytes(result.bytes_restored)}); health check {result.health_check} passed: {result.detail}")
    typer.echo(f"actual recovery time {result.art_seconds:.2f}s, RTO {_age(result.rto_seconds)}: "
               f"{'met' if result.rto_met else 'NOT met'}")


@scheduler_app.command("run")
def scheduler_run(
    once: bool = typer.Option(False, "--once", help="Queue what is due now (no jitter), run it all, exit."),
    poll: float = typer.Option(5.0, "--poll", min=0.1, help="Seconds between scheduling passes."),
    stop_timeout: float = typer.Option(
        30.0, "--stop-timeout", min=0, help="On SIGTERM, seconds running jobs get to finish before they are "
        "recorded as interrupted."),
) -> None:
    """Run the scheduler in the foreground (no HTTP server) until SIGTERM or Ctrl-C."""
    import logging
    import signal
    import threading

    from ..scheduler import Scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx, _ = context(progress=False)
    if once:
        import datetime as dt

        scheduler = Scheduler(ctx, poll_interval=poll, jitter=dt.timedelta(0))
        scheduler.acquire_lease()
        scheduler.recover()
        report = scheduler.run_until_idle()
        scheduler.stop(timeout=None)
        typer.echo(f"queued {len(report.queued)} job(s), ran {len(report.dispatched)}")
        return
    scheduler = Scheduler(ctx, poll_interval=poll)
    scheduler.acquire_lease()  # refused here, with the holder named, before any signal handling
    stopping = threading.Event()

    def on_signal(number: int, _frame: object) -> None:
        logging.getLogger("safehold.scheduler").info("received %s; stopping", signal.Signals(number).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheduler.start()
    while not stopping.wait(1.0):
        pass
    interrupted = scheduler.stop(stop_timeout)
    if interrupted:
        typer.echo(f"stopped; job(s) {', '.join(map(str, interrupted))} recorded as interrupted", err=True)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("restore-test")(restore_test)
    app.add_typer(scheduler_app, name="scheduler")
