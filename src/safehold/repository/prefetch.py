"""Restore's data-fetch layer: many merged range requests in flight, ahead of the writer.

Concepts: the *plan* (the blob ids a destination will ask for, in the order it will ask for
them: a lazy stream, never a list of the whole snapshot; a ``FLUSH`` in it says "these are needed
now": a restore of a few paths from a large snapshot yields one after each selected file, since
the rest of the tree may take long to walk and the window would otherwise wait for it; the window
is then fetched once it holds ``FLUSH_BYTES``, so many small selected files still share merged
ranges), a *group* (one range request: blobs
that are neighbours in one pack, merged while the gap between them is small and the range stays
below ``max_request``), the *budget* (bytes of stored data in flight or fetched and not yet
consumed; the planner waits when it is spent) and the ``PrefetchReader`` (a ``BlobReader``:
``read_blob`` returns the verified plaintext of a fetched group's member, decoding it in the
caller's thread, so decryption, decompression and verification of one blob overlap the network
reads of the next ones).

Correctness never depends on the plan: a blob the plan did not announce, a group already
evicted or a group whose fetch failed is read directly, blob by blob, exactly as
``Repository.read_blob`` does (same errors, same checks). Every blob handed out is decoded and
verified against its id; a range that came back shorter than the index says is reported as an
IntegrityError naming the blob and the pack, never padded or passed on.

Memory: the stored bytes held by the reader never exceed ``memory`` (one group above it only when
nothing else is held, and a group is at most ``max_request``); while a response is read its bytes
can exist twice (the HTTP library joins its buffers), so the fetch layer's peak is below
2 x ``memory``, whatever the snapshot size. The plan is read lazily and only the groups in the
budget are indexed (a window is at most MAX_WINDOW_BLOBS blobs, so the bookkeeping is bounded too).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .. import errors
from .backends import Kind
from .index import BlobLocation

MIB = 1024 * 1024
DEFAULT_CONNECTIONS = 16
DEFAULT_MEMORY = 128 * MIB
#: Half a pack (16 MiB by default) in one request when the restore needs most of it: fewer, larger
#: requests cost less per byte on every S3 implementation (moto reads the whole object for any
#: range), and two per pack keep more connections busy when a restore touches few packs.
DEFAULT_MAX_REQUEST = 8 * MIB
DEFAULT_GAP = 256 * 1024
#: Positions this far behind the furthest blob handed out are taken as skipped by the
#: destination (a damaged file's later chunks): their groups may be evicted. A destination keeps
#: at most threads x 4 chunks in flight, so this is generous; a late reader still gets its blob
#: through a direct read.
SLACK = 1024
#: In a plan: fetch what was announced so far (once it is FLUSH_BYTES) without waiting for a full window.
FLUSH = None
FLUSH_BYTES = 1 * MIB
#: A window also ends after this many blobs: a crafted tree can list a tiny blob millions of
#: times, and each announced blob costs ~200 bytes of bookkeeping whatever its size.
MAX_WINDOW_BLOBS = 16384


@dataclass
class _Member:
    position: int
    blob_id: bytes
    location: BlobLocation
    group: "_Group"
    taken: bool = False


@dataclass
class _Group:
    pack: str
    start: int
    end: int
    members: list[_Member] = field(default_factory=list)
    state: str = "queued"  # queued | done | failed | evicted
    data: bytes | None = None
    outstanding: int = 0
    last_position: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class PrefetchStats:
    planned_blobs: int = 0
    requests: int = 0
    bytes_fetched: int = 0
    direct_reads: int = 0  # blobs read one by one (not planned, evicted or failed group)
    peak_held_bytes: int = 0
    peak_held_blobs: int = 0
    evicted_groups: int = 0


class PrefetchReader:
    """A ``BlobReader`` over ``repository`` that fetches the blobs of ``plan`` ahead of the caller.

    Thread-safe. ``close()`` (or leaving the ``with`` block) stops the planner and the fetches;
    call it when the restore ends, successful or not.
    """

    def __init__(self, repository, plan: Iterable[bytes | None], *, connections: int = DEFAULT_CONNECTIONS,
                 memory: int = DEFAULT_MEMORY, max_request: int = DEFAULT_MAX_REQUEST,
                 gap: int = DEFAULT_GAP, slack: int = SLACK) -> None:
        self.repository = repository
        self.connections = max(1, connections)
        self.memory = max(memory, 1)
        self.max_request = max(1, min(max_request, self.memory))
        self.gap = max(0, gap)
        self.slack = max(0, slack)
        self.stats = PrefetchStats()
        self._state = threading.Condition()
        self._pending: dict[bytes, deque[_Member]] = {}
        self._held: deque[_Group] = deque()  # groups holding budget, oldest first
        self._held_bytes = 0
        self._held_blobs = 0  # announced blobs of the held groups (bounded too: see MAX_WINDOW_BLOBS)
        self._high = -1  # the furthest plan position handed out
        self._closed = False
        self._pool = ThreadPoolExecutor(self.connections, thread_name_prefix="safehold-fetch")
        self._planner = threading.Thread(target=self._plan, args=(iter(plan),), name="safehold-plan", daemon=True)
        self._planner.start()

    # -- the BlobReader contract ---------------------------------------------------------------

    def blob_size(self, blob_id: bytes) -> int:
        return self.repository.blob_size(blob_id)

    def read_blob(self, blob_id: bytes) -> bytes:
        return self.read_blob_body(blob_id)[1]

    def read_blob_body(self, blob_id: bytes) -> tuple[bytes, bytes]:
        """(the decrypted body as stored, the verified plaintext), as ``Repository.read_blob_body``:
        a copy passes the body on without compressing it again."""
        with self._state:
            member = self._take(blob_id)
            if member is not None:
                group = member.group
                self._state.wait_for(lambda: group.state != "queued")
                data = group.data if group.state == "done" else None
                self._release(member)
        if member is None or data is None:
            with self._state:
                self.stats.direct_reads += 1
            return self.repository.read_blob_body(blob_id)
        location = member.location
        begin = location.offset - group.start
        stored = memoryview(data)[begin : begin + location.length]
        if len(stored) != location.length:
            raise errors.IntegrityError(
                detail=f"blob {blob_id.hex()[:16]} in pack {location.pack}: range truncated "
                       f"({len(stored)} of {location.length} bytes at offset {location.offset})",
                pack=location.pack)
        return self.repository.decode_blob_body(blob_id, location, stored)

    # -- the consumer's side ---------------------------------------------------------------------

    def _take(self, blob_id: bytes) -> _Member | None:
        queue = self._pending.get(blob_id)
        while queue:
            member = queue.popleft()
            if not queue:
                del self._pending[blob_id]
            if not member.taken and member.group.state != "evicted":
                member.taken = True
                self._high = max(self._high, member.position)
                return member
        return None

    def _release(self, member: _Member) -> None:
        group = member.group
        group.outstanding -= 1
        if group.outstanding == 0 and group.state != "evicted":
            self._evict(group)
        self._state.notify_all()

    def _evict(self, group: _Group) -> None:
        if group.state == "evicted":
            return
        if group.outstanding:  # freed before the destination read all of it (skipped, or closing)
            self.stats.evicted_groups += 1
        group.state = "evicted"
        group.data = None
        self._held_bytes -= group.size
        self._held_blobs -= len(group.members)
        try:
            self._held.remove(group)
        except ValueError:
            pass
        for member in group.members:
            if not member.taken:
                member.taken = True  # a later read of it goes direct
        self._state.notify_all()

    # -- the planner and the fetches -----------------------------------------------------------

    def _plan(self, plan: Iterator[bytes | None]) -> None:
        """Read the plan a window at a time (``memory`` / 3 of stored bytes); within a window, the
        blobs of one pack are sorted by offset and merged into ranges, so a pack whose blobs are
        interleaved with other files' (parallel backups write them so) still costs few requests;
        the ranges go out in the order the destination will need their first blob."""
        window: list[tuple[int, bytes, BlobLocation]] = []
        window_bytes = 0
        position = 0
        try:
            for blob_id in plan:
                if self._closed:
                    return
                if blob_id is FLUSH:
                    if window_bytes >= FLUSH_BYTES:
                        if not self._submit_window(window):
                            return
                        window, window_bytes = [], 0
                    continue
                location = self.repository.index.lookup(blob_id)
                if location is None:
                    continue  # the destination's read will report it
                self.stats.planned_blobs += 1
                window.append((position, blob_id, location))
                window_bytes += location.length
                position += 1
                if window_bytes >= self.memory // 3 or len(window) >= MAX_WINDOW_BLOBS:
                    if not self._submit_window(window):
                        return
                    window, window_bytes = [], 0
            self._submit_window(window)
        except Exception:  # the tree could not be read: the destination meets the same error itself
            return

    def _submit_window(self, window: list[tuple[int, bytes, BlobLocation]]) -> bool:
        groups: list[_Group] = []
        group: _Group | None = None
        for position, blob_id, location in sorted(window, key=lambda m: (m[2].pack, m[2].offset, m[0])):
            end = location.offset + location.length
            if (group is None or location.pack != group.pack or location.offset > group.end + self.gap
                    or max(end, group.end) - group.start > self.max_request):
                group = _Group(location.pack, location.offset, end)
                groups.append(group)
            group.end = max(group.end, end)
            group.members.append(_Member(position, blob_id, location, group))
        groups.sort(key=lambda g: min(m.position for m in g.members))
        for group in groups:
            group.members.sort(key=lambda m: m.position)
            if not self._submit(group):
                return False
        return True

    def _submit(self, group: _Group) -> bool:
        """Wait for budget, announce the group's members, start its fetch. False once closed."""
        def over() -> bool:
            return bool(self._held_bytes or self._held_blobs) and (self._held_bytes + group.size > self.memory
                                               or self._held_blobs + len(group.members) > 4 * MAX_WINDOW_BLOBS)

        with self._state:
            while not self._closed and over():
                self._evict_behind()
                if over():
                    self._state.wait(0.05)
            if self._closed:
                return False
            self._held_bytes += group.size
            self._held_blobs += len(group.members)
            self.stats.peak_held_blobs = max(self.stats.peak_held_blobs, self._held_blobs)
            self.stats.peak_held_bytes = max(self.stats.peak_held_bytes, self._held_bytes)
            self._held.append(group)
            group.outstanding = len(group.members)
            group.last_position = max(member.position for member in group.members)
            for member in group.members:
                self._pending.setdefault(member.blob_id, deque()).append(member)
        self._pool.submit(self._fetch, group)
        return True

    def _evict_behind(self) -> None:
        """Free the fetched groups the destination has moved past (it skipped their blobs)."""
        for group in list(self._held):
            if group.state in ("done", "failed") and group.last_position < self._high - self.slack:
                self._evict(group)

    def _fetch(self, group: _Group) -> None:
        try:
            data = self.repository.backend.get(Kind.DATA, group.pack, group.start, group.size)
            state = "done"
        except Exception:  # each member is read again directly, which reports the error properly
            data, state = None, "failed"
        with self._state:
            self.stats.requests += 1
            if data is not None:
                self.stats.bytes_fetched += len(data)
            if group.state != "evicted":
                group.data, group.state = data, state
            self._state.notify_all()

    def close(self) -> None:
        with self._state:
            self._closed = True
            for group in list(self._held):
                self._evict(group)  # a queued fetch may be cancelled: its readers go direct
            self._state.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "PrefetchReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
