"""The root of ``targets.yml``: ``Config``, plus every public name of the configuration models.

``Config`` holds the ``RepositoryConfig``, the optional ``CatalogConfig``, the
``TierConfig`` of each tier, the ``Target`` list and the ``SchedulerConfig``.
The other models live in one module per concept:

- ``common``: the ``_Model`` base, error and validation-context helpers;
- ``fields``: the ``Duration``, ``ChunkSize`` and ``Cron`` field types;
- ``repository``: ``RepositoryConfig``, ``ObjectLock``, ``CatalogConfig``;
- ``targets``: ``Target``, ``TierConfig``, ``Retention``;
- ``restore_test``: ``RestoreTest`` and its health checks;
- ``scheduler``: ``SchedulerConfig``;
- ``drills``: ``Drill``, ``DrillStep``, ``DrillDestination``;
- ``sources``: the ``Source`` union, one module per platform.

This module re-exports their public names, so ``from safehold.config.models
import X`` keeps working for every name it ever offered; new code may import
from the concept's module or from ``safehold.config``.

Every model forbids unknown keys and documents every field, because the JSON
schema and the configuration reference are generated from these classes.

Cross-field problems (unknown key 'password', duplicate target names, tier
references) are raised as ``ValidationError`` with the precise location of
the offending key, so that the loader can point at its line like any other
error, and they are reported together with every other problem in the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from safehold.config.copies import CopyConfig
from safehold.config.common import _context, _environ, _invalid, _Model, _problem, _reraise, _resolve_path
from safehold.config.drills import DRILL_SCENARIOS, Drill, DrillDestination, DrillStep, drill_problems
from safehold.config.fields import CRON_USAGE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, ChunkSize, Cron, Duration
from safehold.config.repository import DEFAULT_PASSWORD_ENV, CatalogConfig, ObjectLock, RepositoryConfig
from safehold.config.restore_test import (
    BOOTABLE_SOURCES,
    EC2_CHECK_SOURCES,
    HEALTH_CHECK_TYPES,
    AttachCheck,
    BootCheck,
    ChecksumCheck,
    CommandCheck,
    FileExistsCheck,
    HealthCheck,
    InstanceCheck,
    RestoreTest,
    SqlCheck,
    TreePath,
    bootable_sources_text,
    not_bootable_advice,
)
from safehold.config.scheduler import SchedulerConfig
from safehold.config.sources import (
    PLANNED_SOURCE_TYPES,
    SOURCE_TYPES,
    Source,
)
from safehold.config.targets import DEFAULT_TIERS, TARGET_NAME_PATTERN, Retention, Target, TierConfig, _default_tiers
from safehold.errors import TargetNotFound

__all__ = [
    "BOOTABLE_SOURCES",
    "CRON_USAGE",
    "DEFAULT_PASSWORD_ENV",
    "DEFAULT_STATE_DIR",
    "DEFAULT_TIERS",
    "DRILL_SCENARIOS",
    "HEALTH_CHECK_TYPES",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "PLANNED_SOURCE_TYPES",
    "SOURCE_TYPES",
    "STATE_DIR_ENV",
    "TARGET_NAME_PATTERN",
    "AttachCheck",
    "BootCheck",
    "CatalogConfig",
    "ChecksumCheck",
    "ChunkSize",
    "CommandCheck",
    "Config",
    "Cron",
    "Drill",
    "DrillDestination",
    "DrillStep",
    "Duration",
    "EbsCopy",
    "EbsSource",
    "FileExistsCheck",
    "FilesSource",
    "HealthCheck",
    "HyperVSource",
    "ImageSource",
    "InstanceCheck",
    "LibvirtSource",
    "ObjectLock",
    "RepositoryConfig",
    "RestoreTest",
    "SqlCheck",
    "Retention",
    "SchedulerConfig",
    "Source",
    "Target",
    "TierConfig",
    "TreePath",
    "VmwareSource",
]


def __getattr__(name: str) -> object:  # the source models, imported on first access (config/sources)
    from safehold.config import sources

    if name in sources._CLASSES:
        return getattr(sources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

DEFAULT_STATE_DIR = "/var/lib/safehold"
STATE_DIR_ENV = "SAFEHOLD_STATE_DIR"


def _tier_key(key: object) -> object:
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    return key


def _merge_tiers(raw: object) -> object:
    """User tiers merged over DEFAULT_TIERS: a default tier's keys can be overridden one by one."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw
    merged: dict[object, object] = {number: dict(values) for number, values in DEFAULT_TIERS.items()}
    for key, value in raw.items():
        number = _tier_key(key)
        default = merged.get(number)
        merged[number] = {**default, **value} if isinstance(default, dict) and isinstance(value, dict) else value
    return merged


