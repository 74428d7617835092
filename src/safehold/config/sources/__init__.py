"""The source of a target: one model per platform, one module each, joined in the ``Source`` union.

Concepts: ``FilesSource`` and ``ImageSource`` (``files``: this host's files, a
disk image or block device), ``HyperVSource`` (``hyperv``), ``LibvirtSource``
(``libvirt``), ``EbsSource`` with its ``EbsCopy`` (``ebs``), ``VmwareSource``
(``vmware``), ``PostgresSource`` (``postgres``), ``CommandSource`` (``command``: any program's output), ``SshSource`` (``ssh``). ``Source`` picks one by ``type``; ``SOURCE_TYPES`` lists the
kinds this release supports and ``PLANNED_SOURCE_TYPES`` those it names but
refuses. Adding a platform is adding a module here and a member of ``Source``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from safehold.config.sources.command import CommandSource
from safehold.config.sources.ebs import EbsCopy, EbsSource
from safehold.config.sources.files import FilesSource, ImageSource
from safehold.config.sources.hyperv import HyperVSource
from safehold.config.sources.libvirt import LibvirtSource
from safehold.config.sources.postgres import PostgresSource
from safehold.config.sources.ssh import SshSource
from safehold.config.sources.vmware import VmwareSource

__all__ = [
    "PLANNED_SOURCE_TYPES",
    "SOURCE_TYPES",
    "CommandSource",
    "EbsCopy",
    "EbsSource",
    "FilesSource",
    "HyperVSource",
    "ImageSource",
    "LibvirtSource",
    "PostgresSource",
    "Source",
    "SshSource",
    "VmwareSource",
]

SOURCE_TYPES = ("files", "image", "ebs", "hyperv", "libvirt", "vmware", "postgres", "command", "ssh")
# Named in DESIGN.md, not implemented yet: a config using one gets a clear
# "not supported by this release" instead of a generic invalid-value error.
PLANNED_SOURCE_TYPES: tuple[str, ...] = ()


Source = Annotated[
    FilesSource | ImageSource | EbsSource | HyperVSource | LibvirtSource | VmwareSource | PostgresSource
    | CommandSource | SshSource,
    Field(discriminator="type"),
]
"""One of the source kinds this release supports, chosen by ``type``."""
