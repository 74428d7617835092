"""Printing for the CLI: JSON for scripts, Rich tables and progress bars for people.

Progress bars appear only when stderr is a terminal; pipes and cron get quiet output.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from datetime import datetime
from typing import Any, Iterable

from rich.console import Console

console = Console()
error_console = Console(stderr=True)


def configure_consoles() -> None:
    """Set both consoles up for the current sys.stdout/sys.stderr and environment, in place (the
    command server's process for a command calls it again once it holds the client's streams)."""
    console.__init__()  # type: ignore[misc]
    if not console.is_terminal:
        # Piped output: wide enough that tables never fold ids and times.
        console.__init__(width=200)  # type: ignore[misc]
    error_console.__init__(stderr=True)  # type: ignore[misc]


configure_consoles()


def human_bytes(count: float | int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "__dict__"):
        return value.__dict__
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


def print_table(columns: list[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


class ProgressDisplay:
    """A Rich progress bar fed by engine progress events; a no-op when not on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and error_console.is_terminal
        self._progress = None
        self._tasks: dict[str, object] = {}  # a bar per description: targets restored side by side
        self._lock = threading.Lock()  # events may come from several jobs' threads at once

    def __enter__(self) -> "ProgressDisplay":
        if self.enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[current]}"),
                console=error_console, transient=True,
            )
            self._progress.start()
        return self

    def __call__(self, event: dict) -> None:
        if self._progress is None:
            return
        description = " ".join(str(event[key]) for key in ("event", "target") if event.get(key))
        with self._lock:
            task = self._tasks.get(description)
            if task is None:
                task = self._tasks[description] = self._progress.add_task(
                    description, total=event.get("bytes_total"), current="")
            current = str(event.get("current", ""))[-40:]
            if "bytes_done" in event:
                self._progress.update(task, completed=event["bytes_done"], total=event.get("bytes_total"),
                                      current=current)
            elif "packs_done" in event:
                self._progress.update(task, completed=event["packs_done"], total=event["packs_total"])

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
