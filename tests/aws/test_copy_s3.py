"""A copy from a local repository to an S3 repository with Object Lock on the moto server,
configured under ``copies:`` and driven through the CLI (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

import moto_support

SOURCE_PASSWORD = "source password"
DEST_PASSWORD = "offsite password"


def cli() -> list[str]:
    script = Path(sys.executable).with_name("safehold")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "safehold.cli.main"]


def run(root: Path, config: Path, password: str, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAFEHOLD_"))}
    env.update(SAFEHOLD_CONFIG=str(config), SAFEHOLD_PASSWORD=password, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", OFFSITE_PASSWORD=DEST_PASSWORD, SOURCE_PASSWORD=SOURCE_PASSWORD)
    proc = subprocess.run([*cli(), *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def source_with_copy(tmp_path: Path, moto, bucket: str, data: Path) -> tuple[dict, dict, Path]:
    """A local source repository's config with target 'docs' (``data``) and the copy 'offsite' in
    ``bucket`` under Object Lock; returns (the copy's repository, the target, the config's path)."""
    offsite = {"url": f"s3://{bucket}/copy", "endpoint_url": moto.url, "region": moto_support.REGION,
               "password_env": "OFFSITE_PASSWORD", "object_lock": {"mode": "GOVERNANCE", "days": 3}}
    target = {"name": "docs", "tier": 3, "source": {"type": "files", "paths": [str(data)]}}
    source_config = tmp_path / "source.yml"
    source_config.write_text(yaml.safe_dump({
        "repository": {"url": str(tmp_path / "repo")}, "state_dir": "state-source", "targets": [target],
        "copies": [{"name": "offsite", "repository": offsite}]}))
    return offsite, target, source_config


def test_copy_to_an_object_lock_bucket(moto, lock_bucket, s3, tmp_path: Path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "file.txt").write_text("first version\n")
    (data / "sub" / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    offsite, target, source_config = source_with_copy(tmp_path, moto, lock_bucket, data)
    dest_config = tmp_path / "dest.yml"
    dest_config.write_text(yaml.safe_dump({"repository": offsite, "state_dir": "state-dest", "targets": [target]}))
    run(tmp_path, source_config, SOURCE_PASSWORD, "init")
    run(tmp_path, source_config, SOURCE_PASSWORD, "backup", "--target", "docs")
    run(tmp_path, dest_config, DEST_PASSWORD, "init", "--copy-params-from", str(tmp_path / "repo"),
        "--from-password-env", "SOURCE_PASSWORD")

    [first] = json.loads(run(tmp_path, source_config, SOURCE_PASSWORD, "copy", "--to", "offsite", "--json").stdout)
    assert first["destination"] == "offsite" and first["snapshots_copied"] == 1 and first["blobs_sent"] > 0
    [again] = json.loads(run(tmp_path, source_config, SOURCE_PASSWORD, "copy", "--to", "offsite", "--json").stdout)
    assert again["snapshots_skipped"] == 1 and again["blobs_sent"] == 0

    # Every object the copy wrote is under Object Lock, like a backup's.
    listed = s3.list_objects_v2(Bucket=lock_bucket, Prefix="copy/data/")["Contents"]
    assert listed
    head = s3.head_object(Bucket=lock_bucket, Key=listed[0]["Key"])
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"]

    [copied] = json.loads(run(tmp_path, dest_config, DEST_PASSWORD, "snapshots", "--json").stdout)
    assert copied["copied_from"]["snapshot"] == first["copied"][0]["source"]
    run(tmp_path, dest_config, DEST_PASSWORD, "check", "--read-data")
    out = tmp_path / "restored"
    run(tmp_path, dest_config, DEST_PASSWORD, "restore", "latest:docs", "--to", str(out))
    restored = out / "data"
    assert (restored / "sub" / "random.bin").read_bytes() == (data / "sub" / "random.bin").read_bytes()


# 'safehold' with many small packs (1 MiB instead of 16) and a pause after each pack stored on S3
# (packs are spooled, so stored by put_spool), so that a SIGKILL lands after some index objects
# and before the snapshot, whatever the load. The test runs it with SAFEHOLD_UPLOADS=2: two packs
# stored at a time, so the copy advances at the stores' pace and its index objects follow them.
SLOW_COPY = """
import sys, time
import safehold.repository.repository as repository
from safehold.repository.backends import s3
from safehold.repository.backends.base import Kind
repository.PACK_TARGET_SIZE = 1 << 20
stored, spooled = s3.S3Backend.put, s3.S3Backend.put_spool
def put(self, kind, name, data, **options):
    result = stored(self, kind, name, data, **options)
    if kind is Kind.DATA:
        time.sleep(0.25)
    return result
