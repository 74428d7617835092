"""Disk data through the datastore HTTP file access (``/folder/<path>?dcPath=&dsName=``).

No VDDK: a snapshot's base disk is a flat file (``disk-flat.vmdk``) that can
be read with HTTP ``Range`` requests while the VM runs on its delta disk, and
written whole with ``PUT`` for a restore. Requests carry the SOAP session's
cookie. Each HTTP status maps to a clear error: 401/403 is an expired or
unauthorised session, 404 a file (or VM) that is gone, 5xx a datastore that
refuses the read.
"""

from __future__ import annotations

import http.client
import re
from typing import Callable, Iterable
from urllib.parse import quote, urlencode

from .session import Session

_PATH = re.compile(r"^\[(?P<datastore>[^\]]+)\]\s*(?P<path>.*)$")


class DatastoreHTTPError(Exception):
    """An HTTP request to the datastore failed; ``status`` is 0 for a connection failure."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def parse_path(datastore_path: str) -> tuple[str, str]:
    """'[LocalDS_0] vm/disk1.vmdk' -> ('LocalDS_0', 'vm/disk1.vmdk')."""
    match = _PATH.match(datastore_path)
    if not match:
        raise ValueError(f"not a datastore path: {datastore_path!r}")
    return match.group("datastore"), match.group("path")


def flat_path(descriptor: str) -> str:
    """The data file of a flat disk: 'vm/disk1.vmdk' -> 'vm/disk1-flat.vmdk'."""
    return descriptor[:-5] + "-flat.vmdk" if descriptor.endswith(".vmdk") else descriptor


def url_path(datacenter: str, datastore: str, path: str) -> str:
    return f"/folder/{quote(path)}?" + urlencode({"dcPath": datacenter, "dsName": datastore})


def describe_status(status: int, reason: str, body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").strip()
    meaning = {401: "the vSphere session expired or is not valid", 403: "the session is not allowed to read it",
               404: "the file does not exist (VM deleted or moved?)", 416: "the range is past the end of the file"}
    extra = meaning.get(status, "the datastore refused the request" if status >= 500 else "")
    return f"HTTP {status} {reason}" + (f": {extra}" if extra else "") + (f" ({text})" if text else "")


class DatastoreReader:
    """Reads a flat disk file with Range requests. ``extents`` (sorted (offset, length)) bounds the
    read-ahead, so areas the backup will not ask for are never fetched."""

    READ_AHEAD = 8 * 1024 * 1024

    def __init__(self, session: Session, datacenter: str, datastore: str, path: str, size: int,
                 extents: list[tuple[int, int]] | None = None) -> None:
        self.session = session
        self.url = url_path(datacenter, datastore, path)
        self.name = f"[{datastore}] {path}"
        self.size = size
        self.extents = extents
        self.connection: http.client.HTTPConnection | None = None
        self.buffer = b""
        self.buffer_offset = 0
        self.bytes_fetched = 0

    def _limit(self, offset: int) -> int:
        """How far past ``offset`` a read-ahead may go: to the end of the extent holding it."""
        end = min(self.size, offset + self.READ_AHEAD)
        if self.extents is None:
            return end
        for start, length in self.extents:
            if start <= offset < start + length:
                return min(end, start + length)
        return offset

    def read_at(self, offset: int, length: int) -> bytes:
        if self.buffer_offset <= offset and offset + length <= self.buffer_offset + len(self.buffer):
            start = offset - self.buffer_offset
            return self.buffer[start : start + length]
        end = max(offset + length, self._limit(offset))
        self.buffer = self._get(offset, end - offset)
        self.buffer_offset = offset
        return self.buffer[:length]

    def _get(self, offset: int, length: int) -> bytes:
        headers = {"Cookie": self.session.cookie, "Range": f"bytes={offset}-{offset + length - 1}"}
        for attempt in (1, 2):  # one retry on a dropped keep-alive connection
            if self.connection is None:
                self.connection = self.session.http_connection()
            try:
                self.connection.request("GET", self.url, headers=headers)
                response = self.connection.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2:
                    raise DatastoreHTTPError(0, f"reading {self.name}: {exc}") from None
        if response.status != 206:
            if response.status == 200:
                raise DatastoreHTTPError(200, f"reading {self.name}: the server ignored the Range header")
            raise DatastoreHTTPError(response.status, f"reading {self.name} at byte {offset}: "
                                     + describe_status(response.status, response.reason, body))
        if len(body) != length:
            raise DatastoreHTTPError(response.status, f"reading {self.name} at byte {offset}: "
                                     f"got {len(body)} bytes, asked for {length}")
        self.bytes_fetched += len(body)
        return body

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def upload(session: Session, datacenter: str, datastore: str, path: str, size: int,
           pieces: Iterable[bytes], on_progress: Callable[[int], None] | None = None) -> int:
    """PUT a whole file of ``size`` bytes made of ``pieces``; returns the bytes sent."""
    connection = session.http_connection(timeout=600)
    name = f"[{datastore}] {path}"
    sent = 0
    try:
        connection.putrequest("PUT", url_path(datacenter, datastore, path))
        connection.putheader("Cookie", session.cookie)
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        for piece in pieces:
            connection.send(piece)
            sent += len(piece)
            if on_progress:
                on_progress(sent)
        if sent != size:
            raise DatastoreHTTPError(0, f"writing {name}: sent {sent} bytes of {size}")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DatastoreHTTPError(0, f"writing {name}: {exc}") from None
    finally:
        connection.close()
    if response.status not in (200, 201, 204):
        raise DatastoreHTTPError(response.status, f"writing {name}: " + describe_status(response.status, response.reason, body))
    return sent
