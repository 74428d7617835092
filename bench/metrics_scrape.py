"""How long one /metrics scrape takes for a control plane with many targets and a long job history.

    .venv/bin/python bench/metrics_scrape.py --targets 100 --jobs-per-target 100

Builds a throwaway SQLite catalog (no repository: its listing is cached for a
minute anyway), fills it with finished backup and restore-test jobs and times
the collector, which is what every Prometheus scrape runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import generate_latest
from sqlalchemy import insert

from safehold.catalog import Catalog
from safehold.catalog.models import Job
from safehold.config import load_config_text
from safehold.engine.context import Context
from safehold.server.metrics import create_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--jobs-per-target", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        targets = "\n".join(f"  - {{name: t{n}, tier: {n % 3 + 1}, source: {{type: files, paths: [data]}}}}"
                            for n in range(options.targets))
        config = load_config_text(f"repository: {{url: repo, password_env: X}}\nstate_dir: state\ntargets:\n{targets}\n",
                                  root / "targets.yml")
        catalog = Catalog.open(f"sqlite:///{root / 'catalog.db'}")
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        rows = []
        for n in range(options.targets):
            for index in range(options.jobs_per_target):
                began = start + dt.timedelta(hours=index)
                kind = "restore-test" if index % 10 == 9 else "backup"
                rows.append({"kind": kind, "target": f"t{n}", "status": "failed" if index % 7 == 0 else "succeeded",
                             "created_at": began, "started_at": began, "finished_at": began + dt.timedelta(seconds=30),
                             "bytes_read": 1000, "bytes_added": 10, "files": 1,
                             "details": {"art_seconds": 12.0, "passed": True} if kind == "restore-test" else None})
        with catalog._write.begin() as session:
            session.execute(insert(Job), rows)
        registry = create_registry(Context(config, _catalog=catalog))
        timings = []
        for _ in range(options.scrapes):
            began_at = time.perf_counter()
            size = len(generate_latest(registry))
            timings.append(time.perf_counter() - began_at)
        catalog.close()
    print(f"{options.targets} targets, {len(rows)} jobs: scrape median {statistics.median(timings) * 1000:.0f} ms "
          f"(min {min(timings) * 1000:.0f}, max {max(timings) * 1000:.0f}), {size} bytes")


if __name__ == "__main__":
    main()
