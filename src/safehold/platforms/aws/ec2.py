"""EC2 sandboxes: volumes, AMIs and instances that safehold makes to prove (or perform) a restore.

One module for the restore tests' ``attach`` and ``instance`` checks, the AWS
region-failure drill and the ``--to-ec2`` restore destination:

- :class:`Ec2Sandbox` creates a volume from an EBS snapshot in a given zone,
  attaches and detaches it, registers an AMI from EBS snapshots (root device,
  architecture, boot mode, ENA flag, extra block-device mappings), runs and
  terminates an instance, and records every resource it made so that
  :meth:`Ec2Sandbox.cleanup` removes them all, in the order AWS needs
  (instances terminated, volumes detached and deleted, AMIs deregistered,
  snapshots it made deleted), whatever happened before.
- Every resource carries the tag ``safehold:sandbox`` whose value names the run
  that owns it (its job, process, host/boot/pid namespace, creation time and a
  deadline; :func:`owner_tag`), and a ``Name`` starting ``safehold-sandbox-``.
  :func:`leftovers` finds them in a region and :func:`remove_leftovers` removes
  those whose run is over (the caller judges that: the engine knows processes),
  so what a SIGKILLed run left is removed by the next one, as
  ``platforms.libvirt.sandbox`` does for domains.

A snapshot the sandbox did not make (a backup, a DR copy) is never deleted: an
AMI registered from it is only deregistered. Tag values read back from AWS are
hostile input (anyone with ec2:CreateTags can write them): only our own key is
parsed, and a value that does not parse is not ours to judge.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import Ec2SandboxFailed, Ec2SandboxNotRemoved
from .. import aws

SANDBOX_KEY = "safehold:sandbox"
RESTORED_FROM_KEY = "safehold:restored-from"
NAME_PREFIX = "safehold-sandbox-"
ARCHITECTURES = ("x86_64", "arm64", "i386")
BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")
_OWNER_FIELDS = ("job", "pid", "created", "deadline", "namespace")


def owner_tag(attributes: dict[str, str]) -> str:
    """The ``safehold:sandbox`` tag value for an owner (``job``, ``pid``, ``created``, ``deadline``,
    ``namespace``); AWS keeps at most 256 characters, so the namespace is cut last."""
    value = ";".join(f"{key}={attributes[key]}" for key in _OWNER_FIELDS if attributes.get(key) not in (None, ""))
    return value[:256]


def parse_owner(value: str) -> dict[str, str] | None:
    """The owner attributes of a tag value, or None when it is not one safehold wrote."""
    found: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, item = part.partition("=")
        if not sep or key not in _OWNER_FIELDS or key in found:
            return None
        found[key] = item
    if not {"pid", "created", "deadline", "namespace"} <= set(found):
        return None
    try:
        int(found["pid"]), float(found["created"]), float(found["deadline"])
        if "job" in found:
            int(found["job"])
    except ValueError:
        return None
    return found


@dataclass
class Resource:
    kind: str  # instance, volume, image, snapshot
    id: str
    region: str

    def describe(self) -> str:
        return f"{self.kind} {self.id} in {self.region}"


def _failed(what: str, region: str, exc: BaseException) -> Ec2SandboxFailed:
    return Ec2SandboxFailed(what=what, region=region, detail=f"{aws.error_code(exc)}: {aws.error_message(exc)}")


@dataclass
class Ec2Sandbox:
    """The resources of one sandbox in one region. Not thread safe: one run drives it.

    ``poll`` is the first interval of the state waits (it grows to 15 s, as DescribeInstances and
    DescribeVolumes are rate limited per account); ``timeout`` bounds each wait."""

    ec2: Any
    region: str
    owner: str  # the safehold:sandbox tag value (owner_tag)
    label: str = "sandbox"
    timeout: float = 600.0
    poll: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    name: str = ""
    created: list[Resource] = field(default_factory=list)
    removed: list[Resource] = field(default_factory=list)
    # Volumes we attached, {volume id: instance id}: detached before they are deleted.
    attached: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.label)[:40].strip("-.") or "target"
            self.name = f"{NAME_PREFIX}{cleaned}-{uuid.uuid4().hex[:8]}"

    def tags(self) -> dict[str, str]:
        return {SANDBOX_KEY: self.owner, "Name": self.name}

    def _specification(self, *kinds: str) -> list[dict]:
        return [{"ResourceType": kind, "Tags": aws.tag_list(self.tags())} for kind in kinds]

    def _call(self, what: str, function: Callable[..., Any], **arguments: Any) -> Any:
        try:
            return function(**arguments)
        except Exception as exc:
            if aws.is_client_error(exc):
                raise _failed(what, self.region, exc) from exc
            raise

    def _wait(self, what: str, probe: Callable[[], str | None], wanted: str, timeout: float | None = None) -> None:
        """Poll ``probe`` (the current state, or None when gone) until it is ``wanted``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        interval = self.poll
        state: str | None = None
        while True:
            state = probe()
            if state == wanted:
                return
            if state in ("error", "failed") or (wanted != "terminated" and state in ("terminated", "shutting-down")):
                raise Ec2SandboxFailed(what=what, region=self.region, detail=f"it became {state}, not {wanted}")
            if time.monotonic() >= deadline:
                raise Ec2SandboxFailed(what=what, region=self.region,
                                       detail=f"still {state} after {self.timeout:.0f}s, waiting for {wanted}")
            self.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 1.5, 15.0)

    # -- volumes -------------------------------------------------------------------------------
    def volume_state(self, volume_id: str) -> str | None:
        try:
            volume = self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        except Exception as exc:
            if aws.is_client_error(exc) and aws.error_code(exc) == "InvalidVolume.NotFound":
                return None
            raise
        return volume["State"]

    def create_volume(self, snapshot_id: str, zone: str, volume_type: str | None = None) -> str:
        """A new volume from ``snapshot_id`` in ``zone``, tagged, waited for ``available``."""
        # safehold:restored-from on the new volume: what the restore role's IAM policy (deploy/iam/)
        # requires of every volume it creates.
        tags = dict(self.tags(), **{RESTORED_FROM_KEY: snapshot_id})
        arguments: dict[str, Any] = {"SnapshotId": snapshot_id, "AvailabilityZone": zone,
                                     "TagSpecifications": [{"ResourceType": "volume", "Tags": aws.tag_list(tags)}]}
        if volume_type:
            arguments["VolumeType"] = volume_type
        volume_id = self._call(f"a volume from {snapshot_id} in {zone}", self.ec2.create_volume, **arguments)["VolumeId"]
        self.created.append(Resource("volume", volume_id, self.region))
        self._wait(f"volume {volume_id}", lambda: self.volume_state(volume_id), "available")
        return volume_id

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        self._call(f"attaching {volume_id} to {instance_id} as {device}", self.ec2.attach_volume,
                   VolumeId=volume_id, InstanceId=instance_id, Device=device)
        self.attached[volume_id] = instance_id

        def attachment() -> str | None:
            volume = self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
            states = [a["State"] for a in volume.get("Attachments", []) if a["InstanceId"] == instance_id]
            return states[0] if states else volume["State"]

        self._wait(f"attaching {volume_id} to {instance_id}", attachment, "attached")

    def detach_volume(self, volume_id: str, force: bool = False) -> None:
        instance_id = self.attached.get(volume_id)
        arguments: dict[str, Any] = {"VolumeId": volume_id, "Force": force}
        if instance_id:
            arguments["InstanceId"] = instance_id
        self._call(f"detaching {volume_id}", self.ec2.detach_volume, **arguments)
        self._wait(f"detaching {volume_id}", lambda: self.volume_state(volume_id), "available")
        self.attached.pop(volume_id, None)

    # -- images and instances -------------------------------------------------------------------
    def register_image(self, root_snapshot: str, *, architecture: str = "x86_64", boot_mode: str | None = None,
                       ena: bool = True, root_device: str = "/dev/xvda", volume_type: str = "gp3",
                       extra: list[tuple[str, str]] | None = None, description: str = "") -> str:
        """An AMI whose root device ``root_device`` is made from ``root_snapshot`` and whose other
        devices come from ``extra`` ((device, snapshot id)); every volume is deleted with the instance."""
        if architecture not in ARCHITECTURES:
            raise Ec2SandboxFailed(what="an AMI", region=self.region,
                                   detail=f"architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
        if boot_mode is not None and boot_mode not in BOOT_MODES:
            raise Ec2SandboxFailed(what="an AMI", region=self.region,
                                   detail=f"boot mode {boot_mode!r}; expected one of {', '.join(BOOT_MODES)}")
        mappings = [{"DeviceName": device, "Ebs": {"SnapshotId": snapshot, "DeleteOnTermination": True,
                                                   "VolumeType": volume_type}}
                    for device, snapshot in [(root_device, root_snapshot), *(extra or [])]]
        arguments: dict[str, Any] = {"Name": self.name, "Description": description or f"safehold {self.name}",
                                     "Architecture": architecture, "RootDeviceName": root_device,
                                     "VirtualizationType": "hvm", "EnaSupport": ena,
                                     "BlockDeviceMappings": mappings,
                                     # Tagged as it is made: never an untagged AMI a kill could leave, and
                                     # the IAM policy needs no CreateTags on AMIs that are not ours.
                                     "TagSpecifications": self._specification("image")}
        if boot_mode:
            arguments["BootMode"] = boot_mode
        image_id = self._call(f"an AMI from {root_snapshot}", self.ec2.register_image, **arguments)["ImageId"]
        self.created.append(Resource("image", image_id, self.region))
        return image_id

    def instance(self, instance_id: str) -> dict | None:
        try:
            reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except Exception as exc:
            if aws.is_client_error(exc) and aws.error_code(exc) == "InvalidInstanceID.NotFound":
                return None
            raise
        found = [i for r in reservations for i in r["Instances"]]
        return found[0] if found else None

    def run_instance(self, image_id: str, *, instance_type: str = "t3.micro", subnet: str | None = None,
                     security_groups: list[str] | None = None, key_name: str | None = None,
                     zone: str | None = None, wait: bool = True) -> dict:
        """One instance of ``image_id``, tagged (and its volumes), waited for ``running`` with ``wait``."""
        arguments: dict[str, Any] = {"ImageId": image_id, "InstanceType": instance_type, "MinCount": 1,
                                     "MaxCount": 1, "TagSpecifications": self._specification("instance", "volume")}
        if subnet:
            arguments["SubnetId"] = subnet
        if security_groups:
            arguments["SecurityGroupIds"] = list(security_groups)
        if key_name:
            arguments["KeyName"] = key_name
        if zone and not subnet:
            arguments["Placement"] = {"AvailabilityZone": zone}
        instance = self._call(f"an instance of {image_id}", self.ec2.run_instances, **arguments)["Instances"][0]
        instance_id = instance["InstanceId"]
        self.created.append(Resource("instance", instance_id, self.region))
        if wait:
            self._wait(f"instance {instance_id}", lambda: self._instance_state(instance_id), "running")
            instance = self.instance(instance_id) or instance
        return instance

    def _instance_state(self, instance_id: str) -> str | None:
        instance = self.instance(instance_id)
        return instance["State"]["Name"] if instance else None

    def track_snapshot(self, snapshot_id: str) -> None:
        """A snapshot this run made (e.g. written through the EBS direct APIs): removed by cleanup."""
        self.created.append(Resource("snapshot", snapshot_id, self.region))

    # -- removal -------------------------------------------------------------------------------
    def cleanup(self, keep: set[str] | None = None) -> list[Resource]:
        """Remove every resource made, except ids in ``keep`` (a restore that succeeded keeps its
        instance and AMI); returns what could not be removed (also kept in ``not_removed``). Never
        raises for one resource: each is tried."""
        keep = keep or set()
        pending = [r for r in self.created if r.id not in keep and r not in self.removed]
        order = {"instance": 0, "volume": 1, "image": 2, "snapshot": 3}
        failed: list[Resource] = []
        for resource in sorted(pending, key=lambda r: order[r.kind]):
            try:
                self._remove(resource)
                self.removed.append(resource)
            except Exception:  # noqa: BLE001 - every resource gets its try; the caller reports the rest
                failed.append(resource)
        self.not_removed = failed
        return failed

    def cleanup_or_raise(self, keep: set[str] | None = None) -> list[Resource]:
        failed = self.cleanup(keep)
        if failed:
            raise Ec2SandboxNotRemoved(region=self.region, resources=", ".join(r.id for r in failed),
                                       tag=SANDBOX_KEY)
        return self.removed

    def _remove(self, resource: Resource) -> None:
        remove_resource(self.ec2, resource, self.timeout, self.poll, self.sleep, attached=self.attached)


def _gone(exc: BaseException) -> bool:
    return aws.is_client_error(exc) and aws.error_code(exc).endswith(".NotFound") or \
        aws.error_code(exc) in ("InvalidAMIID.Unavailable", "InvalidAMIID.NotFound")


def remove_resource(ec2: Any, resource: Resource, timeout: float = 600.0, poll: float = 0.5,
                    sleep: Callable[[float], None] = time.sleep, attached: dict[str, str] | None = None) -> None:
    """Remove one sandbox resource and wait until AWS no longer holds it in use (an instance
    terminated, a volume deleted); gone already counts as removed."""
    probe = Ec2Sandbox(ec2, resource.region, "", timeout=timeout, poll=poll, sleep=sleep, name="-")
    try:
        if resource.kind == "instance":
            ec2.terminate_instances(InstanceIds=[resource.id])
            probe._wait(f"terminating {resource.id}", lambda: probe._instance_state(resource.id) or "terminated",
                        "terminated")
        elif resource.kind == "volume":
            state = probe.volume_state(resource.id)
            if state is None:
                return
            if state == "in-use":
                # InstanceId is optional for AWS, but naming it is harmless and some implementations need it.
                volume = ec2.describe_volumes(VolumeIds=[resource.id])["Volumes"][0]
                arguments: dict[str, Any] = {"VolumeId": resource.id, "Force": True}
                instances = [a["InstanceId"] for a in volume.get("Attachments", []) if a.get("InstanceId")]
                if instances:
                    arguments["InstanceId"] = instances[0]
                ec2.detach_volume(**arguments)
                probe._wait(f"detaching {resource.id}", lambda: probe.volume_state(resource.id) or "available",
                            "available")
            ec2.delete_volume(VolumeId=resource.id)
            if attached is not None:
                attached.pop(resource.id, None)
        elif resource.kind == "image":
            ec2.deregister_image(ImageId=resource.id)
        elif resource.kind == "snapshot":
            ec2.delete_snapshot(SnapshotId=resource.id)
    except Exception as exc:
        if _gone(exc):
            return
        raise


def leftovers(ec2: Any, region: str) -> list[tuple[Resource, dict[str, str] | None]]:
    """Every resource in ``region`` tagged ``safehold:sandbox`` (instances not yet terminated),
    with the owner its tag names (None: a value safehold did not write)."""
    tag_filter = [{"Name": "tag-key", "Values": [SANDBOX_KEY]}]
    found: list[tuple[Resource, dict[str, str] | None]] = []

    def owner(item: dict) -> dict[str, str] | None:
        return parse_owner(aws.tags_of(item).get(SANDBOX_KEY, ""))

    try:
        for page in ec2.get_paginator("describe_instances").paginate(Filters=tag_filter):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    if instance["State"]["Name"] not in ("terminated", "shutting-down"):
                        found.append((Resource("instance", instance["InstanceId"], region), owner(instance)))
        for page in ec2.get_paginator("describe_volumes").paginate(Filters=tag_filter):
            for volume in page["Volumes"]:
                found.append((Resource("volume", volume["VolumeId"], region), owner(volume)))
        for image in ec2.describe_images(Owners=["self"], Filters=tag_filter)["Images"]:
            found.append((Resource("image", image["ImageId"], region), owner(image)))
        for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=tag_filter):
            for snapshot in page["Snapshots"]:
                found.append((Resource("snapshot", snapshot["SnapshotId"], region), owner(snapshot)))
    except Exception as exc:
        if aws.is_client_error(exc):
            raise _failed("looking for leftover sandboxes", region, exc) from exc
        raise
    return found


def remove_leftovers(ec2: Any, region: str, owner_gone: Callable[[dict[str, str]], bool],
                     timeout: float = 600.0, poll: float = 0.5) -> list[str]:
    """Remove the sandbox resources in ``region`` whose owner's run is over (``owner_gone``);
    returns what was removed. A resource whose tag safehold did not write is left alone."""
    order = {"instance": 0, "volume": 1, "image": 2, "snapshot": 3}
    removed: list[str] = []
    for resource, owner in sorted(leftovers(ec2, region), key=lambda pair: order[pair[0].kind]):
        if owner is None or not owner_gone(owner):
            continue
        try:
            remove_resource(ec2, resource, timeout, poll)
        except Exception as exc:  # noqa: BLE001 - one that resists is tried again by the next run
            if not aws.is_client_error(exc) and not isinstance(exc, Ec2SandboxFailed):
                raise
            continue
        removed.append(resource.describe())
    return removed


__all__ = ["ARCHITECTURES", "BOOT_MODES", "NAME_PREFIX", "SANDBOX_KEY", "Ec2Sandbox", "Resource", "leftovers",
           "owner_tag", "parse_owner", "remove_leftovers", "remove_resource"]
