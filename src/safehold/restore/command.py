"""One file of a snapshot piped into a command: ``CommandDestination``.

The counterpart of the ``command`` source (``mysqldump ... > dump.sql`` backed up, ``mysql <
dump.sql`` restored): the file's verified chunks go to the command's standard input as they are
read, nothing is written to local disk. The restore fails unless the command exits with status 0;
its output goes to the job log. What the command did cannot be undone by ``rollback``, which only
stops it.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import CommandFailed, DestinationError, PathNotInSnapshot, UsageError
from .base import BlobReader, Progress, RestoreReport, SnapshotInfo
from .options import CommandOptions
from .pipe import Feed


class CommandDestination:
    def __init__(self, options: CommandOptions, *, threads: int | None = None) -> None:
        self.options = options
        self.feed: Feed | None = None

    def plan(self, snapshot: SnapshotInfo, items: Any) -> Any:
        if snapshot.kind != "files":
            raise UsageError(f"snapshot {snapshot.short_id} holds {snapshot.kind}; only a file can be piped into "
                             "a command")
        files = [item for item in items if item.get("type") == "file"]
        wanted = self.options.file
        if wanted is not None:
            files = [item for item in files if item["path"] == os.fsencode(wanted)]
            if not files:
                raise PathNotInSnapshot(path=wanted, snapshot=snapshot.short_id)
        elif len(files) != 1:
            raise UsageError(f"snapshot {snapshot.short_id} holds {len(files)} files; name the one to pipe "
                             "into the command (file)")
        if self.options.cwd is not None and not os.path.isdir(self.options.cwd):
            raise DestinationError(destination=self.options.cwd, detail="the working directory does not exist")
        return files[0]

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport:
        name = os.fsdecode(plan["path"])
        try:
            self.feed = Feed([self.options.run], shell=True, cwd=self.options.cwd)
        except OSError as exc:
            raise DestinationError(destination=self.options.run, detail=exc.strerror or str(exc)) from None
        try:
            written: int | None = self.feed.pump(reader, plan, lambda count: progress(count, name))
        except BrokenPipeError:
            written = None
        status, output = self.feed.finish()
        lines = list(self.feed.lines)
        self.feed = None
        if status != 0 or written is None:
            raise CommandFailed(name=self.options.run,
                                detail=f"exit status {status} after reading part of {name}: {output or 'no output'}"
                                if written is None else f"exit status {status} after reading {name}: "
                                f"{output or 'no output'}")
        report = RestoreReport(files=1, bytes_written=written, details={"file": name, "command": self.options.run,
                                                                          "exit_status": status})
        report.log += [f"piped {name} ({written} bytes) into {self.options.run!r}"] + [f"  {line}" for line in lines]
        return report

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        if self.feed is not None:
            self.feed.kill()
            self.feed = None