def put_spool(self, kind, name, spool, **options):
    result = spooled(self, kind, name, spool, **options)
    if kind is Kind.DATA:
        time.sleep(0.25)
    return result
s3.S3Backend.put, s3.S3Backend.put_spool = put, put_spool
from safehold.cli.main import run
run(sys.argv[1:])
"""


def test_a_killed_copy_to_an_object_lock_bucket_resumes_and_checks_clean(moto, lock_bucket, s3, tmp_path: Path):
    """SIGKILL during a copy to S3 with Object Lock (issue 15): no snapshot on the destination, the
    rerun sends only what no index names yet and completes, and both repositories check clean."""
    import signal
    import time

    data = tmp_path / "data"
    data.mkdir()
    for number in range(10):  # 10 packs of 1 MiB on the destination, 0.25 s apart: a wide window to kill in
        (data / f"part-{number}.bin").write_bytes(os.urandom(1024 * 1024))
    offsite, target, source_config = source_with_copy(tmp_path, moto, lock_bucket, data)
    run(tmp_path, source_config, SOURCE_PASSWORD, "init")
    run(tmp_path, source_config, SOURCE_PASSWORD, "init", "--for-copy", "offsite")
    run(tmp_path, source_config, SOURCE_PASSWORD, "backup", "--target", "docs")

    def count(folder: str) -> int:
        return s3.list_objects_v2(Bucket=lock_bucket, Prefix=f"copy/{folder}/").get("KeyCount", 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAFEHOLD_"))}
    env.update(SAFEHOLD_CONFIG=str(source_config), SAFEHOLD_PASSWORD=SOURCE_PASSWORD, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", OFFSITE_PASSWORD=DEST_PASSWORD, SAFEHOLD_UPLOADS="2")
    process = subprocess.Popen([sys.executable, "-c", SLOW_COPY, "copy", "--to", "offsite", "--threads", "1"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (count("index") >= 1 and count("data") >= 5):
            assert process.poll() is None, f"the copy ended before it was killed: {process.communicate()}"
            assert time.monotonic() < deadline, "no index object on the destination after 120 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert count("snapshots") == 0  # never a half-copied snapshot
    assert count("locks") >= 1  # the killed run's lock is left, as after any kill (shared: no obstacle)

    [resumed] = json.loads(run(tmp_path, source_config, SOURCE_PASSWORD, "copy", "--to", "offsite", "--json").stdout)
    assert resumed["snapshots_copied"] == 1
    assert 0 < resumed["blobs_sent"] < resumed["blobs_total"] and resumed["blobs_present"] > 0, resumed
    listed = s3.list_objects_v2(Bucket=lock_bucket, Prefix="copy/snapshots/")["Contents"]
    assert s3.head_object(Bucket=lock_bucket, Key=listed[0]["Key"])["ObjectLockMode"] == "GOVERNANCE"
    dest_config = tmp_path / "dest.yml"
    dest_config.write_text(yaml.safe_dump({"repository": offsite, "state_dir": "state-dest", "targets": [target]}))
    run(tmp_path, dest_config, DEST_PASSWORD, "check", "--read-data")  # every blob decrypted and hashed
