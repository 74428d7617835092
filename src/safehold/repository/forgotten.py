"""Forget records: what ``forget`` removed, so a snapshot object copied back is noticed.

Deleting a snapshot object leaves no trace, so a copy of it put back later (an attacker with
write access to the store, a sync from a stale replica, an S3 delete marker removed) would
simply reappear: a *replayed* snapshot, a rollback of the repository's history. Forget
therefore writes one record per snapshot it deletes, *before* deleting it, in ``forgotten/``:

- the record's name is the keyed BLAKE3 (the master key's ``id`` key) of
  ``"safehold-forgotten:" || snapshot id``. Only a holder of the key can compute it, so nobody
  with storage access alone can forge a record for a live snapshot, and telling whether a
  snapshot was forgotten needs one listing of ``forgotten/`` and no reads;
- its content is encrypted like every metadata object, with the record's name in the
  associated data, and says which snapshot (id, target, time) was forgotten, when, by which
  host and why.

Records are new objects, never rewritten or deleted by safehold: they are written under
S3 Object Lock like snapshots (with the repository's retention), which a store with Object
Lock allows, and deleting one is what it would take to hide a replay. Writing the record
first means a forget killed between the two writes leaves a snapshot that looks replayed;
``check`` says so, and running the forget again finishes it.

Repositories written before records existed have no ``forgotten/`` folder: no snapshot of
theirs is flagged, and nothing else changes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

import blake3
import msgpack

from .. import errors
from .backends import Kind, ObjectNotFound
from .crypto import DecryptionFailed
from .repository import Repository, Snapshot

RECORD_VERSION = 1
_NAME_PREFIX = b"safehold-forgotten:"
_AAD = b"safehold-forgotten"


@dataclass
class ForgetRecord:
    name: str
    snapshot: str
    target: str | None = None
    snapshot_time: str | None = None
    forgotten_at: str | None = None
    hostname: str | None = None
    reason: str | None = None
    unreadable: str | None = None  # why the content could not be read (the name alone still proves it)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> str:
        if self.unreadable:
            return f"forget record {self.name[:16]} (unreadable: {self.unreadable})"
        return (f"forgotten {self.forgotten_at} on {self.hostname} ({self.reason}), "
                f"forget record {self.name[:16]}")


def record_name(repository: Repository, snapshot_id: str) -> str:
    """The name of the record that ``snapshot_id`` was forgotten: a MAC only the key holder can compute."""
    return blake3.blake3(_NAME_PREFIX + snapshot_id.encode(), key=repository.master.id_key).hexdigest()


def record_forgotten(repository: Repository, snapshots: Iterable[Snapshot], reason: str) -> list[str]:
    """Write a record for each snapshot about to be deleted (call before deleting). Idempotent:
    an existing record is kept as it is. Returns the names written."""
    written = []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    host = socket.gethostname()
    for snapshot in snapshots:
        name = record_name(repository, snapshot.id)
        if repository.backend_has(Kind.FORGOTTEN, name):
            continue  # forgotten before (the object was put back and is forgotten again)
        document = {"version": RECORD_VERSION, "snapshot": snapshot.id, "target": snapshot.target,
                    "snapshot_time": snapshot.time.isoformat(), "forgotten_at": now, "hostname": host,
                    "reason": reason}
        data = repository.cipher.encrypt(msgpack.packb(document), _AAD + name.encode())
        repository._put(Kind.FORGOTTEN, name, data, repository.retain_until())
        written.append(name)
    return written


def forgotten_names(repository: Repository) -> set[str]:
    """Names of every forget record (one listing; nothing is read)."""
    try:
        return {info.name for info in repository.backend.list(Kind.FORGOTTEN)}
    except OSError as exc:
        raise errors.from_os_error(exc, "listing forgotten/") from exc


def replayed_snapshots(repository: Repository, snapshot_ids: Iterable[str],
                       names: set[str] | None = None) -> dict[str, str]:
    """snapshot id -> record name, for each of ``snapshot_ids`` that a forget record names."""
    names = forgotten_names(repository) if names is None else names
    if not names:
        return {}
    found = {}
    for snapshot_id in snapshot_ids:
        name = record_name(repository, snapshot_id)
        if name in names:
            found[snapshot_id] = name
    return found


def load_record(repository: Repository, name: str, snapshot_id: str) -> ForgetRecord:
    """Read a record. A damaged one is still returned (its name proves the forget), marked unreadable."""
    try:
        data = repository.backend.get(Kind.FORGOTTEN, name)
    except ObjectNotFound:
        return ForgetRecord(name, snapshot_id, unreadable="removed while it was read")
    except OSError as exc:
        raise errors.from_os_error(exc, f"reading forgotten/{name[:16]}") from exc
    try:
        document = msgpack.unpackb(repository.cipher.decrypt(data, _AAD + name.encode()), strict_map_key=False)
        if not isinstance(document, dict) or document.get("snapshot") != snapshot_id:
            raise DecryptionFailed("it names another snapshot")
    except Exception as exc:  # hostile bytes: any decoding failure means unreadable
        return ForgetRecord(name, snapshot_id, unreadable=str(exc) or type(exc).__name__)

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) else None

    return ForgetRecord(name, snapshot_id, text("target"), text("snapshot_time"), text("forgotten_at"),
                        text("hostname"), text("reason"))


def replayed_records(repository: Repository, snapshots: Iterable[Snapshot]) -> dict[str, ForgetRecord]:
    """snapshot id -> its forget record, for each of ``snapshots`` that was forgotten and is present again."""
    snapshots = list(snapshots)
    found = replayed_snapshots(repository, [s.id for s in snapshots])
    return {snapshot_id: load_record(repository, name, snapshot_id) for snapshot_id, name in found.items()}


def live_snapshots(repository: Repository, target: str | None = None,
                   on_error: Callable[[str, errors.IntegrityError], None] | None = None,
                   forgotten: "Callable[[], set[str]] | None" = None) -> list[Snapshot]:
    """Snapshots, oldest first, without replayed ones: what 'latest', a backup's parent and
    'restore --all' choose from. An unreadable snapshot object raises, or is handed to ``on_error``
    and left out. ``forgotten``: gives the names of the forget records (``forgotten_names``), e.g.
    from a listing made meanwhile in another thread."""
    snapshots = repository.list_snapshots(target, on_error=on_error)
    replayed = replayed_snapshots(repository, [s.id for s in snapshots], forgotten() if forgotten else None)
    return [s for s in snapshots if s.id not in replayed]
