"""Linux hosts over SSH: ``SshSource``, files read over SFTP with nothing installed on the host."""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from safehold.config.common import _ENV_NAME, _invalid, _Model, _resolve_path

__all__ = ["SshSource"]


class SshSource(_Model):
    """Files and directories of another Linux host, walked and read over SFTP (agentless: nothing is
    installed there). The host's key is always checked against ``known_hosts`` or a pinned ``host_key``;
    an unknown or changed key is refused, never accepted. Needs the ``ssh`` extra (asyncssh)."""

    type: Literal["ssh"] = Field(description="Source kind.", examples=["ssh"])
    host: str = Field(description="Host name or address to connect to.", examples=["web-01.internal"])
    user: str = Field(description="Account to log in as (it reads what it backs up).", examples=["backup"])
    port: int = Field(22, ge=1, le=65535, description="SSH port.", examples=[22])
    paths: list[str] = Field(
        min_length=1,
        description="Absolute paths on the host to back up; each appears in the snapshot under its base name.",
        examples=[["/etc", "/var/www"]],
    )
    exclude: list[str] = Field(
        default_factory=list,
        description=(
            "Glob patterns of paths to leave out: without '/' a pattern matches any name (*.tmp), with '/' the "
            "path inside the snapshot (www/cache/*)."
        ),
        examples=[["*.tmp", "www/cache"]],
    )
    identity_file: str | None = Field(
        None,
        description="Private key file (OpenSSH format, unencrypted). Relative paths are relative to this file's directory.",
        examples=["/etc/safehold/id_ed25519"],
    )
    identity_env: str | None = Field(
        None,
        description="Environment variable holding the private key itself (instead of identity_file).",
        examples=["SAFEHOLD_SSH_KEY"],
    )
    known_hosts: str | None = Field(
        None,
        description=(
            "known_hosts file that must hold the host's key. Default: ~/.ssh/known_hosts of the user running "
            "safehold, unless host_key is given."
        ),
        examples=["/etc/safehold/known_hosts"],
    )
    host_key: str | None = Field(
        None,
        description="The host's public key, pinned ('ssh-ed25519 AAAA...', as in the host's ssh_host_*_key.pub).",
        examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rPuX0WvVNqXtV2lkTxJq6c8b2nXyB2yvHc8YQm0aX"],
    )
    before: str | None = Field(
        None,
        description=(
            "Command run on the host (over the same connection) before the walk: make a snapshot, freeze a "
            "file system. A non-zero exit status stops the backup (after still runs)."
        ),
        examples=["lvcreate -s -n safehold -L 2G vg0/data && mount -o ro /dev/vg0/safehold /mnt/safehold"],
    )
    after: str | None = Field(
        None,
        description="Command run on the host after the walk, always: also when the walk or before failed.",
        examples=["umount /mnt/safehold; lvremove -y vg0/safehold"],
    )
    @field_validator("host", "user")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value) or value.startswith("-"):
            raise _invalid(f"{value!r} is not a host or user name (empty, spaces, or a leading '-')")
        return value

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise _invalid(f"{path!r} is not an absolute path on the host; expected a path starting with '/'")
        return [posixpath.normpath(path) for path in value]

    @field_validator("identity_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise _invalid(f"{value!r} is not an environment variable name; expected letters, digits and '_'")
        return value

    @field_validator("identity_file", "known_hosts")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @field_validator("host_key")
    @classmethod
    def _check_host_key(cls, value: str | None) -> str | None:
        if value is not None and (len(value.split()) < 2 or not value.split()[0].startswith(("ssh-", "ecdsa-"))):
            raise _invalid(f"{value!r} is not an OpenSSH public key; expected 'ssh-ed25519 AAAA...'")
        return value

    @model_validator(mode="after")
    def _one_identity(self) -> "SshSource":
        if self.identity_file is not None and self.identity_env is not None:
            raise _invalid("give identity_file or identity_env, not both")
        return self
