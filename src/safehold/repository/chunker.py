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
READ_SIZE = 8 * MiB


class FileChunker:
    """Cuts a stream into content-defined chunks. Not thread-safe; make one per thread."""

    def __init__(self, seed: int, min_size: int = FILE_MIN, avg_size: int = FILE_AVG, max_size: int = FILE_MAX):
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)
        self.min_size = min_size
        self.max_size = max_size

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield chunk bytes, reading ``stream`` in bounded pieces (never the whole file)."""
        pending = b""
        while True:
            block = stream.read(READ_SIZE)
            if not block:
                break
            buffer = pending + block if pending else block
            cuts = list(self._cdc.cut_buf(buffer))
            # The last cut ends where the buffer ends, not at a content boundary:
            # carry it over and cut it again with the next block.
            for chunk in cuts[:-1]:
                yield bytes(chunk.data)
            last = cuts[-1]
            pending = buffer[last.offset :]
        if pending:
            for chunk in self._cdc.cut_buf(pending):
                yield bytes(chunk.data)

    def cut(self, buffer: bytes) -> list[tuple[int, int]]:
        """(offset, length) of the chunks of an in-memory buffer."""
        return [(c.offset, c.length) for c in self._cdc.cut_buf(buffer)]
