"""Restore to an EC2 instance: a new EBS volume from a snapshot, attached to the instance.

From an EBS snapshot: the volume is created in the instance's availability
zone, waited for, and attached at the given device (or the first free one of
/dev/sdf../dev/sdp). When the instance is in another region than the snapshot,
a safehold DR copy of that snapshot in the instance's region is used (the DR
restore); without one the error says where each is.

From a repository snapshot: its image is first written into a new EBS
snapshot in the instance's region with the EBS direct APIs (every chunk read
from the repository is verified; holes are not written), then restored as
above.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import (DestinationError, EbsDeviceInUse, EbsInstanceInOtherRegion, EbsSnapshotPending,
                      PathNotInSnapshot, SourceError, UsageError)
from ..items import HOLE
from ..platforms import aws
from ..platforms.aws.ebs_direct import EBS_BLOCK_SIZE, write_snapshot
from .base import Progress, RestoreReport, SnapshotInfo
from .options import EbsOptions

DEVICE_CANDIDATES = [f"/dev/sd{letter}" for letter in "fghijklmnop"]

ClientFactory = Callable[[str, str], Any]  # (service, region) -> boto3 client


@dataclass
class EbsRestoreResult:
    instance_id: str
    region: str
    availability_zone: str
    volume_id: str
    device: str
    snapshot_id: str  # the EBS snapshot the volume was made from
    source_snapshot_id: str  # what was asked for: an EBS snapshot id, or a repository snapshot id
    from_copy: bool = False
    blocks_written: int = 0
    duration: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _client_error(what: str, exc: BaseException) -> DestinationError:
    return DestinationError(destination=what, detail=f"{aws.error_code(exc)}: {aws.error_message(exc)}")


def find_instance(clients: ClientFactory, instance_id: str, region: str) -> tuple[dict, str]:
    """(instance, its region). Looks in ``region`` first, then in every region the account sees."""
    try:
        reservations = clients("ec2", region).describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0], region
    except Exception as exc:
        if not aws.is_client_error(exc):
            raise
        if "NotFound" not in aws.error_code(exc) and aws.error_code(exc) != "InvalidInstanceID.Malformed":
            raise _client_error(f"instance {instance_id}", exc) from exc
    regions = [r["RegionName"] for r in clients("ec2", region).describe_regions()["Regions"]]
    for other in regions:
        if other == region:
            continue
        try:
            reservations = clients("ec2", other).describe_instances(InstanceIds=[instance_id])["Reservations"]
        except Exception as exc:  # noqa: BLE001 - not there (or the region is not enabled): keep looking
            if not aws.is_client_error(exc):
                raise
            continue
        if reservations:
            return reservations[0]["Instances"][0], other
    raise DestinationError(destination=f"instance {instance_id}", detail=f"no such instance in {region} or any "
                                                                         "other region this account can see")


def _describe_snapshot(ec2: Any, snapshot_id: str, region: str) -> dict:
    try:
        return ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    except Exception as exc:
        if aws.is_client_error(exc) and "NotFound" in aws.error_code(exc):
            raise SourceError(source=f"EBS snapshot {snapshot_id}", detail=f"no such snapshot in {region}") from exc
        raise


def dr_copy_of(ec2: Any, snapshot_id: str) -> dict | None:
    """The newest completed safehold copy of ``snapshot_id`` in ``ec2``'s region, if any."""
    filters = [{"Name": f"tag:{aws.SOURCE_SNAPSHOT_KEY}", "Values": [snapshot_id]},
               {"Name": f"tag:{aws.MARKER_KEY}", "Values": ["true"]}]
    copies = [s for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"]
              if aws.tags_of(s).get(aws.SOURCE_SNAPSHOT_KEY) == snapshot_id]
    completed = [s for s in copies if s["State"] == "completed"]
    return max(completed, key=lambda s: s["StartTime"]) if completed else (copies[0] if copies else None)


