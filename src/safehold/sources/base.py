"""The source-driver contract.

A driver opens a *consistent view* (a VM or EBS snapshot, a pg_dump, or simply
the live filesystem) as a context manager that always releases what it
created, and yields either file items or disk items (``safehold.items``). It
declares how it knows what changed since the previous backup (``incremental``)
and hands back a ``token`` to store in the new snapshot for the next run.

An entry a file driver cannot list or read (an unreadable directory, one that
vanished during the walk) does not fail the backup: the driver records it in
``View.skipped`` and goes on, and a file's ``open()`` raises ``ItemSkipped``.
Only a configured root that cannot be read at all is a ``SourceError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ContextManager, Protocol, runtime_checkable

from ..items import DiskItem, DiskReader, Extent, FileItem, Incremental, ItemSkipped, SkippedItems, View

__all__ = ["DiskItem", "DiskReader", "Extent", "FileItem", "Incremental", "ItemSkipped", "KeepsPlatformSnapshots",
           "PlatformSnapshot", "SkippedItems", "Source", "View"]


class Source(Protocol):
    """Contract: ``open(parent_token)`` returns a context manager yielding a :class:`View`.
    Leaving the context releases everything the driver created, on success and on error.
    ``parent_token`` is the ``source`` token of the previous snapshot of this target, or None."""

    def open(self, parent_token: dict | None) -> ContextManager[View]: ...


@dataclass(frozen=True)
class PlatformSnapshot:
    """A snapshot a driver made on its platform and left there (an EBS snapshot or its DR copy)."""

    id: str
    location: str  # where it lives (an AWS region); deletions are asked per location
    group: str  # what it is a snapshot of (a volume): retention applies per group
    time: datetime  # when it was taken (UTC)
    current: bool = False  # made by the driver's last successful view: never deleted


@runtime_checkable
class KeepsPlatformSnapshots(Protocol):
    """A driver whose snapshots stay on the platform after the view closes, under the target's
    retention. The driver only lists and deletes; which snapshots go is the engine's decision
    (``engine.backup``), made with the repository's retention policy once the repository snapshot
    is written.

    ``platform_snapshots()`` lists the completed snapshots carrying the driver's marker and the
    target's name, in every location it writes to; it raises ``SourceError`` when the platform
    cannot be asked. ``delete_platform_snapshots(location, ids)`` deletes those it can and returns
    them; one it cannot delete (in use) is kept with a warning, for the next run to try again."""

    def platform_snapshots(self) -> list[PlatformSnapshot]: ...

    def delete_platform_snapshots(self, location: str, ids: list[str]) -> list[str]: ...
