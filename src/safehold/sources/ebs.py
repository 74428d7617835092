"""EBS volumes: snapshot lifecycle in the account, and the blocks into the repository.

One backup of an ``ebs`` target:

1. selects volumes by id, by the instances they are attached to, and by tags;
2. creates one EBS snapshot per volume, tagged with the target, the tier, the
   volume and the ``safehold:managed`` marker, and waits (with a timeout) for
   them to complete;
3. copies each to the configured DR regions (re-encrypted with a KMS key when
   one is named) and waits for the copies;
4. yields a view whose disks read the snapshot's blocks through the EBS
   direct APIs: every block for the first backup, and only the blocks
   ``ListChangedBlocks`` reports against the previous backup's snapshot after
   that; the archiver takes all other chunks from the parent unread;
5. after the repository snapshot is written, lists the EBS snapshots that
   carry the safehold marker and this target's name in each region and deletes
   those the engine's retention decision names (``KeepsPlatformSnapshots``).

If anything fails before the repository snapshot is written, the EBS
snapshots and copies made by this run are deleted: a snapshot safehold left
behind, unrecorded, is a bug. The token stored in the repository snapshot maps
each volume to its EBS snapshot (and copies), for the next incremental run and
for restores.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from ..errors import SourceError
from ..platforms import aws
from ..platforms.aws.ebs_direct import SnapshotBlockReader, extents, list_blocks, list_changed_blocks
from .base import DiskItem, PlatformSnapshot, View

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetInfo:
    """What the driver needs of its target: the names its snapshots are tagged with."""

    name: str
    tier: int


class EbsSource:
    def __init__(self, region: str, volume_ids: list[str] | None = None, instance_ids: list[str] | None = None,
                 tags: dict[str, str] | None = None, dr_copies: list[dict] | None = None,
                 endpoint_url: str | None = None, wait_timeout: timedelta | float = 3600.0,
                 copy_blocks: bool = True, threads: int = 8, target: TargetInfo | None = None) -> None:
        self.region = region
        self.volume_ids = list(volume_ids or [])
        self.instance_ids = list(instance_ids or [])
        self.tags = dict(tags or {})
        self.dr_copies = [dict(copy) for copy in dr_copies or []]
        self.endpoint_url = endpoint_url
        self.wait_timeout = wait_timeout.total_seconds() if isinstance(wait_timeout, timedelta) else float(wait_timeout)
        self.copy_blocks = copy_blocks
        self.threads = threads
        self.target = target or TargetInfo(name="ebs", tier=0)
        self.poll_interval = 1.0
        self.current: set[str] = set()  # the snapshots (and copies) of the last successful view

    # -- clients and errors ----------------------------------------------------------------
    def ec2(self, region: str | None = None) -> Any:
        return aws.client("ec2", region or self.region, self.endpoint_url)

    def ebs(self, region: str | None = None) -> Any:
        return aws.client("ebs", region or self.region, self.endpoint_url, max_pool=self.threads + 4)

    def _error(self, what: str, exc: BaseException) -> SourceError:
        return SourceError(source=f"EBS ({self.region})", detail=f"{what}: {aws.error_code(exc)}: "
                                                                  f"{aws.error_message(exc)}")

    # -- 1. selection ------------------------------------------------------------------------
    def select_volumes(self, ec2: Any) -> list[dict]:
        """Every volume named, attached to a named instance, or carrying all the named tags."""
        found: dict[str, dict] = {}
        try:
            if self.volume_ids:
                for volume in ec2.describe_volumes(VolumeIds=self.volume_ids)["Volumes"]:
                    found[volume["VolumeId"]] = volume
            attached: list[str] = []
            if self.instance_ids:
                for reservation in ec2.describe_instances(InstanceIds=self.instance_ids)["Reservations"]:
                    for instance in reservation["Instances"]:
                        attached += [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", [])
                                     if "Ebs" in m]
                missing = [i for i in attached if i not in found]
                if missing:
                    for volume in ec2.describe_volumes(VolumeIds=missing)["Volumes"]:
                        found[volume["VolumeId"]] = volume
            if self.tags:
                filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in self.tags.items()]
                for page in ec2.get_paginator("describe_volumes").paginate(Filters=filters):
                    for volume in page["Volumes"]:
                        found[volume["VolumeId"]] = volume
        except Exception as exc:
            if aws.is_client_error(exc):
                raise self._error("selecting volumes", exc) from exc
            raise
        if not found:
            raise SourceError(source=f"EBS ({self.region})",
                              detail=f"no volume matches volume_ids={self.volume_ids}, "
                                     f"instance_ids={self.instance_ids}, tags={self.tags}")
        return [found[key] for key in sorted(found)]

    def snapshot_tags(self, volume_id: str) -> dict[str, str]:
        return {aws.MARKER_KEY: "true", aws.TARGET_KEY: self.target.name, aws.TIER_KEY: str(self.target.tier),
                aws.VOLUME_KEY: volume_id, "Name": f"safehold {self.target.name} {volume_id}"}

    # -- 2, 3. snapshots and DR copies --------------------------------------------------------
    def _wait(self, ec2: Any, region: str, snapshot_ids: list[str]) -> dict[str, dict]:
        def timeout(pending: dict[str, dict]) -> SourceError:
            states = ", ".join(f"{i} {s['State']} {s.get('Progress', '')}".strip() for i, s in pending.items())
            return SourceError(source=f"EBS ({region})",
                               detail=f"snapshot(s) not completed within {self.wait_timeout:g}s: {states}; raise "
                                      "the source's wait_timeout")

        def failed(snapshot: dict) -> SourceError:
            return SourceError(source=f"EBS ({region})", detail=f"snapshot {snapshot['SnapshotId']} failed: "
                                                                 f"{snapshot.get('StateMessage', 'state error')}")

        return aws.wait_for_snapshots(ec2, snapshot_ids, self.wait_timeout, timeout, failed,
                                      interval=self.poll_interval)

    def create_snapshots(self, ec2: Any, volumes: list[dict], created: list[tuple[str, str]]) -> dict[str, dict]:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for volume in volumes:
            tags = self.snapshot_tags(volume["VolumeId"])
            try:
                snapshot = ec2.create_snapshot(
                    VolumeId=volume["VolumeId"], Description=f"safehold {self.target.name} {stamp}",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": aws.tag_list(tags)}])
            except Exception as exc:
                if aws.is_client_error(exc):
                    raise self._error(f"snapshot of {volume['VolumeId']}", exc) from exc
                raise
            created.append((self.region, snapshot["SnapshotId"]))
        ids = [snapshot_id for region, snapshot_id in created if region == self.region]
        return self._wait(ec2, self.region, ids)

    def copy_snapshots(self, snapshots: dict[str, dict], created: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
        """{volume id: {DR region: copy id}} for every DR copy, waited for."""
        copies: dict[str, dict[str, str]] = {}
        for copy in self.dr_copies:
            region = copy["region"]
            ec2 = self.ec2(region)
            made: list[str] = []
            for snapshot_id, snapshot in snapshots.items():
                volume_id = snapshot["VolumeId"]
                tags = self.snapshot_tags(volume_id) | {aws.SOURCE_SNAPSHOT_KEY: snapshot_id,
                                                        aws.SOURCE_REGION_KEY: self.region}
                arguments: dict = {"SourceSnapshotId": snapshot_id, "SourceRegion": self.region,
                                   "Description": f"safehold copy of {snapshot_id} from {self.region}",
                                   "TagSpecifications": [{"ResourceType": "snapshot", "Tags": aws.tag_list(tags)}]}
                if copy.get("kms_key_id"):
                    arguments |= {"Encrypted": True, "KmsKeyId": copy["kms_key_id"]}
                try:
                    copy_id = ec2.copy_snapshot(**arguments)["SnapshotId"]
                except Exception as exc:
                    if aws.is_client_error(exc):
                        raise self._error(f"copying {snapshot_id} to {region}", exc) from exc
                    raise
                created.append((region, copy_id))
                made.append(copy_id)
                copies.setdefault(volume_id, {})[region] = copy_id
            self._wait(ec2, region, made)
        return copies

    def delete_created(self, created: list[tuple[str, str]]) -> None:
        for region, snapshot_id in reversed(created):
            try:
                self.ec2(region).delete_snapshot(SnapshotId=snapshot_id)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up; the caller reports the first error
                log.warning("could not delete EBS snapshot %s in %s: %s", snapshot_id, region, exc)

    # -- 4. the blocks ------------------------------------------------------------------------
    def disk(self, ebs: Any, volume_id: str, snapshot_id: str, parent_snapshot: str | None) -> tuple[DiskItem, dict]:
        size = block_size = 0
        changed = None
        if parent_snapshot:
            try:
                size, block_size, delta = list_changed_blocks(ebs, parent_snapshot, snapshot_id)
                tokens = {i: t for i, t in delta.items() if t is not None}
                changed = extents(delta, block_size)
            except Exception as exc:
                if not aws.is_client_error(exc):
                    raise
                # The parent's EBS snapshot is gone (retention, by hand) or of another size: read it all.
                log.info("ListChangedBlocks %s..%s failed (%s); reading every block", parent_snapshot,
                         snapshot_id, aws.error_code(exc))
                parent_snapshot = None
        if not parent_snapshot:
            try:
                size, block_size, tokens = list_blocks(ebs, snapshot_id)
            except Exception as exc:
                if aws.is_client_error(exc):
                    raise self._error(f"listing the blocks of {snapshot_id}", exc) from exc
                raise
        detail = {"blocks_listed": len(tokens), "changed_from": parent_snapshot}
        disk = DiskItem(
            name=volume_id, size=size,
            open=lambda: SnapshotBlockReader(ebs, snapshot_id, tokens, block_size, self.threads),
            allocated=extents(tokens, block_size), changed=changed,
            metadata={"ebs_snapshot": snapshot_id, "region": self.region, "block_size": block_size})
        return disk, detail

    @contextmanager
    def open(self, parent_token: dict | None = None) -> Iterator[View]:
        self.current = set()
        ec2 = self.ec2()
        volumes = self.select_volumes(ec2)
        created: list[tuple[str, str]] = []
        try:
            snapshots = self.create_snapshots(ec2, volumes, created)
            copies = self.copy_snapshots(snapshots, created)
            parent_volumes = (parent_token or {}).get("volumes", {}) if (parent_token or {}).get(
                "region") == self.region else {}
            disks: list[DiskItem] = []
            token_volumes: dict[str, dict] = {}
            ebs = self.ebs() if self.copy_blocks else None
            incremental = False
            # Where each volume was attached (instance, device): a restore as a VM on-premise
            # makes the root device its boot disk. From the listing already made: no extra call.
            attached = {volume["VolumeId"]: {"instance": a.get("InstanceId"), "device": a.get("Device")}
                        for volume in volumes for a in volume.get("Attachments", [])[:1]}
            for snapshot_id, snapshot in sorted(snapshots.items(), key=lambda pair: pair[1]["VolumeId"]):
                volume_id = snapshot["VolumeId"]
                entry = {"snapshot": snapshot_id, "size_gib": snapshot["VolumeSize"],
                         "copies": copies.get(volume_id, {})}
                if volume_id in attached:
                    entry["attached"] = attached[volume_id]
                if ebs is not None:
                    parent_snapshot = parent_volumes.get(volume_id, {}).get("snapshot")
                    disk, detail = self.disk(ebs, volume_id, snapshot_id, parent_snapshot)
                    incremental = incremental or detail["changed_from"] is not None
                    entry |= detail
                    disks.append(disk)
                token_volumes[volume_id] = entry
            token = {"region": self.region, "volumes": token_volumes, "blocks_copied": self.copy_blocks}
            view = View(kind="image", paths=[f"ebs://{self.region}/{v}" for v in token_volumes], disks=disks,
                        incremental="ebs-changed-blocks" if incremental else "none", token=token)
            yield view
        except BaseException:
            self.delete_created(created)
            raise
        # 5. The repository snapshot is written: these snapshots are now the newest a retention
        # decision must keep (the engine's, through platform_snapshots and delete_platform_snapshots).
        self.current = {snapshot_id for _region, snapshot_id in created}

    # -- 5. retention: the engine decides, the driver lists and deletes ----------------------------
    def managed_snapshots(self, ec2: Any) -> list[dict]:
        filters = [{"Name": f"tag:{aws.MARKER_KEY}", "Values": ["true"]},
                   {"Name": f"tag:{aws.TARGET_KEY}", "Values": [self.target.name]}]
        result = []
        for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=filters):
            result += page["Snapshots"]
        # Filters are the server's business; check the tags again before anything is deleted.
        return [s for s in result if aws.tags_of(s).get(aws.MARKER_KEY) == "true"
                and aws.tags_of(s).get(aws.TARGET_KEY) == self.target.name]

    def platform_snapshots(self) -> list[PlatformSnapshot]:
        """The completed snapshots of this target in the source and every DR region."""
        found: list[PlatformSnapshot] = []
        for region in [self.region, *[copy["region"] for copy in self.dr_copies]]:
            try:
                snapshots = self.managed_snapshots(self.ec2(region))
            except Exception as exc:
                if aws.is_client_error(exc):
                    raise self._error(f"listing the snapshots of {self.target.name} in {region}", exc) from exc
                raise
            for snapshot in snapshots:
                if snapshot["State"] != "completed":
                    continue  # one still being made (by a concurrent run) is not ours to judge yet
                volume = aws.tags_of(snapshot).get(aws.VOLUME_KEY) or snapshot.get("VolumeId", "")
                found.append(PlatformSnapshot(snapshot["SnapshotId"], region, volume,
                                              aws.as_utc(snapshot["StartTime"]), snapshot["SnapshotId"] in self.current))
        return found

    def delete_platform_snapshots(self, location: str, ids: list[str]) -> list[str]:
        deleted: list[str] = []
        ec2 = self.ec2(location)
        for snapshot_id in ids:
            if snapshot_id in self.current:
                continue
            try:
                ec2.delete_snapshot(SnapshotId=snapshot_id)
                deleted.append(snapshot_id)
            except Exception as exc:  # noqa: BLE001 - e.g. in use by an AMI: keep it, try next time
                log.warning("retention: could not delete %s in %s: %s", snapshot_id, location, exc)
        return deleted


__all__ = ["EbsSource", "TargetInfo"]
