"""Source drivers: one module per platform, found through a lazy registry.

``REGISTRY`` maps a source type to (module, class, restore destination kind); the destination
kind names an entry of ``restore.base.REGISTRY`` (a test and the restore job check it).
Modules are imported only when a target uses them, so nobody pays for SDKs they
do not use. A source type is only registered together with the restore path
that brings its data back (``restore`` package): a backup that cannot be
restored is not offered.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from .base import DiskItem, FileItem, Source, View

# type -> (module, class, restore destination)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "files": ("safehold.sources.files", "FilesSource", "directory"),
    "image": ("safehold.sources.image", "ImageSource", "image"),
    "hyperv": ("safehold.sources.hyperv", "HyperVSource", "hyperv"),
    "libvirt": ("safehold.sources.libvirt", "LibvirtSource", "libvirt"),
    "ebs": ("safehold.sources.ebs", "EbsSource", "ebs"),
    "vmware": ("safehold.sources.vmware", "VmwareSource", "vmware"),
    "postgres": ("safehold.sources.postgres", "PostgresSource", "postgres"),
    "command": ("safehold.sources.command", "CommandSource", "directory"),
    "ssh": ("safehold.sources.ssh", "SshSource", "directory"),
}


def open_source(source_config: Any, target: Any = None) -> Source:
    """Build the driver for a validated source model (``config.FilesSource`` ...).

    Drivers that act on the platform in the target's name (tagging EBS snapshots)
    take a ``target`` argument: a ``TargetInfo`` built from ``target`` (a
    ``config.Target``) is passed to those only. The target's retention stays with
    the engine, which applies it to drivers that keep platform snapshots."""
    kind = source_config.type
    module_name, class_name, _restore = REGISTRY[kind]
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    options = source_config.model_dump(exclude={"type"})
    if target is not None and "target" in inspect.signature(cls).parameters:
        options["target"] = module.TargetInfo(name=target.name, tier=target.tier)
    return cls(**options)


__all__ = ["DiskItem", "FileItem", "REGISTRY", "Source", "View", "open_source"]
