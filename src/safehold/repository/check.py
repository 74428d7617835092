"""Repository check: structure always, data on request.

Structure: the config is well formed and every key file matches its name (key files are
named by their hash; the config is plain JSON, bound to the keys by its key_check: a flip
in its ``created`` time that still reads as a time no later than its key files allow (a
minute of slack) is the one damage no check can see, and nothing uses that value); every
index object decrypts; every pack the index names exists with the right size; every snapshot decrypts and its item stream reads; every
blob an item refers to is in the index. Packs that no index names and blobs no
snapshot uses are *garbage* (left by a killed backup or by forget), reported
but not errors: prune removes them.

A snapshot that a forget record names (forgotten, then copied back) is an error: a replay.
When snapshots miss blobs, the headers of packs no index names are read to tell a lost index
object (``safehold repair index``) from lost data (``safehold repair snapshots``).

Data (``read_data``): each selected pack is read whole, its name must be the
hash of its bytes, its header must decrypt and match the index, and every
blob must decrypt to content with the right keyed id. A damaged pack is named
with the snapshots and files that use its blobs.
"""

from __future__ import annotations

import os
import random
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from .. import errors
from ..items import HOLE
from .backends import DirectoryBackend, Kind
from .crypto import DecryptionFailed, KeyFileRejected, parse_key_file
from .forgotten import replayed_records
from .pack import BlobType, decode_blob, pack_name_of, read_pack_header
from .reindex import scan_pack_headers
from .repository import Repository, Snapshot


@dataclass
class DamagedPack:
    pack: str
    reason: str
    snapshots: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)
    damaged_packs: list[DamagedPack] = field(default_factory=list)
    unreferenced_packs: list[str] = field(default_factory=list)
    unused_blobs: int = 0
    missing_blobs: int = 0
    # Packs no index names that hold blobs snapshots use (a lost index object): not garbage.
    unindexed_packs_in_use: list[str] = field(default_factory=list)
    # Snapshots forgotten before and present again: {"snapshot", "record", "forgotten_at", ...}.
    replayed: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.damaged_packs

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        data["damaged_packs"] = [dict(d.__dict__) for d in self.damaged_packs]
        data["ok"] = self.ok
        return data


def referenced_blobs(repository: Repository, on_item: Callable[[str, dict, bytes], None] | None = None,
                     report: CheckReport | None = None, snapshots: Iterable[Snapshot] | None = None) -> set[bytes]:
    """Every blob id any snapshot (or each of ``snapshots``) uses, TREE and DATA. Unreadable
    snapshots are reported, not fatal."""
    used: set[bytes] = set()
    on_error = None if report is None else (lambda name, exc: None)  # check reports these itself
    if snapshots is None:
        snapshots = repository.list_snapshots(on_error=on_error)
    for snapshot in snapshots:
        used.update(bytes.fromhex(h) for h in snapshot.tree)
        try:
            for item in repository.read_tree(snapshot):
                chunks = item.get("chunks")
                if chunks:
                    for i in range(0, len(chunks), 32):
                        blob_id = chunks[i : i + 32]
                        if blob_id != HOLE:
                            used.add(blob_id)
                            if on_item is not None:
                                on_item(snapshot.id, item, blob_id)
        except errors.IntegrityError as exc:
            if report is None:
                raise
            report.errors.append(f"snapshot {snapshot.short_id}: item stream unreadable: {exc}")
    return used


_CONFIG_FIELDS = {"version": int, "id": str, "created": str, "chunker": str, "key_check": str}
_CHUNKERS = ("fastcdc-2020",)


def check_config_and_keys(repository: Repository, report: CheckReport) -> list[datetime]:
    """Errors for a malformed config and for key files whose content does not match their name;
    returns the creation times of the key files (bounds for the config's own)."""
    from .repository import SUPPORTED_VERSIONS, _name_of

    config = repository.config
    # Only in a repository made for copies (init --copy-params-from): see docs/repository-format.md.
    optional = {"key_check_binds", "params_from"}
    problems = [f"unexpected field {name!r}" for name in sorted(set(config) - set(_CONFIG_FIELDS) - optional)]
    if "key_check_binds" in config and config["key_check_binds"] != "encryption":
        problems.append(f"key_check_binds {config['key_check_binds']!r} is unknown")
    if "params_from" in config and not re.fullmatch(r"[0-9a-f]{32}", str(config["params_from"])):
        problems.append("params_from is not 32 hex digits")
    for name, kind in _CONFIG_FIELDS.items():
        if type(config.get(name)) is not kind:
            problems.append(f"{name} is missing or not a {kind.__name__}")
    if not problems:
        if config["version"] not in SUPPORTED_VERSIONS:
            problems.append(f"version {config['version']} is not supported")
        if not re.fullmatch(r"[0-9a-f]{32}", config["id"]):
            problems.append(f"id {config['id']!r} is not 32 hex digits")
        if not re.fullmatch(r"[0-9a-f]{64}", config["key_check"]):
            problems.append("key_check is not 64 hex digits")
        if config["chunker"] not in _CHUNKERS:
            problems.append(f"chunker {config['chunker']!r} is unknown")
    created_times: list[datetime] = []
    for info in repository.backend.list(Kind.KEYS):
        try:
            raw = repository.backend.get(Kind.KEYS, info.name)
        except OSError as exc:
            report.errors.append(f"key {info.name[:8]}: unreadable: {exc}")
            continue
        if _name_of(raw) != info.name:
            report.errors.append(f"key {info.name[:8]}: its content does not match its name (damaged)")
            continue
        try:
            created = parse_key_file(raw).created
        except KeyFileRejected as exc:
            report.errors.append(f"key {info.name[:8]}: {exc}")
            continue
        moment = _moment(created)
        if moment is not None:
            created_times.append(moment)
    if not problems:
        created = _moment(config["created"])
        if created is None:
            problems.append(f"created {config['created']!r} is not a time")
        elif created > min([datetime.now(timezone.utc) + timedelta(days=1)]
                           + [t + timedelta(minutes=1) for t in created_times]):
            problems.append(f"created {config['created']} is later than its key files or the present")
    report.errors += [f"config: {problem}" for problem in problems]
    return created_times


