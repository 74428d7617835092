"""A copy as the scheduler runs it: ``after_backup``, inside a backup job of a long-lived process.

    python bench/copy_scheduled.py [--mib 500] [--incrementals 3] [--workdir /tmp]

Makes the same data as ``bench/copy_bench.py`` (same seed), creates a repository and the destination
of a configured copy (``copies: [{name: offsite, after_backup: true}]``, ``init --for-copy``), then
in this one process submits and runs a backup job the way a scheduler or worker does
(``engine.jobs.submit_job`` + ``run_job``): the backup, then its ``after_backup`` copy as its own
job. After each incremental backup 1 % of the bytes change (``copy_bench.change_one_percent``).
Prints each copy job's row time (``started_at`` to ``finished_at``) and the copy's own duration
(``details.duration``: from after the job row and the transfer's imports to the end, including the
wait for the two repositories' opening), from ``safehold jobs --kind copy --json``, bytes sent and
the load average before its backup job. The process is warm (imports,
and the keys derived by earlier jobs, as in a scheduler that has run before) except for the first
job, which derives both keys. No restic here: compare with ``copy_bench.py``'s restic row of the
same sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import copy_bench as cb  # noqa: E402

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--incrementals", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp")
    args = parser.parse_args()
    cb.compile_package()
    work = Path(tempfile.mkdtemp(prefix="safehold-copy-scheduled-", dir=args.workdir))
    try:
        data = work / "data"
        paths = cb.make_data(data, args.mib, random.Random(15))
        config = work / "targets.yml"
        config.write_text(
            f"repository:\n  url: {work}/src-repo\n  password_env: SAFEHOLD_PASSWORD\nstate_dir: {work}/state\n"
            f"targets:\n  - {{name: files, tier: 3, source: {{type: files, paths: [{data}]}}}}\n"
            f"copies:\n  - name: offsite\n    repository: {{url: {work}/dst-repo, password_env: DEST_PASSWORD}}\n"
            f"    after_backup: true\n")
        os.environ.update({"SAFEHOLD_CONFIG": str(config), "SAFEHOLD_PASSWORD": "source", "DEST_PASSWORD": "dest",
                           "SAFEHOLD_NO_SERVER": "1"})
        for command in (["init"], ["init", "--for-copy", "offsite"]):
            subprocess.run([*cb.SAFEHOLD, *command], check=True, capture_output=True)
        from safehold.engine.context import Context
        from safehold.engine.jobs import run_job, submit_job

        context = Context.load(str(config))
        loads = []
        for step in range(args.incrementals + 1):
            if step:
                cb.change_one_percent(paths, random.Random(1000 + step))
            loads.append(os.getloadavg()[0])
            record = run_job(context, submit_job(context, "backup", "files", trigger="scheduler"))
            if record.status != "succeeded":
                raise SystemExit(f"backup job {record.id}: {record.status} {record.error}")
        out = subprocess.run([*cb.SAFEHOLD, "jobs", "--kind", "copy", "--json", "--limit", "1000"], check=True,
                             capture_output=True, text=True).stdout
        jobs = sorted(json.loads(out), key=lambda job: job["id"])
        if len(jobs) != args.incrementals + 1 or any(job["status"] != "succeeded" for job in jobs):
            raise SystemExit(f"expected {args.incrementals + 1} succeeded copy jobs:\n{out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"`python bench/copy_scheduled.py {' '.join(sys.argv[1:])}` ({os.cpu_count()} cores; {args.mib} MiB):\n")
    print("| copy | job row s (started to finished) | copy's own duration s | sent MiB | load |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for step, (job, load) in enumerate(zip(jobs, loads)):
        label = "first copy" if step == 0 else "after a 1 % change"
        print(f"| {label} | {row_seconds(job):.2f} | {job['details']['duration']:.2f} | "
              f"{job['details']['bytes_sent'] / MiB:.2f} | {load:.1f} |")
    if len(jobs) > 1:
        print(f"\nafter a 1 % change, median of {len(jobs) - 1}: job row "
              f"{statistics.median(row_seconds(job) for job in jobs[1:]):.2f} s, the copy's own duration "
              f"{statistics.median(job['details']['duration'] for job in jobs[1:]):.2f} s")


def row_seconds(job: dict) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()


if __name__ == "__main__":
    main()
