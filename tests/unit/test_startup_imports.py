"""Start-up tax (issue 19): a command imports what it uses, not what other commands need. Guards
the lazy imports by the modules a command leaves unloaded (not by timing, which the benchmark
measures): ``python -X importtime`` showed each of these costing 0.1-0.5 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safehold.repository import Repository
from safehold.repository.backends import open_backend

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PROBE = """
import json, sys
sys.argv = ["safehold", *json.loads(sys.argv[1])]
from safehold.cli.main import run
try:
    run()
except SystemExit:
    pass
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def modules_of(args: list[str], env: dict | None = None, cwd: Path | None = None) -> set[str]:
    answer = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                            env=dict(os.environ, **(env or {})), cwd=cwd, timeout=120)
    line = next(line for line in answer.stdout.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line[len("MODULES "):]))


def loaded(modules: set[str], *names: str) -> list[str]:
    return sorted(name for name in names if name in modules)


def test_version_loads_no_engine_catalog_configuration_or_pydantic():
    modules = modules_of(["--version"])
    assert loaded(modules, "sqlalchemy", "alembic", "numpy", "boto3", "botocore", "pydantic", "yaml",
                  "safehold.catalog", "safehold.config", "safehold.engine", "safehold.repository") == []


def test_snapshots_of_a_local_repository_loads_no_cloud_sdk_migrations_or_restore_code(tmp_path: Path):
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    config = tmp_path / "targets.yml"
    config.write_text(f"repository:\n  url: {tmp_path / 'repo'}\n  password_env: SAFEHOLD_PASSWORD\n"
                      f"state_dir: {tmp_path / 'state'}\ntargets: []\n")
    command = ["-c", str(config), "snapshots", "--json"]
    modules_of(command, {"SAFEHOLD_PASSWORD": "pw"})  # the first run creates (and migrates) the catalog
    modules = modules_of(command, {"SAFEHOLD_PASSWORD": "pw"})
    assert "safehold.engine.browse" in modules  # the probe really ran the command
    assert loaded(modules, "boto3", "botocore", "alembic", "paramiko", "libvirt", "fastapi", "prometheus_client",
                  "safehold.restore", "safehold.sources", "safehold.repository.prefetch") == []


def test_a_repeated_snapshots_listing_loads_no_catalog_orm_or_numpy(tmp_path: Path):
    """The second listing with nothing written to the catalog in between leaves the SQLite catalog
    closed (engine/browse.py: the listing memo), and listing never touches the index's arrays or
    the ransomware sampler, whose NumPy now loads on first use (repository/lazy_numpy.py)."""
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    config = tmp_path / "targets.yml"
    config.write_text(f"repository:\n  url: {tmp_path / 'repo'}\n  password_env: SAFEHOLD_PASSWORD\n"
                      f"state_dir: {tmp_path / 'state'}\ntargets: []\n")
    command = ["-c", str(config), "snapshots", "--json"]
    first = modules_of(command, {"SAFEHOLD_PASSWORD": "pw"})
    assert "sqlalchemy" in first  # the first listing fills the catalog's cache
    modules = modules_of(command, {"SAFEHOLD_PASSWORD": "pw"})
    assert "safehold.engine.browse" in modules
    assert loaded(modules, "sqlalchemy", "safehold.catalog", "numpy") == []


def test_copy_with_a_current_catalog_loads_no_sqlalchemy_or_alembic(tmp_path: Path):
    """An incremental copy is mostly start-up: with the catalog's schema current, its job is
    recorded through the standard library's sqlite3 (catalog/light.py), not SQLAlchemy, and the
    row is there for the catalog to read."""
    source = Repository.init(open_backend(str(tmp_path / "source")), b"pw", FAST_KDF)
    Repository.init(open_backend(str(tmp_path / "copy")), b"other", FAST_KDF, params_from=source)
    config = tmp_path / "targets.yml"
    config.write_text(f"repository:\n  url: {tmp_path / 'source'}\n  password_env: SAFEHOLD_PASSWORD\n"
                      f"state_dir: {tmp_path / 'state'}\ntargets: []\n")
    command = ["-c", str(config), "copy", "--to", str(tmp_path / "copy"), "--to-password-env", "COPY_PASSWORD",
               "--json"]
    environment = {"SAFEHOLD_PASSWORD": "pw", "COPY_PASSWORD": "other"}
    first = modules_of(command, environment)  # creates (and migrates) the catalog
    assert "sqlalchemy" in first and "safehold.engine.copy" in first
    modules = modules_of(command, environment)
    assert "safehold.catalog.light" in modules  # the probe really ran the command
    assert loaded(modules, "sqlalchemy", "alembic", "asyncio") == []

    from safehold.catalog import Catalog

    with Catalog.open(f"sqlite:///{tmp_path / 'state' / 'catalog.db'}") as catalog:
        jobs = catalog.list_jobs(kind="copy")
    assert [job.status for job in jobs] == ["succeeded", "succeeded"]
    assert jobs[0].details["destination_url"] == f"file://{tmp_path / 'copy'}"



