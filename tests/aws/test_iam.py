"""Least privilege (deploy/iam/) under moto's IAM enforcement, on a server of its own.

Each role's policy is loaded from deploy/iam/ with the placeholders filled in;
the repository bucket carries deploy/iam/repository-bucket-policy.json. The
roles then do their whole job with their own credentials (allowed calls
succeed), and a list of forbidden calls is denied. moto evaluates the policies
through the ``iam_policy_evaluation`` extension (conditions, bucket policy,
EC2 resource ARNs), which test_moto_extensions.py tests on its own.

moto's EBS direct APIs fail under IAM enforcement (TESTBED.md), so the ebs:*
statements are checked with the same evaluator directly (last test), not
through moto.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest
from botocore.exceptions import ClientError

import iam_evaluation
import moto_support
from safehold.repository import Repository
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.base import ObjectNotFound
from safehold.repository.backends.s3 import S3Backend, S3RequestFailed
from safehold.repository.immutability import extend_retention
from safehold.repository.prune import plan_forget, forget, prune
from safehold.repository.retention import RetentionPolicy
from safehold.restore.directory import DirectoryRestorer
from safehold.sources.files import FilesSource

IAM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "iam"
ACCOUNT = "123456789012"
PREFIX = "repo"
REGION = moto_support.REGION
DR_REGION = "eu-central-1"
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PASSWORD = b"pw"
TAG = {"Key": "safehold:managed", "Value": "true"}


def policy(name: str, **values: str) -> dict:
    text = (IAM_DIR / name).read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return json.loads(text)


@dataclass
class World:
    server: moto_support.MotoServer
    bucket: str
    other_bucket: str
    credentials: dict[str, dict]
    instance: str
    volume: str
    foreign_snapshot: str

    def client(self, role: str, service: str, region: str = REGION):
        return self.server.client(service, region, **self.credentials[role])

    def backend(self, role: str) -> S3Backend:
        return S3Backend(f"s3://{self.bucket}/{PREFIX}", client=self.client(role, "s3"),
                         object_lock_mode="COMPLIANCE", object_lock_days=1)


@pytest.fixture(scope="module")
def world():
    with moto_support.MotoServer() as server:
        # Three free calls make an administrator; everything after is checked against IAM.
        server.enforce_iam(3)
        iam = server.client("iam")
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        admin = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        iam = server.client("iam", **admin)
        s3 = server.client("s3", **admin)
        bucket = moto_support.make_bucket_with(s3, object_lock=True)
        other_bucket = moto_support.make_bucket_with(s3)
        s3.put_object(Bucket=other_bucket, Key="secret.txt", Body=b"not yours")
        s3.put_object(Bucket=bucket, Key="elsewhere/file", Body=b"another application's data")
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/admin"}, "Action": "sts:AssumeRole"}]})
        arns = {role: f"arn:aws:iam::{ACCOUNT}:role/safehold-{role}" for role in ("backup", "restore", "break-glass")}
        values = {"REPOSITORY_BUCKET": bucket, "REPOSITORY_PREFIX": PREFIX, "BACKUP_ROLE_ARN": arns["backup"],
                  "RESTORE_ROLE_ARN": arns["restore"], "BREAK_GLASS_ROLE_ARN": arns["break-glass"]}
        documents = {"backup": policy("backup-role-policy.json", **values),
                     "restore": policy("restore-role-policy.json", **values),
                     "break-glass": {"Version": "2012-10-17",
                                     "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}}
        credentials = {"admin": admin}
        sts = server.client("sts", **admin)
        for role, document in documents.items():
            iam.create_role(RoleName=f"safehold-{role}", AssumeRolePolicyDocument=trust)
            iam.put_role_policy(RoleName=f"safehold-{role}", PolicyName="safehold", PolicyDocument=json.dumps(document))
            assumed = sts.assume_role(RoleArn=arns[role], RoleSessionName="test")["Credentials"]
            credentials[role] = {"aws_access_key_id": assumed["AccessKeyId"],
                                 "aws_secret_access_key": assumed["SecretAccessKey"],
                                 "aws_session_token": assumed["SessionToken"]}
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy("repository-bucket-policy.json", **values)))
        ec2 = server.client("ec2", **admin)
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                     Placement={"AvailabilityZone": f"{REGION}a"})["Instances"][0]["InstanceId"]
        volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
        foreign = ec2.create_snapshot(VolumeId=volume, Description="someone else's")["SnapshotId"]
        yield World(server, bucket, other_bucket, credentials, instance, volume, foreign)


def denied(call: Callable[[], object]) -> None:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] in ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException"), \
        caught.value.response["Error"]


@pytest.fixture(scope="module")
def repository(world, tmp_path_factory) -> tuple[Repository, Path]:
    """A repository the backup role created and backed up into, with its own credentials only."""
    tree = tmp_path_factory.mktemp("tree")
    (tree / "a.txt").write_bytes(b"alpha\n" * 1000)
    (tree / "b.bin").write_bytes(os.urandom(300_000))
    repository = Repository.init(world.backend("backup"), PASSWORD, FAST_KDF)
    with repository.lock(purpose="backup"):
        with FilesSource([str(tree)]).open() as view:
            Archiver(repository, threads=2).snapshot(view, "docs", None)
        (tree / "a.txt").write_bytes(b"changed")
        with FilesSource([str(tree)]).open() as view:
            Archiver(repository, threads=2).snapshot(view, "docs", None)
    return repository, tree


# --- allowed ------------------------------------------------------------------------------


def test_backup_role_runs_backup_forget_prune_and_maintenance(world, repository):
    repository, _tree = repository
    assert len(repository.list_snapshots()) == 2
    with repository.lock(exclusive=True, purpose="prune"):
        decisions = plan_forget(repository, {"docs": RetentionPolicy(keep_last=1)})
        assert forget(repository, decisions) == []  # the older snapshot is locked: kept, not deleted
        report = prune(repository)
    assert report.packs_deleted == 0
    kept = [d.snapshot for d in decisions if d.keep]
    repository.backend.retention_period = timedelta(days=2)
    extended = extend_retention(repository, kept)
    assert sum(extended.objects_extended.values()) == extended.objects_checked > 0
    facts = repository.backend.immutability_facts()
    assert facts["object_lock_enabled"] and facts["versioning"] == "Enabled"


def test_restore_role_restores_holding_a_shared_lock(world, repository, tmp_path):
    _repository, tree = repository
    reader = Repository.open(world.backend("restore"), PASSWORD)
    reader.load_index()
    with reader.lock(purpose="restore"):
        snapshot = reader.find_snapshot("latest")
        DirectoryRestorer(reader, tmp_path / "out", threads=2).restore(reader.read_tree(snapshot))
    restored = next(p for p in (tmp_path / "out").rglob("b.bin"))
    assert restored.read_bytes() == (tree / "b.bin").read_bytes()
    assert list(reader.backend.list(Kind.LOCKS)) == []  # released


def test_backup_role_manages_its_own_ebs_snapshots(world):
    ec2 = world.client("backup", "ec2")
    assert any(v["VolumeId"] == world.volume for v in ec2.describe_volumes()["Volumes"])
    ec2.describe_instances()
    snapshot = ec2.create_snapshot(VolumeId=world.volume, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [TAG, {"Key": "safehold:target", "Value": "web-01"}]}])["SnapshotId"]
    assert snapshot in [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
    dr = world.client("backup", "ec2", DR_REGION)
    copy = dr.copy_snapshot(SourceRegion=REGION, SourceSnapshotId=snapshot,
                            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [TAG]}])["SnapshotId"]
    dr.delete_snapshot(SnapshotId=copy)
    ec2.delete_snapshot(SnapshotId=snapshot)


def test_restore_role_creates_and_attaches_a_volume_from_a_safehold_snapshot(world):
    backup = world.client("backup", "ec2")
    snapshot = backup.create_snapshot(VolumeId=world.volume, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [TAG]}])["SnapshotId"]
    ec2 = world.client("restore", "ec2")
    restored = {"Key": "safehold:restored-from", "Value": snapshot}  # what safehold's EBS restore tags
    denied(lambda: ec2.create_volume(SnapshotId=snapshot, AvailabilityZone=f"{REGION}a"))  # untagged: no
    volume = ec2.create_volume(SnapshotId=snapshot, AvailabilityZone=f"{REGION}a", TagSpecifications=[
        {"ResourceType": "volume", "Tags": [restored]}])["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=world.instance, Device="/dev/sdf")
    [attached] = world.client("admin", "ec2").describe_volumes(VolumeIds=[volume])["Volumes"]
    assert attached["Attachments"][0]["InstanceId"] == world.instance


def test_roles_see_a_missing_object_as_missing_though_s3_answers_403(world, repository):
    """The shipped roles may list only the repository's prefix, so S3 answers 403, not 404, to their
    GET or HEAD of a missing key (AWS's HeadObject/GetObject references; moto_extensions #8). `init`
    and every existence question depend on the backend telling that apart from a real denial."""
    for role in ("backup", "restore"):
        raw = world.client(role, "s3")
        with pytest.raises(ClientError) as caught:
            raw.head_object(Bucket=world.bucket, Key=f"{PREFIX}/snapshots/{'0' * 64}")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        backend = world.backend(role)
        with pytest.raises(ObjectNotFound):
            backend.stat(Kind.SNAPSHOTS, "0" * 64)
        with pytest.raises(ObjectNotFound):
            backend.get(Kind.SNAPSHOTS, "0" * 64)
        assert backend.exists()  # the config is there: a HEAD that succeeds needs no listing


def test_a_real_denial_is_not_taken_for_a_missing_object(world, repository):
    # Another application's prefix in the same bucket: the role may neither read nor list it, so the
    # 403 stays an access error (naming the IAM policy), never "not found".
    elsewhere = S3Backend(f"s3://{world.bucket}/elsewhere", client=world.client("backup", "s3"))
    with pytest.raises(S3RequestFailed) as caught:
        elsewhere.stat(Kind.CONFIG, "config")
    assert caught.value.errno == errno.EACCES and "IAM policy" in str(caught.value)
    with pytest.raises(S3RequestFailed):
        elsewhere.exists()


# --- forbidden ------------------------------------------------------------------------------


def _locked_key(world, repository) -> tuple[str, str]:
    repository, _tree = repository
    name = next(iter(repository.backend.list(Kind.DATA))).name
    key = repository.backend.key(Kind.DATA, name)
    version = world.client("admin", "s3").head_object(Bucket=world.bucket, Key=key)["VersionId"]
    return key, version


FORBIDDEN: dict[str, Callable[[World, str, str], object]] = {
    "delete a locked object's version": lambda w, key, version: w.client("backup", "s3").delete_object(
        Bucket=w.bucket, Key=key, VersionId=version),
    "delete bypassing governance retention": lambda w, key, version: w.client("backup", "s3").delete_object(
        Bucket=w.bucket, Key=key, VersionId=version, BypassGovernanceRetention=True),
    "shorten a retention": lambda w, key, version: w.client("backup", "s3").put_object_retention(
        Bucket=w.bucket, Key=key, Retention={"Mode": "COMPLIANCE",
                                             "RetainUntilDate": datetime.now(timezone.utc) + timedelta(minutes=1)}),
    "read another bucket": lambda w, key, version: w.client("backup", "s3").get_object(
        Bucket=w.other_bucket, Key="secret.txt"),
    "list another prefix of the repository bucket": lambda w, key, version: w.client("backup", "s3").list_objects_v2(
        Bucket=w.bucket, Prefix="elsewhere/"),
    "suspend versioning": lambda w, key, version: w.client("backup", "s3").put_bucket_versioning(
        Bucket=w.bucket, VersioningConfiguration={"Status": "Suspended"}),
    "replace the bucket policy": lambda w, key, version: w.client("backup", "s3").put_bucket_policy(
        Bucket=w.bucket, Policy='{"Version":"2012-10-17","Statement":[]}'),
    "delete an EBS snapshot safehold did not create": lambda w, key, version: w.client("backup", "ec2").delete_snapshot(
        SnapshotId=w.foreign_snapshot),
    "create an EBS snapshot without the safehold tag": lambda w, key, version: w.client(
        "backup", "ec2").create_snapshot(VolumeId=w.volume),
    "terminate an instance": lambda w, key, version: w.client("backup", "ec2").terminate_instances(
        InstanceIds=[w.instance]),
    "delete a volume": lambda w, key, version: w.client("backup", "ec2").delete_volume(VolumeId=w.volume),
    "restore role writes a pack": lambda w, key, version: w.client("restore", "s3").put_object(
        Bucket=w.bucket, Key=f"{PREFIX}/data/{'ab' * 32}", Body=b"x"),
    "restore role deletes a snapshot object": lambda w, key, version: w.client("restore", "s3").delete_object(
        Bucket=w.bucket, Key=f"{PREFIX}/snapshots/{'ab' * 32}"),
    "restore role deletes an EBS snapshot": lambda w, key, version: w.client("restore", "ec2").delete_snapshot(
        SnapshotId=w.foreign_snapshot),
    "restore role attaches a volume safehold did not create": lambda w, key, version: w.client(
        "restore", "ec2").attach_volume(VolumeId=w.volume, InstanceId=w.instance, Device="/dev/sdg"),
}


@pytest.mark.parametrize("what", list(FORBIDDEN))
def test_forbidden_calls_are_denied(world, repository, what):
    key, version = _locked_key(world, repository)
    denied(lambda: FORBIDDEN[what](world, key, version))


def test_safeholds_own_credentials_cannot_destroy_or_alter_a_locked_object(world, repository):
    # The ransomware case: an attacker holding the backup role's credentials.
    key, version = _locked_key(world, repository)
    admin = world.client("break-glass", "s3")
    original = admin.get_object(Bucket=world.bucket, Key=key, VersionId=version)["Body"].read()
    s3 = world.client("backup", "s3")
    denied(lambda: s3.delete_object(Bucket=world.bucket, Key=key, VersionId=version))
    # An overwrite only adds a newer version; a delete only adds a delete marker.
    s3.put_object(Bucket=world.bucket, Key=key, Body=b"encrypted by ransomware")
    s3.delete_object(Bucket=world.bucket, Key=key)
    assert admin.get_object(Bucket=world.bucket, Key=key, VersionId=version)["Body"].read() == original
    # Not even an administrator of the account can remove a COMPLIANCE-locked version early.
    denied(lambda: admin.delete_object(Bucket=world.bucket, Key=key, VersionId=version))
    # Recovery (break glass): remove the attacker's versions, the locked one is current again.
    for entry in admin.list_object_versions(Bucket=world.bucket, Prefix=key).get("DeleteMarkers", []) + \
            admin.list_object_versions(Bucket=world.bucket, Prefix=key).get("Versions", []):
        if entry["VersionId"] != version:
            admin.delete_object(Bucket=world.bucket, Key=key, VersionId=entry["VersionId"])
    assert admin.get_object(Bucket=world.bucket, Key=key)["Body"].read() == original


def test_backup_role_can_neither_hide_nor_replace_the_keys_or_the_config(world, repository):
    # Without them every locked object is unreadable: a stolen backup credential that could delete
    # them (a delete marker) would destroy every backup once the hidden versions expire.
    repository, _tree = repository
    s3 = world.client("backup", "s3")
    [key] = [info.name for info in repository.backend.list(Kind.KEYS) if info.name == repository.key_name]
    for name in (f"{PREFIX}/config", f"{PREFIX}/keys/{key}"):
        admin = world.client("break-glass", "s3")
        assert admin.head_object(Bucket=world.bucket, Key=name)["ObjectLockMode"] == "COMPLIANCE", name
        denied(lambda: s3.delete_object(Bucket=world.bucket, Key=name))
        # The bucket policy refuses it to every other principal too, an account administrator included.
        denied(lambda: world.client("admin", "s3").delete_object(Bucket=world.bucket, Key=name))
        denied(lambda: s3.put_object(Bucket=world.bucket, Key=name, Body=b"ransom"))  # an unconditional overwrite
        with pytest.raises(ClientError) as caught:  # a conditional one finds it there
            s3.put_object(Bucket=world.bucket, Key=name, Body=b"ransom", IfNoneMatch="*")
        assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
        assert admin.list_object_versions(Bucket=world.bucket, Prefix=name).get("DeleteMarkers", []) == []
    assert Repository.open(world.backend("backup"), PASSWORD).key_name == key


def test_key_remove_with_the_backup_role_says_it_is_locked_and_break_glass_hides_it(world, repository):
    from safehold import errors

    repository, _tree = repository
    spare = repository.add_key(b"spare", FAST_KDF)  # the backup role may add keys (new objects only)
    until = repository.key_retained_until(spare)
    assert until is not None
    with pytest.raises(errors.KeyRetained) as caught:
        repository.remove_key(spare[:8])
    message = f"{caught.value} {caught.value.hint}"
    assert spare[:8] in message and until.isoformat(timespec="seconds") in message and "break-glass" in message
    assert caught.value.exit_code == 37
    assert Repository.open(world.backend("backup"), b"spare").key_name == spare  # still there
    # The break-glass role removes it: hidden at once, the locked version stays until its lock ends.
    glass = S3Backend(f"s3://{world.bucket}/{PREFIX}", client=world.client("break-glass", "s3"),
                      object_lock_mode="COMPLIANCE", object_lock_days=1)
    Repository.open(glass, PASSWORD).remove_key(spare[:8])
    with pytest.raises(errors.WrongPassword):
        Repository.open(world.backend("backup"), b"spare")
    admin = world.client("break-glass", "s3")
    versions = admin.list_object_versions(Bucket=world.bucket, Prefix=f"{PREFIX}/keys/{spare}")
    assert len(versions["Versions"]) == 1 and len(versions["DeleteMarkers"]) == 1
    reopened = Repository.open(world.backend("backup"), PASSWORD)
    assert spare not in {k["id"] for k in reopened.list_keys()}


def test_ebs_direct_api_statements(world):
    # Evaluated with iam_evaluation directly: moto's EBS direct APIs fail under IAM enforcement.
    backup = policy("backup-role-policy.json", REPOSITORY_BUCKET="b", REPOSITORY_PREFIX="p")
    restore = policy("restore-role-policy.json", REPOSITORY_BUCKET="b", REPOSITORY_PREFIX="p")
    ours = {"aws:ResourceTag/safehold:managed": ["true"]}
    snapshot = f"arn:aws:ec2:{REGION}::snapshot/snap-0123456789abcdef0"
    for action in ("ebs:ListSnapshotBlocks", "ebs:ListChangedBlocks", "ebs:GetSnapshotBlock"):
        assert iam_evaluation.decide([backup], action, snapshot, ours) == "allow"
        assert iam_evaluation.decide([backup], action, snapshot, {}) == "implicit"
    assert iam_evaluation.decide([restore], "ebs:StartSnapshot", snapshot,
                                 {"aws:RequestTag/safehold:managed": ["true"]}) == "allow"
    assert iam_evaluation.decide([restore], "ebs:StartSnapshot", snapshot, {}) == "implicit"
    for action in ("ebs:PutSnapshotBlock", "ebs:CompleteSnapshot"):
        assert iam_evaluation.decide([restore], action, snapshot, ours) == "allow"
        assert iam_evaluation.decide([restore], action, snapshot, {}) == "implicit"
        assert iam_evaluation.decide([backup], action, snapshot, ours) == "implicit"


def test_ec2_sandbox_statements_of_the_restore_role():
    # Evaluated with iam_evaluation directly: what the EC2 sandboxes (restore-test checks attach and
    # instance, drills into a region, restore --to-ec2) call, and that only sandboxes can be removed.
    restore = policy("restore-role-policy.json", REPOSITORY_BUCKET="b", REPOSITORY_PREFIX="p")
    arn = {"instance": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0",
           "volume": f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-0123456789abcdef0",
           "image": f"arn:aws:ec2:{REGION}::image/ami-0123456789abcdef0",
           "snapshot": f"arn:aws:ec2:{REGION}::snapshot/snap-0123456789abcdef0"}
    sandbox = {"aws:ResourceTag/safehold:sandbox": ["job=1;pid=2;created=3;deadline=0;namespace=x"]}
    managed = {"aws:ResourceTag/safehold:managed": ["true"]}

    def decide(action: str, resource: str, context: dict) -> str:
        return iam_evaluation.decide([restore], action, arn.get(resource, resource), context)

    # A volume from a backup snapshot, tagged as a restore (the sandbox tags it so), attached and detached.
    assert decide("ec2:CreateVolume", "snapshot", managed) == "allow"
    assert decide("ec2:CreateVolume", "volume", {"aws:RequestTag/safehold:restored-from": ["snap-1"]}) == "allow"
    assert decide("ec2:DetachVolume", "instance", {}) == "allow"
    # An AMI from our snapshots only; instances only with the sandbox tag on the request.
    assert decide("ec2:RegisterImage", "snapshot", managed) == "allow"
    assert decide("ec2:RegisterImage", "snapshot", {}) == "implicit"
    request = {"aws:RequestTag/safehold:sandbox": ["job=1"]}
    for resource in ("instance", "volume"):
        assert decide("ec2:RunInstances", resource, request) == "allow"
        assert decide("ec2:RunInstances", resource, {}) == "implicit"
    assert decide("ec2:RunInstances", "image", {}) == "allow"
    assert decide("ec2:CreateTags", "instance", {"ec2:CreateAction": ["RunInstances"]}) == "allow"
    assert decide("ec2:CreateTags", "image", {"ec2:CreateAction": ["RegisterImage"]}) == "allow"
    # Tagging someone's AMI (or instance) as a sandbox, to have it removed, is not allowed.
    assert decide("ec2:CreateTags", "image", {}) == "implicit"
    assert decide("ec2:CreateTags", "instance", {}) == "implicit"
    # Removal and retagging: sandboxes only; a backup snapshot or someone's instance never.
    for action, resource in (("ec2:TerminateInstances", "instance"), ("ec2:DeleteVolume", "volume"),
                             ("ec2:DeregisterImage", "image"), ("ec2:DeleteSnapshot", "snapshot"),
                             ("ec2:DeleteTags", "instance")):
        assert decide(action, resource, sandbox) == "allow", action
        assert decide(action, resource, managed) == "implicit", action
