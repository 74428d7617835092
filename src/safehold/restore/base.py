"""The restore seam: a ``Destination`` writes a snapshot's items somewhere, in four steps.

Concepts: ``BlobReader`` (verified plaintext by blob id), ``SnapshotInfo`` (the plain facts of the
snapshot being restored, so this package never sees repository objects), ``Destination`` (the
protocol every destination kind implements), ``RestoreReport`` (what a restore wrote) and the lazy
``REGISTRY`` of destination kinds (``name -> (module, class)``, imported only when used, so nobody
pays for an SDK they do not use).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from ..errors import UsageError


class BlobReader(Protocol):
    """Contract: ``read_blob`` returns verified plaintext or raises IntegrityError;
    ``blob_size`` gives its plaintext length without reading it. Both thread-safe."""

    def read_blob(self, blob_id: bytes) -> bytes: ...

    def blob_size(self, blob_id: bytes) -> int: ...


@dataclass(frozen=True)
class SnapshotInfo:
    """What a destination may know of the snapshot it restores: plain values only."""

    id: str
    short_id: str
    target: str
    kind: str  # files | images | ebs-snapshot (a snapshot kept on the platform, restored without the repository)
    source: dict = field(default_factory=dict)  # the source's token (domain XML, VM facts, EBS snapshot ids ...)
    summary: dict = field(default_factory=dict)


#: progress(bytes written so far, what is being written)
Progress = Callable[[int, str], None]


@dataclass
class RestoreReport:
    """What ``write`` and ``commit`` did. ``damaged`` names what was not restored (a damaged chunk, an
    unsafe name); the engine turns a non-empty list into RestoreIncomplete. ``details`` holds the
    kind's own facts (the domain, the VM, the volume and device ...) for the job row and the CLI."""

    files: int = 0
    bytes_written: int = 0
    damaged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)  # device nodes skipped, setuid/setgid removed
    details: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # lines for the job log (what was defined, attached ...)


class Destination(Protocol):
    """A place a snapshot is restored to. The engine calls, in this order and from one thread:

    ``plan(snapshot, items)``: checks everything it can before the first write — names, free
    space, permissions and the platform's answers (the VM name is free, the domain is shut off,
    the instance exists and has a free device) — and chooses which items to restore. It writes
    nothing, so a refused restore leaves no trace. Raises DestinationError, DomainBusy,
    PathNotInSnapshot or UsageError with a message naming the problem; returns an opaque plan.

    ``write(reader, plan, progress)``: writes the planned items, reading every chunk through
    ``reader`` (verified), calling ``progress(bytes_done, current)`` as it goes; returns a
    ``RestoreReport``. Damaged chunks are listed in the report, not raised, where the kind can keep
    the rest (files, images); a kind that cannot use a disk with a gap raises.

    ``commit()``: makes the result final (rename over the old image, define the domain, attach
    the volume, power on); the report's details and log are completed here.

    ``rollback()``: undoes what ``write`` (and a failed ``commit``) made: temporary and new files,
    a created VM, a new volume or EBS snapshot. Idempotent, never raises for what is already gone,
    and safe to call after a failed ``plan`` (it then does nothing). Existing data the operator
    allowed to be overwritten (``overwrite``) cannot be brought back by it.

    Not thread-safe: one restore per instance.
    """

    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Any: ...

    def write(self, reader: BlobReader, plan: Any, progress: Progress) -> RestoreReport: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


@runtime_checkable
class PlatformSnapshots(Protocol):
    """A destination that can also restore a snapshot kept on its platform (an EBS snapshot id),
    without the repository. ``platform_snapshot`` returns its SnapshotInfo, or None when the
    reference names a repository snapshot."""

    def platform_snapshot(self, snapshot_ref: str, target: str | None) -> SnapshotInfo | None: ...


# kind -> (module, class); the options of each kind are the pydantic models of ``restore.options``.
REGISTRY: dict[str, tuple[str, str]] = {
    "directory": ("safehold.restore.local", "DirectoryDestination"),
    "image": ("safehold.restore.local", "ImageDestination"),
    "libvirt": ("safehold.restore.libvirt", "LibvirtDestination"),
    "vmware": ("safehold.restore.vmware", "VmwareDestination"),
    "hyperv": ("safehold.restore.hyperv", "HypervDestination"),
    "ebs": ("safehold.restore.ebs", "EbsDestination"),
    "ec2": ("safehold.restore.ec2", "Ec2Destination"),
    "postgres": ("safehold.restore.postgres", "PostgresDestination"),
    "command": ("safehold.restore.command", "CommandDestination"),
    "ssh": ("safehold.restore.ssh", "SshDestination"),
}


def destination_class(kind: str) -> type:
    """The class of destination ``kind``, its module imported now. UsageError for an unknown kind."""
    if kind not in REGISTRY:
        raise UsageError(f"unknown restore destination {kind!r}; expected one of: {', '.join(REGISTRY)}")
    module_name, class_name = REGISTRY[kind]
    return getattr(importlib.import_module(module_name), class_name)


def destination_for_source(source_kind: str, destination_kind: str | None) -> str:
    """The destination kind registered for a source kind; refuses a source kind with none, so no
    source is offered whose backups could not be restored."""
    if destination_kind not in REGISTRY:
        raise UsageError(f"source kind {source_kind!r} has no restore destination "
                         f"({destination_kind!r} is not one of {', '.join(REGISTRY)}); it cannot be offered")
    return destination_kind
