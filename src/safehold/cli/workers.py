"""Scale-out commands: ``worker`` (run jobs from the procrastinate queue) and ``workers`` (list them).

Commands parse arguments, call ``safehold.scheduler.queue`` and print.
"""

from __future__ import annotations

from typing import Optional

import typer

from .app import JsonOption, context
from .output import print_json, print_table


def _split(values: Optional[list[str]]) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def worker(
    queues: Optional[list[str]] = typer.Option(
        None, "--queues", "-q", help="Queues to take jobs from (repeat or comma-separate); default: 'default'."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Jobs this worker runs at once."),
    host_labels: Optional[list[str]] = typer.Option(
        None, "--host-label", help="A label of this host (repeatable); the worker also takes queue 'label:NAME', "
        "where scheduler.placement sends the targets only this host can reach."),
    apply_schema: bool = typer.Option(
        False, "--apply-schema", help="Create procrastinate's tables in the queue database first, if missing."),
) -> None:
    """Run jobs from the job queue (scheduler.executor: procrastinate) until SIGTERM or Ctrl-C."""
    import logging

    from ..scheduler.queue import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx, _ = context(progress=False)
    run_worker(ctx, queues=_split(queues) or None, concurrency=concurrency, labels=_split(host_labels),
               apply=apply_schema)


def workers(json_output: bool = JsonOption) -> None:
    """The workers of the job queue: labels, running jobs, last heartbeat."""
    from ..scheduler.queue import list_workers

    ctx, _ = context(json_output, progress=False)
    found = list_workers(ctx.config.scheduler)
    if json_output:
        print_json({"workers": [entry.as_dict() for entry in found]})
        return
    rows = [[str(entry.id), entry.hostname or "?", str(entry.pid or "?"), ",".join(entry.labels) or "-",
             ",".join(entry.queues) or "?", ",".join(map(str, entry.running_jobs)) or "-",
             f"{entry.heartbeat_age_seconds:.0f}s ago", "up" if entry.alive else "DOWN"]
            for entry in found]
    print_table(["id", "host", "pid", "labels", "queues", "running jobs", "heartbeat", "state"], rows)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("workers")(workers)
