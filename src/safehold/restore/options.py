"""The options of each restore destination kind, as pydantic models.

These are the one definition of a restore destination: the engine validates a destination spec
(``{"kind": "libvirt", "images_dir": ..., "define": ...}``) with them, the job queue stores it, and
the API's schema (``/openapi.json``) is built from them. They hold plain values only; how to reach
a platform (libvirt URI, vCenter, Hyper-V host, AWS region) is resolved by the engine from the
configuration and handed to the destination beside them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _PathOptions(_Options):
    includes: list[str] = Field(default_factory=list, description="Only these paths (disks, for images).")
    overwrite: bool = Field(False, description="Allow a non-empty directory, replace an existing file.")
    special_files: bool = Field(False, description="Create device nodes and keep setuid/setgid bits.")


class DirectoryOptions(_PathOptions):
    """File snapshots into a directory."""

    kind: Literal["directory"]
    path: str = Field(description="Directory to restore into (made if missing; must be empty without overwrite).")


class ImageOptions(_PathOptions):
    """Disk images: one disk to a file or block device, several (or ``into_directory``) into a directory."""

    kind: Literal["image"]
    path: str = Field(description="Image file or block device (one disk), or directory (several disks).")
    into_directory: bool = Field(False, description="Write even a single disk into the directory ``path``.")
    flatten_names: bool = Field(False, description="In a directory, write a disk named by several components "
                                "(a VMware 'vm/Hard disk 1') as one name joined with '-'.")


class LibvirtOptions(_Options):
    """A libvirt domain's disks: as images, as a new domain, or over a shut-off domain's disks."""

    kind: Literal["libvirt"]
    images_dir: str | None = Field(None, description="Folder for the restored images (not with replace).")
    format: Literal["qcow2", "raw"] = Field("qcow2", description="Image format.")
    define: str | None = Field(None, description="Define a new domain of this name from the saved XML.")
    replace: str | None = Field(None, description="Overwrite the disk images of this shut-off domain.")
    disks: list[str] = Field(default_factory=list, description="Only these disks (e.g. vda); default all.")
    overwrite: bool = Field(False, description="Replace existing image files in images_dir.")
    uri: str | None = Field(None, description="libvirt URI (default: the one the backup used).")
    # A snapshot that carries no domain XML (an EBS target's volumes) gets a minimal domain: these
    # say what the saved XML would have said. Refused for a snapshot that has its own XML.
    vcpus: int | None = Field(None, ge=1, le=512, description="Without a saved domain XML (an EBS snapshot): "
                              "virtual CPUs of the new domain (default 2).")
    memory_mib: int | None = Field(None, ge=16, le=16 * 2**20, description="Without a saved domain XML: memory "
                                   "of the new domain in MiB (default 2048).")
    boot_disk: str | None = Field(None, description="Without a saved domain XML: the disk (an EBS volume id) "
                                  "that becomes vda (default: the volume attached as the instance's first device).")
    network: str | None = Field(None, description="Without a saved domain XML: a libvirt network to give the "
                                "domain one virtio interface on (default: no interface).")
    firmware: Literal["bios", "efi"] | None = Field(None, description="Without a saved domain XML: boot "
                                                    "firmware (default bios; efi for a UEFI-only image).")
    domain_type: Literal["kvm", "qemu"] | None = Field(None, description="Without a saved domain XML: kvm "
                                                       "(default) or qemu (emulated, a host without KVM).")


class VmwareOptions(_Options):
    """One VM of a vmware snapshot: as a new VM, or onto a disk of an existing powered-off VM."""

    kind: Literal["vmware"]
    new_vm: str | None = Field(None, description="Create a VM of this name with the saved disks.")
    vm: str | None = Field(None, description="Overwrite a disk of this existing, powered-off VM.")
    disk: str | None = Field(None, description="With vm: the disk label (e.g. 'Hard disk 1').")
    source_vm: str | None = Field(None, description="The VM to take when the snapshot holds several.")
    datacenter: str | None = None
    folder: str | None = None
    resource_pool: str | None = None
    datastore: str | None = None
    power_on: bool = Field(False, description="With new_vm: power the VM on afterwards.")


class HypervOptions(_Options):
    """A new VM on the Hyper-V host of the snapshot's target."""

    kind: Literal["hyperv"]
    name: str = Field(description="Name of the new VM; an existing VM is never replaced.")
    host_path: str = Field(description="Folder on the host for the VM and its disks, e.g. D:\\VMs.")
    scratch: str | None = Field(None, description="Local folder for the disks while converting.")


