#!/usr/bin/env python3
"""Trace every S3 request of one incremental ``safehold backup --all`` (or, with ``--restore``, of a
``restore --all`` of the full backup, with the CPU seconds of each thread) behind the latency proxy
(issue 19): when each request started (from the process's start), how long it took, in which
thread, and how many rounds of requests went out one after the other.

    .venv/bin/python bench/s3_trace.py [--latency-ms 20] [--conn-mib-per-s 25] [--src src,/tmp/before/src] [--mib 64]
                                       [--json bench/s3-trace-results.json] [--restore] [--repeat 3]

The set-up is ``bench/s3_run.py``'s (a moto server on loopback, ``latency_proxy.py`` in front of
it) with a small data set of its own: a tree (``--mib`` MiB in 256 files) and an image of the
same size, the two targets of ``s3_run.py``. For each source tree in ``--src`` (run through
PYTHONPATH: before and after in one run), in a bucket of its own: ``init``, a full ``backup
--all``, a change of 1 % of the tree's files and 1 % of the image, then the traced incremental,
run in-process (``safehold.cli.main.run``) in a child process that records each HTTP request
where botocore sends it (``Endpoint._send``: retries and listing pages included).

A *round* is a group of requests that overlap in time; a request that starts after every earlier
one ended begins the next round. At 20 ms a request, the rounds times the latency is the least the
requests alone cost the command.

Environment of the traced child (as ``--variants`` entries): ``SAFEHOLD_TRACE_TIMELINE=1`` prints the
cores each thread group kept busy per 0.2 s beside the data requests in flight;
``SAFEHOLD_TRACE_WAITS=1`` sums where the writers' reads through the prefetcher spent their wall
time (waiting for a fetch, decoding); ``SAFEHOLD_TRACE_SWITCH_S=S`` sets the GIL's switch interval.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PASSWORD = "trace correct horse"


def child(argv: list[str], output: str) -> int:
    """In the child: run the CLI in-process with every HTTP request recorded."""
    import threading

    begun = time.monotonic()
    from botocore.endpoint import Endpoint

    sent: list[dict] = []
    guard = threading.Lock()
    real_send = Endpoint._send

    def send(self, request):
        start = time.monotonic()
        try:
            return real_send(self, request)
        finally:
            path = request.url.split("://", 1)[-1].split("/", 1)[-1]
            with guard:
                sent.append({"start": start - begun, "duration": time.monotonic() - start,
                             "thread": threading.current_thread().name, "method": request.method, "path": path})

    Endpoint._send = send
    # CPU per thread: each thread's time.thread_time() when it ends, summed by name (digits dropped)
    cpu: dict[str, float] = {}
    real_run = threading.Thread.run

    def run_thread(self):
        try:
            real_run(self)
        finally:
            name = self.name.rstrip("0123456789_").split(" (")[0]
            with guard:
                cpu[name] = cpu.get(name, 0.0) + time.thread_time()

    threading.Thread.run = run_thread
    if os.environ.get("SAFEHOLD_TRACE_SWITCH_S"):  # an experiment: the interpreter's GIL switch interval
        sys.setswitchinterval(float(os.environ["SAFEHOLD_TRACE_SWITCH_S"]))
    waits = _trace_waits(guard) if os.environ.get("SAFEHOLD_TRACE_WAITS") else None
    timeline: list = []
    if os.environ.get("SAFEHOLD_TRACE_TIMELINE"):
        _sample_cpu(timeline, begun)
    from safehold.cli.main import run

    status = 0
    try:
        run(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    cpu["MainThread"] = time.thread_time()
    for thread in threading.enumerate():  # threads still alive (a pool not joined yet): their CPU clock
        if thread is not threading.main_thread():
            _add_thread_cpu(cpu, thread)
    times = os.times()
    Path(output).write_text(json.dumps({"requests": sent, "wall_s": time.monotonic() - begun, "status": status,
                                        "thread_cpu_s": cpu, "process_cpu_s": times.user + times.system,
                                        **({"waits": waits} if waits is not None else {}),
                                        **({"timeline": timeline} if timeline else {})}))
    return 0


def _add_thread_cpu(totals: dict, thread) -> None:
    """Add ``thread``'s CPU seconds (its CPU clock) to ``totals`` under its name without the pool
    number; a thread not started or already gone adds nothing."""
    if thread.ident is None:
        return
    try:
        spent = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, ValueError):
        return
    name = thread.name.rstrip("0123456789_").split(" (")[0]
    totals[name] = totals.get(name, 0.0) + spent


def _sample_cpu(timeline: list, begun: float, every: float = 0.1) -> None:
    """With SAFEHOLD_TRACE_TIMELINE=1: every 100 ms, the process's CPU seconds and those of its
    threads by name (each thread's CPU clock), so the trace shows how many cores each part kept busy
    in each tenth of a second."""
    import threading

    def clocks() -> dict:
        out: dict[str, float] = {}
        for thread in threading.enumerate():
            if thread.name != "trace-sampler":
                _add_thread_cpu(out, thread)
        times = os.times()
        out["process"] = times.user + times.system
        return out

    def run() -> None:
        while True:
            timeline.append({"t": time.monotonic() - begun, **clocks()})
            time.sleep(every)

    threading.Thread(target=run, name="trace-sampler", daemon=True).start()


def _trace_waits(guard) -> dict:
    """With SAFEHOLD_TRACE_WAITS=1: where the restore's writers spend their wall time, summed over
    the blobs read through the prefetcher: waiting for a fetch to land ('wait'), decoding (decrypt,
    decompress, the id; 'decode', with its CPU in 'decode_cpu'), and everything else a reader does
    per blob ('read'), plus the blob count. The prefetcher is wrapped, not changed."""
    import threading

    from safehold.repository import prefetch, repository

    waits = {"blobs": 0, "wait": 0.0, "decode": 0.0, "decode_cpu": 0.0, "read": 0.0}
    real_read = getattr(prefetch.PrefetchReader, "_read", None) or prefetch.PrefetchReader.read_blob_body
    real_decode = repository.Repository.decode_blob_body
    real_wait = threading.Condition.wait_for

    def add(key: str, value: float) -> None:
        with guard:
            waits[key] += value

    def read_blob_body(self, blob_id, *args, **kwargs):
        start = time.monotonic()
        try:
            return real_read(self, blob_id, *args, **kwargs)
        finally:
            add("read", time.monotonic() - start)
            add("blobs", 1)

    def decode(self, *args, **kwargs):
        start, cpu = time.monotonic(), time.thread_time()
        try:
            return real_decode(self, *args, **kwargs)
        finally:
            add("decode", time.monotonic() - start)
            add("decode_cpu", time.thread_time() - cpu)

    def wait_for(self, predicate, timeout=None):
        if not threading.current_thread().name.startswith("safehold-restore"):
            return real_wait(self, predicate, timeout)
        start = time.monotonic()
        try:
            return real_wait(self, predicate, timeout)
        finally:
            add("wait", time.monotonic() - start)

    setattr(prefetch.PrefetchReader, "_read" if hasattr(prefetch.PrefetchReader, "_read") else "read_blob_body",
            read_blob_body)
    repository.Repository.decode_blob_body = decode
    threading.Condition.wait_for = wait_for
    return waits


def _cores(timeline: list[dict], requests: list[dict]) -> str:
    """Cores kept busy per 0.2 s step: the process, its writers ('safehold-restore'), fetches, the
    rest; threads that ended between samples lose their last step (their CPU leaves the sum)."""
    lines = [f"{'t s':>5} {'proc':>5} {'write':>5} {'fetch':>5} {'target':>6} {'main':>5}  data requests in flight"]
    step = timeline[::2]
    for before, after in zip(step, step[1:]):
        span = after["t"] - before["t"]

        def rate(name: str) -> float:
            return max(0.0, after.get(name, 0.0) - before.get(name, 0.0)) / span
        flight = sum(1 for r in requests if "/data/" in r["path"] and r["start"] <= after["t"]
                     and r["start"] + r["duration"] >= before["t"])
        lines.append(f"{after['t']:5.1f} {rate('process'):5.2f} {rate('safehold-restore'):5.2f} "
                     f"{rate('safehold-fetch'):5.2f} {rate('safehold-target'):6.2f} {rate('MainThread'):5.2f}  {flight}")
    return "\n".join(lines)


def rounds(requests: list[dict]) -> int:
    count, end = 0, float("-inf")
    for request in sorted(requests, key=lambda r: r["start"]):
        if request["start"] >= end:
            count += 1
            end = request["start"] + request["duration"]
        else:
            end = max(end, request["start"] + request["duration"])
    return count


def describe(path: str) -> str:
    if "list-type=2" in path:
        prefix = path.split("prefix=")[-1].split("&")[0].replace("%2F", "/").rstrip("/")
        return "LIST " + prefix.rsplit("/", 1)[-1]
    parts = path.split("?")[0].strip("/").split("/")
    return "/".join(parts[-2:])[:40]


def make_data(root: Path, mib: int) -> None:
    generator = random.Random(1)
    tree = root / "tree"
    tree.mkdir(parents=True)
    size = mib * 1024 * 1024 // 256
    for number in range(256):
        (tree / f"{number:03d}.bin").write_bytes(generator.randbytes(size))
    with open(root / "disk.img", "wb") as image:
        for _ in range(mib):
            image.write(generator.randbytes(1024 * 1024))


def change(root: Path, seed: int) -> None:
    generator = random.Random(seed)
    files = sorted((root / "tree").iterdir())
    for path in generator.sample(files, max(1, len(files) // 100)):
        path.write_bytes(generator.randbytes(path.stat().st_size))
    with open(root / "disk.img", "r+b") as image:
        size = os.fstat(image.fileno()).st_size
        for _ in range(max(1, size // (100 * 512 * 1024))):
            image.seek(generator.randrange(0, size // (512 * 1024)) * 512 * 1024)
            image.write(generator.randbytes(512 * 1024))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--conn-mib-per-s", type=float, default=0.0,
                        help="bandwidth cap of each connection through the proxy (latency_proxy.py; 0: none)")
    parser.add_argument("--src", default=str(HERE.parent / "src"),
                        help="comma-separated source trees (PYTHONPATH), each traced in a bucket of its own")
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--json", default=str(HERE / "s3-trace-results.json"))
    parser.add_argument("--restore", action="store_true",
                        help="trace a restore --all of the full backup instead of the incremental (with CPU per thread)")
    parser.add_argument("--data", help="an existing data set (a tree/ folder and disk.img, e.g. s3_run.py's "
                                           "<workdir>/data) instead of --mib MiB of random bytes")
    parser.add_argument("--variants", default="",
                        help="with --restore: environments to compare on each source tree, alternating, separated "
                             "by ',' (each 'NAME=VALUE+--option=VALUE', or 'default'; options go after the command's name)")
    parser.add_argument("--repeat", type=int, default=1, help="traced commands per source tree (alternating)")
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[1:], args.child[0])
    if args.data and not args.restore:
        parser.error("--data only with --restore (the backup trace changes its data set)")
    import s3_run
    from s3_ceiling import cpu_seconds

    results: dict = {"latency_ms": args.latency_ms, "conn_mib_per_s": args.conn_mib_per_s, "mib": args.mib, "command": "restore" if args.restore else "backup",
                     "runs": {}}
    with tempfile.TemporaryDirectory(prefix="safehold-trace-") as scratch:
        work = Path(scratch)
        if args.data:
            (work / "data").symlink_to(Path(args.data).resolve())
        else:
            make_data(work / "data", args.mib)
        moto, moto_port = s3_run.start([sys.executable, "-c", s3_run.MOTO])
        proxy, port = s3_run.start([sys.executable, str(HERE / "latency_proxy.py"), "--upstream",
                                    f"http://127.0.0.1:{moto_port}", "--latency-ms", str(args.latency_ms),
                                    "--conn-mib-per-s", str(args.conn_mib_per_s)])
        try:
            sources = [str(Path(src).resolve()) for src in args.src.split(",")]
            configs = []
            for number, src in enumerate(sources):
                bucket = f"trace{number}"
                s3_run.make_bucket(moto_port, bucket)
                config = work / f"{bucket}.yml"
                config.write_text(
                    f"repository:\n  url: s3://{bucket}/repo\n  endpoint_url: http://127.0.0.1:{port}\n"
                    f"  password_env: SAFEHOLD_PASSWORD\nstate_dir: {work / ('state-' + bucket)}\ntargets:\n"
                    f"  - name: tree\n    tier: 3\n    source: {{type: files, paths: [{work / 'data' / 'tree'}]}}\n"
                    f"  - name: image\n    tier: 3\n"
                    f"    source: {{type: image, path: {work / 'data' / 'disk.img'}, chunk_size: 512KiB}}\n")
                configs.append(config)
            env = dict(os.environ, SAFEHOLD_PASSWORD=PASSWORD, **s3_run.AWS)

            def cli(src: str, config: Path, *command: str) -> None:
                subprocess.run([sys.executable, "-m", "safehold", "-c", str(config), *command], check=True,
                               env=dict(env, PYTHONPATH=src), stdout=subprocess.DEVNULL)

            for src, config in zip(sources, configs):
                cli(src, config, "init")
                cli(src, config, "backup", "--all")
            if not args.restore:
                change(work / "data", 7)
            variants = [v for v in args.variants.split(",") if v] or ["default"]
            for repetition in range(args.repeat):
                order = [(src, config, variant) for src, config in zip(sources, configs) for variant in variants]
                for src, config, variant in (order if repetition % 2 == 0 else order[::-1]):
                    extra = dict(item.split("=", 1) for item in variant.split("+")
                                 if "=" in item and not item.startswith("--"))
                    options = [part for item in variant.split("+") if item.startswith("--")
                               for part in item.split("=", 1)]
                    output = work / "trace.json"
                    if args.restore:
                        target = work / "restored"
                        subprocess.run(["rm", "-rf", str(target)], check=True)
                        command = ["restore", "--all", "--to", str(target), "--json"]
                    else:
                        command = ["backup", "--all", "--json"]
                    bed_before = {name: cpu_seconds(process.pid) for name, process in (("moto", moto), ("proxy", proxy))}
                    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(output), "-c",
                                    str(config), command[0], *options, *command[1:]], check=True,
                                   env=dict(env, PYTHONPATH=src, **extra), stdout=subprocess.DEVNULL)
                    trace = json.loads(output.read_text())
                    if trace["status"] or not trace["requests"]:
                        raise SystemExit(f"the traced command failed (status {trace['status']})")
                    trace["bed_cpu_s"] = {name: cpu_seconds(process.pid) - bed_before[name]
                                          for name, process in (("moto", moto), ("proxy", proxy))}
                    trace["rounds"] = rounds(trace["requests"])
                    trace["first_request_s"] = min((r["start"] for r in trace["requests"]), default=None)
                    data = [r for r in trace["requests"] if "/data/" in r["path"] and r["method"] == "GET"]
                    trace["first_data_request_s"] = min((r["start"] for r in data), default=None)
                    trace["last_data_end_s"] = max((r["start"] + r["duration"] for r in data), default=None)
                    trace["variant"] = variant
                    results["runs"].setdefault(src, []).append(trace)
                    print(f"\n{src} [{variant}]: {len(trace['requests'])} requests in {trace['rounds']} rounds; first request at "
                          f"{trace['first_request_s']:.3f} s, first data request at {trace['first_data_request_s'] or 0:.3f} s, "
                          f"last data answer {trace['last_data_end_s'] or 0:.3f} s, command {trace['wall_s']:.2f} s "
                          f"(in-process), CPU {trace['process_cpu_s']:.2f} s; load {os.getloadavg()[0]:.2f}")
                    print(f"CPU s of the bed: moto {trace['bed_cpu_s']['moto']:.2f}, proxy {trace['bed_cpu_s']['proxy']:.2f}")
                    print("CPU s per thread: " + ", ".join(f"{name} {value:.2f}" for name, value in
                                                           sorted(trace["thread_cpu_s"].items(), key=lambda kv: -kv[1])))
                    if "waits" in trace:
                        waits = trace["waits"]
                        print(f"writers' blobs through the prefetcher {waits['blobs']}: wall s waiting for a fetch "
                              f"{waits['wait']:.2f}, decoding {waits['decode']:.2f} (CPU {waits['decode_cpu']:.2f}), "
                              f"in read_blob in all {waits['read']:.2f}")
                    if "timeline" in trace:
                        print(_cores(trace["timeline"], trace["requests"]))
                    if args.restore and len(data) > 40:
                        continue
                    print(f"{'start':>7} {'ms':>5}  {'thread':24} request")
                    for request in sorted(trace["requests"], key=lambda r: r["start"]):
                        print(f"{request['start']:7.3f} {request['duration'] * 1000:5.0f}  {request['thread'][:24]:24} "
                              f"{request['method']:6} {describe(request['path'])}")
        finally:
            s3_run.stop(proxy)
            s3_run.stop(moto)
    Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
