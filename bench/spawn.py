"""Run one command and record its wall time and rusage:  python -I -S spawn.py RESULT.json CMD [ARG...]

Why a launcher: a child's ``ru_maxrss`` starts from the resident size of the
process that forked it (the kernel keeps the high-water mark across exec), so
forking the tools straight from the harness, which holds NumPy and data
buffers, would report ~100 MiB for any tool. This launcher is a bare Python
(-I -S, only ``os``, ``sys``, ``time``, ``json``) of ~5 MiB, so the floor is small.
"""

import json
import os
import sys
import time


def main() -> int:
    result, cmd = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            os.write(2, f"spawn: cannot run {cmd[0]}: {exc}\n".encode())
        os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as f:
        json.dump({"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                   "peak_rss_bytes": usage.ru_maxrss * 1024, "returncode": code}, f)
    return 0 if code == 0 else (code if code > 0 else 128 - code)


if __name__ == "__main__":
    sys.exit(main())