def choose_device(instance: dict, device: str | None) -> str:
    used = sorted(m["DeviceName"] for m in instance.get("BlockDeviceMappings", []))
    used_set = set(used) | {instance.get("RootDeviceName", "")}
    free = [d for d in DEVICE_CANDIDATES if d not in used_set and d.replace("/dev/sd", "/dev/xvd") not in used_set]
    if device is None:
        if not free:
            raise EbsDeviceInUse(device="(any of /dev/sdf-/dev/sdp)", instance_id=instance["InstanceId"],
                                 used=", ".join(used), free="a name outside /dev/sdf-/dev/sdp")
        return free[0]
    if device in used_set:
        raise EbsDeviceInUse(device=device, instance_id=instance["InstanceId"], used=", ".join(used) or "none",
                             free=free[0] if free else "another name")
    return device


def wait_volume(ec2: Any, volume_id: str, state: str, timeout: float, attached_to: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    interval = 0.5
    while True:
        volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        if attached_to is None and volume["State"] == state:
            return volume
        if attached_to is not None and any(a["InstanceId"] == attached_to and a["State"] == "attached"
                                           for a in volume.get("Attachments", [])):
            return volume
        if volume["State"] == "error":
            raise DestinationError(destination=f"volume {volume_id}", detail="the volume is in state error")
        if time.monotonic() >= deadline:
            raise DestinationError(destination=f"volume {volume_id}",
                                   detail=f"not {state} after {timeout:g}s (now {volume['State']})")
        time.sleep(interval)
        interval = min(interval * 1.5, 10.0)


def create_volume(clients: ClientFactory, snapshot_id: str, instance_id: str, *, region: str,
                        device: str | None = None, timeout: float = 3600.0, tags: dict[str, str] | None = None,
                        source_snapshot_id: str | None = None) -> EbsRestoreResult:
    """Create a volume from EBS snapshot ``snapshot_id`` (in ``region``) in the instance's zone, choose its
    device, and wait until it is available; ``attach_volume`` attaches it."""
    started = time.monotonic()
    instance, instance_region = find_instance(clients, instance_id, region)
    from_copy = False
    if instance_region != region:
        copy = dr_copy_of(clients("ec2", instance_region), snapshot_id)
        if copy is None:
            raise EbsInstanceInOtherRegion(instance_id=instance_id, instance_region=instance_region, region=region,
                                           snapshot_id=snapshot_id,
                                           detail=f"; {instance_region} holds no safehold copy of it")
        snapshot_id, region, from_copy = copy["SnapshotId"], instance_region, True
    ec2 = clients("ec2", region)
    snapshot = _describe_snapshot(ec2, snapshot_id, region)
    if snapshot["State"] != "completed":
        raise EbsSnapshotPending(snapshot_id=snapshot_id, region=region, state=snapshot["State"],
                                 progress=snapshot.get("Progress") or "no progress reported")
    device = choose_device(instance, device)
    zone = instance["Placement"]["AvailabilityZone"]
    volume_tags = {"safehold:restored-from": source_snapshot_id or snapshot_id, **(tags or {})}
    try:
        volume_id = ec2.create_volume(
            SnapshotId=snapshot_id, AvailabilityZone=zone,
            TagSpecifications=[{"ResourceType": "volume", "Tags": aws.tag_list(volume_tags)}])["VolumeId"]
    except Exception as exc:
        if aws.is_client_error(exc):
            raise _client_error(f"a volume from {snapshot_id} in {zone}", exc) from exc
        raise
    result = EbsRestoreResult(instance_id, region, zone, volume_id, device, snapshot_id,
                              source_snapshot_id or snapshot_id, from_copy, duration=time.monotonic() - started)
    try:
        wait_volume(ec2, volume_id, "available", timeout)
    except BaseException:
        delete_volume(clients, result)
        raise
    return result


def attach_volume(clients: ClientFactory, result: EbsRestoreResult, timeout: float) -> None:
    """Attach the new, available volume at ``result.device``; the caller deletes it if this fails."""
    ec2 = clients("ec2", result.region)
    try:
        ec2.attach_volume(VolumeId=result.volume_id, InstanceId=result.instance_id, Device=result.device)
        wait_volume(ec2, result.volume_id, "in-use", timeout, attached_to=result.instance_id)
    except Exception as exc:
        if aws.is_client_error(exc):
            code = aws.error_code(exc)
            if code == "InvalidParameterValue" and "in use" in aws.error_message(exc):
                raise EbsDeviceInUse(device=result.device, instance_id=result.instance_id, used=result.device,
                                     free="another name") from exc
            raise _client_error(f"instance {result.instance_id}", exc) from exc
        raise


def delete_volume(clients: ClientFactory, result: EbsRestoreResult) -> None:
    """Delete a volume the restore made and did not attach (best effort: the restore's error matters)."""
    try:
        clients("ec2", result.region).delete_volume(VolumeId=result.volume_id)
    except Exception:  # noqa: BLE001 - gone already, or the original error is the one to report
        pass


def image_blocks(reader: Any, item: dict) -> list[tuple[int, Callable[[], bytes]]]:
    """(block index, read function) for every 512 KiB block of an image item that holds data. Any chunk size
    works: a block is assembled from the chunks it overlaps; a block of holes only is not written."""
    size, chunk_size, chunks = item["size"], item["chunk_size"], item["chunks"]

    def chunk(index: int) -> bytes:
        blob_id = chunks[index * 32 : (index + 1) * 32]
        length = min(chunk_size, size - index * chunk_size)
        return bytes(length) if blob_id == HOLE else reader.read_blob(blob_id)

    def read(block: int) -> Callable[[], bytes]:
        def load() -> bytes:
            start, end = block * EBS_BLOCK_SIZE, min(size, (block + 1) * EBS_BLOCK_SIZE)
            parts = []
            for index in range(start // chunk_size, (end - 1) // chunk_size + 1):
                data = chunk(index)
                offset = index * chunk_size
                parts.append(data[max(0, start - offset) : end - offset])
            data = b"".join(parts)
            return b"" if data.count(0) == len(data) else data

        return load

    blocks = []
    for block in range((size + EBS_BLOCK_SIZE - 1) // EBS_BLOCK_SIZE):
        first = block * EBS_BLOCK_SIZE // chunk_size
        last = (min(size, (block + 1) * EBS_BLOCK_SIZE) - 1) // chunk_size
        if any(chunks[i * 32 : (i + 1) * 32] != HOLE for i in range(first, last + 1)):
            blocks.append((block, read(block)))
    return blocks


def image_to_ebs_snapshot(clients: ClientFactory, reader: Any, item: dict, *, region: str, tags: dict[str, str],
                          description: str, threads: int = 8, timeout: float = 3600.0,
                          on_block: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Write an image item of a repository snapshot into a new, completed EBS snapshot in ``region``."""
    ec2 = clients("ec2", region)
    snapshot_id, written = write_snapshot(clients("ebs", region), ec2, item["size"], image_blocks(reader, item),
                                          tags=tags, description=description, threads=threads, on_block=on_block)

    def pending(states: dict[str, dict]) -> Exception:
        state = states[snapshot_id]
        return EbsSnapshotPending(snapshot_id=snapshot_id, region=region, state=state["State"],
                                  progress=state.get("Progress") or "no progress reported")

    def failed(state: dict) -> Exception:
        return DestinationError(destination=f"EBS snapshot {snapshot_id}",
                                detail=state.get("StateMessage", "the snapshot failed"))

    try:
        aws.wait_for_snapshots(ec2, [snapshot_id], timeout, pending, failed)
    except BaseException:
        # Never completed in time (or failed): nothing will use it, so it must not be left behind.
        try:
            ec2.delete_snapshot(SnapshotId=snapshot_id)
        except Exception:  # noqa: BLE001 - gone already; the original error is the one to report
            pass
        raise
    return snapshot_id, written



class EbsDestination:
    """A new EBS volume attached to an EC2 instance: from an EBS snapshot id kept on the platform
    (``platform_snapshot``), or from a repository snapshot's image, first written into a new EBS
    snapshot in the instance's region. ``clients(service, region)`` and ``region`` come from the
    engine (the configuration's ebs targets, or boto3's defaults)."""

    def __init__(self, options: EbsOptions, *, clients: ClientFactory, region: str, threads: int = 4) -> None:
        self.options = options
        self.clients = clients
        self.region = region
        self.threads = threads
        self.made_snapshot: tuple[str, str] | None = None  # (id, region) of the EBS snapshot written by write
        self.result: EbsRestoreResult | None = None
        self.platform_id = ""
        self.started = 0.0
        self.report = RestoreReport()

    def platform_snapshot(self, snapshot_ref: str, target: str | None) -> SnapshotInfo | None:
        if not snapshot_ref.startswith("snap-"):
            return None
        self.platform_id = snapshot_ref
        return SnapshotInfo(id=snapshot_ref, short_id=snapshot_ref, target=target or "", kind="ebs-snapshot")

    def plan(self, snapshot: SnapshotInfo, items: list[dict]) -> Any:
        instance, instance_region = find_instance(self.clients, self.options.instance, self.region)
        choose_device(instance, self.options.device)  # a used device is refused before anything is made
        if snapshot.kind == "ebs-snapshot":
            return instance, instance_region, None
        include = self.options.include
        images = [i for i in items if i["type"] == "image"]
        chosen = [i for i in images if include is None or i["path"].decode(errors="replace") == include]
        names = ", ".join(i["path"].decode(errors="replace") for i in images) or "(none)"
        if include is None and len(images) > 1:
            raise UsageError(f"snapshot {snapshot.short_id} holds {len(images)} images ({names}); name one with --include")
        if not chosen:
            raise PathNotInSnapshot(path=include or "(an image)", snapshot=snapshot.short_id)
        return instance, instance_region, (snapshot, chosen[0])

    def write(self, reader: Any, plan: Any, progress: Progress) -> RestoreReport:
        started = time.monotonic()
        instance, instance_region, from_repository = plan
        timeout = self.options.timeout
        if from_repository is None:
            result = create_volume(self.clients, self.platform_id, instance["InstanceId"], region=self.region,
                                         device=self.options.device, timeout=timeout)
        else:
            snapshot, item = from_repository
            name = item["path"].decode(errors="replace")
            written = 0

            def report(length: int) -> None:
                nonlocal written
                written += length
                progress(written, name)

            tags = {aws.MARKER_KEY: "true", aws.TARGET_KEY: snapshot.target, "safehold:repository-snapshot": snapshot.id}
            ebs_snapshot, blocks = image_to_ebs_snapshot(
                self.clients, reader, item, region=instance_region, tags=tags,
                description=f"safehold restore of {snapshot.short_id} {name}", threads=self.threads * 2,
                timeout=timeout, on_block=report)
            self.made_snapshot = (ebs_snapshot, instance_region)
            result = create_volume(self.clients, ebs_snapshot, instance["InstanceId"], region=instance_region,
                                         device=self.options.device, timeout=timeout, source_snapshot_id=snapshot.id)
            result.blocks_written = blocks
        self.started, self.result = started, result
        self.report = RestoreReport(files=1, bytes_written=result.blocks_written * EBS_BLOCK_SIZE)
        return self.report

    def commit(self) -> None:
        """Attach the new volume; a failure leaves it to rollback (which deletes it)."""
        result = self.result
        assert result is not None
        attach_volume(self.clients, result, self.options.timeout)
        self.result = None  # attached: the restore's result, no longer rollback's to delete
        result.duration = time.monotonic() - self.started
        self.report.details = result.as_dict()
        origin = f"{result.snapshot_id} (DR copy in {result.region})" if result.from_copy else result.snapshot_id
        self.report.log.append(f"volume {result.volume_id} from {origin} attached to {result.instance_id} as "
                               f"{result.device} in {result.availability_zone}")
        self.made_snapshot = None  # kept: the volume was made from it, tagged safehold:managed

    def rollback(self) -> None:
        if self.result is not None:  # made by write, not attached
            delete_volume(self.clients, self.result)
            self.result = None
        if self.made_snapshot is None:
            return
        snapshot_id, region = self.made_snapshot
        self.made_snapshot = None
        try:
            self.clients("ec2", region).delete_snapshot(SnapshotId=snapshot_id)
        except Exception as exc:  # noqa: BLE001 - gone already, or never completed
            if not aws.is_client_error(exc):
                raise


__all__ = ["EbsDestination", "EbsRestoreResult", "choose_device", "dr_copy_of", "find_instance", "image_blocks",
           "image_to_ebs_snapshot", "create_volume", "attach_volume", "delete_volume"]
