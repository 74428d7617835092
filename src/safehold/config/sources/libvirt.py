"""KVM/libvirt source: ``LibvirtSource``, the disks of a libvirt domain."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from safehold.config.common import _invalid, _Model
from safehold.config.fields import ChunkSize

__all__ = ["LibvirtSource"]


class LibvirtSource(_Model):
    """The disks of a KVM/QEMU domain managed by libvirt: checkpoints and pull-mode backups over NBD;
    incrementals read only the blocks the dirty bitmap marks."""

    type: Literal["libvirt"] = Field(description="Source kind.", examples=["libvirt"])
    domain: str = Field(description="Name of the libvirt domain (running or shut off).", examples=["web-01"])
    uri: str = Field(
        "qemu:///system",
        description="libvirt connection URI (the daemon must support backupBegin: libvirt 7.2 or later with QEMU).",
        examples=["qemu:///system", "qemu+ssh://root@kvm-01/system"],
    )
    disks: list[str] = Field(
        default_factory=list,
        description="Target names of the disks to back up (as in the domain XML); empty means every disk.",
        examples=[["vda", "vdb"]],
    )
    chunk_size: ChunkSize = Field(
        512 * 1024,
        description=(
            "Fixed chunk size: a power of two from 64KiB to 16MiB. The dirty bitmap tracks 64KiB blocks, so "
            "64KiB stores least when scattered blocks change; 512KiB (the default) keeps the index 8x smaller."
        ),
    )
    keep_checkpoints: int = Field(
        2,
        ge=1,
        description=(
            "How many safehold checkpoints to keep on the domain; older ones are deleted after each backup "
            "(each checkpoint's bitmap costs a little on every guest write)."
        ),
        examples=[2],
    )
    scratch_dir: str | None = Field(
        None,
        description=(
            "Folder for the backup job's scratch files and NBD socket; QEMU's user must be able to write there. "
            "Default: the system temporary folder."
        ),
        examples=["/var/lib/libvirt/safehold-scratch"],
    )

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str) -> str:
        if not value.strip():
            raise _invalid("the domain name is empty; name a libvirt domain ('virsh list --all' shows them)")
        return value
