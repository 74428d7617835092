"""The storage-backend contract: a dumb store of named objects.

A backend never sees plaintext and knows nothing of what objects mean. Objects
are addressed by ``(kind, name)``, never by paths. Data, index and snapshot
objects are immutable once written; ``config``, ``keys`` and ``locks`` are the
only kinds a backend lets a caller overwrite or delete (locks are rewritten on
each heartbeat). The repository itself writes ``config`` and ``keys`` only as
new objects (``exclusive``) and, under Object Lock, with a retain-until like
the data, since nothing locked can be read without them.

Every implementation passes ``tests/contract/test_backend_contract.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable


class Kind(str, Enum):
    CONFIG = "config"
    KEYS = "keys"
    LOCKS = "locks"
    SNAPSHOTS = "snapshots"
    INDEX = "index"
    DATA = "data"
    # Records of forgotten snapshots (see repository/forgotten.py): added by forget, never
    # rewritten; absent from repositories written before they existed.
    FORGOTTEN = "forgotten"
    # Verdict records (see repository/marks.py): an operator's 'mark' or a 'scan' of a snapshot;
    # added, never rewritten; absent from repositories written before them.
    VERDICTS = "verdicts"


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


class ObjectRetained(Exception):
    """``delete`` was refused because the object is under retention (S3 Object Lock) until ``until``."""

    def __init__(self, kind: Kind, name: str, until: datetime) -> None:
        super().__init__(f"{kind.value}/{name} is retained until {until.isoformat()}")
        self.kind = kind
        self.name = name
        self.until = until


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


@runtime_checkable
class RetentionBackend(Protocol):
    """A backend that can enforce retention; it does when ``supports_retention`` is True (an S3
    bucket with Object Lock configured), so ask through :func:`retention_of`. Contract:

    - ``retention`` returns the retain-until time of the object's current
      version (timezone-aware UTC), or None when it carries none; raises
      :class:`ObjectNotFound`.
    - ``extend_retention`` sets a later retain-until; the store refuses to
      shorten a COMPLIANCE retention, so callers only ever extend.
    - ``delete`` of an object still under retention raises :class:`ObjectRetained`
      (callers check ``retention`` first and never rely on this).
    - ``retention_period`` is how long new objects are retained (None: not at all).
    """

    supports_retention: bool
    retention_period: timedelta | None

    def retention(self, kind: Kind, name: str) -> datetime | None: ...

    def extend_retention(self, kind: Kind, name: str, until: datetime) -> None: ...


def retention_of(backend: Backend) -> RetentionBackend | None:
    """``backend`` as a :class:`RetentionBackend` when it enforces retention, else None. The
    protocol says it could; ``supports_retention`` says this store, as configured, does."""
    if isinstance(backend, RetentionBackend) and backend.supports_retention:
        return backend
    return None


@runtime_checkable
class TemporaryFilesBackend(Protocol):
    """A backend whose writers can leave temporary objects behind when killed (local: temp files
    before the rename; S3: unfinished multipart uploads). Contract: ``remove_temporary_files``
    removes only those old or abandoned enough that no live writer can own them and returns how
    many it removed; prune calls it under the exclusive lock."""

    def remove_temporary_files(self) -> int: ...


class SpoolingBackend(Protocol):
    """A backend that can store an object written piece by piece (local: a temporary file under
    the kind's folder): ``spool(kind)`` gives an object with ``write(bytes)``, ``discard()`` and
    ``size``; ``put_spool(kind, name, spool, retain_until=...)`` stores what was written as
    ``kind/name`` like ``put``. The repository writes packs this way when the backend can, so a
    pack is not held in memory while it fills; a spool dropped unstored removes itself."""

    def spool(self, kind: Kind) -> Any: ...

    def put_spool(self, kind: Kind, name: str, spool: Any, *, retain_until: datetime | None = None) -> None: ...


@runtime_checkable
class ImmutabilityFactsBackend(Protocol):
    """A backend that can tell what its store enforces, for ``safehold repo audit-immutability``.
    Contract: ``immutability_facts`` returns ``store`` (a name for messages),
    ``object_lock_enabled``, ``versioning``, ``default_retention`` and
    ``noncurrent_version_expiration_days``; ``bucket`` names the bucket in remedies."""

    bucket: str

    def immutability_facts(self) -> dict: ...


@runtime_checkable
class DirectoryBackend(Protocol):
    """A backend that keeps its objects as files under one local directory, ``root``."""

    root: Path