def _cross_check(data: dict[str, Any]) -> list[InitErrorDetails]:
    """Duplicate target names, undefined tiers and boot checks of sources that cannot boot,
    checked on the raw data so they are reported alongside every other problem rather than only
    once the rest is valid."""
    targets = data.get("targets")
    tiers = data.get("tiers")
    if not isinstance(targets, list):
        return drill_problems(data)
    defined = sorted(key for key in tiers if isinstance(key, int)) if isinstance(tiers, dict) else []
    problems: list[InitErrorDetails] = []
    first_index: dict[str, int] = {}
    for index, target in enumerate(targets):
        if not isinstance(target, dict):
            continue
        name = target.get("name")
        if isinstance(name, str):
            if name in first_index:
                problems.append(
                    _problem(
                        ("targets", index, "name"),
                        f"duplicate target name {name!r}: targets[{first_index[name]}] has it too; "
                        "names must be unique",
                        name,
                    )
                )
            else:
                first_index[name] = index
        tier = _tier_key(target.get("tier"))
        if isinstance(tier, int) and not isinstance(tier, bool) and isinstance(tiers, dict) and tier not in defined:
            problems.append(
                _problem(
                    ("targets", index, "tier"),
                    f"tier {tier} is not defined; defined tiers: {', '.join(map(str, defined))} "
                    "(add it under 'tiers:' with its rpo and rto)",
                    target.get("tier"),
                )
            )
        problems += _boot_check_problems(index, target)
    return problems + drill_problems(data)


def _copy_problems(data: dict[str, Any]) -> list[InitErrorDetails]:
    """Duplicate copy names and copies of targets that do not exist."""
    copies, targets = data.get("copies"), data.get("targets")
    if not isinstance(copies, list):
        return []
    known = {t.get("name") for t in targets if isinstance(t, dict)} if isinstance(targets, list) else set()
    problems: list[InitErrorDetails] = []
    seen: dict[str, int] = {}
    for index, copy in enumerate(copies):
        if not isinstance(copy, dict):
            continue
        name = copy.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(_problem(("copies", index, "name"), f"duplicate copy name {name!r}: copies[{seen[name]}] "
                                         "has it too; names must be unique", name))
            seen.setdefault(name, index)
        covered = copy.get("targets")
        if isinstance(covered, list):
            for position, target in enumerate(covered):
                if isinstance(target, str) and target not in known:
                    problems.append(_problem(
                        ("copies", index, "targets", position),
                        f"target {target!r} is not defined; defined targets: "
                        f"{', '.join(sorted(n for n in known if isinstance(n, str))) or '(none)'}", target))
    return problems


