"""Restore a VM (or disk image) snapshot as a new EC2 instance: every disk becomes an EBS snapshot,
the boot disk's is registered as an AMI with the others as block-device mappings, and an instance
is launched from it and tagged.

Steps (the restore seam's contract):

- ``plan`` asks AWS, writing nothing: the subnet, security groups and key pair exist; chooses the
  boot disk (``boot_disk``, else the first disk in the saved domain's order: vda/sda/hda) and the
  device of each other disk (/dev/sdb, /dev/sdc ...); takes architecture and boot mode from the
  options, else the saved domain XML (``<type arch=...>``, ``firmware='efi'`` or a ``<loader>``),
  else x86_64 and EC2's default. ``describe`` turns the plan into what ``--dry-run`` prints.
- ``write`` removes what killed ``--to-ec2`` restores left in the region (tagged
  ``safehold:sandbox`` by a run that is over), then writes each disk through the EBS direct APIs
  (``image_to_ebs_snapshot``: only blocks holding data, in parallel), each snapshot tagged as this
  run's. It reads the boot disk's first sectors and warns about what will not boot on EC2: no
  partition table (a disk booted by direct kernel boot, like the libvirt test guest), a GPT disk
  without an EFI system partition registered as UEFI, an MBR disk without an active partition.
- ``commit`` registers the AMI, launches the instance, waits for ``running``, then swaps the
  ``safehold:sandbox`` tag for ``safehold:restored-from`` on everything kept (so no later run
  takes them for leftovers).
- ``rollback`` terminates, deregisters and deletes everything made, whatever step failed.

What a guest needs to boot on EC2 (drivers, boot mode) is in docs/restore-to-ec2.md; safehold
checks what can be seen from the disk, not the guest's drivers.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DestinationError, UsageError
from ..items import HOLE
from ..platforms import aws
from ..platforms.aws.ec2 import SANDBOX_KEY, Ec2Sandbox, remove_leftovers
from .base import Progress, RestoreReport, SnapshotInfo
from .ebs import image_to_ebs_snapshot
from .options import Ec2Options

ClientFactory = Callable[[str, str], Any]
RESTORED_KEY = "safehold:restored-from"
_ESP = bytes.fromhex("28732ac11ff8d211ba4b00a0c93ec93b")  # EFI system partition type GUID, on-disk order
_BIOS_BOOT = bytes.fromhex("4861682149646f6e744e656564454649")  # "Hah!IdontNeedEFI"
_ARCH = re.compile(r"<type\b[^>]*\barch\s*=\s*['\"](x86_64|aarch64|i686)['\"]")
_EFI = re.compile(r"<os\b[^>]*\bfirmware\s*=\s*['\"]efi['\"]|<loader\b")


@dataclass
class DiskPlan:
    name: str
    device: str
    size: int
    item: dict = field(repr=False)


@dataclass
class Ec2Plan:
    region: str
    boot: DiskPlan
    others: list[DiskPlan]
    architecture: str
    boot_mode: str | None
    instance_type: str
    subnet: str | None
    security_groups: list[str]
    key_name: str | None
    name: str
    warnings: list[str] = field(default_factory=list)


def inspect_boot_sectors(head: bytes) -> tuple[str, list[str]]:
    """(partition scheme: gpt-efi, gpt-bios, gpt, mbr, none; warnings) from a disk's first 17 KiB."""
    if len(head) >= 1024 and head[512:520] == b"EFI PART":
        entries = head[1024:1024 + 128 * 128]
        types = {entries[i:i + 16] for i in range(0, len(entries) - 127, 128)}
        if _ESP in types:
            return "gpt-efi", []
        if _BIOS_BOOT in types:
            return "gpt-bios", []
        return "gpt", ["the boot disk has a GPT partition table with neither an EFI system partition nor a BIOS "
                       "boot partition: no bootloader EC2 can start was found"]
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        flags = [head[446 + 16 * i] for i in range(4)]
        kinds = [head[446 + 16 * i + 4] for i in range(4)]
        if any(kinds) and 0x80 not in flags and 0xEE not in kinds:
            return "mbr", ["the boot disk's MBR marks no partition active; some BIOS bootloaders need one"]
        return "mbr", []
    detail = ""
    if len(head) >= 1082 and struct.unpack_from("<H", head, 1080)[0] == 0xEF53:
        detail = " (an ext2/3/4 file system fills the whole disk)"
    return "none", [f"the boot disk has no partition table{detail}: it boots only by direct kernel boot (a kernel "
                    "given from outside, as libvirt can), which EC2 does not offer, so the instance will not boot; "
                    "install a bootloader (GRUB) in the guest first"]