def _moment(text: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def check(repository: Repository, read_data_percent: float = 0.0, seed: int | None = None,
          on_progress: Callable[[int, int], None] | None = None, threads: int | None = None) -> CheckReport:
    """Verify the repository as stored: never from the local cache of its objects (cache.py)."""
    with repository.uncached():
        return _check(repository, read_data_percent, seed, on_progress, threads)


def _check(repository: Repository, read_data_percent: float, seed: int | None,
           on_progress: Callable[[int, int], None] | None, threads: int | None) -> CheckReport:
    report = CheckReport()
    check_config_and_keys(repository, report)
    repository.load_index(on_error=lambda name, exc: report.errors.append(f"index {name}: {exc}"))
    on_progress = on_progress or (lambda done, total: None)

    stored = {info.name: info.size for info in repository.backend.list(Kind.DATA)}
    indexed_packs: dict[str, int] = {}
    for blob_id, location in repository.index.entries():
        report.blobs += 1
        end = location.offset + location.length
        indexed_packs[location.pack] = max(indexed_packs.get(location.pack, 0), end)
    report.packs = len(stored)
    for pack, end in sorted(indexed_packs.items()):
        if pack not in stored:
            report.errors.append(f"pack {pack} is in the index but missing from storage")
        elif stored[pack] < end:
            report.errors.append(f"pack {pack} is truncated: {stored[pack]} bytes, index needs {end}")
    report.unreferenced_packs = sorted(set(stored) - set(indexed_packs))

    # Reading the data is started first and runs in the pool while this thread walks every
    # snapshot's items below (Python work that holds the GIL; the pool's reading, hashing,
    # decryption and decompression mostly release it), so the two overlap.
    pool: ThreadPoolExecutor | None = None
    verifying: list[tuple[str, Future]] = []
    damaged: dict[str, str] = {}
    failing: dict[bytes, str] = {}
    if read_data_percent > 0:
        candidates = sorted(p for p in indexed_packs if p in stored)
        if read_data_percent < 100:
            rng = random.Random(seed)
            count = max(1, round(len(candidates) * read_data_percent / 100))
            candidates = sorted(rng.sample(candidates, min(count, len(candidates))))
        expected: dict[str, dict[bytes, tuple]] = {}
        for blob_id, location in repository.index.entries():
            expected.setdefault(location.pack, {})[blob_id] = (location.blob_type, location.offset, location.length)
        workers = max(1, threads or _default_readers(repository))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="safehold-check")
        # All submitted at once: a result is a few ids, the pack itself is freed by its worker.
        verifying = [(pack, pool.submit(_verify_pack, repository, pack, expected.get(pack, {})))
                     for pack in candidates]
    try:
        if verifying:
            on_progress(0, len(verifying))
        snapshots = repository.list_snapshots(
            on_error=lambda name, exc: report.errors.append(f"snapshot {name[:8]}: {exc}"))
        report.snapshots = len(snapshots)
        used = referenced_blobs(repository, report=report, snapshots=snapshots)
        for snapshot in snapshots:
            for hex_id in snapshot.tree:
                if bytes.fromhex(hex_id) not in repository.index:
                    report.errors.append(f"snapshot {snapshot.short_id}: tree blob {hex_id[:16]} missing")
        missing = [blob_id for blob_id in used if blob_id not in repository.index]
        report.missing_blobs = len(missing)
        for blob_id in missing[:20]:
            report.errors.append(f"blob {blob_id.hex()[:16]} is used by a snapshot but not in the index")
        if missing and report.unreferenced_packs:
            _find_unindexed_blobs(repository, set(missing), {p: stored[p] for p in report.unreferenced_packs}, report)
        for snapshot_id, record in sorted(replayed_records(repository, snapshots).items()):
            report.replayed.append({"snapshot": snapshot_id, "record": record.name} | record.as_dict())
            report.errors.append(f"snapshot {snapshot_id[:8]} was forgotten and is present again (replayed): "
                                 f"{record.describe()}; 'safehold forget {snapshot_id[:8]}' removes it")
        indexed_ids = {blob_id for blob_id, _ in repository.index.entries()}
        report.unused_blobs = len(indexed_ids - used)

        for done, (pack, future) in enumerate(verifying, 1):
            reason, bad = future.result()
            report.packs_read += 1
            report.bytes_read += stored[pack]
            if reason:
                damaged[pack] = reason
                failing.update((blob_id, pack) for blob_id in bad)
            on_progress(done, len(verifying))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if damaged:
        _attribute_damage(repository, damaged, failing, report)
    return report


