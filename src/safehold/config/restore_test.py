"""Restore tests: ``RestoreTest`` and the ``HealthCheck`` run on the restored data.

The health check kinds are ``CommandCheck`` (a shell command in the restored
tree), ``FileExistsCheck`` and ``ChecksumCheck`` (SHA-256 of a file), whose
paths are ``TreePath``s, which cannot leave the tree, ``BootCheck`` (the
restored disks booted in a sandbox VM until a sign of life shows on its serial
console), ``SqlCheck`` (postgres targets: a query in the restored database),
and for ebs targets ``AttachCheck`` (volumes from the EBS snapshots attached to a
sandbox instance) and ``InstanceCheck`` (an AMI registered from them and an
instance run from it), chosen by ``type``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, ValidationInfo, WithJsonSchema, field_validator, model_validator

from safehold.config.common import _check_kind, _invalid, _Model, _resolve_path
from safehold.config.fields import Duration

__all__ = [
    "BOOTABLE_SOURCES",
    "bootable_sources_text",
    "not_bootable_advice",
    "EC2_CHECK_SOURCES",
    "AttachCheck",
    "InstanceCheck",
    "HEALTH_CHECK_TYPES",
    "BootCheck",
    "ChecksumCheck",
    "CommandCheck",
    "FileExistsCheck",
    "HealthCheck",
    "RestoreServer",
    "RestoreTest",
    "SqlCheck",
    "TreePath",
]

HEALTH_CHECK_TYPES = ("command", "file_exists", "checksum", "boot", "sql", "attach", "instance")
#: Source kinds whose restored disks a ``boot`` check can boot (in a libvirt sandbox on this host:
#: VMware and Hyper-V disks are stored raw, so they boot under QEMU as they are).
BOOTABLE_SOURCES = ("libvirt", "image", "vmware", "hyperv")


def bootable_sources_text() -> str:
    """'libvirt, image, vmware and hyperv', for error messages."""
    return ", ".join(BOOTABLE_SOURCES[:-1]) + " and " + BOOTABLE_SOURCES[-1]


def not_bootable_advice(kind: str) -> str:
    """What to use instead of a ``boot`` check on a target of ``kind``."""
    if kind == "ebs":
        return "use an attach or instance check (the EBS snapshots brought up in EC2), or a command check"
    return "use a command, file_exists or checksum check"
#: Source kinds whose EBS snapshots the ``attach`` and ``instance`` checks bring up in EC2.
EC2_CHECK_SOURCES = ("ebs",)
_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")
_DEVICE = re.compile(r"^/dev/(sd|xvd)[b-z]$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
#: ``expect`` of a sql check: a comparison with a number, or the exact text of the first value.
SQL_EXPECT = re.compile(r"^\s*(>=|<=|!=|=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _inside_tree(value: str) -> str:
    """A path relative to the restored tree's root that cannot leave it."""
    parts = [part for part in value.strip().split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise _invalid(
            f"{value!r} is not valid; expected a path inside the restored tree, relative to its root "
            "and without '..', e.g. etc/hostname"
        )
    return "/".join(parts)


TreePath = Annotated[
    str,
    BeforeValidator(lambda value: _inside_tree(value) if isinstance(value, str) else value),
    WithJsonSchema({"type": "string", "minLength": 1, "examples": ["etc/hostname"]}),
]
"""A path inside a restored tree; a leading '/' is allowed and means the tree's root."""


class CommandCheck(_Model):
    """Run a shell command in the restored tree; exit status 0 means healthy."""

    type: Literal["command"] = Field(description="Health check kind.", examples=["command"])
    run: str = Field(
        min_length=1,
        description="Shell command, run with the restore destination as working directory.",
        examples=["test -f etc/hostname"],
    )
    timeout: Duration = Field(
        timedelta(minutes=10),
        description="The check fails when the command runs longer than this.",
        examples=["30s", "10m"],
    )


class FileExistsCheck(_Model):
    """Healthy when a file exists in the restored tree."""

    type: Literal["file_exists"] = Field(description="Health check kind.", examples=["file_exists"])
    path: TreePath = Field(
        description="Path inside the restored tree (relative to its root).", examples=["etc/hostname"]
    )


class ChecksumCheck(_Model):
    """Healthy when a restored file has the expected SHA-256."""

    type: Literal["checksum"] = Field(description="Health check kind.", examples=["checksum"])
    path: TreePath = Field(
        description="Path inside the restored tree (relative to its root).",
        examples=["srv/docs/index.html"],
    )
    sha256: str = Field(
        description="Expected SHA-256 of the file, 64 hexadecimal digits.",
        examples=["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    )

    @field_validator("sha256")
    @classmethod
    def _check_digest(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise _invalid(f"{value!r} is not a SHA-256 digest; expected 64 hexadecimal digits")
        return value.lower()


def _regular_expression(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        re.compile(value)
    except re.error as error:
        raise _invalid(
            f"{value!r} is not a valid regular expression: {error}; expected a Python regular expression "
            "matched against the serial console, e.g. 'login:' or '^ready$'"
        ) from None
    if re.search(value, "") is not None:
        raise _invalid(f"{value!r} matches an empty console, so it proves nothing; name what the guest prints")
    return value


def check_libvirt_uri(value: str | None) -> str | None:
    """A libvirt URI given for a sandbox (a boot check's, a drill's restore_to)."""
    if value is not None and "://" not in value:
        raise _invalid(f"{value!r} is not a libvirt URI; expected e.g. qemu:///system")
    return value


ConsolePattern = Annotated[
    str,
    BeforeValidator(_regular_expression),
    WithJsonSchema({"type": "string", "minLength": 1, "examples": ["login:"]}),
]
"""A regular expression searched for in a sandbox's serial console output."""


class TcpProbe(_Model):
    """The sandbox answers on a TCP port: a connection to it is accepted."""

    type: Literal["tcp"] = Field(description="Probe kind.", examples=["tcp"])
    port: int = Field(ge=1, le=65535, description="Port in the guest.", examples=[5432])


class HttpProbe(_Model):
    """The sandbox answers an HTTP GET with the expected status (and body)."""

    type: Literal["http"] = Field(description="Probe kind.", examples=["http"])
    port: int = Field(80, ge=1, le=65535, description="Port in the guest.", examples=[80, 8080])
    path: str = Field("/", pattern=r"^/[\x21-\x7e]*$", max_length=2048,
                      description="Path to GET (printable ASCII, no spaces).", examples=["/healthz"])
    status: int = Field(200, ge=100, le=599, description="Expected status code.", examples=[200])
    expect: str | None = Field(
        None, description="A regular expression (Python syntax) searched for in the first 64 KiB of the body.",
        examples=["ready"])

    @field_validator("expect")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise _invalid(f"expect {value!r} is not a regular expression: {exc}") from None
        return value


Probe = Annotated[Union[TcpProbe, HttpProbe], Field(discriminator="type")]


class BootCheck(_Model):
    """Boot the restored disks in a sandbox VM on libvirt and wait for a sign of life on its serial console.

    libvirt, image, vmware and hyperv targets. VMware and Hyper-V disks boot in the same local
    libvirt/QEMU sandbox (their restored raw images, attached as virtio disks): that proves the
    restored disks boot under QEMU, not that the VM boots on ESXi or Hyper-V.

    The sandbox is a new domain named safehold-sandbox-<target>-<random> with no network (with
    probes: one restricted user-network card reachable only through loopback forwards), no MAC
    address of production, the restored images as its disks and its serial console written to a
    file; it is destroyed and undefined, and its disks removed, whatever happens (a killed run's
    leftovers are removed by the next restore test). The actual recovery time runs to the sign of
    life, or to the last passing probe.
    """

    type: Literal["boot"] = Field(description="Health check kind.", examples=["boot"])
    console: list[ConsolePattern] = Field(
        min_length=1,
        description=(
            "Regular expressions (Python syntax, multi-line mode) searched for in the serial console output; "
            "the guest is alive once every one has matched. A single string is one expression. The guest must "
            "write to its first serial port (e.g. kernel command line console=ttyS0)."
        ),
        examples=[["login:"], ["SAFEHOLD-GUEST-UP", "^app ready$"]],
    )
    timeout: Duration = Field(
        timedelta(minutes=5),
        description="The check fails when the sign of life has not shown this long after the sandbox started.",
        examples=["2m", "10m"],
    )
    uri: str | None = Field(
        None,
        description=(
            "libvirt URI of the hypervisor that boots the sandbox; it must run on this host (the restored images "
            "are local files). Default: the target's own URI for libvirt targets, qemu:///system otherwise."
        ),
        examples=["qemu:///system"],
    )
    kernel: str | None = Field(
        None,
        description=(
            "Kernel for direct kernel boot, a file on this host. Default: the <kernel> of the domain XML saved "
            "in the snapshot (libvirt targets); without either the sandbox boots from its first disk through "
            "the firmware (UEFI for a VMware VM with efi firmware or a Hyper-V generation 2 VM, else BIOS), so that "
            "disk needs a bootloader and drivers for virtio disks. Relative paths are relative to this file's directory."
        ),
        examples=["/var/lib/libvirt/boot/vmlinuz"],
    )
    initrd: str | None = Field(
        None,
        description="Initial ramdisk for direct kernel boot (with 'kernel' only).",
        examples=["/var/lib/libvirt/boot/initrd.img"],
    )
    cmdline: str | None = Field(
        None,
        description="Kernel command line for direct kernel boot (with 'kernel' only).",
        examples=["console=ttyS0 root=/dev/vda1 ro"],
    )
    memory_mib: int | None = Field(
        None,
        ge=64,
        le=1024 * 1024,
        description=(
            "Memory of the sandbox in MiB. Default: the saved domain's (libvirt targets) or the VM's description "
            "saved in the snapshot (vmware, hyperv), else 1024."
        ),
        examples=[512],
    )
    vcpus: int | None = Field(
        None,
        ge=1,
        le=512,
        description=(
            "Virtual CPUs of the sandbox. Default: the saved domain's (libvirt targets) or the VM's description "
            "saved in the snapshot (vmware, hyperv), else 1."
        ),
        examples=[1],
    )
    disk_bus: Literal["virtio", "sata", "scsi", "ide"] | None = Field(
        None,
        description=(
            "Bus every restored disk is attached on in the sandbox. Default: the saved domain's buses (libvirt "
            "targets), else virtio. A guest without virtio drivers (most Windows VMs from VMware or Hyper-V) "
            "needs sata (or ide: at most 4 disks) to find its disks."
        ),
        examples=["sata"],
    )
    probes: list[Probe] = Field(
        default_factory=list,
        description=(
            "tcp and http probes run once the console showed its sign of life, each retried until it passes or "
            "the timeout ends; the actual recovery time then runs to the last passing probe. With probes the "
            "sandbox gets one network card on QEMU's user networking, restricted (the guest reaches nothing "
            "outside, the host included) with each probed guest port forwarded from a free port on the host's "
            "loopback, a random MAC address, the guest at 10.0.2.15 (DHCP from QEMU)."
        ),
        examples=[[{"type": "tcp", "port": 5432}, {"type": "http", "port": 80, "path": "/", "expect": "ready"}]],
    )

    @field_validator("console", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("kernel", "initrd")
    @classmethod
    def _check_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise _invalid(f"{info.field_name} is empty; name a file on this host, e.g. /var/lib/libvirt/boot/vmlinuz")
        return _resolve_path(value, info)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return check_libvirt_uri(value)

    @model_validator(mode="after")
    def _kernel_first(self) -> BootCheck:
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            given = " and ".join(key for key in ("initrd", "cmdline") if getattr(self, key) is not None)
            raise _invalid(
                f"{given} without kernel: direct kernel boot needs 'kernel' too; name it, or remove {given} to use "
                "the boot settings of the domain XML saved in the snapshot"
            )
        return self




class SqlCheck(_Model):
    """Postgres targets: run a query in the restored database; healthy when its first value meets ``expect``."""

    type: Literal["sql"] = Field(description="Health check kind.", examples=["sql"])
    query: str = Field(
        min_length=1,
        description="SQL run in the restored database (read it only: the database is thrown away afterwards).",
        examples=["select count(*) from orders"],
    )
    expect: str = Field(
        ">0",
        description=(
            "What the first column of the first row must be: a comparison with a number (>0, >=100, =1, !=0, <5) "
            "or, otherwise, its exact text."
        ),
        examples=[">0", "=1", "ok"],
    )
    database: str | None = Field(
        None,
        description="The restored database to query (default: the snapshot's only one; required with several).",
        examples=["shop"],
    )
    timeout: Duration = Field(
        timedelta(minutes=10),
        description="The check fails when the query runs longer than this.",
        examples=["30s"],
    )


def _matching(value: str | None, pattern: re.Pattern[str], what: str, example: str) -> str | None:
    if value is not None and not pattern.fullmatch(value):
        raise _invalid(f"{value!r} is not {what}; expected e.g. {example}")
    return value


class AttachCheck(_Model):
    """ebs targets: a new volume from each EBS snapshot of the restore point, made in the sandbox
    instance's zone, attached to it, checked attached, then detached and deleted.

    Every volume is tagged safehold:sandbox (with the run that owns it), so a killed run's volumes are
    removed by the next one. The actual recovery time runs to the moment every volume is attached.
    The EBS snapshots themselves are never touched."""

    type: Literal["attach"] = Field(description="Health check kind.", examples=["attach"])
    instance: str = Field(
        description=(
            "An EC2 instance kept for restore tests, in the region of the snapshots (a drill into another "
            "region names its own in restore_to.instance). The volumes are made in its availability zone."
        ),
        examples=["i-0123456789abcdef0"],
    )
    device: str | None = Field(
        None,
        description="Device name of the first volume (the next free ones follow). Default: the first free of /dev/sdf-/dev/sdp.",
        examples=["/dev/sdf"],
    )
    timeout: Duration = Field(
        timedelta(minutes=10),
        description="The check fails when a volume is not available or attached this long after it was asked for.",
        examples=["10m"],
    )

    @field_validator("instance")
    @classmethod
    def _check_instance(cls, value: str) -> str:
        return _matching(value, _INSTANCE_ID, "an EC2 instance id", "i-0123456789abcdef0") or value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str | None) -> str | None:
        return _matching(value, _DEVICE, "a device name for an EBS volume", "/dev/sdf")


class InstanceCheck(_Model):
    """ebs targets: an AMI registered from the restore point's EBS snapshots (the root volume's as
    its root device, the others as extra block-device mappings) and an instance run from it, waited
    for until it is running; then the instance is terminated (its volumes go with it) and the AMI
    deregistered. The actual recovery time runs to 'running'.

    The EBS snapshots are the backups: they are never deleted, only the AMI made from them is.
    Everything made is tagged safehold:sandbox, so a killed run's leftovers are removed by the next run.
    'running' is what EC2 reports once the instance is placed; it says nothing of the guest's boot
    (EC2's status checks and the console output do, and take minutes)."""

    type: Literal["instance"] = Field(description="Health check kind.", examples=["instance"])
    root_volume: str | None = Field(
        None,
        description="The volume (id) whose snapshot becomes the root device. Required when the target has several volumes.",
        examples=["vol-0123456789abcdef0"],
    )
    root_device: str = Field("/dev/xvda", description="Root device name of the AMI.", examples=["/dev/xvda", "/dev/sda1"])
    architecture: Literal["x86_64", "arm64", "i386"] = Field(
        "x86_64", description="Architecture of the AMI.", examples=["x86_64", "arm64"]
    )
    boot_mode: Literal["legacy-bios", "uefi", "uefi-preferred"] | None = Field(
        None, description="Boot mode of the AMI. Default: EC2's default for the instance type.", examples=["uefi"]
    )
    ena: bool = Field(True, description="Whether the AMI declares ENA networking (required by current instance types).",
                      examples=[True])
    instance_type: str = Field("t3.micro", description="Instance type of the test instance.", examples=["t3.micro"])
    subnet: str | None = Field(None, description="Subnet to run it in (a sandbox subnet without a route out).",
                               examples=["subnet-0123456789abcdef0"])
    security_groups: list[str] = Field(default_factory=list, description="Security groups (ids) of the test instance.",
                                       examples=[["sg-0123456789abcdef0"]])
    key_name: str | None = Field(None, description="EC2 key pair for the test instance.", examples=["dr-tests"])
    timeout: Duration = Field(
        timedelta(minutes=15),
        description="The check fails when the instance is not running this long after it was asked for.",
        examples=["15m"],
    )

    @field_validator("root_volume")
    @classmethod
    def _check_root(cls, value: str | None) -> str | None:
        return _matching(value, _VOLUME_ID, "an EBS volume id", "vol-0123456789abcdef0")

    @field_validator("root_device")
    @classmethod
    def _check_root_device(cls, value: str) -> str:
        if not re.fullmatch(r"/dev/(sd[a-z]1?|xvd[a-z])", value):
            raise _invalid(f"{value!r} is not a root device name; expected /dev/xvda or /dev/sda1")
        return value

    @field_validator("instance_type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        return _matching(value, _INSTANCE_TYPE, "an EC2 instance type", "t3.micro") or value

    @field_validator("subnet")
    @classmethod
    def _check_subnet(cls, value: str | None) -> str | None:
        return _matching(value, _SUBNET, "a subnet id", "subnet-0123456789abcdef0")

    @field_validator("security_groups", mode="before")
    @classmethod
    def _check_groups(cls, value: object) -> object:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    _matching(item, _SECURITY_GROUP, "a security group id", "sg-0123456789abcdef0")
        return value


HealthCheck = Annotated[
    CommandCheck | FileExistsCheck | ChecksumCheck | BootCheck | SqlCheck | AttachCheck | InstanceCheck,
    Field(discriminator="type"),
]
"""One of the health check kinds, chosen by ``type``."""


class RestoreServer(_Model):
    """Postgres targets: an existing server to restore tests into, instead of a throwaway cluster."""

    dsn: str = Field(
        min_length=1,
        description=(
            "libpq DSN of the server, without a password. Each database is restored under a new name "
            "(<name>_safehold_test_<job id>) and dropped after the check."
        ),
        examples=["host=pg-test.internal user=postgres"],
    )
    password_env: str | None = Field(None, description="Environment variable holding its password.",
                                     examples=["SAFEHOLD_PG_TEST_PASSWORD"])

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, value: str) -> str:
        from safehold.platforms.postgres.connection import dsn_has_password

        if dsn_has_password(value):
            raise _invalid("the dsn holds a password, which must never be written in the configuration; "
                           "remove it and set password_env instead")
        return value

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise _invalid(f"{value!r} is not an environment variable name; expected e.g. SAFEHOLD_PG_TEST_PASSWORD")
        return value


class RestoreTest(_Model):
    """Scheduled restore drills: restore the latest snapshot, check it, record the recovery time."""

    every: Duration = Field(
        timedelta(days=7),
        description="How often to run the restore test.",
        examples=["7d", "1d"],
    )
    health_check: HealthCheck | None = Field(
        None,
        description="Check run on the restored data; without one a test passes when every byte restored and verified.",
        examples=[{"type": "command", "run": "test -f etc/hostname"}],
    )
    server: RestoreServer | None = Field(
        None,
        description=(
            "Postgres targets in mode dump: restore into this existing server (under new database names, "
            "dropped afterwards) instead of a throwaway cluster safehold starts with initdb/pg_ctl."
        ),
        examples=[{"dsn": "host=pg-test.internal user=postgres", "password_env": "SAFEHOLD_PG_TEST_PASSWORD"}],
    )

    @field_validator("health_check", mode="before")
    @classmethod
    def _check_health_kind(cls, value: object) -> object:
        return _check_kind(value, what="health check", supported=HEALTH_CHECK_TYPES)
