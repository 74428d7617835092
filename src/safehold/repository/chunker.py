"""Chunking: content-defined for files and item streams, fixed and aligned for disk images.

File content goes through FastCDC (the compiled ``pyfastcdc`` library), with
the gear table perturbed by the repository's secret seed so boundaries do not
fingerprint known files. Boundaries depend only on content, so an insertion
early in a file shifts only the chunks around it.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from pyfastcdc import FastCDC

MiB = 1024 * 1024
KiB = 1024

# pyfastcdc's effective average is avg_size + min_size: 768 KiB + 256 KiB ~ 1 MiB.
FILE_MIN, FILE_AVG, FILE_MAX = 256 * KiB, 768 * KiB, 4 * MiB
TREE_MIN, TREE_AVG, TREE_MAX = 16 * KiB, 48 * KiB, 256 * KiB
DEFAULT_IMAGE_CHUNK = 512 * KiB
# Bytes read per fill of a file chunker's buffer (READ_SIZE + max chunk size, one per reading
# thread, reused). 2 MiB: the peak RSS of a full backup measured 5-8 MiB lower than with 8 MiB, at
# the same CPU (docs/benchmarks.md, issue 19 third round); the carried-over tail is < 4 MiB either way.
READ_SIZE = 2 * MiB


class FileChunker:
    """Cuts a stream into content-defined chunks. Not thread-safe; make one per thread."""

    def __init__(self, seed: int, min_size: int = FILE_MIN, avg_size: int = FILE_AVG, max_size: int = FILE_MAX):
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)
        self.min_size = min_size
        self.max_size = max_size
        self._buffer: bytearray | None = None  # reused across streams: allocating it per file costs more than CDC

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield chunk bytes, reading ``stream`` in bounded pieces (never the whole file).

        One buffer is reused for every stream: fresh multi-megabyte allocations
        per read cost page faults that showed up as a third of the reading
        thread's time. Each chunk is copied out once (the workers keep it while
        the buffer moves on), and the unfinished tail is moved to the front.
        """
        if self._buffer is None or len(self._buffer) != READ_SIZE + self.max_size:
            self._buffer = bytearray(READ_SIZE + self.max_size)
        buffer = self._buffer
        view = memoryview(buffer)
        readinto = getattr(stream, "readinto", None)
        filled = 0
        eof = False
        while not eof:
            while filled < len(buffer):
                want = min(READ_SIZE, len(buffer) - filled)
                if readinto is not None:
                    count = readinto(view[filled : filled + want])
                else:  # streams with read() only
                    piece = stream.read(want)
                    count = len(piece)
                    view[filled : filled + count] = piece
                if not count:
                    eof = True
                    break
                filled += count
            if not filled:
                break
            if eof and filled <= self.min_size:
                yield bytes(view[:filled])  # too short to cut: one chunk, no CDC
                break
            cuts = list(self._cdc.cut_buf(view[:filled]))
            if not eof:
                # The last cut ends where the buffer ends, not at a content
                # boundary: carry it over and cut it again with what follows.
                cuts = cuts[:-1]
            end = 0
            for chunk in cuts:
                yield bytes(view[chunk.offset : chunk.offset + chunk.length])
                end = chunk.offset + chunk.length
            tail = filled - end
            if tail:
                buffer[:tail] = view[end:filled]
            filled = tail
        view.release()

    def cut(self, buffer: bytes) -> list[tuple[int, int]]:
        """(offset, length) of the chunks of an in-memory buffer."""
        return [(c.offset, c.length) for c in self._cdc.cut_buf(buffer)]
