"""The source-driver contract.

A driver opens a *consistent view* (a VM or EBS snapshot, a pg_dump, or simply
the live filesystem) as a context manager that always releases what it
created, and yields either file items or disk items (``safehold.items``). It
declares how it knows what changed since the previous backup (``incremental``)
and hands back a ``token`` to store in the new snapshot for the next run.
"""

from __future__ import annotations

from typing import ContextManager, Protocol

from ..items import DiskItem, DiskReader, Extent, FileItem, Incremental, View

__all__ = ["DiskItem", "DiskReader", "Extent", "FileItem", "Incremental", "Source", "View"]


class Source(Protocol):
    """Contract: ``open(parent_token)`` returns a context manager yielding a :class:`View`.
    Leaving the context releases everything the driver created, on success and on error.
    ``parent_token`` is the ``source`` token of the previous snapshot of this target, or None."""

    def open(self, parent_token: dict | None) -> ContextManager[View]: ...