def read_head(reader: Any, item: dict, length: int = 17 * 1024) -> bytes:
    """The first ``length`` bytes of an image item, through the verified reader."""
    size, chunk_size, chunks = item["size"], item["chunk_size"], item["chunks"]
    parts: list[bytes] = []
    position = 0
    while position < min(length, size):
        index = position // chunk_size
        blob_id = chunks[index * 32:(index + 1) * 32]
        chunk_length = min(chunk_size, size - index * chunk_size)
        data = bytes(chunk_length) if blob_id == HOLE else reader.read_blob(blob_id)
        parts.append(data[position - index * chunk_size:])
        position = (index + 1) * chunk_size
    return b"".join(parts)[:length]


class Ec2Destination:
    """Every disk of a snapshot into EBS snapshots, an AMI and a running instance in ``region``.
    ``owner`` is the ``safehold:sandbox`` tag value of this run and ``owner_gone`` judges another
    run's (both from the engine, which knows processes)."""

    def __init__(self, options: Ec2Options, *, clients: ClientFactory, region: str, owner: str,
                 owner_gone: Callable[[dict[str, str]], bool], threads: int = 4, poll: float = 0.5) -> None:
        self.options = options
        self.clients = clients
        self.region = options.region or region
        self.owner = owner
        self.owner_gone = owner_gone
        self.threads = threads
        self.poll = poll
        self.sandbox: Ec2Sandbox | None = None
        self.plan_made: Ec2Plan | None = None
        self.snapshots: dict[str, str] = {}  # disk name -> EBS snapshot id
        self.report = RestoreReport()
        self.target = ""

    # -- plan -----------------------------------------------------------------------------------
    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Ec2Plan:
        disks = [item for item in items if item.get("type") == "image"]
        if not disks:
            raise UsageError(f"snapshot {snapshot.short_id} holds no disk image; --to-ec2 restores VM and image snapshots")
        names = [item["path"].decode(errors="replace") for item in disks]
        boot_name = self.options.boot_disk or _default_boot(names)
        if boot_name not in names:
            raise UsageError(f"--boot-disk {boot_name!r} is not a disk of snapshot {snapshot.short_id} "
                             f"(its disks: {', '.join(names)})")
        ec2 = self.clients("ec2", self.region)
        self._check_platform(ec2)
        xml = snapshot.source.get("domain_xml") if isinstance(snapshot.source.get("domain_xml"), str) else ""
        architecture = self.options.architecture or _architecture(xml)
        boot_mode = self.options.boot_mode or ("uefi" if xml and _EFI.search(xml) else None)
        by_name = dict(zip(names, disks))
        boot = DiskPlan(boot_name, self.options.root_device, by_name[boot_name]["size"], by_name[boot_name])
        letters = "bcdefghijklmnop"
        others = [name for name in names if name != boot_name]
        if len(others) > len(letters):
            raise UsageError(f"snapshot {snapshot.short_id} has {len(names)} disks; an AMI maps at most {len(letters) + 1}")
        other_plans = [DiskPlan(name, f"/dev/sd{letters[index]}", by_name[name]["size"], by_name[name])
                       for index, name in enumerate(others)]
        self.target = snapshot.target
        plan = Ec2Plan(self.region, boot, other_plans, architecture, boot_mode, self.options.instance_type,
                       self.options.subnet, list(self.options.security_groups), self.options.key_name,
                       self.options.name or f"{snapshot.target}-restored-{snapshot.short_id}")
        if not xml and self.options.architecture is None:
            plan.warnings.append("the snapshot has no saved VM description: architecture x86_64 assumed (--architecture)")
        self.plan_made = plan
        return plan

    def _check_platform(self, ec2: Any) -> None:
        what = ""
        try:
            if self.options.subnet:
                what = f"subnet {self.options.subnet}"
                ec2.describe_subnets(SubnetIds=[self.options.subnet])
            if self.options.security_groups:
                what = f"security group(s) {', '.join(self.options.security_groups)}"
                ec2.describe_security_groups(GroupIds=list(self.options.security_groups))
            if self.options.key_name:
                what = f"key pair {self.options.key_name}"
                ec2.describe_key_pairs(KeyNames=[self.options.key_name])
            what = f"region {self.region}"
            ec2.describe_availability_zones()
        except Exception as exc:
            if aws.is_client_error(exc):
                code = aws.error_code(exc)
                gone = code.endswith(".NotFound") or code in ("InvalidGroup.NotFound", "InvalidKeyPair.NotFound")
                raise DestinationError(destination=f"EC2 in {self.region}",
                                       detail=f"{what} does not exist ({code})" if gone else f"{what}: {code}: "
                                              f"{aws.error_message(exc)}") from exc
            raise

    @staticmethod
    def describe(plan: Ec2Plan) -> dict[str, Any]:
        """What ``--dry-run`` prints: every disk, its device, and what the AMI and instance will be."""
        return {"region": plan.region, "name": plan.name, "architecture": plan.architecture,
                "boot_mode": plan.boot_mode or "EC2 default", "instance_type": plan.instance_type,
                "subnet": plan.subnet, "security_groups": plan.security_groups, "key_name": plan.key_name,
                "disks": [{"disk": disk.name, "device": disk.device, "bytes": disk.size,
                           "root": disk is plan.boot} for disk in [plan.boot, *plan.others]],
                "warnings": list(plan.warnings)}

    # -- write ----------------------------------------------------------------------------------
    def write(self, reader: Any, plan: Ec2Plan, progress: Progress) -> RestoreReport:
        ec2 = self.clients("ec2", plan.region)
        for removed in remove_leftovers(ec2, plan.region, self.owner_gone, poll=self.poll):
            self.report.log.append(f"removed the leftover of an ended run: {removed}")
        self.sandbox = Ec2Sandbox(ec2, plan.region, self.owner, label=self.target or "restore",
                                  timeout=self.options.timeout, poll=self.poll)
        scheme, warnings = inspect_boot_sectors(read_head(reader, plan.boot.item))
        if scheme == "gpt-efi" and plan.boot_mode is None:
            plan.boot_mode = "uefi"
        if scheme in ("mbr", "gpt-bios") and plan.boot_mode == "uefi":
            warnings.append(f"the boot disk is set up for BIOS ({scheme}) but the AMI is registered as uefi")
        plan.warnings += warnings
        self.report.warnings += plan.warnings
        self.report.details["partition_table"] = scheme
        written = 0
        for disk in [plan.boot, *plan.others]:
            def on_block(length: int, name: str = disk.name) -> None:
                nonlocal written
                written += length
                progress(written, name)

            # safehold:managed: the restore role may write blocks only into snapshots marked so (deploy/iam/);
            # without safehold:target no ebs target's retention ever takes them for its own.
            tags = {SANDBOX_KEY: self.owner, "Name": f"{plan.name} {disk.name}", RESTORED_KEY: self.target,
                    aws.MARKER_KEY: "true"}
            snapshot_id, blocks = image_to_ebs_snapshot(
                self.clients, reader, disk.item, region=plan.region, tags=tags,
                description=f"safehold restore of {self.target} disk {disk.name}", threads=self.threads * 2,
                timeout=self.options.timeout, on_block=on_block)
            self.sandbox.track_snapshot(snapshot_id)
            self.snapshots[disk.name] = snapshot_id
            self.report.log.append(f"disk {disk.name}: EBS snapshot {snapshot_id} ({blocks} blocks written)")
        self.report.files = 1 + len(plan.others)
        self.report.bytes_written = written
        return self.report

    # -- commit / rollback ---------------------------------------------------------------------------
    def commit(self) -> None:
        plan, sandbox = self.plan_made, self.sandbox
        assert plan is not None and sandbox is not None
        extra = [(disk.device, self.snapshots[disk.name]) for disk in plan.others]
        image = sandbox.register_image(self.snapshots[plan.boot.name], architecture=plan.architecture,
                                       boot_mode=plan.boot_mode, ena=self.options.ena,
                                       root_device=plan.boot.device, extra=extra,
                                       description=f"safehold restore of {self.target}")
        instance = sandbox.run_instance(image, instance_type=plan.instance_type, subnet=plan.subnet,
                                        security_groups=plan.security_groups, key_name=plan.key_name)
        volumes = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
        kept = [image, instance["InstanceId"], *self.snapshots.values(), *volumes]
        ec2 = self.clients("ec2", plan.region)
        ec2.create_tags(Resources=kept, Tags=aws.tag_list({RESTORED_KEY: self.target, "Name": plan.name}))
        if not self.options.sandbox:
            # Kept: no longer a sandbox a later run may remove, but the restore's result.
            ec2.delete_tags(Resources=kept, Tags=[{"Key": SANDBOX_KEY}])
        sandbox.created.clear()
        self.report.details.update({
            "region": plan.region, "image_id": image, "instance_id": instance["InstanceId"],
            "state": instance["State"]["Name"], "architecture": plan.architecture, "boot_mode": plan.boot_mode,
            "snapshots": dict(self.snapshots),
            "devices": {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", [])
                        if "Ebs" in m},
            "disks": {disk.name: disk.device for disk in [plan.boot, *plan.others]}})
        self.report.log.append(f"AMI {image} ({plan.architecture}, boot mode {plan.boot_mode or 'EC2 default'}); "
                               f"instance {instance['InstanceId']} {instance['State']['Name']} in {plan.region}")

    def rollback(self) -> None:
        if self.sandbox is None:
            return
        failed = self.sandbox.cleanup()
        if failed:
            self.report.warnings.append("not removed: " + ", ".join(r.describe() for r in failed))


def _default_boot(names: list[str]) -> str:
    for name in names:
        if re.fullmatch(r"(vd|sd|hd|xvd)a", name):
            return name
    return names[0]


def _architecture(xml: str) -> str:
    found = _ARCH.search(xml) if xml else None
    return {"aarch64": "arm64", "i686": "i386"}.get(found.group(1), found.group(1)) if found else "x86_64"


__all__ = ["Ec2Destination", "Ec2Plan", "inspect_boot_sectors", "read_head"]
