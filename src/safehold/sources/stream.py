"""A program's standard output as a file item's content stream: ``ChildOutput``.

Used by the sources that store what a program writes (``postgres``: pg_dump, pg_dumpall,
pg_basebackup; ``command``: any program). The output goes straight from the pipe through the
chunker into the repository: nothing of it touches local disk. The stream reports end of file
only after the program has exited with status 0; any other end (a non-zero status, a signal, a
program that cannot start) raises the error the caller supplies, from ``readinto`` itself, so the
archiver stops before the snapshot is written. The program's standard error is read on a thread
(a full stderr pipe would otherwise block it), handed line by line to ``on_stderr`` and its tail
kept for the error message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import deque
from typing import Callable, Sequence

from ..errors import SafeholdError

STDERR_TAIL = 20  # lines of standard error kept for the error message


class ChildOutput:
    """Starts ``argv`` on first use and reads its standard output.

    ``fail(detail)`` builds the error raised when the program does not exit with status 0.
    ``on_stderr(line)`` receives each line of its standard error (decoded, without newline).
    Closing before the end (an error elsewhere in the backup) kills the program's process group.
    """

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 fail: Callable[[str], SafeholdError], on_stderr: Callable[[str], None] | None = None,
                 shell: bool = False) -> None:
        self.fail = fail
        self.on_stderr = on_stderr or (lambda line: None)
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.bytes_read = 0
        try:
            # Its own session, so that closing early ends a shell's whole pipeline, not just the shell.
            self.process = subprocess.Popen(argv if not shell else argv[0], shell=shell, env=env, cwd=cwd,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise fail(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        assert self.process.stdout is not None
        self.stdout = self.process.stdout
        self._stderr_thread = threading.Thread(target=self._drain_stderr, name="safehold-child-stderr", daemon=True)
        self._stderr_thread.start()
        self._finished = False
        self.on_close: Callable[[], None] | None = None  # e.g. cancel a deadline

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            try:
                self.on_stderr(line)
            except Exception:  # a logging hook must not stop the drain (the child would block)
                pass

    def readinto(self, buffer) -> int:
        count = self.stdout.readinto(buffer)
        if count:
            self.bytes_read += count
            return count
        self._finish()
        return 0

    def read(self, size: int = -1) -> bytes:
        data = self.stdout.read(size)
        if data:
            self.bytes_read += len(data)
            return data
        self._finish()
        return b""

    def _finish(self) -> None:
        if self._finished:
            return
        status = self.process.wait()
        self._stderr_thread.join()
        self._finished = True
        if status != 0:
            raise self.fail(self.failure(status))

    def failure(self, status: int) -> str:
        """'exit status 1: <last lines of stderr>' or 'killed by signal 9'."""
        detail = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        errors = " | ".join(line for line in self.tail if line.strip())
        return f"{detail} after {self.bytes_read} bytes" + (f": {errors}" if errors else "")

    def close(self) -> None:
        """Kill the program if it still runs (the backup stopped early); reap it either way."""
        if self.on_close is not None:
            self.on_close()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait()
        self.stdout.close()
        self._stderr_thread.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> ChildOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
