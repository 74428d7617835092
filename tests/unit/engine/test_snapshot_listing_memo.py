"""``safehold snapshots`` leaves a SQLite catalog closed while nothing wrote to it since the last
listing (issue 19, start-up: SQLAlchemy is most of a listing's CPU), and reads it again after any
write: the snapshot cache is refilled and a new copy job shows. Real repository, real catalog."""

from __future__ import annotations

import os
from pathlib import Path

from safehold.catalog import Catalog
from safehold.config import load_config
from safehold.engine.browse import list_snapshots
from safehold.engine.context import Context
from safehold.repository import Repository
from safehold.repository.backends import open_backend

FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


def workspace(tmp_path: Path) -> Path:
    (tmp_path / "password").write_text("pw\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_bytes(b"a" * 1000)
    config = tmp_path / "targets.yml"
    config.write_text('repository: {"url": "repo", "password_file": "password"}\nstate_dir: state\n'
                      f'targets:\n  - {{"name": "docs", "tier": 1, "source": {{"type": "files", '
                      f'"paths": ["{tmp_path / "data"}"]}}}}\n')
    Repository.init(open_backend(str(tmp_path / "repo")), b"pw", FAST_KDF)
    return config


def listing(config: Path) -> list[dict]:
    context = Context.load(config)
    try:
        return list_snapshots(context)
    finally:
        context.close()


def catalog_stamp(config: Path) -> tuple:
    database = Path(load_config(config).state_dir) / "catalog.db"
    status = database.stat()
    return status.st_mtime_ns, status.st_size, os.path.exists(f"{database}-wal")


def backup(config: Path) -> str:
    from safehold.engine.backup import backup_targets

    context = Context.load(config)
    try:
        return backup_targets(context, ["docs"]).results[0].snapshot_id
    finally:
        context.close()


def test_a_repeated_listing_leaves_the_catalog_alone_and_sees_every_write(tmp_path: Path):
    config = workspace(tmp_path)
    first = backup(config)
    assert [row["id"] for row in listing(config)] == [first]
    stamp = catalog_stamp(config)
    assert [row["id"] for row in listing(config)] == [first]
    assert catalog_stamp(config) == stamp  # not opened: the same rows were not written again

    # Another process empties the snapshot cache: the next listing refills it.
    url = load_config(config).catalog_url
    repository_id = Repository.open(open_backend(str(tmp_path / "repo")), b"pw").id
    with Catalog.open(url) as catalog:
        catalog.replace_snapshots(repository_id, [])
    listing(config)
    with Catalog.open(url) as catalog:
        assert [s.id for s in catalog.list_snapshots(repository_id)] == [first]

    # A copy job recorded since the last listing shows in the next one.
    with Catalog.open(url) as catalog:
        with catalog.job("copy", details={"source_id": repository_id, "destination": "offsite",
                                          "copied": [{"source": first}]}):
            pass
    assert listing(config)[0]["copies"] == ["offsite"]
    assert listing(config)[0]["copies"] == ["offsite"]  # and from the memo, unchanged

    # A new snapshot (its backup wrote the catalog) is listed and cached.
    second = backup(config)
    assert [row["id"] for row in listing(config)] == [first, second]
    with Catalog.open(url) as catalog:
        assert {s.id for s in catalog.list_snapshots(repository_id)} == {first, second}


def test_a_damaged_memo_only_costs_the_catalog(tmp_path: Path):
    config = workspace(tmp_path)
    first = backup(config)
    listing(config)
    memo = Path(load_config(config).state_dir) / "snapshot-listing.json"
    assert memo.stat().st_mode & 0o777 == 0o600
    for garbage in ("not json", "[]", '{"x": 1}'):
        memo.write_text(garbage)
        assert [row["id"] for row in listing(config)] == [first]
