"""A stored file piped into a program's standard input: ``Feed``.

Used by the postgres destination (into ``pg_restore``) and the command destination (into any
program: ``mysql``, ``mongorestore --archive``, ``ldapadd`` ...). Every chunk is read through the
verifying reader and written to the program as it comes, so nothing of the file lands on local
disk. The program's standard error is drained on a thread and its last lines kept for the error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import deque
from typing import Callable, Sequence

from .base import BlobReader

STDERR_TAIL = 20


def chunk_ids(item: dict) -> list[bytes]:
    chunks = item.get("chunks") or b""
    return [chunks[i : i + 32] for i in range(0, len(chunks), 32)]


class Feed:
    """Starts ``argv`` (or a shell command) with a pipe on its standard input."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 shell: bool = False, stdout_to_stderr: bool = True) -> None:
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.lines: list[str] = []
        self.process = subprocess.Popen(argv[0] if shell else list(argv), shell=shell, env=env, cwd=cwd,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE if stdout_to_stderr else None,
                                        stderr=subprocess.STDOUT if stdout_to_stderr else subprocess.PIPE,
                                        start_new_session=True)
        self._thread = threading.Thread(target=self._drain, daemon=True, name="safehold-feed-output")
        self._thread.start()

    def _drain(self) -> None:
        stream = self.process.stdout if self.process.stdout is not None else self.process.stderr
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if len(self.lines) < 200:
                self.lines.append(line)

    def pump(self, reader: BlobReader, item: dict, progress: Callable[[int], None]) -> int:
        """Write the item's content; returns the bytes written. BrokenPipeError when the program
        stopped reading (it failed: see ``finish``); the reader's errors as raised."""
        assert self.process.stdin is not None
        written = 0
        for blob_id in chunk_ids(item):
            data = reader.read_blob(blob_id)
            self.process.stdin.write(data)
            written += len(data)
            progress(written)
        return written

    def finish(self) -> tuple[int, str]:
        """Close its input and wait; (exit status, its last lines of output)."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except BrokenPipeError:
            pass
        status = self.process.wait()
        self._thread.join(timeout=30)
        return status, " | ".join(line for line in self.tail if line.strip())

    def kill(self) -> None:
        """Stop it (a failed or abandoned restore); idempotent."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.process.wait()
        self._thread.join(timeout=10)