def ec2_check_problems(location: tuple, check: dict[str, Any], target: dict[str, Any]) -> list[InitErrorDetails]:
    """An ``attach`` or ``instance`` check on a target that has no EBS snapshots, or an instance
    check whose root volume is not one of the target's named volumes."""
    source = target.get("source") if isinstance(target.get("source"), dict) else {}
    kind = source.get("type")
    if kind not in EC2_CHECK_SOURCES:
        return [_problem(
            (*location, "type"),
            f"health check type {check.get('type')!r} brings EBS snapshots up in EC2, so it needs an ebs target; "
            f"target {target.get('name')!r} has source {kind!r}: use a command, file_exists, checksum or boot check",
            check.get("type"))]
    root, volumes = check.get("root_volume"), source.get("volume_ids")
    if check.get("type") == "instance" and isinstance(volumes, list):
        only_named = not source.get("instance_ids") and not source.get("tags")
        if isinstance(root, str) and only_named and root not in volumes:
            return [_problem((*location, "root_volume"),
                             f"root_volume {root!r} is not one of the target's volume_ids ({', '.join(map(str, volumes))})",
                             root)]
        if root is None and only_named and len(volumes) > 1:
            return [_problem((*location, "type"),
                             f"target {target.get('name')!r} has {len(volumes)} volumes; an instance check needs "
                             f"root_volume: the one its AMI boots from (one of {', '.join(map(str, volumes))})",
                             "instance")]
    return []


def _boot_check_problems(index: int, target: dict[str, Any]) -> list[InitErrorDetails]:
    """A ``boot`` health check on a target whose restored disks safehold cannot boot."""
    test, source = target.get("restore_test"), target.get("source")
    check = test.get("health_check") if isinstance(test, dict) else None
    kind = source.get("type") if isinstance(source, dict) else None
    if not isinstance(check, dict) or not isinstance(kind, str):
        return []
    if check.get("type") in ("attach", "instance"):
        return ec2_check_problems(("targets", index, "restore_test", "health_check"), check, target)
    if check.get("type") != "boot" or kind in BOOTABLE_SOURCES:
        return []
    return [_problem(
        ("targets", index, "restore_test", "health_check", "type"),
        f"health check type 'boot' boots the restored disks of {bootable_sources_text()} targets in a "
        f"libvirt sandbox on this host; this target's source is {kind!r}: {not_bootable_advice(kind)}",
        "boot",
    )]


