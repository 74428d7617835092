"""Whether the process that recorded a running job is still there.

Used to recover from crashes: a job left 'running' by a process that is gone
(killed, crashed, host rebooted) is marked 'interrupted' the next time a
catalog is opened on that host.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

UTC = dt.UTC


def process_alive(pid: int, started_before: dt.datetime | None = None) -> bool:
    """Whether process ``pid`` on this host still runs the job that recorded it.

    A zombie counts as gone. On Linux, a process that started after
    ``started_before`` is a different one that reused the pid (typical after
    a reboot), so it counts as gone too.
    """
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) would send CTRL_C_EVENT
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start_time = stat
    if state == "Z":
        return False
    if started_before is not None and start_time is not None:
        # /proc gives start time in clock ticks since boot; allow for its
        # coarseness and small clock corrections. A wrong "gone" is repaired
        # when the live job finishes; a wrong "alive" would stick.
        return start_time <= started_before + dt.timedelta(seconds=5)
    return True


def _proc_stat(pid: int) -> tuple[str, dt.datetime | None] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    state = fields[0]
    try:
        ticks = int(fields[19])
        boot = _boot_time()
        start = dt.datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC) if boot else None
    except (IndexError, ValueError, OSError):
        start = None
    return state, start


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None