class EbsOptions(_Options):
    """A new EBS volume attached to an EC2 instance (from an EBS snapshot id or a repository image)."""

    kind: Literal["ebs"]
    instance: str = Field(description="EC2 instance id to attach the new volume to.")
    device: str | None = Field(None, description="Device name (default: the first free of /dev/sdf-/dev/sdp).")
    region: str | None = Field(None, description="The snapshot's region (default: the configuration's).")
    include: str | None = Field(None, description="From a repository snapshot of several images: this one.")
    timeout: float = Field(3600.0, description="Seconds to wait for snapshots and volumes.")


class Ec2Options(_Options):
    """Every disk of a VM or image snapshot into EBS snapshots, an AMI and a new instance (``--to-ec2``)."""

    kind: Literal["ec2"]
    region: str | None = Field(None, description="Region to launch in (default: the configuration's or boto3's).")
    instance_type: str = Field("t3.micro", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$", description="Instance type.")
    subnet: str | None = Field(None, pattern=r"^subnet-[0-9a-f]{8,17}$", description="Subnet to launch in.")
    security_groups: list[str] = Field(default_factory=list, description="Security group ids of the instance.")
    key_name: str | None = Field(None, description="EC2 key pair of the instance.")
    architecture: Literal["x86_64", "arm64", "i386"] | None = Field(
        None, description="AMI architecture (default: the saved VM description's, else x86_64).")
    boot_mode: Literal["legacy-bios", "uefi", "uefi-preferred"] | None = Field(
        None, description="AMI boot mode (default: the saved VM description's or the disk's, else EC2's default).")
    ena: bool = Field(True, description="Declare ENA networking on the AMI (current instance types need it).")
    root_device: str = Field("/dev/xvda", pattern=r"^/dev/(sd[a-z]1?|xvd[a-z])$", description="Root device name.")
    boot_disk: str | None = Field(None, description="The disk the AMI boots from (default: vda/sda/hda, else the first).")
    name: str | None = Field(None, max_length=128, description="Name tag of the AMI and instance.")
    timeout: float = Field(3600.0, description="Seconds to wait for snapshots and the instance.")
    sandbox: bool = Field(False, description="Keep everything tagged safehold:sandbox (a drill removes it "
                          "afterwards; a killed drill's are removed by the next run).")


class PostgresOptions(_Options):
    """The databases of a postgres dump snapshot into a PostgreSQL server, through pg_restore."""

    kind: Literal["postgres"]
    to_dsn: str | None = Field(None, description="libpq DSN of the server to restore a dump into, without a password.")
    data_dir: str | None = Field(None, description="A physical snapshot: the new (or empty) data directory to "
                                 "extract the base backup into.")
    owner: str | None = Field(None, description="With data_dir: the user to own the files (the server's, e.g. "
                              "postgres, when restoring as root).")
    password_env: str | None = Field(None, description="Environment variable holding that server's password.")
    database: str | None = Field(None, description="The database of the snapshot to restore (default: every one).")
    new_name: str | None = Field(None, description="Restore it under this name (default: its own).")
    name_suffix: str | None = Field(None, description="Restore every database under its name with this suffix.")
    clean: bool = Field(False, description="Replace the contents of an existing database (default: a new one).")
    no_owner: bool = Field(False, description="Leave out ownership and grants (a server without the original roles).")
    bin_dir: str | None = Field(None, description="Folder of the PostgreSQL client tools to use.")


class CommandOptions(_Options):
    """One file of a snapshot piped into a command's standard input (mysql, mongorestore --archive ...)."""

    kind: Literal["command"]
    run: str = Field(description="Shell command that reads the file on its standard input.")
    file: str | None = Field(None, description="The file of the snapshot (default: the only one).")
    cwd: str | None = Field(None, description="Working directory of the command.")


class SshOptions(_PathOptions):
    """File snapshots into a directory of another host, over SFTP."""

    kind: Literal["ssh"]
    url: str = Field(description="ssh://[user@]host[:port]/absolute/path (made if missing; must be empty "
                     "without overwrite). Keys and the trusted host key come from an ssh target of the same host.")


DestinationOptions = Annotated[Union[DirectoryOptions, ImageOptions, LibvirtOptions, VmwareOptions, HypervOptions,
                                     EbsOptions, Ec2Options, PostgresOptions, CommandOptions, SshOptions],
                               Field(discriminator="kind")]
#: The platform kinds the API accepts in ``params.to`` (directory and image go through ``params.destination``).
#: postgres and command are deliberately not among them: through the API, ``password_env`` would let a
#: client send a secret from the server's environment to a host of its choosing, and ``command`` would
#: run a shell command of its choosing. They are for the CLI, restore tests and drills.
PlatformOptions = Annotated[Union[LibvirtOptions, VmwareOptions, HypervOptions, EbsOptions],
                            Field(discriminator="kind")]


def parse_options(spec: dict) -> _Options:
    """Validate a destination spec; pydantic's ValidationError names the bad field."""
    from pydantic import TypeAdapter

    return TypeAdapter(DestinationOptions).validate_python(spec)
