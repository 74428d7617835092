"""The repository: config, keys, encrypted objects, blob storage, snapshots.

Write order is the crash-safety rule (see docs/repository-format.md): packs
first, then the index objects that name them, then the snapshot that refers
to their blobs. A process killed at any moment therefore leaves at most
packs or index entries nothing refers to (garbage that prune removes), never
a snapshot that points at missing data.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import msgpack

from .. import errors
from .backends import Backend, DirectoryBackend, Kind, ObjectExists, ObjectNotFound, ObjectRetained, retention_of
from .cache import CACHED_KINDS, ObjectCache
from .chunker import DEFAULT_IMAGE_CHUNK, FileChunker, TREE_AVG, TREE_MAX, TREE_MIN
from .crypto import (
    Cipher,
    DecryptionFailed,
    KeyFile,
    KeyFileRejected,
    MasterKey,
    describe_key_file,
    parse_key_file,
    unwrap_master_key,
    wrap_master_key,
)
from .index import BlobLocation, Index, encode_entries
from .locks import Lock
from .pack import (DEFAULT_COMPRESSION_LEVEL, BlobType, PackBuilder, decode_blob_body, encode_blob,
                   encode_blob_body)

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
PACK_TARGET_SIZE = 16 * 1024 * 1024
TREE_READ_AHEAD = 4  # tree blobs read in parallel by read_tree (at most twice this held ahead)
INDEX_EVERY_PACKS = 32  # a killed long backup keeps its uploaded packs reusable
#: Full packs stored in the background at once, by all the pack writers of one open repository
#: (``SAFEHOLD_UPLOADS``; 1: each pack is stored by the thread that filled it, as before). A
#: connection to S3 in another region carries tens of MiB/s (restic's users needed 32 connections
#: for 0.68 GB/s), so a backup stores at about this many times that; chunking goes on meanwhile.
#: Only for a backend that spools its packs to a file (local, S3): a waiting pack costs disk (up to
#: this many x 16 MiB in the spool folder), never memory.
DEFAULT_UPLOADS = 8
_OBJECT_AAD = b"safehold-object-"


@dataclass
class Snapshot:
    id: str
    time: datetime
    target: str
    kind: str  # "files" or "image"
    hostname: str
    paths: list[str]
    tree: list[str]  # hex ids of the TREE blobs holding the item stream
    parent: str | None = None
    tags: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    # Set on a snapshot written by 'repair snapshots': the id of the damaged snapshot it replaces.
    original: str | None = None
    # Set on a snapshot written by 'copy': {"repository": source repository id, "snapshot": the
    # source snapshot's id, "url": the source's url}. A snapshot's id is the hash of its encrypted
    # object (a fresh nonce per write), so a copy cannot keep the id: it names its original instead.
    copied_from: dict | None = None

    def to_document(self) -> dict:
        document = {
            "version": FORMAT_VERSION, "time": self.time.isoformat(), "target": self.target, "kind": self.kind,
            "hostname": self.hostname, "paths": self.paths, "tree": self.tree, "parent": self.parent,
            "tags": self.tags, "summary": self.summary, "source": self.source,
        }
        if self.original is not None:  # only repaired snapshots carry it; older readers ignore it
            document["original"] = self.original
        if self.copied_from is not None:  # only copies carry it; older readers ignore it
            document["copied_from"] = self.copied_from
        return document

    @classmethod
    def from_document(cls, snapshot_id: str, document: dict) -> "Snapshot":
        return cls(
            id=snapshot_id, time=datetime.fromisoformat(document["time"]), target=document["target"],
            kind=document["kind"], hostname=document["hostname"], paths=document["paths"], tree=document["tree"],
            parent=document.get("parent"), tags=document.get("tags", []), summary=document.get("summary", {}),
            source=document.get("source", {}),
            original=document["original"] if isinstance(document.get("original"), str) else None,
            copied_from=_copied_from(document.get("copied_from")),
        )

    @property
    def short_id(self) -> str:
        return self.id[:8]


def _copied_from(value: object) -> dict | None:
    """A snapshot's ``copied_from`` record, read from the repository (hostile): only short strings
    under the known keys are kept; anything else is dropped rather than trusted."""
    if not isinstance(value, dict):
        return None
    record = {key: value[key] for key in ("repository", "snapshot", "url")
              if isinstance(value.get(key), str) and len(value[key]) <= 4096}
    return record if "snapshot" in record and "repository" in record else None


@dataclass
class WriteStats:
    blobs_added: int = 0
    bytes_added: int = 0  # stored (compressed, encrypted) bytes of new blobs
    plain_bytes_added: int = 0
    packs_written: int = 0


class Repository:
    """An open, unlocked repository. Thread-safe for concurrent ``save_blob`` and ``read_blob``."""

    def __init__(self, backend: Backend, config: dict, master: MasterKey, key_name: str) -> None:
        self.backend = backend
        self.config = config
        self.id: str = config["id"]
        self.master = master
        self.key_name = key_name
        self.cipher = Cipher(master)
        self.index = Index()
        self.compression: int | None = DEFAULT_COMPRESSION_LEVEL
        self.stats = WriteStats()
        self._pack_lock = threading.Lock()
        self._index_lock = threading.Lock()
        # A backend that can write a pack as it fills (a local repository's temporary file) spares
        # the process the 16 MiB pack being filled and the one being written (issue 19, fifth round).
        spool = getattr(backend, "spool", None)
        self._spool: Callable[[], Any] | None = (lambda: spool(Kind.DATA)) if spool is not None else None
        self._builder = PackBuilder(self._spool)
        self._in_flight: set[bytes] = set()
        # Packs stored whose index object is not yet: shared by every pack writer of this open
        # repository (``writer()``), so a commit can wait for the ones it may refer to.
        self._ledger = _IndexLedger()
        # Full packs being stored in the background: the slots and threads are shared by every
        # writer (``writer()``), each writer waits for its own (``_pending``) before it commits.
        self._uploads = _Uploads(_uploads_setting() if self._spool is not None else 1)
        self._pending: list[Any] = []
        self._upload_failure: BaseException | None = None
        self._index_loaded = False
        self.held_lock: Lock | None = None  # set by Lock.acquire, cleared by release
        # Local copies of snapshot, index and verdict objects (cache.py); None: every read is a GET.
        self.cache: ObjectCache | None = None
        self.written_packs: list[str] = []  # packs this process stored, for verify_before_commit
        # Set by the caller to stop a writer at its next chunk (``ensure_lock``): Ctrl-C of a run
        # whose targets are backed up in other threads (engine/backup.py).
        self.stop: threading.Event | None = None

    # -- creation and opening -----------------------------------------------
    @classmethod
    def init(cls, backend: Backend, password: bytes, kdf: dict | None = None,
             params_from: "Repository | None" = None) -> "Repository":
        """Create a repository. With ``params_from`` (an open repository) the new one shares its id
        key, chunker seed and chunker, so the same data gets the same blob ids in both and a copy
        between them sends only the blobs the destination lacks (restic's --copy-chunker-params);
        its encryption key is its own, fresh and random, like its password."""
        if backend.exists():
            raise errors.RepositoryAlreadyExists(url=backend.url)
        _refuse_foreign(backend)
        # Without a config nothing here is a repository yet: key files left by an
        # interrupted init wrap another master key and must not linger. Under Object Lock
        # one may be locked (or these credentials may not delete key files, deploy/iam/):
        # it stays, harmless, since open() skips a key file whose key_check fails.
        for info in list(backend.list(Kind.KEYS)):
            try:
                backend.delete(Kind.KEYS, info.name)
            except ObjectRetained:
                pass
        backend.create()
        master = MasterKey.generate()
        if params_from is not None:
            # Only the encryption key is new: id key and chunker seed decide blob ids and chunk
            # boundaries. Sharing them reveals nothing new to a holder of the source's key.
            master = MasterKey(master.encryption_key, params_from.master.id_key, params_from.master.chunker_seed)
        key_file = wrap_master_key(master, password, kdf)
        key_name = _name_of(key_file)
        # Keys and config are locked like data (Object Lock): without them the locked data
        # cannot be decrypted, so deleting them would destroy every backup as surely as
        # deleting the packs. Written with If-None-Match, so no one overwrites them either
        # (the shipped IAM policies refuse unconditional writes of keys/ and config).
        until = _retain_until(backend)
        _put_new(backend, Kind.KEYS, key_name, key_file, until)
        repository_id = secrets.token_hex(16)
        config = {
            "version": FORMAT_VERSION,
            "id": repository_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "chunker": "fastcdc-2020",
            "key_check": key_check(master, repository_id),
        }
        if params_from is not None:
            # The id key is shared, so a key check made with it alone would also pass for the
            # source's master key (a source key file put into keys/ here would "open" this
            # repository and then fail on every object): bind the encryption key as well.
            config["key_check_binds"] = "encryption"
            config["key_check"] = key_check(master, repository_id, config)
            config["chunker"] = params_from.config.get("chunker", "fastcdc-2020")
            config["params_from"] = params_from.id  # informational: which repository it shares ids with
        # The config is written last: a repository without it does not exist yet,
        # so an interrupted init can simply be run again.
        _put_new(backend, Kind.CONFIG, "config", json.dumps(config, indent=1).encode(), until)
        repository = cls(backend, config, master, key_name)
        repository._index_loaded = True
        return repository

    # Without a key id, open() derives at most this many keys from the password (a few seconds
    # with default parameters; the bounds on key files cap each derivation).
    MAX_KEY_ATTEMPTS = 8

    @classmethod
    def open(cls, backend: Backend, password: bytes,
             unlocked: tuple[MasterKey, str] | None = None, key_id: str | None = None,
             preferred: Iterable[str] = ()) -> "Repository":
        """Open with ``password``, or with an already unwrapped (master key, key name) of this
        repository (a process opening it again), which is checked against the config.

        Which key files are tried, and why not all of them: each try is a deliberately slow
        password derivation, so a repository with 50 key files must not cost 50 of them. A cheap
        per-key-file "password hint" would let anyone who reads the backend test guesses at the
        cheap hash's speed, and a salt shared by every key file would let an attacker test each
        guess against all of them at once; both are refused. Instead:

        - ``key_id`` (a prefix of the key file's name, ``--key-id``) tries that key file only;
        - otherwise the ``preferred`` names (the key that last opened this repository from this
          state folder) come first, then key files created by this host and user, then the
          rest, newest first, and at most :attr:`MAX_KEY_ATTEMPTS` are tried (``TooManyKeys``).

        Every key file is parsed and checked against the KDF bounds first (no derivation); a
        rejected one is skipped, and named (``KeyFileInvalid``) if no other key opens.
        """
        # The config is read while the key files are listed (on S3 each is a round trip, one after
        # the other before), and the key files a few at a time; an error reading the config (no
        # repository there, not safehold's) still comes first, as it did.
        from concurrent.futures import ThreadPoolExecutor

        if unlocked is not None:
            config = read_config(backend)
            master, key_name = unlocked
            if key_check(master, config["id"], config) != config.get("key_check"):
                raise errors.WrongPassword(url=backend.url)
            return cls(backend, config, master, key_name)
        preferred = list(preferred)
        with ThreadPoolExecutor(2, thread_name_prefix="safehold-open") as pool:
            reading = pool.submit(read_config, backend)
            # The key file that opened this repository last time is fetched beside the listing (one
            # round trip fewer on S3); it is used only if the listing still names it. The name comes
            # from the local state folder: only a well-formed one (a BLAKE3 hex digest) is asked for.
            early = {name: pool.submit(_read_key_or_error, backend, name)
                     for name in preferred[:1] if key_id is None and _KEY_NAME.fullmatch(name)}
            try:
                names = sorted(info.name for info in backend.list(Kind.KEYS))
                if key_id is not None:
                    names = [name for name in names if name.startswith(key_id)]
                    if len(names) != 1 or not key_id:
                        raise errors.KeyNotFound(key_id=key_id)
            except BaseException:
                reading.result()  # the config's own error, if it has one, explains more
                raise
            config = reading.result()
            fetched = {name: future.result() for name, future in early.items()}
        return cls._open_with_keys(backend, config, password, key_id, preferred, names, fetched)

    @classmethod
    def _open_with_keys(cls, backend: Backend, config: dict, password: bytes, key_id: str | None,
                        preferred: Iterable[str], names: list[str],
                        fetched: dict[str, bytes | Exception] | None = None) -> "Repository":
        fetched = fetched or {}

        def read_key(name: str) -> bytes | Exception:
            if name in fetched:
                return fetched[name]
            return _read_key_or_error(backend, name)

        candidates: list[tuple[str, KeyFile]] = []
        rejected: list[tuple[str, str]] = []
        # Key files are named by the hash of their content, so a damaged one shows. It is still
        # tried (a flip in its metadata leaves the key usable); if it does not open, it is named
        # rather than the password blamed.
        damaged: set[str] = set()
        for name, raw in _read_ahead(read_key, names):  # at most 8 in flight, in order
            if isinstance(raw, ObjectNotFound):
                continue  # removed while we listed
            if isinstance(raw, OSError):
                raise errors.from_os_error(raw, f"reading keys/{name[:16]}") from raw
            if _name_of(raw) != name:
                damaged.add(name)
            try:
                candidates.append((name, parse_key_file(raw)))
            except KeyFileRejected as exc:
                rejected.append((name, str(exc) + ("; its content does not match its name (damaged)"
                                                   if name in damaged else "")))
        candidates = _most_likely_first(candidates, list(preferred))
        limit = 1 if key_id is not None else cls.MAX_KEY_ATTEMPTS
        foreign = 0
        for name, key_file in candidates[:limit]:
            try:
                master = unwrap_master_key(key_file, password)
            except (DecryptionFailed, ValueError, KeyError):
                if name in damaged:
                    rejected.insert(0, (name, "its content does not match its name: the key file is damaged "
                                              "(open with another key's password, or put back a copy of it)"))
                continue
            if key_check(master, config["id"], config) != config["key_check"]:
                foreign += 1
                continue  # a key for another master key (a foreign or stray key file)
            return cls(backend, config, master, name)
        if len(candidates) > limit:
            raise errors.TooManyKeys(url=backend.url, tried=limit, count=len(candidates) + len(rejected))
        if rejected:
            name, detail = rejected[0]
            raise errors.KeyFileInvalid(url=backend.url, key_id=name[:8], detail=detail)
        if foreign:
            # The password is right (a key file's authenticated encryption opened with it), yet no key
            # it opens matches the config: a stray key of another repository with this very password
            # is far less likely than a damaged config.
            raise errors.IntegrityError(
                detail=f"config: its id or key_check matches none of the {foreign} key file(s) this password "
                       "opens; the config is damaged (or the key files belong to another repository)")
        raise errors.WrongPassword(url=backend.url)

    # -- encrypted metadata objects -------------------------------------------
    def save_object(self, kind: Kind, document: object, retain_until: datetime | None = None) -> str:
        data = self.cipher.encrypt(msgpack.packb(document), _OBJECT_AAD + kind.value.encode())
        name = _name_of(data)
        self._put(kind, name, data, retain_until)
        if self.cache is not None and kind in CACHED_KINDS:
            self.cache.put(kind, name, data)  # only once stored: the cache never holds what the store lacks
        return name

    def load_object(self, kind: Kind, name: str) -> object:
        """Read, verify and decrypt one object. Snapshot, index and verdict objects come from the
        cache when it holds a copy that hashes to ``name`` (cache.py), else from the backend, and are
        cached once verified. Callers pass names they have just listed (``list_names``)."""
        cache = self.cache if kind in CACHED_KINDS else None
        if cache is not None:
            data = cache.get(kind, name)  # verified against its name, or None
            if data is not None:
                return self._decrypt_object(kind, name, data)
        data = self._get(kind, name)
        document = self._decode_object(kind, name, data)
        if cache is not None:
            cache.put(kind, name, data)
        return document

    def list_names(self, kind: Kind) -> list[str]:
        """The names of the stored objects of ``kind``. The listing is the truth of what exists: the
        cache drops what it no longer names (forgotten snapshots, index objects a prune replaced)."""
        names = [info.name for info in self.backend.list(kind)]
        if self.cache is not None and kind in CACHED_KINDS:
            self.cache.keep_only(kind, names)
        return names

    def uncached(self) -> "_Uncached":
        """``with repository.uncached():`` reads everything from the backend (check and repair verify
        what is stored, not a local copy of it)."""
        return _Uncached(self)

    def _decode_object(self, kind: Kind, name: str, data: bytes) -> object:
        if _name_of(data) != name:
            raise errors.IntegrityError(detail=f"{kind.value}/{name} does not match its name")
        return self._decrypt_object(kind, name, data)

    def _decrypt_object(self, kind: Kind, name: str, data: bytes) -> object:
        try:
            plain = self.cipher.decrypt(data, _OBJECT_AAD + kind.value.encode())
        except DecryptionFailed as exc:
            raise errors.IntegrityError(detail=f"{kind.value}/{name}: {exc}") from None
        return msgpack.unpackb(plain, strict_map_key=False)

    def _put(self, kind: Kind, name: str, data: bytes | list[bytes], retain_until: datetime | None = None,
             exclusive: bool = False) -> None:
        try:
            self.backend.put(kind, name, data, retain_until=retain_until, exclusive=exclusive)
        except OSError as exc:
            raise errors.from_os_error(exc, f"writing {kind.value}/{name[:16]}") from exc

    def _get(self, kind: Kind, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            return self.backend.get(kind, name, offset, length)
        except ObjectNotFound:
            raise errors.IntegrityError(detail=f"{kind.value}/{name} is missing") from None
        except OSError as exc:
            raise errors.from_os_error(exc, f"reading {kind.value}/{name[:16]}") from exc

    # -- keys -------------------------------------------------------------------
    def add_key(self, password: bytes, kdf: dict | None = None) -> str:
        key_file = wrap_master_key(self.master, password, kdf)
        name = _name_of(key_file)
        try:
            _put_new(self.backend, Kind.KEYS, name, key_file, self.retain_until())
        except OSError as exc:
            raise errors.from_os_error(exc, f"writing keys/{name[:16]}") from exc
        return name

    def list_keys(self) -> list[dict]:
        keys = []
        for info in self.backend.list(Kind.KEYS):
            described = describe_key_file(self.backend.get(Kind.KEYS, info.name))
            keys.append({"id": info.name, "current": info.name == self.key_name} | described)
        return sorted(keys, key=lambda k: k["created"] or "")

    def change_password(self, password: bytes) -> str:
        """Add a key for ``password``, then remove the key this repository was opened with."""
        new_key = self.add_key(password)
        old_key, self.key_name = self.key_name, new_key
        self._delete_key(old_key, added=new_key)
        return new_key

    def remove_key(self, key_id: str) -> str:
        names = [info.name for info in self.backend.list(Kind.KEYS)]
        matches = [n for n in names if n.startswith(key_id)]
        if len(matches) != 1:
            raise errors.KeyNotFound(key_id=key_id)
        if len(names) == 1:
            raise errors.LastKey(key_id=matches[0][:8])
        self._delete_key(matches[0])
        return matches[0]

    def key_retained_until(self, name: str) -> datetime | None:
        """Until when a key file's stored version stays under Object Lock (None: not locked).

        Removing a key under Object Lock only hides it (S3 adds a delete marker): the locked
        version stays stored until then, readable to credentials allowed s3:GetObjectVersion,
        and is expired by the bucket's lifecycle rule afterwards. safehold ignores it as soon
        as it is hidden (it lists keys/ to open the repository) and maintenance no longer
        extends it.
        """
        backend = retention_of(self.backend)
        if backend is None:
            return None
        try:
            until = backend.retention(Kind.KEYS, name)
        except ObjectNotFound:
            return None
        return until if until is not None and until > datetime.now(timezone.utc) else None

    def _delete_key(self, name: str, added: str | None = None) -> None:
        try:
            self.backend.delete(Kind.KEYS, name)
        except ObjectRetained as exc:
            # The store refused (the shipped backup role may not delete key files, so a stolen
            # backup credential cannot hide the keys): say what to do, and what already happened.
            done = f"the new key {added[:8]} was added and works; " if added else ""
            raise errors.KeyRetained(key_id=name[:8], until=exc.until.isoformat(timespec="seconds"),
                                     done=done) from None
        except OSError as exc:
            raise errors.from_os_error(exc, f"deleting keys/{name[:16]}") from exc

    # -- locks ------------------------------------------------------------------
    def lock(self, exclusive: bool = False, purpose: str = "", wait: float = 0.0,
             meanwhile: Callable[[], None] | None = None) -> Lock:
        """``meanwhile``: reads made while the lock is acquired (``Lock.acquire``)."""
        return Lock(self, exclusive, purpose or ("prune" if exclusive else "backup")).acquire(wait, meanwhile)

    def ensure_lock(self) -> None:
        """Raise LockLost if the lock this repository was opened under is lost (memory only, cheap).
        Without a lock (tests, read-only tools) there is nothing to prove. KeyboardInterrupt once
        ``stop`` is set: the run was interrupted in another thread."""
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt("the run was interrupted")
        if self.held_lock is not None:
            self.held_lock.ensure_held()

    def verify_before_commit(self) -> None:
        """Prove that what is about to be committed still refers to stored data: the lock is
        still ours (re-read from the backend, heartbeat within the hold limit, then refreshed), so no prune can
        have run, and every pack this process wrote still exists. Raises LockLost.

        While our lock is live no prune runs (prune needs the exclusive lock), so the blobs we
        deduplicated against are there too; the pack check is a second, independent proof for
        the data this run added. The reads go out side by side (on S3 each is a round trip: the
        lock object and a HEAD per pack were one after the other); the heartbeat is written once
        they proved the lock ours."""
        lock = self.held_lock
        if lock is None:
            return
        started = lock.clock()
        self._prove_held(lock)
        self._heartbeat_after_proof(lock, started)
        lock.ensure_held()

    def commit_index(self, meanwhile: Callable[[], None] | None = None) -> None:
        """Store the partial pack and the index for everything written so far, each proven the way
        ``verify_before_commit`` proves a commit, ready for a snapshot that refers to them.

        The order is the write order: the pack is stored (the put returned) and the proof made
        before the index is written (an index naming packs a prune removed would let
        later backups deduplicate against missing data), the index stored before the second proof,
        which comes right before the caller's snapshot write. What overlaps is only what the order
        allows: the proof's reads side by side, and the heartbeat (our own lock object) written
        while the index is; the second proof needs no heartbeat of its own (one was just written).
        On S3 that is five round trips one after the other where there were seven, plus two per
        pack written. ``meanwhile``: called after the index is stored, beside the second proof."""
        lock = self.held_lock
        if lock is None:
            self.flush()
            if meanwhile is not None:
                meanwhile()
            return
        from concurrent.futures import ThreadPoolExecutor

        # Not beside the first proof: a lock removed while the pack was being put must be seen
        # before the index is written (tests/unit/repository/test_lock_lost.py).
        self.flush_pack()
        started = lock.clock()
        self._prove_held(lock)
        with ThreadPoolExecutor(1, thread_name_prefix="safehold-heartbeat") as pool:
            heartbeat = pool.submit(self._heartbeat_after_proof, lock, started)
            try:
                self.write_index()
            finally:
                heartbeat.result()  # LockLost from it is raised here
            # ``meanwhile`` (the caller's last preparations and checks before its snapshot: the
            # snapshot's document, the job's fence) runs in this thread while the second proof's
            # reads are out: both end before this returns, and either failing stops the commit.
            proof = pool.submit(self._prove_held, lock)
            try:
                if meanwhile is not None:
                    meanwhile()
            finally:
                proof.result()
        lock.ensure_held()

    @staticmethod
    def _heartbeat_after_proof(lock: Lock, started: tuple[float, float]) -> None:
        """A heartbeat right after a proof: what follows has the whole stale age before any other
        host may judge the lock stale. A storage error on the write is not fatal: the read-only
        proof decided (it is retried by the heartbeat thread)."""
        try:
            lock.write_heartbeat(started)
        except errors.LockLost:
            raise
        except Exception:
            pass

    def _prove_held(self, lock: Lock, packs: list[str] | None = None) -> None:
        """Re-read our lock object and check every pack this process wrote (``packs``: these),
        side by side (up to 8 requests at once; more than 64 packs: one listing). Raises LockLost."""
        from concurrent.futures import ThreadPoolExecutor

        packs = list(self.written_packs) if packs is None else packs
        if len(packs) > 64:  # one listing beats thousands of requests
            with ThreadPoolExecutor(1, thread_name_prefix="safehold-proof") as pool:
                own = pool.submit(lock.verify)
                stored = {info.name for info in self.backend.list(Kind.DATA)}
                own.result()
            missing = [name for name in packs if name not in stored]
        else:
            with ThreadPoolExecutor(min(8, len(packs) + 1), thread_name_prefix="safehold-proof") as pool:
                own = pool.submit(lock.verify)
                present = list(pool.map(lambda name: self.backend_has(Kind.DATA, name), packs))
                own.result()
            missing = [name for name, found in zip(packs, present) if not found]
        if missing:
            raise lock.lose(f"{len(missing)} of the {len(packs)} pack(s) it wrote are gone from the "
                             f"repository (pruned?), e.g. {missing[0][:16]}")
        lock.ensure_held()  # the requests may have stalled

    def verify_before_delete(self) -> None:
        """Prove, right before a destructive step (deleting packs, index objects, snapshots,
        temporary files), that the lock is still ours and that no lock it excludes is held beside
        it (``Lock.verify_alone``), then refresh it so the step has the whole stale age. Raises
        LockLost: a host that judged our lock stale may be using what we would delete."""
        lock = self.held_lock
        if lock is None:
            return
        lock.verify_alone()
        try:
            lock.refresh()
        except errors.LockLost:
            raise
        except Exception:  # a storage error on the heartbeat write: the read-only proof decided
            pass
        lock.ensure_held()

    # -- index ------------------------------------------------------------------
    def load_index(self, on_error: Callable[[str, errors.IntegrityError], None] | None = None) -> None:
        """Load every index object. A damaged one raises, or with ``on_error`` is reported and skipped."""
        if self._index_loaded:
            return
        names = self.list_names(Kind.INDEX)
        for name, document in _read_ahead(lambda name: self.load_object(Kind.INDEX, name), names):
            if isinstance(document, errors.IntegrityError):
                if on_error is None:
                    raise document
                on_error(name, document)
                continue
            for pack_name, entries in document["packs"]:
                self.index.stage_pack(pack_name, entries)  # the records; NumPy only for a large index
        self.index.finish_loading()
        self._index_loaded = True

    def reload_index(self, on_error: Callable[[str, errors.IntegrityError], None] | None = None) -> None:
        """Forget the in-memory index and read the stored one again (after prune rewrote it)."""
        self.index = Index()
        self._index_loaded = False
        self.load_index(on_error)

    def index_names(self) -> list[str]:
        return [info.name for info in self.backend.list(Kind.INDEX)]

    # -- blobs ------------------------------------------------------------------
    def has_blob(self, blob_id: bytes) -> bool:
        return blob_id in self.index or blob_id in self._in_flight

    def save_blob(self, blob_type: BlobType, data: bytes, blob_id: bytes | None = None,
                  force: bool = False, body: bytes | None = None) -> tuple[bytes, bool]:
        """Store ``data`` unless a blob with its id exists (``force``: store anyway, for repacking).
        Returns (id, added). ``body``: the blob as another repository stores it (``read_blob_body``,
        verified to decode to ``data``), encrypted as it is instead of compressed again.

        Thread-safe: hashing, compression and encryption run outside any lock,
        so a thread pool over chunks scales with the cores.
        """
        if blob_id is None:
            blob_id = self.cipher.blob_id(data)
        with self._index_lock:
            if blob_id in self._in_flight or (not force and blob_id in self.index):
                return blob_id, False
            self._in_flight.add(blob_id)
        try:
            if body is None:
                stored = encode_blob(self.cipher, blob_type, blob_id, data, self.compression)
            else:
                stored = encode_blob_body(self.cipher, blob_type, blob_id, body)
        except BaseException:
            with self._index_lock:
                self._in_flight.discard(blob_id)
            raise
        full: PackBuilder | None = None
        with self._pack_lock:
            try:
                self._builder.add(blob_type, blob_id, stored, len(data))
            except OSError as exc:  # writing the spool: the pack is broken, so is this backup
                with self._index_lock:
                    self._in_flight.discard(blob_id)
                raise errors.from_os_error(exc, _writing_a_pack(exc)) from exc
            self.stats.blobs_added += 1
            self.stats.bytes_added += len(stored)
            self.stats.plain_bytes_added += len(data)
            if self._builder.size >= PACK_TARGET_SIZE:
                full, self._builder = self._builder, PackBuilder(self._spool)
        if full is not None:
            self._store_full_pack(full)
        return blob_id, True

    def _store_full_pack(self, builder: PackBuilder) -> None:
        """Store a full pack: in the background when uploads run side by side (the caller goes on
        chunking; it waits here only while every slot is taken), else now. A background store
        that failed is raised here, at the writer's next full pack, or by ``flush_pack``; its
        blobs stay in flight, so nothing refers to them, and the backup fails before a snapshot."""
        self._raise_failed_upload()
        if self._uploads.limit <= 1:
            self._write_pack(builder)
            return
        future = self._uploads.submit(self._write_pack, builder)
        with self._pack_lock:
            self._pending.append(future)

    def _raise_failed_upload(self) -> None:
        """Raise when a background store of this writer failed: then and ever after (its blobs
        are still "in flight", so nothing may be deduplicated against them or committed)."""
        with self._pack_lock:
            self._pending = [future for future in self._pending
                             if not future.done() or future.exception() is not None]
            failed = next((future for future in self._pending if future.done()), None)
            if failed is not None and self._upload_failure is None:
                self._upload_failure = failed.exception()
            failure = self._upload_failure
        if failure is not None:
            raise failure

    def wait_for_uploads(self) -> None:
        """Wait until every pack this writer handed to the background is stored; raise the first
        failure. Its packs are then in ``written_packs`` and in the ledger (``write_index``)."""
        with self._pack_lock:
            pending, self._pending = self._pending, []
        for future in pending:  # every one is waited for, the first error raised
            try:
                future.result()
            except BaseException as exc:
                with self._pack_lock:
                    self._upload_failure = self._upload_failure or exc
        self._raise_failed_upload()

    def _write_pack(self, builder: PackBuilder) -> None:
        try:
            name, data, entries = builder.finish(self.cipher)
        except OSError as exc:
            raise errors.from_os_error(exc, _writing_a_pack(exc)) from exc
        if builder.spool is not None:
            try:
                self.backend.put_spool(Kind.DATA, name, builder.spool, retain_until=self.retain_until())
            except OSError as exc:
                raise errors.from_os_error(exc, f"writing {Kind.DATA.value}/{name[:16]}") from exc
        else:
            self._put(Kind.DATA, name, data, self.retain_until())
        with self._index_lock:
            self.written_packs.append(name)
            # Into the ledger before the index: a blob is found in the index only once a commit
            # that deduplicates against it will also wait for its pack's index object (write_index).
            unindexed = self._ledger.add(name, entries)
            self.index.add_pack(name, entries)
            for e in entries:
                self._in_flight.discard(e.blob_id)
            self.stats.packs_written += 1
        if unindexed >= INDEX_EVERY_PACKS:
            self._write_index()

    def _write_index(self) -> None:
        """Store one index object for the packs of every writer not yet in one (none: nothing)."""
        packs = self._ledger.take()
        if not packs:
            return
        try:
            self.write_index_object(packs)
        except BaseException:
            self._ledger.done(packs, stored=False)  # back in the ledger: the next index write takes them
            raise
        self._ledger.done(packs, stored=True)

    def write_index_object(self, packs: list[tuple[str, list]]) -> str:
        """Store one index object describing ``packs`` as (pack name, [PackEntry])."""
        document = {"packs": [[name, encode_entries(entries)] for name, entries in packs]}
        return self.save_object(Kind.INDEX, document, self.retain_until())

    def flush(self) -> None:
        """Write the partial pack and the index for everything written so far."""
        self.flush_pack()
        self.write_index()

    def flush_pack(self) -> None:
        """Write the partial pack and wait for the full ones stored in the background (their index
        entries wait for ``write_index``)."""
        with self._pack_lock:
            builder, self._builder = self._builder, PackBuilder(self._spool)
        try:
            if len(builder):
                self._write_pack(builder)
        except BaseException:
            self.drain_uploads()  # the background ones end too (their errors are secondary)
            raise
        self.wait_for_uploads()

    def drain_uploads(self) -> None:
        """Wait for every pack any writer of this open repository is storing in the background,
        raising nothing (each failure is its writer's to raise): before the lock is released."""
        self._uploads.drain()

    def write_index(self) -> None:
        """Write an index object for the packs written since the last one, and return only once
        every pack stored before this call (by any writer of this repository: ``writer()``) is
        named by a stored index object: the barrier before a snapshot, which may refer to blobs
        a side-by-side writer stored (found in the shared index) and whose index object that
        writer may be putting at this moment. Waits only for such a put in progress (one round
        trip); a put that failed hands its packs back, and this call stores them itself."""
        needed = self._ledger.outstanding()
        while True:
            self._write_index()
            if not self._ledger.wait_stored(needed):
                return

    def writer(self) -> "Repository":
        """This open repository (backend, keys, index, lock, cache) with a pack writer of its
        own: its own pack being filled, blobs in flight, ``stats`` and ``written_packs``, for one
        of several archivers writing side by side (engine/backup.py, ``backup --all``).

        Why a writer of its own and not one shared pack: a blob another writer is still
        encoding or holds in its unwritten pack is not deduplicated against (``has_blob`` sees
        only this writer's blobs in flight) but stored again, so no snapshot refers to data that
        another target's thread has not made durable, and a target that fails (its pack
        dropped) cannot take a blob of another target's snapshot with it. Such duplicates are
        rare (two targets' identical chunks written at the same moment), harmless to readers
        (the index finds either copy) and removed by prune. Blobs found in the shared index are
        in stored packs; ``write_index`` (the commit) waits until their index objects are stored
        too. The statistics each archiver reads (``stats``) count its own blobs only."""
        sibling = copy.copy(self)
        sibling.stats = WriteStats()
        sibling.written_packs = []
        sibling._pack_lock = threading.Lock()
        sibling._builder = PackBuilder(self._spool)
        sibling._in_flight = set()
        sibling._pending = []
        sibling._upload_failure = None
        return sibling

    def retain_until(self) -> datetime | None:
        """When an object written now may first be deleted (None: no retention); every kind but
        locks is written with it.

        The backend carries the period (S3 Object Lock ``days``); it is applied
        from the moment of writing, and ``safehold maintenance`` extends it on
        objects that kept snapshots still use.
        """
        return _retain_until(self.backend)

    def locate(self, blob_id: bytes) -> BlobLocation:
        location = self.index.lookup(blob_id)
        if location is None:
            raise errors.IntegrityError(detail=f"blob {blob_id.hex()[:16]} is not in the index")
        return location

    def blob_size(self, blob_id: bytes) -> int:
        """Plaintext length of a stored blob, from the index (nothing is read)."""
        return self.locate(blob_id).plain_length

    def read_blob(self, blob_id: bytes, location: BlobLocation | None = None) -> bytes:
        """Read and verify one blob; raises IntegrityError naming the pack when damaged."""
        return self.read_blob_body(blob_id, location)[1]

    def read_blob_body(self, blob_id: bytes, location: BlobLocation | None = None) -> tuple[bytes, bytes]:
        """Read and verify one blob; returns (its decrypted body, flag byte and payload as stored,
        its plaintext). Raises IntegrityError naming the pack when damaged."""
        location = location or self.locate(blob_id)
        stored = self._get(Kind.DATA, location.pack, location.offset, location.length)
        return self.decode_blob_body(blob_id, location, stored)

    def decode_blob(self, blob_id: bytes, location: BlobLocation, stored: bytes | memoryview) -> bytes:
        """Decrypt, decompress and verify a blob's stored bytes (fetched by the caller, e.g. as part
        of a larger range); returns its plaintext. Raises IntegrityError naming the pack when they do
        not hold the blob."""
        return self.decode_blob_body(blob_id, location, stored)[1]

    def decode_blob_body(self, blob_id: bytes, location: BlobLocation,
                         stored: bytes | memoryview) -> tuple[bytes, bytes]:
        """``decode_blob``, returning (the decrypted body as stored, the plaintext) as ``read_blob_body``."""
        try:
            return decode_blob_body(self.cipher, location.blob_type, blob_id, stored, location.plain_length)
        except Exception as exc:  # DecryptionFailed, zstd errors on a damaged frame
            raise errors.IntegrityError(
                detail=f"blob {blob_id.hex()[:16]} in pack {location.pack}: {exc}", pack=location.pack
            ) from None

    # -- snapshots ----------------------------------------------------------------
    def save_snapshot(self, snapshot: Snapshot) -> str:
        """Commit a snapshot. Callers must have flushed (packs, then index, first)."""
        name = self.save_object(Kind.SNAPSHOTS, snapshot.to_document(), self.retain_until())
        snapshot.id = name
        return name

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        return Snapshot.from_document(snapshot_id, self.load_object(Kind.SNAPSHOTS, snapshot_id))

    def list_snapshots(self, target: str | None = None,
                       on_error: Callable[[str, errors.IntegrityError], None] | None = None) -> list[Snapshot]:
        """Snapshots, oldest first. A damaged one raises, or with ``on_error`` is reported and skipped."""
        snapshots = []
        names = self.list_names(Kind.SNAPSHOTS)
        for name, snapshot in _read_ahead(self.load_snapshot, names):
            if isinstance(snapshot, errors.IntegrityError):
                if not self.backend_has(Kind.SNAPSHOTS, name):
                    continue  # forgotten while we listed
                if on_error is None:
                    raise snapshot
                on_error(name, snapshot)
                continue
            if target is None or snapshot.target == target:
                snapshots.append(snapshot)
        # A repaired snapshot keeps its original's time and sorts after it, so 'latest' and a
        # backup's parent are the repaired one while the damaged original is still kept.
        return sorted(snapshots, key=lambda s: (s.time, s.original is not None))

    def backend_has(self, kind: Kind, name: str) -> bool:
        try:
            self.backend.stat(kind, name)
            return True
        except ObjectNotFound:
            return False

    def find_snapshot(self, ref: str, target: str | None = None) -> Snapshot:
        """Resolve 'latest', 'latest:TARGET', 'latest-clean[:TARGET]' (the newest snapshot judged
        clean and not after an unresolved suspicious one, marks.py), a full id or an id prefix."""
        if ref == "latest-clean" or ref.startswith("latest-clean:"):
            from .forgotten import live_snapshots
            from .marks import latest_clean, load_records

            wanted = ref.partition(":")[2] or target
            if not wanted:
                raise errors.SnapshotNotFound(ref=f"{ref} (name the target: latest-clean:TARGET)")
            found = latest_clean(live_snapshots(self, wanted), load_records(self))
            if found is None:
                raise errors.NoCleanSnapshot(target=wanted)
            return found
        if ref == "latest" or ref.startswith("latest:"):
            from .forgotten import live_snapshots  # forgotten.py builds on this module

            wanted = ref.partition(":")[2] or target
            # A snapshot that was forgotten and put back (replayed) is never 'latest'.
            snapshots = live_snapshots(self, wanted)
            if not snapshots:
                raise errors.SnapshotNotFound(ref=ref if not wanted else f"latest of target {wanted}")
            return snapshots[-1]
        if len(ref) < 4:
            raise errors.SnapshotNotFound(ref=ref)
        if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):
            # A full id names the object: read it at once (on S3 the listing is a round trip of its
            # own before the first data byte). Not there: the id of a copy's source, resolved below.
            try:
                data = self.backend.get(Kind.SNAPSHOTS, ref)
            except ObjectNotFound:
                data = None
            except OSError as exc:
                raise errors.from_os_error(exc, f"reading {Kind.SNAPSHOTS.value}/{ref[:16]}") from exc
            if data is not None:
                return Snapshot.from_document(ref, self._decode_object(Kind.SNAPSHOTS, ref, data))
        names = [info.name for info in self.backend.list(Kind.SNAPSHOTS) if info.name.startswith(ref)]
        if not names:
            return self._find_copy_of(ref, target)
        if len(names) > 1:
            raise errors.AmbiguousSnapshot(ref=ref, count=len(names))
        return self.load_snapshot(names[0])

    def _find_copy_of(self, ref: str, target: str | None) -> Snapshot:
        """In a copy (docs/copies.md), the snapshot copied from the source snapshot ``ref`` (an id or
        prefix of the source's id): a copy has its own id, and the source's is what a user knows
        from the source's listing, a job log or a runbook. Raises SnapshotNotFound or AmbiguousSnapshot."""
        found = {snapshot.id: snapshot for snapshot in self.list_snapshots(target, on_error=lambda name, exc: None)
                 if snapshot.copied_from is not None and snapshot.copied_from["snapshot"].startswith(ref)}
        if not found:
            raise errors.SnapshotNotFound(ref=ref)
        if len(found) > 1:
            raise errors.AmbiguousSnapshot(ref=ref, count=len(found))
        return next(iter(found.values()))

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete one snapshot object. The caller proves its lock first (verify_before_delete);
        a lock lost since then stops here, before the delete."""
        self.ensure_lock()
        self.backend.delete(Kind.SNAPSHOTS, snapshot_id)
        if self.cache is not None:
            self.cache.discard(Kind.SNAPSHOTS, snapshot_id)

    # -- item streams -------------------------------------------------------------
    def tree_chunker(self) -> FileChunker:
        return FileChunker(self.master.chunker_seed, TREE_MIN, TREE_AVG, TREE_MAX)

    def file_chunker(self) -> FileChunker:
        return FileChunker(self.master.chunker_seed)

    def read_tree(self, snapshot: Snapshot) -> Iterator[dict]:
        """Yield the items of a snapshot in stored order.

        The tree's blobs are read ahead, TREE_READ_AHEAD at a time and handed out in order (on S3
        each is a request of its own: read one by one, a large tree cost a round trip per 48 KiB);
        an error is raised where the blob that caused it is reached, as before."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        ids = iter(snapshot.tree)
        if len(snapshot.tree) <= 1:
            for hex_id in ids:
                unpacker.feed(self.read_blob(bytes.fromhex(hex_id)))
                yield from unpacker
            return
        with ThreadPoolExecutor(TREE_READ_AHEAD, thread_name_prefix="safehold-tree") as pool:
            def read(hex_id: str) -> bytes:  # a malformed id fails where it is reached, in order
                return self.read_blob(bytes.fromhex(hex_id))

            ahead = deque(pool.submit(read, hex_id) for _, hex_id in zip(range(TREE_READ_AHEAD * 2), ids))
            try:
                while ahead:
                    data = ahead.popleft().result()
                    for hex_id in ids:
                        ahead.append(pool.submit(read, hex_id))
                        break
                    unpacker.feed(data)
                    yield from unpacker
            finally:
                for future in ahead:
                    future.cancel()


def _uploads_setting() -> int:
    raw = os.environ.get("SAFEHOLD_UPLOADS", "").strip()
    if not raw:
        return DEFAULT_UPLOADS
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise errors.UsageError(f"SAFEHOLD_UPLOADS={raw!r} is not a number of uploads from 1 to 64 "
                                f"(unset it for the default, {DEFAULT_UPLOADS})")
    return int(raw)


class _Uploads:
    """Full packs stored in the background, shared by the pack writers of one open repository:
    at most ``limit`` at once (a writer that fills another waits for a slot), each in a thread of
    its own that ends with it (no pool left idle in a long-running scheduler or worker that opens
    repositories job after job). ``drain`` waits for all of them: the lock is never released while
    one is being put."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self._lock = threading.Lock()
        self._running: set[Any] = set()

    def submit(self, store: Callable[[PackBuilder], None], builder: PackBuilder) -> Any:
        from concurrent.futures import Future

        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(store(builder))
            except BaseException as exc:  # raised in the writer's thread (wait_for_uploads)
                future.set_exception(exc)

        self._slots.acquire()
        try:
            with self._lock:
                self._running.add(future)
            future.set_running_or_notify_cancel()
            future.add_done_callback(self._finished)
            threading.Thread(target=run, name="safehold-upload", daemon=True).start()
        except BaseException:
            with self._lock:
                self._running.discard(future)
            self._slots.release()
            raise
        return future

    def _finished(self, future: Any) -> None:
        with self._lock:
            self._running.discard(future)
        self._slots.release()

    def drain(self) -> None:
        """Wait for every upload in progress (their errors are their writers' to raise)."""
        from concurrent.futures import wait

        with self._lock:
            running = list(self._running)
        wait(running)


def _writing_a_pack(exc: OSError) -> str:
    """What failed, for an error writing a pack's spool: its file named when the error carries it
    (an S3 repository spools on a local disk, ``SAFEHOLD_SPOOL_DIR`` or /var/tmp: a full or missing
    folder there is not the bucket's fault)."""
    return f"writing a pack into {exc.filename}" if exc.filename else "writing a pack"


class _IndexLedger:
    """The packs stored whose index object is not (yet), shared by the pack writers of one open
    repository (``Repository.writer``): ``unindexed`` waits for the next index write, ``writing``
    is in an index object being put. Thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._unindexed: list[tuple[str, list]] = []
        self._writing: set[str] = set()

    def add(self, name: str, entries: list) -> int:
        """A pack is stored; returns how many wait for an index object."""
        with self._changed:
            self._unindexed.append((name, entries))
            return len(self._unindexed)

    def take(self) -> list[tuple[str, list]]:
        with self._changed:
            packs, self._unindexed = self._unindexed, []
            self._writing.update(name for name, _ in packs)
            return packs

    def done(self, packs: list[tuple[str, list]], stored: bool) -> None:
        with self._changed:
            self._writing.difference_update(name for name, _ in packs)
            if not stored:
                self._unindexed = packs + self._unindexed
            self._changed.notify_all()

    def outstanding(self) -> set[str]:
        with self._changed:
            return {name for name, _ in self._unindexed} | self._writing

    def wait_stored(self, needed: set[str]) -> bool:
        """Wait until no pack of ``needed`` is in an index object being put; True when some of
        them wait for an index write (a put that failed handed them back), False when all are
        stored."""
        with self._changed:
            while True:
                if needed & {name for name, _ in self._unindexed}:
                    return True
                if not needed & self._writing:
                    return False
                self._changed.wait(1.0)


class _Uncached:
    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.cache: ObjectCache | None = None

    def __enter__(self) -> Repository:
        self.cache, self.repository.cache = self.repository.cache, None
        return self.repository

    def __exit__(self, *exc: object) -> None:
        self.repository.cache = self.cache


class TreeWriter:
    """Serialises items to a msgpack stream cut into content-defined TREE blobs.

    Unchanged runs of items produce the same blobs as last time and dedup away,
    so a snapshot of a large, mostly unchanged tree stores little metadata.
    """

    FLUSH_AT = 4 * 1024 * 1024

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.chunker = repository.tree_chunker()
        self.packer = msgpack.Packer()
        self.buffer = bytearray()
        self.ids: list[str] = []

    def add(self, item: dict) -> None:
        self.buffer += self.packer.pack(item)
        if len(self.buffer) >= self.FLUSH_AT:
            self._cut(final=False)

    def _cut(self, final: bool) -> None:
        data = bytes(self.buffer)
        cuts = self.chunker.cut(data)
        if not final:
            cuts = cuts[:-1]  # the last cut ends with the buffer, not at a boundary
        end = 0
        for offset, length in cuts:
            blob_id, _added = self.repository.save_blob(BlobType.TREE, data[offset : offset + length])
            self.ids.append(blob_id.hex())
            end = offset + length
        self.buffer = bytearray(data[end:])

    def finish(self) -> list[str]:
        if self.buffer:
            self._cut(final=True)
        return self.ids


def _read_ahead(read: Callable[[str], object], names: list[str], threads: int = 8) -> Iterator[tuple[str, object]]:
    """(name, read(name)) in the order of ``names``, up to ``threads`` reads in flight (on S3 each
    object is a round trip: the index and snapshot objects were read one after another). An
    IntegrityError is handed back in place of the result, for the caller to raise or report in
    order; any other error is raised where its name is reached."""
    if len(names) <= 1:
        for name in names:
            yield name, _integrity_or(read, name)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending = iter(names)
    with ThreadPoolExecutor(threads, thread_name_prefix="safehold-read") as pool:
        ahead = deque((name, pool.submit(_integrity_or, read, name)) for _, name in zip(range(threads * 2), pending))
        try:
            while ahead:
                name, future = ahead.popleft()
                for following in pending:
                    ahead.append((following, pool.submit(_integrity_or, read, following)))
                    break
                yield name, future.result()
        finally:
            for _, future in ahead:
                future.cancel()


def _integrity_or(read: Callable[[str], object], name: str) -> object:
    try:
        return read(name)
    except errors.IntegrityError as exc:
        return exc


def read_config(backend: Backend) -> dict:
    try:
        raw = backend.get(Kind.CONFIG, "config")
    except ObjectNotFound:
        raise errors.RepositoryDoesNotExist(url=backend.url) from None
    except OSError as exc:
        raise errors.from_os_error(exc, "reading config") from exc
    try:
        config = json.loads(raw)
        version = config["version"]
        config["id"], config["key_check"]
    except (ValueError, KeyError, TypeError):
        raise errors.ForeignRepository(url=backend.url, reason="its config file is not safehold's") from None
    if version not in SUPPORTED_VERSIONS:
        raise errors.UnsupportedRepositoryVersion(url=backend.url, found=version, supported=SUPPORTED_VERSIONS)
    return config


def _retain_until(backend: Backend) -> datetime | None:
    retaining = retention_of(backend)
    period = retaining.retention_period if retaining is not None else None
    return None if period is None else datetime.now(timezone.utc) + period


def _put_new(backend: Backend, kind: Kind, name: str, data: bytes, retain_until: datetime | None) -> None:
    """Write a key file or the config, never over an existing one. A key file is named by its
    content, so finding one of that name means it is already stored (the same bytes)."""
    try:
        backend.put(kind, name, data, exclusive=True, retain_until=retain_until)
    except ObjectExists:
        if kind is Kind.CONFIG:
            raise errors.RepositoryAlreadyExists(url=backend.url) from None


def same_params(first: Repository, second: Repository) -> bool:
    """Whether the same data gets the same blob ids and chunk boundaries in both repositories
    (shared id key, chunker seed and chunker): the condition for copying blobs without re-chunking."""
    import hmac

    return (hmac.compare_digest(first.master.id_key, second.master.id_key)
            and first.master.chunker_seed == second.master.chunker_seed
            and first.config.get("chunker", "fastcdc-2020") == second.config.get("chunker", "fastcdc-2020"))


def key_check(master: MasterKey, repository_id: str, config: dict | None = None) -> str:
    """Binds the master key to the repository: open() ignores key files that unwrap another key.
    A repository made with ``params_from`` (config ``key_check_binds: encryption``) binds the
    encryption key too, since its id key is shared with another repository."""
    import blake3

    if config is not None and config.get("key_check_binds") == "encryption":
        return blake3.blake3(b"safehold-key-check-v2:" + repository_id.encode() + b"\x00" + master.encryption_key,
                             key=master.id_key).hexdigest()
    return blake3.blake3(b"safehold-key-check:" + repository_id.encode(), key=master.id_key).hexdigest()


def _refuse_foreign(backend: Backend) -> None:
    """Refuse to initialise inside a directory that holds something else (another tool's repository)."""
    root = backend.root if isinstance(backend, DirectoryBackend) else None
    if root is not None and os.path.isdir(root):
        known = {"keys", "locks", "snapshots", "index", "data", "forgotten", "verdicts"}
        for name in os.listdir(root):
            if name.startswith(".tmp-"):  # left by an init killed while writing the config
                os.unlink(os.path.join(root, name))
        strangers = [name for name in os.listdir(root) if name not in known]
        if strangers:
            raise errors.ForeignRepository(
                url=backend.url, reason=f"the directory is not empty: {', '.join(sorted(strangers)[:5])}"
            )


def _most_likely_first(candidates: list[tuple[str, KeyFile]], preferred: list[str]) -> list[tuple[str, KeyFile]]:
    """Preferred names in their order, then this host and user's key files, then the rest; newest first."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container
        user = str(os.getuid())
    host = socket.gethostname()

    def rank(item: tuple[str, KeyFile]) -> tuple[int, int]:
        name, key_file = item
        place = preferred.index(name) if name in preferred else len(preferred)
        return place, 0 if (key_file.hostname, key_file.username) == (host, user) else 1

    # Two stable sorts: newest first within each (place, mine) group.
    by_date = sorted(candidates, key=lambda item: item[1].created or "", reverse=True)
    return sorted(by_date, key=rank)


_KEY_NAME = re.compile(r"[0-9a-f]{64}")


def _read_key_or_error(backend: Backend, name: str) -> bytes | Exception:
    try:
        return backend.get(Kind.KEYS, name)
    except (ObjectNotFound, OSError) as exc:
        return exc


def _name_of(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()