def _find_unindexed_blobs(repository: Repository, missing: set[bytes], unindexed: dict[str, int],
                          report: CheckReport) -> None:
    """Read the headers of packs no index names, and say which hold blobs snapshots miss."""
    found, _unreadable = scan_pack_headers(repository, unindexed)
    recoverable: set[bytes] = set()
    for pack, entries in sorted(found.items()):
        hits = {e.blob_id for e in entries} & missing
        if hits:
            recoverable |= hits
            report.unindexed_packs_in_use.append(pack)
    if recoverable:
        report.errors.append(
            f"{len(recoverable)} of the {len(missing)} missing blob(s) are in {len(report.unindexed_packs_in_use)} "
            "pack(s) that no index names (a lost or damaged index object): 'safehold repair index' indexes them "
            "again; prune keeps these packs")


#: Packs read at once from a remote (S3) repository by ``check --read-data`` (a local one: one per
#: core). Each connection to S3 in another region carries tens of MiB/s, so the read rate is about
#: this many times that; each reader holds one pack (16 MiB) while it verifies it.
REMOTE_READERS = 8


def _default_readers(repository: Repository) -> int:
    cores = os.cpu_count() or 1
    return cores if isinstance(repository.backend, DirectoryBackend) else max(cores, REMOTE_READERS)


def _verify_pack(repository: Repository, pack: str, expected: dict[bytes, tuple]) -> tuple[str | None, set[bytes]]:
    """Return (what is wrong or None, the ids of the blobs that cannot be read back)."""
    try:
        data = repository.backend.get(Kind.DATA, pack)
    except OSError as exc:
        return f"unreadable: {exc}", set(expected)
    problems = []
    if pack_name_of(data) != pack:
        problems.append("content does not match its name (hash mismatch)")
    try:
        entries = read_pack_header(repository.cipher, data)
    except DecryptionFailed as exc:
        problems.append(f"header: {exc}")
        entries = []
    header_ids = {e.blob_id for e in entries}
    for blob_id in expected:
        if entries and blob_id not in header_ids:
            problems.append(f"blob {blob_id.hex()[:16]} is indexed but not in the pack header")
    bad_blobs: set[bytes] = set()
    view = memoryview(data)  # slices of a view are not copies
    for blob_id, (blob_type, offset, length) in expected.items():
        try:
            decode_blob(repository.cipher, BlobType(blob_type), blob_id, view[offset : offset + length])
        except Exception:
            bad_blobs.add(blob_id)
    if bad_blobs:
        problems.append(f"{len(bad_blobs)} blob(s) fail authentication")
    # A damaged header alone does not hurt restores (they read through the index);
    # only blobs that fail to decode make files unrestorable.
    return "; ".join(problems) or None, bad_blobs


def _attribute_damage(repository: Repository, damaged: dict[str, str], bad_blobs: dict[bytes, str],
                      report: CheckReport) -> None:
    """Name the snapshots and files that use the unreadable blobs of damaged packs."""
    found = {pack: DamagedPack(pack, reason) for pack, reason in damaged.items()}
    for snapshot in repository.list_snapshots(on_error=lambda name, exc: None):
        for hex_id in snapshot.tree:
            pack = bad_blobs.get(bytes.fromhex(hex_id))
            if pack and snapshot.short_id not in found[pack].snapshots:
                found[pack].snapshots.append(snapshot.short_id)
                found[pack].files.append(f"{snapshot.short_id}: <item stream>")
        try:
            items = list(repository.read_tree(snapshot))
        except errors.IntegrityError:
            continue
        for item in items:
            chunks = item.get("chunks") or b""
            for i in range(0, len(chunks), 32):
                pack = bad_blobs.get(chunks[i : i + 32])
                if pack is None:
                    continue
                record = found[pack]
                if snapshot.short_id not in record.snapshots:
                    record.snapshots.append(snapshot.short_id)
                name = f"{snapshot.short_id}:{item['path'].decode(errors='backslashreplace')}"
                if name not in record.files:
                    record.files.append(name)
                break
    report.damaged_packs = sorted(found.values(), key=lambda d: d.pack)
