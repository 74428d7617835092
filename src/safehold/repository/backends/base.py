"""The storage-backend contract: a dumb store of named objects.

A backend never sees plaintext and knows nothing of what objects mean. Objects
are addressed by ``(kind, name)``, never by paths. Data, index and snapshot
objects are immutable once written; ``config``, ``keys`` and ``locks`` are the
only kinds a caller may overwrite or delete freely (locks are rewritten on each
heartbeat).

Every implementation passes ``tests/contract/test_backend_contract.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Iterator, Protocol, Sequence, runtime_checkable


class Kind(str, Enum):
    CONFIG = "config"
    KEYS = "keys"
    LOCKS = "locks"
    SNAPSHOTS = "snapshots"
    INDEX = "index"
    DATA = "data"


MUTABLE_KINDS = frozenset({Kind.CONFIG, Kind.KEYS, Kind.LOCKS})


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int


class ObjectNotFound(LookupError):
    """The named object does not exist (a programming-level signal; callers map it)."""

    def __init__(self, kind: Kind, name: str) -> None:
        super().__init__(f"{kind.value}/{name}")
        self.kind = kind
        self.name = name


class ObjectExists(Exception):
    """``put(..., exclusive=True)`` found an object of that name already."""


@runtime_checkable
class Backend(Protocol):
    """Contract:

    - ``put`` takes the object as bytes or as a sequence of bytes-like parts (a
      pack is written from its parts without joining them) and stores the whole
      object atomically: readers see either nothing or
      all of it, never a torn object, even if the process dies mid-write. With
      ``exclusive=True`` it raises :class:`ObjectExists` instead of replacing
      (used for locks and to detect races). ``retain_until`` asks the store to
      refuse deletion until then (S3 Object Lock); stores without retention
      ignore it and say so through ``supports_retention``.
    - ``get`` raises :class:`ObjectNotFound`; ``offset``/``length`` read a range.
    - ``list`` yields every object of a kind in no particular order.
    - ``delete`` of a missing object is not an error (idempotent).
    - OSError from the medium propagates; the repository maps it to
      StorageFull/BackendError.
    - Methods are safe to call from several threads at once.
    """

    url: str
    supports_retention: bool

    def put(self, kind: Kind, name: str, data: bytes | Sequence[bytes], *, exclusive: bool = False,
            retain_until: datetime | None = None) -> None: ...

    def get(self, kind: Kind, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, kind: Kind, name: str) -> ObjectInfo: ...

    def list(self, kind: Kind) -> Iterator[ObjectInfo]: ...

    def delete(self, kind: Kind, name: str) -> None: ...

    def exists(self) -> bool:
        """Whether a repository has been initialised here (a config object exists)."""
        ...

    def create(self) -> None:
        """Prepare an empty store (create directories); fails if a repository exists."""
        ...
