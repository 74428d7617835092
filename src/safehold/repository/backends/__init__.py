"""Storage backends: dumb stores of immutable named objects.

``open_backend(url)`` picks one by URL scheme through a lazy registry, so nobody
imports an SDK they do not use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from ...errors import UsageError
from .base import (
    Backend,
    DirectoryBackend,
    ImmutabilityFactsBackend,
    Kind,
    MUTABLE_KINDS,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectRetained,
    RetentionBackend,
    TemporaryFilesBackend,
    retention_of,
)

# scheme -> (module, class); imported only when used.
REGISTRY: dict[str, tuple[str, str]] = {
    "file": ("safehold.repository.backends.local", "LocalBackend"),
    "memory": ("safehold.repository.backends.memory", "MemoryBackend"),
    "s3": ("safehold.repository.backends.s3", "S3Backend"),
}


def open_backend(url: str, **options: object) -> Backend:
    """The backend for ``url``; ``options`` go to its constructor (S3: region, endpoint_url, object lock)."""
    parsed = urlparse(url)
    scheme = parsed.scheme or "file"
    if scheme not in REGISTRY:
        raise UsageError(
            f"repository url {url!r} uses scheme {scheme!r}; this release supports: "
            + ", ".join(f"{s}://" for s in sorted(REGISTRY) if s != "memory")
        )
    module_name, class_name = REGISTRY[scheme]
    cls = getattr(importlib.import_module(module_name), class_name)
    if scheme == "file":
        path = unquote(parsed.path) if parsed.scheme else url
        return cls(Path(path).expanduser())
    return cls(url, **options)


__all__ = ["Backend", "DirectoryBackend", "ImmutabilityFactsBackend", "Kind", "MUTABLE_KINDS", "ObjectExists",
           "ObjectInfo", "ObjectNotFound", "ObjectRetained", "RetentionBackend", "TemporaryFilesBackend", "open_backend",
           "retention_of"]
