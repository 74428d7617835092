"""Any program's standard output as one file: ``CommandSource``.

The command runs through ``/bin/sh -c`` in its own session; its output is streamed through the
chunker into the repository (``stream.ChildOutput``), so nothing of it is written to local disk.
The backup fails, and no snapshot is written, unless it exits with status 0 within ``timeout``;
its standard error goes to the job log (the first lines as warnings, the last ones in the error).
This covers MySQL (mysqldump), MongoDB (mongodump --archive), LDAP (slapcat) and the like without a
driver each; ``safehold restore`` brings the file back, or pipes it into a command.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

from ..errors import CommandFailed
from .base import FileItem, View
from .stream import ChildOutput

STDERR_LINES = 50  # lines of standard error copied to the job log


class CommandSource:
    def __init__(self, run: str, name: str, cwd: str | None = None, timeout: timedelta | float | None = None) -> None:
        self.run = run
        self.name = name
        self.cwd = cwd
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.warnings: list[str] = []
        self._lines = 0

    @contextmanager
    def open(self, parent_token: dict | None = None) -> Iterator[View]:
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise CommandFailed(name=self.name, detail=f"working directory {self.cwd} does not exist")
        yield View(kind="files", paths=[self.run], items=self._items, token={"command": {"name": self.name}},
                   warnings=self.warnings)

    def _items(self) -> Iterator[FileItem]:
        now = time.time_ns()  # never the parent's: the output is always read again
        yield FileItem(path=self.name.encode(), type="file", mode=0o600, uid=os.getuid(), gid=os.getgid(), user="",
                       group="", mtime_ns=now, ctime_ns=now, atime_ns=now, inode=0, device=0, size=0,
                       open=self._start)

    def _start(self) -> ChildOutput:
        def fail(detail: str) -> CommandFailed:
            if timer is not None and timer.fired:
                detail = f"still running after {self.timeout:.0f}s, stopped ({detail})"
            return CommandFailed(name=self.name, detail=detail)

        def stderr(line: str) -> None:
            if line.strip() and self._lines < STDERR_LINES:
                self.warnings.append(f"{self.name}: {line}")
            self._lines += 1

        timer: _Deadline | None = None
        output = ChildOutput([self.run], shell=True, cwd=self.cwd, fail=fail, on_stderr=stderr)
        if self.timeout is not None:
            timer = _Deadline(output, self.timeout)
            output.on_close = timer.cancel
        return output


class _Deadline:
    """Kills the command's process group when it outlives its timeout."""

    def __init__(self, output: ChildOutput, seconds: float) -> None:
        self.fired = False
        self._output = output
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        if self._output.process.poll() is None:
            self.fired = True
            try:
                os.killpg(self._output.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
