"""Reading a disk that QEMU exports over NBD (libnbd): block status and a prefetching reader."""

from __future__ import annotations

from collections import deque
from typing import Any

from ...errors import HypervisorUnavailable, SourceError
from ...items import Extent

NBD_MAX_REQUEST = 32 * 1024 * 1024  # QEMU's NBD server refuses larger reads
STATUS_REQUEST = 1 << 30


def import_nbd() -> Any:
    try:
        import nbd
    except ImportError:
        raise HypervisorUnavailable(uri="(any)", detail="the libnbd Python bindings are not installed "
                                    "(Debian: python3-libnbd, for the system Python)") from None
    return nbd


def nbd_handle(socket: str, export: str, contexts: tuple[str, ...] = ()) -> Any:
    nbd = import_nbd()
    handle = nbd.NBD()
    for context in contexts:
        handle.add_meta_context(context)
    handle.set_export_name(export)
    try:
        handle.connect_unix(socket)
    except nbd.Error as exc:
        raise SourceError(source=f"nbd+unix:///{export}?socket={socket}", detail=str(exc)) from None
    return handle


def disconnect(handle: Any) -> None:
    """Say goodbye to the server; libnbd frees the handle itself when it is garbage collected."""
    try:
        handle.shutdown()
    except Exception:  # already disconnected (the domain stopped): nothing left to say goodbye to
        pass


def block_status(handle: Any, context: str, size: int) -> list[tuple[int, int, int]]:
    """(offset, length, flags) covering the whole export for one negotiated meta context."""
    found: list[tuple[int, int, int]] = []
    offset = 0

    def record(name: str, start: int, entries: list[int], _error: Any) -> int:
        if name == context:
            position = start
            for i in range(0, len(entries), 2):
                length = min(entries[i], size - position)
                if length > 0:
                    found.append((position, length, entries[i + 1]))
                position += entries[i]
        return 0

    while offset < size:
        before = len(found)
        handle.block_status(min(size - offset, STATUS_REQUEST), offset, record)
        if len(found) == before:
            raise SourceError(source=context, detail=f"the NBD server sent no block status at offset {offset}")
        offset = found[-1][0] + found[-1][1]
    return found


def select(status: list[tuple[int, int, int]], wanted) -> list[Extent]:
    """Merge the extents whose flags satisfy ``wanted`` into (offset, length) runs."""
    runs: list[Extent] = []
    for offset, length, flags in status:
        if not wanted(flags):
            continue
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + length)
        else:
            runs.append((offset, length))
    return runs


# base:allocation flags: 1 = hole (unallocated), 2 = reads as zeros. Anything not known to
# read as zeros must be read. qemu:dirty-bitmap: 1 = dirty.
def allocated(status: list[tuple[int, int, int]]) -> list[Extent]:
    return select(status, lambda flags: not flags & 2)


def dirty(status: list[tuple[int, int, int]]) -> list[Extent]:
    return select(status, lambda flags: flags & 1)


class NbdDiskReader:
    """Reads one exported disk. A failed read (the domain stopped, QEMU died) raises SourceError.

    Given the ``planned`` reads, it keeps up to ``PREFETCH_BYTES`` of the next ones in flight
    (libnbd aio), so QEMU reads the image while the archiver hashes and compresses: on a cold
    cache scattered incremental reads overlap instead of waiting one by one. A read that is not
    the next planned one (the archiver chose otherwise) is served synchronously and skipped
    prefetches are dropped; the result is the same, only slower.
    """

    PREFETCH_BYTES = 32 * 1024 * 1024

    def __init__(self, socket: str, export: str, planned: list[Extent] | None = None) -> None:
        self.export = export
        self.handle = nbd_handle(socket, export)
        self.planned = deque(planned or [])
        self.in_flight: deque[tuple[int, int, Any, int]] = deque()  # offset, length, buffer, cookie
        self.in_flight_bytes = 0

    def _prefetch(self) -> None:
        nbd = import_nbd()
        while self.planned and (not self.in_flight or self.in_flight_bytes + self.planned[0][1] <= self.PREFETCH_BYTES):
            offset, length = self.planned.popleft()
            if length > NBD_MAX_REQUEST:
                self.planned.clear()  # larger than one NBD request: read those synchronously
                return
            buffer = nbd.Buffer(length)
            self.in_flight.append((offset, length, buffer, self.handle.aio_pread(buffer, offset)))
            self.in_flight_bytes += length

    def read_at(self, offset: int, length: int) -> bytes:
        nbd = import_nbd()
        try:
            while self.in_flight and self.in_flight[0][0] < offset:
                self._complete()  # prefetched but not wanted after all
            self._prefetch()
            if self.in_flight and self.in_flight[0][:2] == (offset, length):
                data = self._complete()
                self._prefetch()
                return data
            parts = [self.handle.pread(min(NBD_MAX_REQUEST, offset + length - start), start)
                     for start in range(offset, offset + length, NBD_MAX_REQUEST)]
            return b"".join(bytes(part) for part in parts)
        except nbd.Error as exc:
            raise SourceError(source=f"NBD export {self.export}", detail=str(exc)) from None

    def _complete(self) -> bytes:
        _offset, length, buffer, cookie = self.in_flight.popleft()
        self.in_flight_bytes -= length
        while not self.handle.aio_command_completed(cookie):  # raises nbd.Error if the read failed
            self.handle.poll(-1)
        return bytes(buffer.to_bytearray())

    def close(self) -> None:
        disconnect(self.handle)
