"""The user's view: an S3 repository with Object Lock driven through the ``safehold`` CLI.

targets.yml names the bucket, the endpoint (the moto server) and the lock; AWS
credentials come from the environment (the standard chain). Covers init,
backup, forget and prune keeping locked data (and saying until when),
``safehold maintenance`` and ``safehold repo audit-immutability`` passing and
failing with the fix to apply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

import moto_support
from safehold.repository.backends import Kind
from safehold.repository.backends.s3 import S3Backend

PASSWORD = "cli correct horse"


def cli() -> list[str]:
    script = Path(sys.executable).with_name("safehold")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "safehold.cli.main"]


class Workspace:
    def __init__(self, root: Path, moto, bucket: str, object_lock: dict | None, retention: dict | None = None):
        self.root = root
        (root / "data").mkdir(parents=True)
        (root / "data" / "file.txt").write_text("first version\n")
        repository = {"url": f"s3://{bucket}/safehold", "endpoint_url": moto.url, "region": moto_support.REGION}
        if object_lock:
            repository["object_lock"] = object_lock
        target = {"name": "docs", "tier": 3, "source": {"type": "files", "paths": ["data"]}}
        if retention:
            target["retention"] = retention
        self.config = root / "targets.yml"
        self.config.write_text(yaml.safe_dump({"repository": repository, "state_dir": "state", "targets": [target]}))

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAFEHOLD_"))}
        env.update(SAFEHOLD_CONFIG=str(self.config), SAFEHOLD_PASSWORD=PASSWORD, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing")
        proc = subprocess.run([*cli(), *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc


def test_locked_repository_through_the_cli(moto, lock_bucket, s3, tmp_path):
    s3.put_bucket_lifecycle_configuration(Bucket=lock_bucket, LifecycleConfiguration={"Rules": [{
        "ID": "expire-hidden-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]})
    ws = Workspace(tmp_path / "ws", moto, lock_bucket, {"mode": "COMPLIANCE", "days": 2}, {"keep_last": 1})
    ws.run("init")
    ws.run("backup", "--target", "docs")
    (ws.root / "data" / "file.txt").write_text("second version\n")
    ws.run("backup", "--target", "docs")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=lock_bucket, Prefix="safehold/data/")["Contents"]]
    assert keys and all(s3.head_object(Bucket=lock_bucket, Key=k)["ObjectLockMode"] == "COMPLIANCE" for k in keys)

    planned = json.loads(ws.run("forget", "--dry-run", "--json").stdout)
    assert [d["keep"] for d in planned["decisions"]] == [True, True]  # a dry run knows about the lock too
    forgot = json.loads(ws.run("forget", "--json").stdout)
    assert forgot["removed"] == []
    held = [d for d in forgot["decisions"] if "retained by Object Lock until" in " ".join(d["reasons"])]
    assert len(held) == 1 and held[0]["keep"]
    assert "retained by Object Lock until" in ws.run("forget").stdout  # the table says it too

    audit = json.loads(ws.run("repo", "audit-immutability", "--json").stdout)
    assert audit["ok"] and audit["snapshots_kept"] == 1 and audit["objects_checked"] >= 3
    assert not [f for f in audit["findings"] if f["level"] != "info"]

    # Raising the lock period: maintenance extends what the kept snapshot needs.
    ws.config.write_text(ws.config.read_text().replace("days: 2", "days: 5"))
    report = json.loads(ws.run("maintenance", "--json").stdout)
    assert report["snapshots_kept"] == 1 and sum(report["objects_extended"].values()) == report["objects_checked"]
    again = ws.run("maintenance")
    assert "extended nothing" in again.stdout

    jobs = ws.run("jobs", "--json").stdout
    assert "maintenance" in jobs and "audit-immutability" in jobs


def test_audit_fails_with_the_fix_for_an_unlocked_bucket_and_config(moto, plain_bucket, tmp_path):
    ws = Workspace(tmp_path / "ws", moto, plain_bucket, None)
    ws.run("init")
    ws.run("backup", "--target", "docs")
    proc = ws.run("repo", "audit-immutability", code=40)
    assert "repository.object_lock is not set" in proc.stderr
    assert "does not have Object Lock enabled" in proc.stderr
    assert "put-object-lock-configuration" in proc.stderr  # the fix, ready to run
    assert "versioning" in proc.stderr and "NOT immutable" in proc.stdout
    report = json.loads(ws.run("repo", "audit-immutability", "--json", code=40).stdout)
    assert not report["ok"] and {f["check"] for f in report["findings"] if f["level"] == "error"} >= {
        "configuration", "bucket"}


def test_audit_fails_when_a_kept_snapshot_is_not_locked_long_enough(moto, lock_bucket, tmp_path):
    ws = Workspace(tmp_path / "ws", moto, lock_bucket, {"mode": "GOVERNANCE", "days": 1})
    ws.run("init")
    ws.run("backup", "--target", "docs")
    proc = ws.run("repo", "audit-immutability", "--min-remaining-days", "3", code=40)
    assert "locked for less than 3 day(s)" in proc.stderr
    assert "safehold maintenance" in proc.stderr
    assert "GOVERNANCE mode" in proc.stderr  # a warning, with its fix
    assert "NoncurrentVersionExpiration" in proc.stderr


def test_init_refuses_object_lock_on_a_bucket_without_it(moto, plain_bucket, tmp_path):
    ws = Workspace(tmp_path / "ws", moto, plain_bucket, {"mode": "COMPLIANCE", "days": 7})
    proc = ws.run("init", code=21)
    assert "without Object Lock" in proc.stderr


def test_maintenance_without_object_lock_says_there_is_nothing_to_do(moto, plain_bucket, tmp_path):
    ws = Workspace(tmp_path / "ws", moto, plain_bucket, None)
    ws.run("init")
    assert "no object_lock configured" in ws.run("maintenance").stdout


def test_prune_says_what_it_kept_under_object_lock_and_until_when(moto, lock_bucket, tmp_path):
    ws = Workspace(tmp_path / "ws", moto, lock_bucket, {"mode": "GOVERNANCE", "days": 1}, {"keep_last": 1})
    ws.run("init")
    ws.run("backup", "--target", "docs")
    (ws.root / "data" / "file.txt").write_text("x" * 100_000)
    ws.run("backup", "--target", "docs")
    # An object under retention that no index names: what a backup killed before its index leaves.
    backend = S3Backend(f"s3://{lock_bucket}/safehold", client=moto.client("s3"), object_lock_mode="GOVERNANCE",
                        object_lock_days=1)
    until = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=5)
    backend.put(Kind.DATA, "ff" * 32, b"orphan", retain_until=until)
    proc = ws.run("prune")
    assert "kept under Object Lock: 1 data" in proc.stdout
    assert f"data/{'ff' * 8} until {until.isoformat()}" in proc.stdout
    report = json.loads(ws.run("prune", "--json").stdout)
    assert [(r["kind"], r["name"]) for r in report["retained"]] == [("data", "ff" * 32)]


def test_audit_names_an_unlocked_key_or_config_and_passes_after_maintenance(moto, lock_bucket, s3, tmp_path):
    from safehold.repository import Repository
    from safehold.repository.crypto import wrap_master_key

    ws = Workspace(tmp_path / "ws", moto, lock_bucket, {"mode": "GOVERNANCE", "days": 2})
    ws.run("init")
    ws.run("backup", "--target", "docs")
    assert json.loads(ws.run("repo", "audit-immutability", "--json").stdout)["ok"]
    # Planted: a key file and a config version written without a lock (an older safehold, or a hand).
    backend = S3Backend(f"s3://{lock_bucket}/safehold", client=moto.client("s3"))
    repository = Repository.open(backend, PASSWORD.encode())
    key_file = wrap_master_key(repository.master, b"planted",
                               {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1})
    import blake3

    planted = blake3.blake3(key_file).hexdigest()
    backend.put(Kind.KEYS, planted, key_file)
    config = s3.get_object(Bucket=lock_bucket, Key="safehold/config")["Body"].read()
    s3.put_object(Bucket=lock_bucket, Key="safehold/config", Body=config)  # a new, unlocked current version
    proc = ws.run("repo", "audit-immutability", code=40)
    assert f"not locked: config, keys/{planted[:8]}" in proc.stderr, proc.stderr
    assert "every locked backup unreadable" in proc.stderr and "safehold maintenance" in proc.stderr
    report = json.loads(ws.run("repo", "audit-immutability", "--json", code=40).stdout)
    assert [f["check"] for f in report["findings"] if f["level"] == "error"] == ["keys"]

    extended = json.loads(ws.run("maintenance", "--json").stdout)["objects_extended"]
    assert extended.get("config") == 1 and extended.get("keys") == 1
    after = json.loads(ws.run("repo", "audit-immutability", "--json").stdout)
    assert after["ok"], after
    assert any(f["check"] == "keys" and "locked until at least" in f["message"] for f in after["findings"])
    head = s3.head_object(Bucket=lock_bucket, Key=f"safehold/keys/{planted}")
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_key_remove_under_object_lock_says_the_locked_version_stays(moto, lock_bucket, s3, tmp_path):
    ws = Workspace(tmp_path / "ws", moto, lock_bucket, {"mode": "GOVERNANCE", "days": 2})
    ws.run("init")
    (ws.root / "spare-password").write_text("spare horse\n")
    added = ws.run("key", "add", "--new-password-file", "spare-password").stdout.split()[-1]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=lock_bucket, Prefix=f"safehold/keys/{added}")["Contents"]]
    [key] = keys
    until = s3.head_object(Bucket=lock_bucket, Key=key)["ObjectLockRetainUntilDate"]
    proc = ws.run("key", "remove", added)
    assert f"removed key {added}" in proc.stdout
    assert "Object Lock keeps its stored version" in proc.stdout
    assert until.astimezone(timezone.utc).isoformat(timespec="seconds") in proc.stdout
    assert added not in ws.run("key", "list").stdout  # hidden, so ignored


def test_audit_names_an_unlocked_forget_record_and_passes_after_maintenance(moto, lock_bucket, s3, tmp_path):
    """A forget record is what flags a forgotten snapshot that is put back; one left unlocked (written by
    a hand, or an older safehold) could be deleted to hide a replay, so the audit names it."""
    from safehold.repository import Repository, Snapshot
    from safehold.repository.forgotten import record_forgotten

    ws = Workspace(tmp_path / "ws", moto, lock_bucket, {"mode": "GOVERNANCE", "days": 2})
    ws.run("init")
    ws.run("backup", "--target", "docs")
    assert not any(f["check"] == "forgotten"
                   for f in json.loads(ws.run("repo", "audit-immutability", "--json").stdout)["findings"])
    # Planted: a forget record written without a lock (through a backend that sets none).
    backend = S3Backend(f"s3://{lock_bucket}/safehold", client=moto.client("s3"))
    repository = Repository.open(backend, PASSWORD.encode())
    gone = Snapshot(id="ab" * 32, time=datetime.now(timezone.utc), target="docs", kind="files", hostname="h",
                    paths=[], tree=[])
    [name] = record_forgotten(repository, [gone], "planted")
    assert "ObjectLockMode" not in s3.head_object(Bucket=lock_bucket, Key=f"safehold/forgotten/{name}")

    proc = ws.run("repo", "audit-immutability", code=40)
    assert f"1 forget record(s) are not locked: forgotten/{name[:8]}" in proc.stderr, proc.stderr
    assert "safehold maintenance" in proc.stderr
    report = json.loads(ws.run("repo", "audit-immutability", "--json", code=40).stdout)
    assert [f["check"] for f in report["findings"] if f["level"] == "error"] == ["forgotten"]

    extended = json.loads(ws.run("maintenance", "--json").stdout)["objects_extended"]
    assert extended.get("forgotten") == 1
    after = json.loads(ws.run("repo", "audit-immutability", "--json").stdout)
    assert after["ok"], after
    assert any(f["check"] == "forgotten" and "1 forget record(s) are locked until at least" in f["message"]
               for f in after["findings"])


def test_audit_warns_about_a_forget_record_locked_too_briefly(moto, lock_bucket, tmp_path):
    from safehold.repository import Repository, Snapshot
    from safehold.repository.forgotten import record_forgotten

    ws = Workspace(tmp_path / "ws", moto, lock_bucket, {"mode": "GOVERNANCE", "days": 30})
    ws.run("init")
    ws.run("backup", "--target", "docs")
    backend = S3Backend(f"s3://{lock_bucket}/safehold", client=moto.client("s3"), object_lock_mode="GOVERNANCE",
                        object_lock_days=1)
    repository = Repository.open(backend, PASSWORD.encode())
    gone = Snapshot(id="cd" * 32, time=datetime.now(timezone.utc), target="docs", kind="files", hostname="h",
                    paths=[], tree=[])
    [name] = record_forgotten(repository, [gone], "planted")  # locked for 1 day from now: less than the day the audit wants left
    report = json.loads(ws.run("repo", "audit-immutability", "--json").stdout)
    [finding] = [f for f in report["findings"] if f["check"] == "forgotten"]
    assert finding["level"] == "warning" and f"forgotten/{name[:8]}" in finding["message"], finding