class Config(_Model):
    """The whole of targets.yml."""

    repository: RepositoryConfig = Field(description="Where backups are stored.")
    state_dir: str = Field(
        DEFAULT_STATE_DIR,
        description=(
            "Directory for local state (the default SQLite catalog, caches). Relative paths are relative to this "
            f"file's directory. The environment variable {STATE_DIR_ENV} overrides it. Created mode 0700 (and the "
            "SQLite catalog 0600) whatever the umask; an existing directory keeps its mode."
        ),
        examples=["/var/lib/safehold"],
    )
    cache: bool = Field(
        True,
        description=(
            "Keep copies of the repository's snapshot, index and verdict objects in <state_dir>/cache/<repository "
            "id>, so a backup reads from the repository only the ones written since its last run (on S3 a GET each). "
            "Each copy is checked against its name (the hash of its bytes) on every read and fetched again when it "
            "does not match. false (or 'safehold --no-cache'): read every object from the repository, e.g. for a "
            "read-only state folder (one that cannot be written only logs a warning)."
        ),
        examples=[False],
    )
    catalog: CatalogConfig | None = Field(
        None,
        description="Job history database; default sqlite:///<state_dir>/catalog.db.",
        examples=[{"url": "postgresql+psycopg://safehold@db.internal/safehold"}],
    )
    tiers: dict[Annotated[int, Field(ge=0)], TierConfig] = Field(
        default_factory=_default_tiers,
        description=(
            "Recovery objectives by tier number (lower is more critical). Defaults: 1: 15m/1h, 2: 12h/4h, "
            "3: 24h/24h; tiers given here are merged over them."
        ),
        examples=[{"1": {"rpo": "15m", "rto": "1h"}, "4": {"rpo": "7d", "rto": "3d"}}],
    )
    targets: list[Target] = Field(
        default_factory=list,
        description="Everything to back up.",
    )
    copies: list[CopyConfig] = Field(
        default_factory=list,
        description=(
            "Second copies of the snapshots in other repositories (another site, region or account), each "
            "created with 'safehold init --copy-params-from'; see 'safehold copy'."
        ),
        examples=[[{"name": "offsite", "repository": {"url": "s3://dr-backups/safehold",
                                                       "password_env": "SAFEHOLD_OFFSITE_PASSWORD"},
                    "after_backup": True}]],
    )
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig,
        description="Concurrency limits, jitter, retries and the maintenance schedules of the scheduler.",
        examples=[{"max_concurrent": 4, "max_per_host": 1, "jitter": "5m", "retries": 3}],
    )
    drills: list[Drill] = Field(
        default_factory=list,
        description="Disaster-recovery drills: 'safehold drill plan NAME' shows one, 'safehold drill run NAME' runs it.",
        examples=[[{"name": "kvm-01-lost", "scenario": "on_prem_host_failure",
                    "steps": [{"target": "db"}, {"target": "web", "after": ["db"]}]}]],
    )

    _path: Path | None = PrivateAttr(None)

    @model_validator(mode="wrap")  # type: ignore[arg-type]  # mypy cannot match the with-info overload
    @classmethod
    def _validate_whole(cls, data: Any, handler: ModelWrapValidatorHandler[Config], info: ValidationInfo) -> Config:
        if not isinstance(data, dict):
            return handler(data)
        data = dict(data)
        override = _environ(info).get(STATE_DIR_ENV)
        if override:
            # From the environment, so relative to where safehold runs, not to the file.
            data["state_dir"] = os.path.abspath(os.path.expanduser(override))
        data["tiers"] = _merge_tiers(data.get("tiers"))
        problems = _cross_check(data) + _copy_problems(data)
        try:
            config = handler(data)
        except ValidationError as error:
            _reraise(cls.__name__, problems, error)
        if problems:
            _reraise(cls.__name__, problems)
        path = _context(info).get("path")
        config._path = Path(path) if path is not None else None
        return config

    @field_validator("state_dir")
    @classmethod
    def _resolve_state_dir(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise _invalid(f"state_dir is empty; expected a directory, default {DEFAULT_STATE_DIR}")
        return _resolve_path(value, info)

    @property
    def path(self) -> Path | None:
        """The file this configuration was loaded from (None when built in code)."""
        return self._path

    @property
    def catalog_url(self) -> str:
        """The catalog database URL, defaulting to SQLite in state_dir."""
        if self.catalog is not None:
            return self.catalog.url
        return f"sqlite:///{Path(self.state_dir) / 'catalog.db'}"

    def target(self, name: str) -> Target:
        """The target called ``name``; raises TargetNotFound listing the known names."""
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(target.name for target in self.targets) or "(none)"
        raise TargetNotFound(name=name, path=str(self.path) if self.path else "the configuration", known=known)

    def drill(self, name: str) -> Drill:
        """The drill called ``name``; raises DrillNotFound listing the known names."""
        from safehold.errors import DrillNotFound

        for drill in self.drills:
            if drill.name == name:
                return drill
        known = ", ".join(drill.name for drill in self.drills) or "(none)"
        raise DrillNotFound(name=name, path=str(self.path) if self.path else "the configuration", known=known)

    def copy(self, name: str) -> CopyConfig | None:
        """The copy called ``name``, or None."""
        return next((copy for copy in self.copies if copy.name == name), None)

    def copy_named(self, name: str) -> CopyConfig:
        """The copy called ``name``; raises CopyNotFound listing the configured ones."""
        from safehold.errors import CopyNotFound

        found = self.copy(name)
        if found is None:
            known = ", ".join(copy.name for copy in self.copies) or "(none)"
            raise CopyNotFound(name=name, path=str(self.path) if self.path else "the configuration", known=known)
        return found

    def copies_of(self, target: str) -> list[CopyConfig]:
        """The copies that cover ``target``."""
        return [copy for copy in self.copies if copy.targets is None or target in copy.targets]

    def tier_of(self, target: Target | str) -> TierConfig:
        """The TierConfig of a target (or target name)."""
        if isinstance(target, str):
            target = self.target(target)
        return self.tiers[target.tier]
