"""The source of a target: one model per platform, one module each, chosen by ``type``.

Concepts: ``FilesSource`` and ``ImageSource`` (``files``: this host's files, a
disk image or block device), ``HyperVSource`` (``hyperv``), ``LibvirtSource``
(``libvirt``), ``EbsSource`` with its ``EbsCopy`` (``ebs``), ``VmwareSource``
(``vmware``), ``PostgresSource`` (``postgres``), ``CommandSource`` (``command``: any program's output), ``SshSource`` (``ssh``). ``Source`` picks one by ``type``; ``SOURCE_TYPES`` lists the
kinds this release supports and ``PLANNED_SOURCE_TYPES`` those it names but
refuses. Adding a platform is adding a module here and a line of ``_MODELS``.

The models are imported per type in use (issue 19, start-up): a files-only targets.yml never
imports the VMware, EBS, Hyper-V, libvirt, PostgreSQL, SSH or command models. ``Source`` validates
a mapping with its type's model through a discriminated union of that one model (the same errors,
locations included, as the union of all), and its JSON schema is the union of all (the
configuration reference and ``safehold config schema`` are unchanged). The classes are attributes
of this package as before, imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter
from pydantic_core import core_schema

if TYPE_CHECKING:
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


# type -> (module, class); the order of SOURCE_TYPES is the order of the schema's union
_MODELS: dict[str, tuple[str, str]] = {
    "files": ("files", "FilesSource"), "image": ("files", "ImageSource"), "ebs": ("ebs", "EbsSource"),
    "hyperv": ("hyperv", "HyperVSource"), "libvirt": ("libvirt", "LibvirtSource"),
    "vmware": ("vmware", "VmwareSource"), "postgres": ("postgres", "PostgresSource"),
    "command": ("command", "CommandSource"), "ssh": ("ssh", "SshSource"),
}
_CLASSES: dict[str, str] = {name: module for module, name in _MODELS.values()} | {"EbsCopy": "ebs"}


def __getattr__(name: str) -> Any:  # PEP 562: the classes, imported on first access
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def source_model(kind: str) -> type[BaseModel]:
    """The model of source type ``kind`` (one of SOURCE_TYPES), its module imported now."""
    return __getattr__(_MODELS[kind][1])


class _Unused(BaseModel):
    type: Literal["\0"]  # a tag no mapping has: makes a one-model discriminated union possible


_ADAPTERS: dict[str, TypeAdapter] = {}


def _adapter(kind: str) -> TypeAdapter:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = TypeAdapter(Annotated[Union[source_model(kind), _Unused], Field(discriminator="type")])
        _ADAPTERS[kind] = adapter
    return adapter


def _all_sources() -> Any:
    return Annotated[Union[tuple(source_model(kind) for kind in SOURCE_TYPES)], Field(discriminator="type")]


class _SourceByType:
    """Validation dispatched on ``type``; anything else (no mapping, an unknown type: Target's
    ``_check_kind`` reports those first) goes to the union of all, as before."""

    @classmethod
    def model_for(cls, data: Any) -> type[BaseModel] | None:
        """The model that validates ``data`` (a mapping with a known 'type'), else None."""
        kind = data.get("type") if isinstance(data, dict) else None
        return source_model(kind) if isinstance(kind, str) and kind in _MODELS else None

    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: Any) -> core_schema.CoreSchema:
        def validate(value: Any, info: core_schema.ValidationInfo) -> Any:
            kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
            if isinstance(kind, str) and kind in _MODELS:
                return _adapter(kind).validate_python(value, strict=(info.config or {}).get("strict"),
                                                      context=info.context)
            return TypeAdapter(_all_sources()).validate_python(value, context=info.context)

        return core_schema.with_info_plain_validator_function(validate)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: Any) -> Any:
        return handler(TypeAdapter(_all_sources()).core_schema)


if TYPE_CHECKING:
    Source = Annotated[
        FilesSource | ImageSource | EbsSource | HyperVSource | LibvirtSource | VmwareSource | PostgresSource
        | CommandSource | SshSource,
        Field(discriminator="type"),
    ]
else:
    Source = _SourceByType
"""One of the source kinds this release supports, chosen by ``type``."""
