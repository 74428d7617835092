"""Any program's output: ``CommandSource``, its standard output stored as one file of the snapshot."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from safehold.config.common import _invalid, _Model, _resolve_path
from safehold.config.fields import Duration

__all__ = ["CommandSource"]


class CommandSource(_Model):
    """The standard output of a program (mysqldump, mongodump --archive, slapcat ...) as one file,
    streamed into the repository without a local copy. The backup fails, and no snapshot is
    written, unless the program exits with status 0; its standard error goes to the job log."""

    type: Literal["command"] = Field(description="Source kind.", examples=["command"])
    run: str = Field(
        min_length=1,
        description="Shell command whose standard output is backed up. Secrets belong in the environment, not here.",
        examples=["mysqldump --single-transaction --all-databases"],
    )
    name: str = Field(
        description="File name the output is stored under in the snapshot (one path component).",
        examples=["dump.sql"],
    )
    cwd: str | None = Field(None, description="Working directory of the command. Relative to this file.",
                            examples=["/var/lib/backup"])
    timeout: Duration | None = Field(
        None, description="Fail the backup when the command runs longer than this (default: no limit).",
        examples=["2h"],
    )

    @field_validator("name")
    @classmethod
    def _one_component(cls, value: str) -> str:
        if not value or "/" in value or value in (".", "..") or "\0" in value:
            raise _invalid(f"{value!r} is not valid; expected one file name without '/', e.g. dump.sql")
        return value

    @field_validator("cwd")
    @classmethod
    def _resolve_cwd(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)