def test_backup_and_restore_with_a_current_catalog_load_no_sqlalchemy_alembic_asyncio_or_numpy(tmp_path: Path):
    """A nothing-changed backup and a single-file restore are mostly start-up: with the catalog's
    schema current their jobs are recorded through sqlite3 (catalog/light.py), and the rows are
    there for the catalog to read. A small repository's index is a dict and a small backup's
    histograms are counted without NumPy (repository/index.py, signals.py): no NumPy either, also
    for a backup that stores new random data."""
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "one.txt").write_text("one\n")
    (tmp_path / "data" / "two.txt").write_text("two\n")
    (tmp_path / "data" / "random.bin").write_bytes(os.urandom(100_000))  # judged by its histogram
    config = tmp_path / "targets.yml"
    config.write_text(f"repository:\n  url: {tmp_path / 'repo'}\n  password_env: SAFEHOLD_PASSWORD\n"
                      f"state_dir: {tmp_path / 'state'}\ntargets:\n"
                      f"  - {{name: docs, tier: 3, source: {{type: files, paths: [{tmp_path / 'data'}]}}}}\n")
    environment = {"SAFEHOLD_PASSWORD": "pw"}
    backup = ["-c", str(config), "backup", "-t", "docs", "--json"]
    first = modules_of(backup, environment)  # creates (and migrates) the catalog
    assert "sqlalchemy" in first and "safehold.engine.backup" in first
    commands = {"backup": backup,
                "restore": ["-c", str(config), "restore", "latest", "--to", str(tmp_path / "all"), "--json"],
                "restore one file": ["-c", str(config), "restore", "latest", "--to", str(tmp_path / "one"),
                                     "-i", "data/two.txt", "--json"],
                "restore --all": ["-c", str(config), "restore", "--all", "--to", str(tmp_path / "every"), "--json"]}
    for name, command in commands.items():
        if name == "backup":
            (tmp_path / "data" / "new.bin").write_bytes(os.urandom(200_000))
        modules = modules_of(command, environment)
        assert "safehold.catalog.light" in modules, name  # the probe really ran the command
        assert loaded(modules, "sqlalchemy", "alembic", "asyncio", "numpy") == [], name
    assert sorted(path.name for path in (tmp_path / "all").rglob("*.txt")) == ["one.txt", "two.txt"]
    assert (tmp_path / "all" / "data" / "new.bin").read_bytes() == (tmp_path / "data" / "new.bin").read_bytes()
    assert [path.name for path in (tmp_path / "one").rglob("*.txt")] == ["two.txt"]

    from safehold.catalog import Catalog

    with Catalog.open(f"sqlite:///{tmp_path / 'state' / 'catalog.db'}") as catalog:
        jobs = catalog.list_jobs()
    assert [(job.kind, job.target, job.status) for job in jobs] == \
           [("restore", "docs", "succeeded")] * 3 + [("backup", "docs", "succeeded")] * 2
    assert jobs[3].snapshot_id and jobs[0].snapshot_id == jobs[1].snapshot_id == jobs[3].snapshot_id
    assert (tmp_path / "every" / "docs" / "data" / "two.txt").read_text() == "two\n"


ENTRY_PROBE = """
import sys
sys.argv = ["safehold", *sys.argv[1:]]
from safehold.__main__ import run
try:
    run()
except SystemExit:
    pass
print("\\nMODULES " + " ".join(sorted(sys.modules)))
"""


def test_the_entry_point_without_a_command_server_costs_no_import(tmp_path: Path):
    """Every command passes through the command server's client first (safehold/__main__.py): with no
    socket it must cost nothing (it imports only os and sys before it knows), and ``--version``
    is answered before Typer, Rich, Click and the command tree load."""
    env = dict(os.environ, SAFEHOLD_COMMAND_SOCKET=str(tmp_path / "no-such.sock"))
    env.pop("SAFEHOLD_NO_SERVER", None)
    answer = subprocess.run([sys.executable, "-c", ENTRY_PROBE, "--version"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert answer.stdout.startswith("safehold ")
    modules = set(answer.stdout.split("MODULES ", 1)[1].split())
    assert "safehold.command_server.client" in modules  # the probe really took the entry point
    assert loaded(modules, "socket", "json", "signal", "typer", "click", "rich", "pydantic",
                  "safehold.cli.main", "safehold.errors", "safehold.config") == []


def test_a_files_only_configuration_loads_no_other_source_model(tmp_path: Path):
    """config/sources dispatches on 'type': the models of platforms the configuration does not use
    (VMware, EBS, Hyper-V, libvirt, PostgreSQL, SSH, command) are never imported."""
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    (tmp_path / "data").mkdir()
    config = tmp_path / "targets.yml"
    config.write_text(f"repository:\n  url: {tmp_path / 'repo'}\n  password_env: SAFEHOLD_PASSWORD\n"
                      f"state_dir: {tmp_path / 'state'}\ntargets:\n"
                      f"  - {{name: docs, tier: 3, source: {{type: files, paths: [{tmp_path / 'data'}]}}}}\n")
    modules = modules_of(["-c", str(config), "snapshots", "--json"], {"SAFEHOLD_PASSWORD": "pw"})
    assert "safehold.config.sources.files" in modules
    others = [f"safehold.config.sources.{name}" for name in ("vmware", "ebs", "hyperv", "libvirt", "postgres",
                                                             "ssh", "command")]
    assert loaded(modules, *others) == []


def test_the_command_server_preloads_what_a_listing_after_a_backup_imports():
    """A served ``snapshots`` right after a backup reads the catalog's views through the ORM: the
    zygote has it loaded, so the fork does not import SQLAlchemy (~0.3 s of CPU) per command."""
    probe = ("import json, sys; from safehold.command_server.zygote import Zygote; Zygote.preload(None); "
             "print(json.dumps(sorted(sys.modules)))")
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    modules = set(json.loads(answer.stdout.splitlines()[-1]))
    assert loaded(modules, "safehold.catalog.store", "sqlalchemy") == ["safehold.catalog.store", "sqlalchemy"]
