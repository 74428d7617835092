"""One contract every restore destination passes (``restore.base.Destination``), run against the
real thing where there is one: a directory, an image file, libvirtd, vCenter (vcsim), the fake
Hyper-V host, EBS and EC2 (moto), PostgreSQL (a throwaway cluster: a real pg_dump of a table holding the
data, restored through pg_restore and read back with a query), a real program (``command``) and a
directory of another host over SFTP (a loopback sshd).

- ``plan`` writes nothing, and refuses a bad destination with a clear error before writing;
- ``write`` + ``commit`` restore byte-identical data and report the bytes;
- a failure during ``write`` followed by ``rollback`` (twice: it is idempotent) leaves nothing
  behind: no file, no defined domain, no VM, no volume or EBS snapshot.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from hostile_support import directory, disk, file, write_snapshot

from safehold import errors
from safehold.restore import options
from safehold.restore.base import SnapshotInfo

KiB = 1024
#: Three chunks of data and a hole between them (holes must come back as zeros).
DATA = os.urandom(64 * KiB) + bytes(64 * KiB) + os.urandom(64 * KiB)


class Unplugged(Exception):
    """The failure injected during write: the reader goes away after its first blob."""


class FailingReader:
    def __init__(self, reader: Any) -> None:
        self.reader, self.reads, self.lock = reader, 0, threading.Lock()

    def read_blob(self, blob_id: bytes) -> bytes:
        with self.lock:
            self.reads += 1
            if self.reads > 1:
                raise Unplugged("the repository went away during the restore")
        return self.reader.read_blob(blob_id)

    def blob_size(self, blob_id: bytes) -> int:
        return self.reader.blob_size(blob_id)


class Harness:
    """What the suite needs of one destination kind."""

    kind = "image"
    token: dict = {}
    refusal = ""  # what the bad destination's error says

    def items(self) -> list[dict]:
        return [disk(b"vda", DATA, chunk_size=64 * KiB, mode=0o600)]

    def destination(self) -> Any: ...

    def bad_destination(self) -> Any: ...

    def leftovers(self) -> Any: ...

    def restored(self, report: Any) -> bytes: ...


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else ["(absent)"]


class DirectoryHarness(Harness):
    kind, refusal = "files", "exists and is not a directory"

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "dest"
        self.root.mkdir()

    def items(self) -> list[dict]:
        return [directory(b"d"), file(b"d/data", DATA), file(b"small", b"x")]

    def destination(self) -> Any:
        from safehold.restore.local import DirectoryDestination

        return DirectoryDestination(options.DirectoryOptions(kind="directory", path=str(self.root / "out")))

    def bad_destination(self) -> Any:
        from safehold.restore.local import DirectoryDestination

        (self.root / "a-file").write_bytes(b"")
        return DirectoryDestination(options.DirectoryOptions(kind="directory", path=str(self.root / "a-file")))

    def leftovers(self) -> Any:
        return tree(self.root)

    def restored(self, report: Any) -> bytes:
        return (self.root / "out" / "d" / "data").read_bytes()


class ImageHarness(Harness):
    refusal = "file exists"

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "dest"
        self.root.mkdir()

    def destination(self) -> Any:
        from safehold.restore.local import ImageDestination

        return ImageDestination(options.ImageOptions(kind="image", path=str(self.root / "disk.raw")))

    def bad_destination(self) -> Any:
        from safehold.restore.local import ImageDestination

        (self.root / "taken.raw").write_bytes(b"keep")
        return ImageDestination(options.ImageOptions(kind="image", path=str(self.root / "taken.raw")))

    def leftovers(self) -> Any:
        return tree(self.root)

    def restored(self, report: Any) -> bytes:
        return (self.root / "disk.raw").read_bytes()


class LibvirtHarness(Harness):
    refusal = "a domain of that name exists already"

    def __init__(self, tmp_path: Path, make_domain: Callable, connection: Any, uri: str) -> None:
        self.original = make_domain(running=False)
        self.connection, self.uri = connection, uri
        self.images = tmp_path / "images"
        self.name = f"contract-{uuid.uuid4().hex[:8]}"
        self.token = {"domain_xml": self.original.domain.XMLDesc(0), "uri": uri, "domain": self.original.name}

    def _destination(self, name: str) -> Any:
        from safehold.restore.libvirt import LibvirtDestination

        return LibvirtDestination(options.LibvirtOptions(kind="libvirt", images_dir=str(self.images), define=name,
                                                         format="raw", uri=self.uri))

    def destination(self) -> Any:
        return self._destination(self.name)

    def bad_destination(self) -> Any:
        return self._destination(self.original.name)

    def leftovers(self) -> Any:
        return tree(self.images), sorted(d.name() for d in self.connection.listAllDomains())

    def restored(self, report: Any) -> bytes:
        copy = self.connection.lookupByName(self.name)
        try:
            assert report.details["action"] == "define" and not copy.isActive()
            return Path(report.details["disks"]["vda"]).read_bytes()
        finally:
            copy.undefine()


class VmwareHarness(Harness):
    refusal = "a VM with this name exists"

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.name = f"contract-{uuid.uuid4().hex[:8]}"

    def items(self) -> list[dict]:
        item = disk(b"src/Hard disk 1", DATA, chunk_size=64 * KiB)
        item["metadata"] = {"vm": {"name": "src", "num_cpus": 1, "memory_mb": 64}, "label": "Hard disk 1"}
        return [item]

    def _destination(self, name: str) -> Any:
        from safehold.platforms.vmware.session import Session
        from safehold.restore.vmware import VmwareDestination

        lab = self.lab
        return VmwareDestination(options.VmwareOptions(kind="vmware", new_vm=name), threads=2, connect=lambda target:
                                 Session(lab.server, lab.USER, lab.PASSWORD, ca_file=str(lab.ca_file)))

    def destination(self) -> Any:
        return self._destination(self.name)

    def bad_destination(self) -> Any:
        return self._destination(self.lab.all_vms()[0][1]["name"])

    def leftovers(self) -> Any:
        return sorted(props["name"] for _vm, props in self.lab.all_vms())

    def restored(self, report: Any) -> bytes:
        assert report.details["created"] and report.details["vm"] == self.name
        return self.lab.read(self.name)


class HypervHarness(Harness):
    refusal = "a virtual machine with this name exists"
    token = {"host": "hv01.test", "vm": {"Generation": 2, "ProcessorCount": 1, "MemoryStartup": 1 << 30}}

    def __init__(self, host: Any, tmp_path: Path) -> None:
        self.host, self.tmp_path = host, tmp_path
        host.create_vm("vm1", [1 << 20])
        host.local("D:\\Restores").mkdir(parents=True)  # the operator's folder; the VM's own goes inside

    def items(self) -> list[dict]:
        return [disk(b"scsi-0-0", DATA, chunk_size=64 * KiB)]

    def _destination(self, name: str) -> Any:
        from safehold.restore.hyperv import HypervDestination

        return HypervDestination(options.HypervOptions(kind="hyperv", name=name, host_path="D:\\Restores"),
                                 connect=lambda target: self.host)

    def destination(self) -> Any:
        return self._destination("restored")

    def bad_destination(self) -> Any:
        return self._destination("vm1")

    def leftovers(self) -> Any:
        return sorted(vm.name for vm in self.host.vms.values()), tree(self.host.local("D:\\Restores"))

    def restored(self, report: Any) -> bytes:
        vhdx = self.host.local(self.host.vm("restored").drives[0].path)
        raw = self.tmp_path / "back.raw"
        subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(vhdx), str(raw)], check=True)
        return raw.read_bytes()


class EbsHarness(Harness):
    refusal = "is already in use"

    def __init__(self, aws: Any) -> None:
        self.aws = aws
        self.instance = aws.instance()

    def _destination(self, device: str | None) -> Any:
        from safehold.restore.ebs import EbsDestination

        return EbsDestination(options.EbsOptions(kind="ebs", instance=self.instance["InstanceId"], device=device,
                                                 timeout=60), clients=lambda service, region: self.aws.client(service, region),
                              region="us-east-1", threads=2)

    def destination(self) -> Any:
        return self._destination(None)

    def bad_destination(self) -> Any:
        return self._destination(self.instance["RootDeviceName"])

    def leftovers(self) -> Any:
        ec2 = self.aws.client("ec2")
        # Volumes a restore makes carry this tag (moto's StartSnapshot makes an untagged volume of its own).
        restored = [{"Name": "tag-key", "Values": ["safehold:restored-from"]}]
        return (sorted(v["VolumeId"] for v in ec2.describe_volumes(Filters=restored)["Volumes"]),
                sorted(s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]))

    def restored(self, report: Any) -> bytes:
        reference = self.aws.volume()
        self.aws.write(reference, 0, DATA)
        assert self.aws.volume_blocks(report.details["volume_id"]) == self.aws.volume_blocks(reference)
        return DATA  # the volume holds the same blocks as one written with DATA


class Ec2Harness(Harness):
    """A disk snapshot as a new EC2 instance (moto extended by moto_ebs: RegisterImage keeps its
    mappings, and the instance's volumes carry the mapped snapshots' blocks)."""

    refusal = "does not exist"

    def __init__(self, aws: Any) -> None:
        self.aws = aws

    def _destination(self, subnet: str | None) -> Any:
        from safehold.engine.ec2_check import owner_gone, owner_tag
        from safehold.restore.ec2 import Ec2Destination

        return Ec2Destination(options.Ec2Options(kind="ec2", subnet=subnet, timeout=60),
                              clients=lambda service, region: self.aws.client(service, region), region="us-east-1",
                              owner=owner_tag(None), owner_gone=owner_gone, threads=2, poll=0.05)

    def destination(self) -> Any:
        return self._destination(None)

    def bad_destination(self) -> Any:
        return self._destination("subnet-0123456789abcdef0")

    def leftovers(self) -> Any:
        ec2 = self.aws.client("ec2")
        ours = [{"Name": "tag-key", "Values": ["safehold:sandbox", "safehold:restored-from"]}]
        instances = [i["InstanceId"] for r in ec2.describe_instances(Filters=ours)["Reservations"]
                     for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        return (sorted(instances), sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
                sorted(v["VolumeId"] for v in ec2.describe_volumes(Filters=ours)["Volumes"]),
                sorted(s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=ours)["Snapshots"]))

    def restored(self, report: Any) -> bytes:
        reference = self.aws.volume()
        self.aws.write(reference, 0, DATA)
        root = report.details["devices"]["/dev/xvda"]
        assert self.aws.volume_blocks(root) == self.aws.volume_blocks(reference)
        return DATA  # the instance's root volume holds the same blocks as one written with DATA


class PostgresHarness(Harness):
    """The data is a bytea value in a table of a real pg_dump, stored in 64 KiB pieces (so that the
    failing reader fails midway); restored through pg_restore into a new database and read back."""

    kind, refusal = "files", "the database exists"
    token = {"postgres": {"mode": "dump", "tool_version": "15.18"}}

    def __init__(self, cluster: tuple[Any, bytes]) -> None:
        self.server, self.dump = cluster
        self.name = f"restored_{uuid.uuid4().hex[:8]}"

    def items(self) -> list[dict]:
        item = file(b"shop.pgdump", self.dump, mode=0o600)
        item["chunk_size"] = 64 * KiB
        return [item]

    def _destination(self, name: str) -> Any:
        from safehold.restore.postgres import PostgresDestination

        dsn = f"host={self.server.host} port={self.server.port} user=postgres dbname=postgres"
        return PostgresDestination(options.PostgresOptions(kind="postgres", to_dsn=dsn, database="shop",
                                                           new_name=name))

    def destination(self) -> Any:
        return self._destination(self.name)

    def bad_destination(self) -> Any:
        return self._destination("shop")  # exists

    def leftovers(self) -> Any:
        return self.server.databases()

    def restored(self, report: Any) -> bytes:
        assert report.details["databases"] == {"shop": self.name}
        try:
            return bytes(self.server.execute(self.name, "select data from blob")[0][0])
        finally:
            self.server.execute(None, f'drop database "{self.name}"')


class CommandHarness(Harness):
    """The file piped into a real program, which writes it out only once its input ended."""

    kind, refusal = "files", "'missing' is not in snapshot"
    WRITE = "python3 -c \"import sys; d = sys.stdin.buffer.read(); open('out', 'wb').write(d)\""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "dest"
        self.root.mkdir()

    def items(self) -> list[dict]:
        item = file(b"dump.sql", DATA)
        item["chunk_size"] = 64 * KiB
        return [item]

    def destination(self) -> Any:
        from safehold.restore.command import CommandDestination

        return CommandDestination(options.CommandOptions(kind="command", run=self.WRITE, cwd=str(self.root)))

    def bad_destination(self) -> Any:
        from safehold.restore.command import CommandDestination

        return CommandDestination(options.CommandOptions(kind="command", run=self.WRITE, file="missing",
                                                         cwd=str(self.root)))

    def leftovers(self) -> Any:
        return tree(self.root)

    def restored(self, report: Any) -> bytes:
        return (self.root / "out").read_bytes()


@pytest.fixture(scope="module")
def pg_cluster():
    """A throwaway cluster with a database 'shop' whose table holds DATA, and its pg_dump."""
    from safehold.platforms.postgres.cluster import TemporaryCluster

    cluster = TemporaryCluster(150000)
    server = cluster.start()
    try:
        server.execute(None, "create database shop")
        server.execute("shop", "create table blob (data bytea)")
        server.execute("shop", "insert into blob values (%s)", (DATA,))
        dump = subprocess.run(["/usr/lib/postgresql/15/bin/pg_dump", "--format=custom", "--compress=0",
                               f"--dbname=host={server.host} port={server.port} user=postgres dbname=shop"],
                              capture_output=True, check=True).stdout
        yield server, dump
    finally:
        cluster.stop()


class SshHarness(DirectoryHarness):
    """A directory of another host, over SFTP (the loopback sshd of the test services)."""

    def __init__(self, tmp_path: Path, server: Any) -> None:
        super().__init__(tmp_path)
        from safehold.platforms.ssh import SshSettings

        self.server = server
        self.settings = SshSettings(host=server.host, port=server.port, user=server.user,
                                    identity_file=server.key, known_hosts=server.known_hosts)

    def _at(self, path: Path) -> Any:
        from safehold.restore.ssh import SshDestination

        url = f"ssh://{self.server.user}@{self.server.host}:{self.server.port}{path}"
        return SshDestination(options.SshOptions(kind="ssh", url=url), settings=self.settings, path=str(path))

    def destination(self) -> Any:
        return self._at(self.root / "out")

    def bad_destination(self) -> Any:
        (self.root / "a-file").write_bytes(b"")
        return self._at(self.root / "a-file")


@pytest.fixture(params=["directory", "image", "libvirt", "vmware", "hyperv", "ebs", "ec2", "postgres", "command",
                        "ssh"])
def harness(request, tmp_path) -> Harness:
    kind = request.param
    if kind == "postgres":
        return PostgresHarness(request.getfixturevalue("pg_cluster"))
    if kind == "command":
        return CommandHarness(tmp_path)
    if kind == "directory":
        return DirectoryHarness(tmp_path)
    if kind == "image":
        return ImageHarness(tmp_path)
    if kind == "libvirt":
        return LibvirtHarness(tmp_path, request.getfixturevalue("make_domain"), request.getfixturevalue("connection"),
                              request.getfixturevalue("libvirt_uri"))
    if kind == "vmware":
        return VmwareHarness(request.getfixturevalue("lab"))
    if kind == "hyperv":
        return HypervHarness(request.getfixturevalue("host"), tmp_path)
    if kind == "ssh":
        return SshHarness(tmp_path, request.getfixturevalue("ssh_server"))
    if kind == "ec2":
        return Ec2Harness(request.getfixturevalue("aws"))
    return EbsHarness(request.getfixturevalue("aws"))


@pytest.fixture
def snapshot(harness: Harness, memory_repository) -> tuple[SnapshotInfo, list[dict], Any]:
    """(what the destination is told of the snapshot, its items, a verifying reader)."""
    written = write_snapshot(memory_repository, harness.items(), kind=harness.kind, target="contract")
    info = SnapshotInfo(id=written.id, short_id=written.id[:8], target="contract", kind=harness.kind,
                        source=dict(harness.token))
    return info, list(memory_repository.read_tree(written)), memory_repository


def test_plan_writes_nothing(harness, snapshot) -> None:
    info, items, _reader = snapshot
    before = harness.leftovers()
    destination = harness.destination()
    destination.plan(info, items)
    assert harness.leftovers() == before
    destination.rollback()  # after a plan only: nothing to undo, no error
    assert harness.leftovers() == before


def test_plan_refuses_a_bad_destination_before_writing(harness, snapshot) -> None:
    info, items, _reader = snapshot
    bad = harness.bad_destination()
    before = harness.leftovers()
    with pytest.raises(errors.SafeholdError, match=harness.refusal):
        bad.plan(info, items)
    bad.rollback()
    assert harness.leftovers() == before


def test_write_and_commit_restore_the_same_bytes_and_report_them(harness, snapshot) -> None:
    info, items, reader = snapshot
    destination = harness.destination()
    seen: list[int] = []
    plan = destination.plan(info, items)
    report = destination.write(reader, plan, lambda done, current: seen.append(done))
    destination.commit()
    assert report.damaged == [] and report.files >= 1
    assert report.bytes_written >= len(DATA) - 64 * KiB  # the hole need not be written
    assert seen and max(seen) <= max(report.bytes_written, len(DATA))
    restored = harness.restored(report)
    assert restored[: len(DATA)] == DATA and not restored[len(DATA):].strip(b"\0")


def test_a_failure_during_write_then_rollback_leaves_nothing_behind(harness, snapshot) -> None:
    info, items, reader = snapshot
    before = harness.leftovers()
    destination = harness.destination()
    plan = destination.plan(info, items)
    with pytest.raises((Unplugged, errors.SafeholdError)) as caught:  # as raised, or wrapped naming the place
        destination.write(FailingReader(reader), plan, lambda done, current: None)
    assert caught.value is not None
    destination.rollback()
    destination.rollback()  # idempotent
    assert harness.leftovers() == before
