"""The parameters of each job kind, defined once: ``engine.jobs`` validates queued jobs with these
models and the API (``server.schemas``) builds its request bodies, and so ``/openapi.json``, from
them. Strict types and no unknown names: a typo in a request is an error, not an ignored option.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..restore.options import PlatformOptions


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoParams(Params):
    pass


class BackupParams(Params):
    tags: list[str] = Field(default_factory=list, description="Extra tags for the snapshot.")


class _RestoreParams(Params):
    snapshot: str = Field("latest", min_length=1, max_length=128,
                          description="Snapshot id (prefix), 'latest', or for ebs an EBS snapshot id (snap-...).")


class PathRestoreParams(_RestoreParams):
    """A restore to a path: a directory for files, an image file (or a directory) for disks."""

    destination: str = Field(max_length=4096, description="Directory (files) or image file to restore into.")
    overwrite: bool = Field(False, description="Replace existing files.")
    includes: list[str] | None = Field(None, description="Only these paths.")
    special_files: bool = Field(False, description="Create device nodes and keep setuid/setgid bits; without it "
                                "they are skipped or removed and listed in the job's details and log.")


class PlatformRestoreParams(_RestoreParams):
    """A restore to a platform: libvirt, vmware, hyperv or ebs, with that kind's options."""

    to: PlatformOptions = Field(description="The destination kind and its options, e.g. "
                                "{kind: libvirt, define: web-01-copy, images_dir: web-01}.")


class _Queued(Params):
    restore_root: str | None = Field(None, description="Set by the server: the destination (and a libvirt "
                                     "images_dir) must lie below this directory, checked when the job runs.")


class QueuedPathRestore(PathRestoreParams, _Queued):
    pass


class QueuedPlatformRestore(PlatformRestoreParams, _Queued):
    pass


def restore_params_model(params: dict) -> type[Params]:
    """A queued restore's model: ``to`` names a platform destination, else ``destination`` a path."""
    return QueuedPlatformRestore if "to" in params else QueuedPathRestore


class CheckParams(Params):
    read_data_percent: float = Field(0.0, ge=0, le=100, description="Share of packs to read and verify, 0-100.")


class ForgetParams(Params):
    prune: bool = Field(False, description="Also prune after forgetting.")


class MaintenanceParams(Params):
    renew_within_days: float | None = Field(
        None, ge=0, le=36500, description="Extend Object Lock retention ending within this many days; default: half "
                                          "of object_lock.days.")


class RepairIndexParams(Params):
    read_all_packs: bool = Field(False, description="Read the header of every pack and rebuild the index from "
                                 "headers alone (default: only packs no index names).")
    dry_run: bool = Field(False, description="Report what would change; write nothing.")


SnapshotRef = Annotated[str, Field(min_length=4, max_length=300, pattern=r"^([0-9a-f]{4,64}|latest(:[^\x00]{1,255})?)$")]


class RepairSnapshotsParams(Params):
    snapshots: list[SnapshotRef] = Field(default_factory=list, max_length=1000,
                                         description="Only these snapshots (ids, unique prefixes of at least 4 "
                                                     "hex characters, 'latest:TARGET'); every snapshot when empty.")
    read_data: bool = Field(False, description="Also read the packs the snapshots use and drop files whose data "
                            "fails verification (default: only missing or truncated data).")
    forget: bool = Field(False, description="Forget each damaged original once its repaired copy is written "
                         "(default: keep the originals).")
    dry_run: bool = Field(False, description="Name the files that would be dropped; write nothing.")


class DrillParams(Params):
    drill: str = Field(min_length=1, max_length=128, description="Name of a drill under 'drills:' in targets.yml.")


class CopyParams(Params):
    to: str = Field(min_length=1, description="The name of a copy configured under 'copies:' in targets.yml.")
    snapshot: str | None = Field(None, description="Only this snapshot (id prefix or 'latest'); default: every "
                                                   "snapshot of the target the destination lacks.")


AnySnapshotRef = Annotated[str, Field(min_length=4, max_length=300,
                                      pattern=r"^([0-9a-f]{4,64}|latest(-clean)?(:[^\x00]{1,255})?)$")]


class MarkParams(Params):
    snapshot: AnySnapshotRef = Field(description="Snapshot id (unique prefix of at least 4 hex characters), "
                                                 "'latest:TARGET' or 'latest-clean:TARGET'.")
    verdict: Literal["clean", "suspicious"] = Field(description="The operator's judgement: 'clean' ends an alarm "
                                                                "(later snapshots are restore points again).")
    note: str | None = Field(None, max_length=1000, description="Why (kept with the record).")


class ScanParams(Params):
    snapshot: AnySnapshotRef = Field(description="Snapshot id (unique prefix of at least 4 hex characters), "
                                                 "'latest:TARGET' or 'latest-clean:TARGET'.")


#: kind -> the model its queued params are validated with.
PARAMS: dict[str, type[Params]] = {
    "backup": BackupParams,
    "restore": QueuedPathRestore,  # or QueuedPlatformRestore: see restore_params_model
    "restore-test": NoParams,
    "check": CheckParams,
    "prune": NoParams,
    "forget": ForgetParams,
    "maintenance": MaintenanceParams,
    "repair-index": RepairIndexParams,
    "repair-snapshots": RepairSnapshotsParams,
    "drill": DrillParams,
    "copy": CopyParams,
    "mark": MarkParams,
    "scan": ScanParams,
}
