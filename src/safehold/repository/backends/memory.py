"""In-memory backend: keeps unit tests fast and is the reference for the contract."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Iterator, Sequence

from .base import Kind, ObjectExists, ObjectInfo, ObjectNotFound


class MemoryBackend:
    supports_retention = False

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.objects: dict[tuple[Kind, str], bytes] = {}
        self._lock = threading.Lock()
        self._created = False

    def exists(self) -> bool:
        return (Kind.CONFIG, "config") in self.objects

    def create(self) -> None:
        if self.exists():
            raise ObjectExists(f"a repository exists at {self.url}")
        self._created = True

    def put(self, kind: Kind, name: str, data: bytes | Sequence[bytes], *, exclusive: bool = False,
            retain_until: datetime | None = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = b"".join(data)
        with self._lock:
            if exclusive and (kind, name) in self.objects:
                raise ObjectExists(f"{kind.value}/{name}")
            self.objects[(kind, name)] = bytes(data)

    def get(self, kind: Kind, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            data = self.objects[(kind, name)]
        except KeyError:
            raise ObjectNotFound(kind, name) from None
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def stat(self, kind: Kind, name: str) -> ObjectInfo:
        try:
            return ObjectInfo(name, len(self.objects[(kind, name)]))
        except KeyError:
            raise ObjectNotFound(kind, name) from None

    def list(self, kind: Kind) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [(name, len(data)) for (k, name), data in self.objects.items() if k is kind]
        for name, size in items:
            yield ObjectInfo(name, size)

    def delete(self, kind: Kind, name: str) -> None:
        with self._lock:
            self.objects.pop((kind, name), None)
