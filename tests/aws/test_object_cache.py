"""The local cache of snapshot, index and verdict objects (repository/cache.py) against a real S3
repository on moto: a backup's GETs of metadata stay flat as the history grows (they grew with
every snapshot before), a tampered cache file is re-fetched, a forgotten snapshot leaves the
cache, and the cache is off with 'cache: false' / Context(cache=False) ('--no-cache').

GETs are counted on the backend object: every S3Backend.get of the test goes to moto and is
counted per kind (snapshots and index are the metadata a backup reads)."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

import moto_support
from safehold.catalog import Catalog
from safehold.config import load_config
from safehold.engine.backup import backup_target
from safehold.engine.context import Context
from safehold.engine.maintenance import init_repository
from safehold.repository.backends import Kind
from safehold.repository.backends.s3 import S3Backend

METADATA = (Kind.SNAPSHOTS, Kind.INDEX, Kind.VERDICTS)


@pytest.fixture
def gets(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """(kind) -> GETs sent to S3 through any S3Backend since the test began (or since cleared)."""
    counted: Counter = Counter()
    real_get = S3Backend.get

    def counting_get(self, kind, name, offset=0, length=None):
        counted[kind] += 1
        return real_get(self, kind, name, offset, length)

    monkeypatch.setattr(S3Backend, "get", counting_get)
    return counted


def make_context(root: Path, moto, bucket: str, *, cache: bool = True, config_cache: bool = True) -> Context:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "fixed.bin").write_bytes(b"x" * 50_000)
    (root / "password").write_text("cache correct horse\n")
    (root / "password").chmod(0o600)
    repository = {"url": f"s3://{bucket}/{uuid.uuid4().hex[:8]}", "endpoint_url": moto.url,
                  "region": moto_support.REGION, "password_file": "password"}
    target = {"name": "docs", "tier": 3, "source": {"type": "files", "paths": ["data"]}}
    document = {"repository": repository, "state_dir": "state", "targets": [target]}
    if not config_cache:
        document["cache"] = False
    path = root / "targets.yml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    context = Context(config, threads=2, cache=cache, _catalog=Catalog.open(config.catalog_url))
    init_repository(context)
    return context


def backup(context: Context, gets: Counter) -> dict:
    """One backup with a changed file; the metadata GETs it sent, by kind."""
    (Path(context.config.targets[0].source.paths[0]) / f"{uuid.uuid4().hex}.txt").write_text("changed\n")
    gets.clear()
    backup_target(context, "docs")
    return {kind.value: gets[kind] for kind in METADATA}


def cache_folder(context: Context) -> Path:
    repository = context.open_repository(load_index=False)
    return Path(context.config.state_dir) / "cache" / repository.id


def test_backup_metadata_gets_stay_flat_with_the_cache_and_grow_without(moto, plain_bucket, aws_env, fast_kdf,
                                                                         gets, tmp_path):
    with_cache = make_context(tmp_path / "cached", moto, plain_bucket)
    without = make_context(tmp_path / "uncached", moto, plain_bucket, cache=False)
    counts: dict[str, list[dict]] = {"cached": [], "uncached": []}
    for _ in range(4):  # each tool in turn, so both repositories grow alike
        counts["cached"].append(backup(with_cache, gets))
        counts["uncached"].append(backup(without, gets))
    # Without the cache the second backup reads 1 snapshot and 1 index object, the fourth 3 and 3:
    # one GET per snapshot and index object of the history.
    assert [c["snapshots"] for c in counts["uncached"]] == [0, 1, 2, 3], counts
    assert [c["index"] for c in counts["uncached"]] == [0, 1, 2, 3], counts
    # With it, nothing: each was written from this state folder and is read from the cache.
    assert all(c == {"snapshots": 0, "index": 0, "verdicts": 0} for c in counts["cached"]), counts
    folder = cache_folder(with_cache)
    assert len(os.listdir(folder / "snapshots")) == 4 and len(os.listdir(folder / "index")) == 4
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert {os.stat(path).st_mode & 0o777 for path in (folder / "snapshots").iterdir()} == {0o600}
    assert not (Path(without.config.state_dir) / "cache").exists()
    with_cache.close(), without.close()


def test_a_snapshot_from_elsewhere_is_fetched_once_then_cached(moto, plain_bucket, aws_env, fast_kdf, gets,
                                                               tmp_path):
    first = make_context(tmp_path / "one", moto, plain_bucket)
    backup(first, gets)
    # A second host: its own state folder, the same repository.
    second_root = tmp_path / "two"
    second_root.mkdir()
    (second_root / "password").write_text("cache correct horse\n")
    (second_root / "password").chmod(0o600)
    document = yaml.safe_load((tmp_path / "one" / "targets.yml").read_text())
    document["targets"][0]["source"]["paths"] = [str(tmp_path / "one" / "data")]
    (second_root / "targets.yml").write_text(yaml.safe_dump(document))
    config = load_config(second_root / "targets.yml")
    Path(config.state_dir).mkdir(parents=True)
    second = Context(config, threads=2, _catalog=Catalog.open(config.catalog_url))
    assert backup(second, gets) == {"snapshots": 1, "index": 1, "verdicts": 0}  # the first host's, once
    assert backup(second, gets) == {"snapshots": 0, "index": 0, "verdicts": 0}
    assert backup(first, gets) == {"snapshots": 2, "index": 2, "verdicts": 0}  # the second host's two
    first.close(), second.close()


def test_a_tampered_or_truncated_cache_file_is_fetched_again(moto, plain_bucket, aws_env, fast_kdf, gets, tmp_path):
    context = make_context(tmp_path, moto, plain_bucket)
    older = backup_target(context, "docs").snapshot_id
    newer = backup_target(context, "docs").snapshot_id
    folder = cache_folder(context)
    [index] = sorted((folder / "index").iterdir())[:1]
    # The parent's bytes altered (one byte: decryption would fail on it) and an index object cut short.
    parent = folder / "snapshots" / newer
    damaged = bytearray(parent.read_bytes())
    damaged[40] ^= 0x01
    parent.write_bytes(bytes(damaged))
    index.write_bytes(index.read_bytes()[:-10])
    assert backup(context, gets) == {"snapshots": 1, "index": 1, "verdicts": 0}
    # The backup took the right parent (read again from S3) and the cache holds the stored bytes again.
    repository = context.open_repository(load_index=False)
    history = repository.list_snapshots("docs")
    assert [s.id for s in history[:2]] == [older, newer] and history[2].parent == newer
    assert parent.read_bytes() == repository.backend.get(Kind.SNAPSHOTS, newer)
    assert index.read_bytes() == repository.backend.get(Kind.INDEX, index.name)
    context.close()


def test_a_forgotten_snapshot_and_a_pruned_index_leave_the_cache(moto, plain_bucket, aws_env, fast_kdf, gets,
                                                                 tmp_path):
    from safehold.engine.maintenance import forget_snapshots, prune_repository

    context = make_context(tmp_path, moto, plain_bucket)
    first = backup_target(context, "docs").snapshot_id
    backup(context, gets)
    folder = cache_folder(context)
    assert (folder / "snapshots" / first).exists()
    forget_snapshots(context, snapshot_ids=[first])
    assert not (folder / "snapshots" / first).exists()
    indexes_before = set(os.listdir(folder / "index"))
    prune_repository(context)
    stored = {info.name for info in context.backend().list(Kind.INDEX)}
    assert set(os.listdir(folder / "index")) <= stored and indexes_before - stored
    assert backup(context, gets)["snapshots"] == 0
    context.close()


def test_the_cache_is_off_with_the_option_or_the_setting(moto, plain_bucket, aws_env, fast_kdf, gets, tmp_path):
    for name, options in (("flag", {"cache": False}), ("setting", {"config_cache": False})):
        context = make_context(tmp_path / name, moto, plain_bucket, **options)
        backup(context, gets)
        assert backup(context, gets) == {"snapshots": 1, "index": 1, "verdicts": 0}
        assert not (Path(context.config.state_dir) / "cache").exists()
        context.close()


def test_the_command_line_flag_and_variable_turn_it_off(moto, plain_bucket, aws_env, fast_kdf, tmp_path,
                                                        monkeypatch):
    from typer.testing import CliRunner

    from safehold.cli.main import app

    context = make_context(tmp_path, moto, plain_bucket)
    context.close()
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "unused")  # the file in targets.yml wins
    config = str(tmp_path / "targets.yml")
    cache = Path(context.config.state_dir) / "cache"
    for arguments, environment in ((["--no-cache"], {}), ([], {"SAFEHOLD_NO_CACHE": "1"})):
        done = CliRunner().invoke(app, ["--config", config, *arguments, "backup", "--all", "--json"], env=environment)
        assert done.exit_code == 0, done.output
        assert not cache.exists()
    done = CliRunner().invoke(app, ["--config", config, "backup", "--all", "--json"])
    assert done.exit_code == 0, done.output
    assert len(list(cache.glob("*/snapshots/*"))) == 3
