"""Sources on this host: ``FilesSource`` (files and directories) and ``ImageSource`` (a disk image or block device)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from safehold.config.common import _invalid, _Model, _resolve_path
from safehold.config.fields import ChunkSize

__all__ = ["FilesSource", "ImageSource"]


class FilesSource(_Model):
    """Files and directories on this host."""

    type: Literal["files"] = Field(description="Source kind.", examples=["files"])
    paths: list[str] = Field(
        min_length=1,
        description="Files or directories to back up. Relative paths are relative to this file's directory.",
        examples=[["/etc", "/srv/docs"]],
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Glob patterns of paths to leave out ('*' stays within a path component, '**' crosses them).",
        examples=[["*.tmp", "**/cache/**"]],
    )
    include: list[str] = Field(
        default_factory=list,
        description="Glob patterns that bring back paths an exclude pattern removed.",
        examples=[["**/cache/keep.me"]],
    )
    one_file_system: bool = Field(
        False,
        description="Stay on the file system of each path: do not descend into other mounts.",
        examples=[True],
    )

    @field_validator("paths")
    @classmethod
    def _resolve_paths(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for path in value:
            if not path.strip():
                raise _invalid("an empty path; every entry of paths must name a file or directory")
        return [_resolve_path(path, info) for path in value]


class ImageSource(_Model):
    """A raw disk image file or a block device, stored as fixed-size chunks."""

    type: Literal["image"] = Field(description="Source kind.", examples=["image"])
    path: str = Field(
        description="Image file or block device. Relative paths are relative to this file's directory.",
        examples=["/dev/vg0/db", "/var/lib/libvirt/images/vm.raw"],
    )
    chunk_size: ChunkSize = Field(
        512 * 1024,
        description=(
            "Fixed chunk size: a power of two from 64KiB to 16MiB. Smaller chunks store less when scattered "
            "blocks change; larger ones mean a smaller index. Default 512KiB (EBS's block size)."
        ),
    )
    force_read: bool = Field(
        False,
        description=(
            "Read the whole image on every backup. By default an image file whose device, inode, size, "
            "mtime and ctime match what the last snapshot recorded is taken from it unread (like restic, "
            "which re-reads with --force); set this when something may change the file and restore its "
            "times. Block devices are always read whole."
        ),
        examples=[True],
    )

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise _invalid("the path is empty; name an image file or a block device")
        return _resolve_path(value, info)
