"""Hyper-V source: ``HyperVSource``, a virtual machine read over WinRM from its host."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from safehold.config.common import _ENV_NAME, _invalid, _Model, _resolve_path
from safehold.config.fields import ChunkSize

__all__ = ["HyperVSource"]


class HyperVSource(_Model):
    """A Hyper-V virtual machine, read over PowerShell remoting (WinRM) from its host: recovery
    checkpoints, RCT changed ranges for incrementals. Needs the ``hyperv`` extra (pypsrp)."""

    type: Literal["hyperv"] = Field(description="Source kind.", examples=["hyperv"])
    host: str = Field(description="Hyper-V host (or cluster node) to connect to with WinRM.",
                      examples=["hv01.example.internal"])
    vm: str = Field(description="Name of the virtual machine, as Get-VM shows it.", examples=["web-01"])
    username: str | None = Field(
        None, description="Account on the host (DOMAIN\\user or user@REALM); none for Kerberos with a ticket cache.",
        examples=["EXAMPLE\\svc-backup"],
    )
    password_env: str = Field(
        "SAFEHOLD_HYPERV_PASSWORD", description="Environment variable holding the account's password.",
        examples=["SAFEHOLD_HYPERV_PASSWORD"],
    )
    auth: Literal["negotiate", "kerberos", "ntlm", "credssp", "certificate", "basic"] = Field(
        "negotiate",
        description=(
            "WinRM authentication. negotiate (NTLM, or Kerberos when available) works with the hyperv extra "
            "alone; kerberos and credssp need pypsrp's kerberos/credssp extras."
        ),
        examples=["kerberos"],
    )
    port: int | None = Field(None, ge=1, le=65535, description="WinRM port; default 5986 with ssl, 5985 without.",
                             examples=[5986])
    ssl: bool = Field(True, description="Use HTTPS for WinRM.", examples=[True])
    verify_certificate: bool = Field(
        True, description="Check the host's TLS certificate. Turn off only for a lab host.", examples=[False],
    )
    ca_bundle: str | None = Field(None, description="CA certificates (PEM) to trust instead of the system's.",
                                  examples=["/etc/safehold/hyperv-ca.pem"])
    consistency: Literal["application", "crash"] = Field(
        "application",
        description=(
            "application: a production (VSS) checkpoint, falling back to crash-consistent with a warning when "
            "the guest cannot provide one; crash: crash-consistent always (still logged as a warning)."
        ),
        examples=["application"],
    )
    chunk_size: ChunkSize = Field(512 * 1024, description="Fixed chunk size of the disks, as for image sources.")

    @field_validator("password_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise _invalid(f"{value!r} is not an environment variable name; expected letters, digits and '_'")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _resolve_ca_bundle(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)
