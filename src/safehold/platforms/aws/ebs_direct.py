"""The EBS direct APIs: list, read and write the 512 KiB blocks of an EBS snapshot.

Reading: ``ListSnapshotBlocks`` (a full backup) or ``ListChangedBlocks``
against the previous snapshot (an incremental one) give the blocks to read
and their tokens, page by page. :class:`SnapshotBlockReader` serves the
archiver's sequential ``read_at`` calls from parallel ``GetSnapshotBlock``
calls issued ahead of it (a window of ``threads * 4`` blocks), and verifies
each block's SHA-256 against the checksum AWS sends with it: a mismatch is
retried once, then fails the backup rather than storing a wrong block.

Writing: :func:`write_snapshot` creates a new EBS snapshot from blocks with
``StartSnapshot``, parallel ``PutSnapshotBlock`` (each with its SHA-256) and
``CompleteSnapshot`` with the count of blocks written, so AWS can check that
none was lost.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable

from ...errors import DestinationError, SourceError
from .. import aws

EBS_BLOCK_SIZE = 512 * 1024
GIB = 1024 * 1024 * 1024


def sha256_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _source_error(snapshot_id: str, exc: BaseException) -> SourceError:
    return SourceError(source=f"EBS snapshot {snapshot_id}",
                       detail=f"{aws.error_code(exc) or type(exc).__name__}: {aws.error_message(exc)}")


def list_blocks(ebs: Any, snapshot_id: str, page_size: int = 10000) -> tuple[int, int, dict[int, str]]:
    """(volume size in bytes, block size, {block index: token}) of every block the snapshot holds."""
    tokens: dict[int, str] = {}
    arguments: dict = {"SnapshotId": snapshot_id, "MaxResults": page_size}
    while True:
        page = ebs.list_snapshot_blocks(**arguments)
        for block in page.get("Blocks", []):
            tokens[block["BlockIndex"]] = block["BlockToken"]
        if not page.get("NextToken"):
            return page["VolumeSize"] * GIB, page["BlockSize"], tokens
        arguments["NextToken"] = page["NextToken"]


def list_changed_blocks(ebs: Any, first_snapshot_id: str, second_snapshot_id: str,
                        page_size: int = 10000) -> tuple[int, int, dict[int, str | None]]:
    """(volume size in bytes, block size, {block index: token in the second snapshot, or None when the
    block no longer holds data there}) of every block that differs between the two snapshots."""
    changed: dict[int, str | None] = {}
    arguments: dict = {"FirstSnapshotId": first_snapshot_id, "SecondSnapshotId": second_snapshot_id,
                       "MaxResults": page_size}
    while True:
        page = ebs.list_changed_blocks(**arguments)
        for block in page.get("ChangedBlocks", []):
            changed[block["BlockIndex"]] = block.get("SecondBlockToken")
        if not page.get("NextToken"):
            return page["VolumeSize"] * GIB, page["BlockSize"], changed
        arguments["NextToken"] = page["NextToken"]


def extents(indices: Iterable[int], block_size: int) -> list[tuple[int, int]]:
    """Block indices as (offset, length) extents, adjacent blocks merged."""
    result: list[tuple[int, int]] = []
    for index in sorted(indices):
        offset = index * block_size
        if result and result[-1][0] + result[-1][1] == offset:
            result[-1] = (result[-1][0], result[-1][1] + block_size)
        else:
            result.append((offset, block_size))
    return result


class SnapshotBlockReader:
    """A ``DiskReader`` over one EBS snapshot. Blocks without a token read as zeros (AWS keeps no
    data for them). Not thread safe: one archiver thread calls ``read_at``, the pool fetches."""

    def __init__(self, ebs: Any, snapshot_id: str, tokens: dict[int, str], block_size: int = EBS_BLOCK_SIZE,
                 threads: int = 8, on_block: Callable[[int], None] | None = None) -> None:
        self.ebs = ebs
        self.snapshot_id = snapshot_id
        self.tokens = tokens
        self.block_size = block_size
        self.order = sorted(tokens)
        self.position = 0  # next index in ``order`` to fetch ahead
        self.window = max(1, threads) * 4
        self.futures: dict[int, Future] = {}
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="safehold-ebs-get")
        self.on_block = on_block or (lambda length: None)
        self.blocks_read = 0
        self.bytes_read = 0
        self.lock = threading.Lock()

    def _fetch(self, index: int) -> bytes:
        for attempt in (1, 2):
            try:
                response = self.ebs.get_snapshot_block(SnapshotId=self.snapshot_id, BlockIndex=index,
                                                       BlockToken=self.tokens[index])
                data = response["BlockData"].read()
            except Exception as exc:
                if aws.is_client_error(exc):
                    raise _source_error(self.snapshot_id, exc) from exc
                raise
            expected = response.get("Checksum")
            if response.get("DataLength", len(data)) == len(data) and expected and \
                    response.get("ChecksumAlgorithm", "SHA256") == "SHA256" and sha256_base64(data) == expected:
                with self.lock:
                    self.blocks_read += 1
                    self.bytes_read += len(data)
                self.on_block(len(data))
                return data
        raise SourceError(source=f"EBS snapshot {self.snapshot_id}",
                          detail=f"block {index} failed its SHA-256 check twice; not storing a damaged block")

    def _fill(self) -> None:
        while self.position < len(self.order) and len(self.futures) < self.window:
            index = self.order[self.position]
            self.position += 1
            if index not in self.futures:
                self.futures[index] = self.pool.submit(self._fetch, index)

    def block(self, index: int) -> bytes:
        if index not in self.tokens:
            return bytes(self.block_size)
        future = self.futures.pop(index, None)
        if future is None:
            # Read out of order (or already consumed): fetch it now, and move the read-ahead past it.
            while self.position < len(self.order) and self.order[self.position] <= index:
                self.position += 1
            future = self.pool.submit(self._fetch, index)
        self._fill()
        return future.result()

    def read_at(self, offset: int, length: int) -> bytes:
        parts = []
        position = offset
        end = offset + length
        while position < end:
            index, inside = divmod(position, self.block_size)
            piece = min(end - position, self.block_size - inside)
            parts.append(self.block(index)[inside : inside + piece])
            position += piece
        return b"".join(parts)

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.futures.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


def write_snapshot(ebs: Any, ec2: Any, volume_size: int, blocks: Iterable[tuple[int, Callable[[], bytes]]], *,
                   tags: dict[str, str], description: str, threads: int = 8,
                   on_block: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Write a new EBS snapshot of ``volume_size`` bytes (rounded up to whole GiB) from ``blocks``:
    (block index, function returning its 512 KiB of data, or b"" for a block of zeros to skip).
    Returns (snapshot id, blocks written). On failure the unfinished snapshot is deleted."""
    on_block = on_block or (lambda length: None)
    size_gib = max(1, -(-volume_size // GIB))
    try:
        started = ebs.start_snapshot(VolumeSize=size_gib, Tags=aws.tag_list(tags), Description=description)
    except Exception as exc:
        if aws.is_client_error(exc):
            raise DestinationError(destination="EBS StartSnapshot",
                                   detail=f"{aws.error_code(exc)}: {aws.error_message(exc)}") from exc
        raise
    snapshot_id = started["SnapshotId"]
    written = 0
    slots = threading.BoundedSemaphore(max(1, threads) * 4)

    def put(index: int, read: Callable[[], bytes]) -> int:
        try:
            data = read()
            if not data:
                return 0
            if len(data) < EBS_BLOCK_SIZE:
                data = data + bytes(EBS_BLOCK_SIZE - len(data))
            ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data,
                                   DataLength=len(data), Checksum=sha256_base64(data), ChecksumAlgorithm="SHA256")
            on_block(len(data))
            return 1
        finally:
            slots.release()

    try:
        if started.get("BlockSize", EBS_BLOCK_SIZE) != EBS_BLOCK_SIZE:
            raise DestinationError(destination=f"EBS snapshot {snapshot_id}",
                                   detail=f"block size {started.get('BlockSize')} is not {EBS_BLOCK_SIZE}")
        futures: list[Future] = []
        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="safehold-ebs-put") as pool:
            for index, read in blocks:
                slots.acquire()
                futures.append(pool.submit(put, index, read))
                if len(futures) > 256:
                    written += sum(f.result() for f in futures[:128])
                    del futures[:128]
            written += sum(f.result() for f in futures)
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=written)
    except BaseException as exc:
        try:
            ec2.delete_snapshot(SnapshotId=snapshot_id)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        if aws.is_client_error(exc):
            raise DestinationError(destination=f"EBS snapshot {snapshot_id}",
                                   detail=f"{aws.error_code(exc)}: {aws.error_message(exc)}") from exc
        raise
    return snapshot_id, written


__all__ = ["EBS_BLOCK_SIZE", "GIB", "SnapshotBlockReader", "extents", "list_blocks", "list_changed_blocks",
           "sha256_base64", "write_snapshot"]
