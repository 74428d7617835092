#!/usr/bin/env python3
"""Issue 19, fifth round: where a command's peak resident memory is.

    .venv/bin/python bench/rss_peak.py [--tracemalloc] [--json FILE] -- -c CONFIG backup -t tree

Runs the safehold CLI in this process (``safehold.cli.main.run`` with the given arguments) with a
sampler thread that reads ``/proc/self/status`` every ``--interval`` seconds. Each time VmRSS
passes its highest value by more than 1 MiB it parses ``/proc/self/smaps`` (resident memory by
mapping: the heap, anonymous mappings, shared libraries and extension modules, other files) and
keeps the breakdown of the highest sample. With ``--tracemalloc`` it also keeps a
``tracemalloc`` snapshot taken when Python's traced memory is highest (by file and line: what
Python objects hold at the peak; tracemalloc slows the run and its own tables add to RSS, so the
RSS figures of such a run are not the command's). At exit it prints (and writes with ``--json``)
the RSS curve, the breakdown at the peak and the top allocation sites.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections import defaultdict

MiB = 2**20


def status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) * (1024 if "kB" in value else 1)
    return values


def smaps() -> dict[str, float]:
    """Resident MiB by mapping class: heap, anon (anonymous mappings: thread arenas, large
    mallocs, NumPy's buffers), stack, and per file (libraries and extension modules by base name)."""
    groups: dict[str, int] = defaultdict(int)
    name = "anon"
    with open("/proc/self/smaps") as handle:
        for line in handle:
            first = line.split(None, 6)
            if "-" in first[0] and len(first) >= 5 and ":" not in first[0]:
                path = first[5].strip() if len(first) > 5 else ""
                if not path:
                    name = "anon"
                elif path.startswith("["):
                    name = path
                else:
                    name = os.path.basename(path)
            elif first[0] == "Rss:":
                groups[name] += int(first[1]) * 1024
    return {key: round(value / MiB, 2) for key, value in sorted(groups.items(), key=lambda kv: -kv[1]) if value}


class Sampler(threading.Thread):
    def __init__(self, interval: float, trace: bool) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.trace = trace
        self.started = time.monotonic()
        self.curve: list[tuple[float, float]] = []
        self.peak = 0
        self.peak_breakdown: dict = {}
        self.peak_at = 0.0
        self.traced_peak = 0
        self.snapshot = None
        self.stop = threading.Event()

    def run(self) -> None:
        import tracemalloc

        last_curve = -1.0
        while not self.stop.wait(self.interval):
            now = time.monotonic() - self.started
            values = status()
            rss = values["VmRSS"]
            if now - last_curve >= 0.05:
                self.curve.append((round(now, 3), round(rss / MiB, 1)))
                last_curve = now
            if rss > self.peak + MiB:
                self.peak = rss
                self.peak_at = now
                self.peak_breakdown = {"status": {k: round(v / MiB, 1) if k != "Threads" else v
                                                  for k, v in values.items()},
                                       "smaps": smaps()}
            if self.trace and tracemalloc.is_tracing():
                current, _ = tracemalloc.get_traced_memory()
                if current > self.traced_peak + 2 * MiB:
                    self.traced_peak = current
                    self.snapshot = tracemalloc.take_snapshot()


def report(sampler: Sampler, path: str | None) -> None:
    sampler.stop.set()
    final = status()
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "wall_s": round(time.monotonic() - sampler.started, 3),
              "after_start_peak_mib": max((m for t, m in sampler.curve if t >= 0.6), default=0),
              "peak_rss_mib": round(sampler.peak / MiB, 1), "peak_at_s": round(sampler.peak_at, 3),
              "vmhwm_mib": round(final["VmHWM"] / MiB, 1), "at_peak": sampler.peak_breakdown,
              "curve": sampler.curve}
    if sampler.snapshot is not None:
        import tracemalloc

        stats = sampler.snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]).statistics("lineno")
        result["traced_peak_mib"] = round(sampler.traced_peak / MiB, 1)
        result["top"] = [{"where": f"{s.traceback[0].filename.split('site-packages/')[-1].split('/src/')[-1]}:"
                                   f"{s.traceback[0].lineno}", "mib": round(s.size / MiB, 2), "count": s.count}
                         for s in stats[:25]]
    if path:
        with open(path, "w") as handle:
            json.dump(result, handle, indent=1)
    curve = result["curve"][:: max(1, len(result["curve"]) // 40)]
    at_peak = result["at_peak"]
    print(f"wall {result['wall_s']} s, CPU {result['cpu_s']} s; highest sampled after 0.6 s {result['after_start_peak_mib']} MiB",
          file=sys.stderr)
    print(f"peak RSS {result['peak_rss_mib']} MiB at {result['peak_at_s']} s (VmHWM {result['vmhwm_mib']}); "
          f"at the peak: {at_peak.get('status')}", file=sys.stderr)
    print("smaps at the peak (MiB): " + ", ".join(f"{k} {v}" for k, v in list(at_peak.get("smaps", {}).items())[:14]),
          file=sys.stderr)
    print("curve (s, MiB): " + " ".join(f"{t:.2f}:{m:.0f}" for t, m in curve), file=sys.stderr)
    for top in result.get("top", []):
        print(f"  {top['mib']:8.2f} MiB {top['count']:7d} {top['where']}", file=sys.stderr)
    if "traced_peak_mib" in result:
        print(f"traced peak {result['traced_peak_mib']} MiB", file=sys.stderr)


def main() -> None:
    args = sys.argv[1:]
    trace = json_path = None
    interval = 0.01
    while args and args[0] != "--":
        option = args.pop(0)
        if option == "--tracemalloc":
            trace = True
        elif option == "--json":
            json_path = args.pop(0)
        elif option == "--interval":
            interval = float(args.pop(0))
        else:
            raise SystemExit(f"unknown option {option}")
    args = args[1:]
    if trace:
        import tracemalloc

        tracemalloc.start(1)
    sampler = Sampler(interval, bool(trace))
    sampler.start()
    atexit.register(report, sampler, json_path)
    sys.argv = ["safehold", *args]
    from safehold.cli.main import run

    run()


if __name__ == "__main__":
    main()
