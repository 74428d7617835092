"""Source drivers: one module per platform, found through a lazy registry.

``REGISTRY`` maps a source type to (module, class, restore destination kind).
Modules are imported only when a target uses them, so nobody pays for SDKs they
do not use. A source type is only registered together with the restore path
that brings its data back (``restore`` package): a backup that cannot be
restored is not offered.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import DiskItem, FileItem, Source, View

# type -> (module, class, restore destination)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "files": ("safehold.sources.files", "FilesSource", "directory"),
    "image": ("safehold.sources.image", "ImageSource", "image"),
    "vmware": ("safehold.sources.vmware", "VmwareSource", "vmware"),
}


def open_source(source_config: Any) -> Source:
    """Build the driver for a validated source model (``config.FilesSource`` ...)."""
    kind = source_config.type
    module_name, class_name, _restore = REGISTRY[kind]
    cls = getattr(importlib.import_module(module_name), class_name)
    options = source_config.model_dump(exclude={"type"})
    return cls(**options)


__all__ = ["DiskItem", "FileItem", "REGISTRY", "Source", "View", "open_source"]
