"""VMware vSphere source: ``VmwareSource``, VMs selected by name, folder or tag on vCenter or ESXi."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from safehold.config.common import _ENV_NAME, _invalid, _Model, _resolve_path
from safehold.config.fields import ChunkSize

__all__ = ["VmwareSource"]


class VmwareSource(_Model):
    """VMs on VMware vSphere (vCenter or ESXi): snapshots, changed-block tracking, datastore HTTP reads."""

    type: Literal["vmware"] = Field(description="Source kind.", examples=["vmware"])
    server: str = Field(
        min_length=1,
        description="vCenter or ESXi host name, optionally with ':port' (default 443).",
        examples=["vcenter.example.com", "10.0.0.5:8443"],
    )
    user: str = Field(min_length=1, description="vSphere user name.", examples=["backup@vsphere.local"])
    password_env: str = Field(
        "SAFEHOLD_VSPHERE_PASSWORD",
        description="Environment variable holding the vSphere password.",
        examples=["SAFEHOLD_VSPHERE_PASSWORD"],
    )
    password_file: str | None = Field(
        None,
        description="File holding the vSphere password (wins over password_env). Relative to this file's directory.",
        examples=["/etc/safehold/vsphere.password"],
    )
    ca_file: str | None = Field(
        None,
        description=(
            "PEM file of the CA that signed the vCenter certificate, when it is not in the system's trust store. "
            "Relative to this file's directory."
        ),
        examples=["/etc/safehold/vcenter-ca.pem"],
    )
    insecure: bool = Field(
        False,
        description="Do not check the server's TLS certificate. Only for a lab vCenter; certificates are checked by default.",
        examples=[False],
    )
    vms: list[str] = Field(
        default_factory=list,
        description="VM names to back up; '*' and '?' wildcards allowed. A VM is selected when it matches vms, folder or tags.",
        examples=[["db-01", "web-*"]],
    )
    folder: str | None = Field(
        None,
        description="Inventory path of a VM folder: every VM below it is backed up.",
        examples=["DC0/vm/production"],
    )
    tags: list[str] = Field(
        default_factory=list,
        description="vSphere tags, as 'name' or 'category/name': every VM carrying one is backed up.",
        examples=[["backup/daily"]],
    )
    quiesce: bool = Field(
        True,
        description=(
            "Quiesce the guest through VMware Tools when they run; otherwise (or when it fails) the backup is "
            "crash-consistent and the job log says so."
        ),
        examples=[True],
    )
    chunk_size: ChunkSize = Field(
        512 * 1024,
        description="Fixed chunk size of the stored disks: a power of two from 64KiB to 16MiB. Default 512KiB.",
    )

    @field_validator("password_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise _invalid(f"{value!r} is not an environment variable name; expected e.g. SAFEHOLD_VSPHERE_PASSWORD")
        return value

    @field_validator("password_file", "ca_file")
    @classmethod
    def _resolve_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @model_validator(mode="after")
    def _selects_something(self) -> VmwareSource:
        if not self.vms and not self.folder and not self.tags:
            raise _invalid("the vmware source selects no VM: set vms, folder or tags")
        return self
