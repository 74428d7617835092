"""config layer: the pydantic models of targets.yml, loading with file:line errors, durations.

Concepts: ``Config`` (the whole file) holds a ``RepositoryConfig``, the
``TierConfig`` of each tier (RPO/RTO) and the ``Target`` list; each target has a
``Source`` (one model per source type: ``FilesSource``, ``ImageSource``, ``HyperVSource``, ``LibvirtSource`` ...), an optional ``Retention`` and
``RestoreTest``; ``Drill``s (``drills:``) rehearse disasters over several targets.
Secrets are never in the file: ``RepositoryConfig.password()``
reads them from the environment or a password file when needed.
"""

from safehold.config.durations import format_duration, parse_duration
from safehold.config.loader import CONFIG_ENV, DEFAULT_CONFIG_PATH, load_config, load_config_text, resolve_config_path
from safehold.config.models import (
    DEFAULT_STATE_DIR,
    DEFAULT_TIERS,
    PLANNED_SOURCE_TYPES,
    SOURCE_TYPES,
    STATE_DIR_ENV,
    CatalogConfig,
    ChecksumCheck,
    CommandCheck,
    Config,
    Drill,
    DrillDestination,
    DrillStep,
    FileExistsCheck,
    HealthCheck,
    ObjectLock,
    RepositoryConfig,
    RestoreTest,
    Retention,
    SqlCheck,
    SchedulerConfig,
    Source,
    Target,
    TierConfig,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_STATE_DIR",
    "DEFAULT_TIERS",
    "PLANNED_SOURCE_TYPES",
    "SOURCE_TYPES",
    "STATE_DIR_ENV",
    "CatalogConfig",
    "ChecksumCheck",
    "CommandCheck",
    "Config",
    "Drill",
    "DrillDestination",
    "DrillStep",
    "FileExistsCheck",
    "EbsCopy",
    "EbsSource",
    "FilesSource",
    "HealthCheck",
    "HyperVSource",
    "ImageSource",
    "LibvirtSource",
    "ObjectLock",
    "RepositoryConfig",
    "RestoreTest",
    "Retention",
    "SqlCheck",
    "SchedulerConfig",
    "Source",
    "Target",
    "TierConfig",
    "format_duration",
    "load_config",
    "load_config_text",
    "parse_duration",
    "resolve_config_path",
]


def __getattr__(name: str) -> object:  # the source models, imported on first access (config/sources)
    from safehold.config import sources

    if name in sources._CLASSES:
        return getattr(sources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
