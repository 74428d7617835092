"""One scheduler per catalog: the lease (SQLite flock, PostgreSQL advisory lock)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.catalog import Catalog
from safehold.errors import SchedulerRunning


def test_second_lease_on_a_sqlite_catalog_is_refused_with_the_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with Catalog.open(url) as first, Catalog.open(url) as second:
        held = first.scheduler_lease()
        held.acquire()
        held.acquire()  # idempotent for its holder
        with pytest.raises(SchedulerRunning, match=rf"pid {os.getpid()} on .* since ") as refused:
            second.scheduler_lease().acquire()
        assert refused.value.exit_code == 24 and "--no-scheduler" in refused.value.hint
        held.release()
        again = second.scheduler_lease()
        again.acquire()  # free once released
        again.release()


def test_the_lease_of_a_dead_process_is_free(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    Catalog.open(url).close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from safehold.catalog import Catalog\n"
        f"c = Catalog.open({url!r}); c.scheduler_lease().acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with Catalog.open(url) as catalog, pytest.raises(SchedulerRunning, match=f"pid {holder.pid} "):
            catalog.scheduler_lease().acquire()
    finally:
        holder.kill()
        holder.wait()
    with Catalog.open(url) as catalog:
        lease = catalog.scheduler_lease()
        lease.acquire()
        lease.release()


def test_an_in_memory_catalog_needs_no_file(tmp_path: Path) -> None:
    with Catalog.open("sqlite://") as catalog:
        lease = catalog.scheduler_lease()
        lease.acquire()
        assert lease.held
        lease.release()
        assert not lease.held


@pytest.mark.skipif(
    not os.environ.get("SAFEHOLD_TEST_POSTGRES_URL"),
    reason="set SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://... to run against PostgreSQL",
)
def test_second_lease_on_a_postgresql_catalog_is_refused_with_the_holder() -> None:
    url = os.environ["SAFEHOLD_TEST_POSTGRES_URL"]
    with Catalog.open(url) as first, Catalog.open(url) as second:
        held = first.scheduler_lease()
        held.acquire()
        try:
            with pytest.raises(SchedulerRunning, match=rf"pid {os.getpid()} on "):
                second.scheduler_lease().acquire()
        finally:
            held.release()
        again = second.scheduler_lease()
        again.acquire()
        again.release()


@pytest.mark.skipif(
    not os.environ.get("SAFEHOLD_TEST_POSTGRES_URL"),
    reason="set SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://... to run against PostgreSQL",
)
def test_a_scheduler_of_another_catalog_on_the_same_server_is_not_named_as_the_holder(new_pg_database) -> None:
    """Advisory locks belong to one database but pg_locks lists the server's: schedulers of other
    catalogs on the same PostgreSQL (each holding the same key in its own database) must not be
    named as this catalog's holder. Several of them, so that the old lookup (no database filter)
    names one of them whatever order pg_locks lists its rows in."""
    urls = [new_pg_database("safehold_lease") for _ in range(4)]
    holders: list[subprocess.Popen] = []
    try:
        for other in urls[1:]:  # schedulers of other catalogs, in processes of their own
            holder = subprocess.Popen([sys.executable, "-c", (
                "import time; from safehold.catalog import Catalog\n"
                f"c = Catalog.open({other!r}); c.scheduler_lease().acquire(); print('held', flush=True); "
                "time.sleep(120)")], stdout=subprocess.PIPE, text=True)
            holders.append(holder)
            assert holder.stdout.readline().strip() == "held"
        with Catalog.open(urls[0]) as first, Catalog.open(urls[0]) as second:
            held = first.scheduler_lease()
            held.acquire()  # the same key is held in three other databases: still free here
            try:
                with pytest.raises(SchedulerRunning, match=rf"pid {os.getpid()} on ") as refused:
                    second.scheduler_lease().acquire()
                assert not any(f"pid {holder.pid} " in str(refused.value) for holder in holders)
            finally:
                held.release()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
