"""Restore tests and drills of ebs targets in EC2: the ``attach`` and ``instance`` health checks.

The restore point is a repository snapshot of an ebs target; its source token
names, per volume, the EBS snapshot taken by that backup and its DR-region
copies. A check brings those EBS snapshots up in a region (the target's own,
or a drill's DR region, where it uses the copies) through
``platforms.aws.ec2.Ec2Sandbox``:

- ``attach``: a volume from each snapshot in the sandbox instance's zone,
  attached to it at the next free devices; healthy when every one is attached
  to it (ART runs to that moment); then detached and deleted.
- ``instance``: an AMI registered from the snapshots (the root volume's as the
  root device, the others as extra mappings), an instance run from it; healthy
  when EC2 says ``running`` with every mapped volume attached (ART to then);
  then terminated (its volumes go with it) and the AMI deregistered.

The EBS snapshots are the backups and are never deleted. Everything made is
tagged ``safehold:sandbox`` with its owner (this process, its job, a deadline),
and every check starts by removing what runs that are over left in the region,
so a SIGKILLed run is cleaned up by the next one. What could not be removed is
an ``Ec2SandboxNotRemoved`` error and stays listed in the evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import errors
from ..config.models import AttachCheck, InstanceCheck
from ..platforms.aws import ec2 as ec2_platform

# How long after its start a sandbox resource is surely no longer wanted by a run on another host
# (one whose process cannot be looked at): the longest check timeout plus a margin.
OWNER_LIFETIME = 6 * 3600.0


def owner_tag(job_id: int | None) -> str:
    from .boot_check import make_owner

    attributes = make_owner(Path("."), job_id, OWNER_LIFETIME).as_attributes()
    return ec2_platform.owner_tag(attributes)


def owner_gone(attributes: dict[str, str]) -> bool:
    from ..platforms.libvirt.sandbox import SandboxOwner
    from .boot_check import owner_gone as gone

    owner = SandboxOwner.from_attributes(dict(attributes, folder=""))
    return owner is not None and gone(owner)


def remove_leftovers(ec2: Any, region: str) -> list[str]:
    """The sandbox resources in ``region`` of runs that are over (killed or past their deadline)."""
    return ec2_platform.remove_leftovers(ec2, region, owner_gone)


def snapshots_in(source: dict[str, Any], region: str) -> tuple[dict[str, str], list[str]]:
    """({volume id: EBS snapshot id usable in ``region``}, volumes without one there) of a snapshot's
    source token: the snapshot itself in the target's region, its DR copy elsewhere. The token comes
    from the repository: ids are checked for shape before AWS sees them."""
    found: dict[str, str] = {}
    missing: list[str] = []
    volumes = source.get("volumes") if isinstance(source.get("volumes"), dict) else {}
    for volume_id, entry in sorted(volumes.items()):
        entry = entry if isinstance(entry, dict) else {}
        if source.get("region") == region:
            snapshot = entry.get("snapshot")
        else:
            copies = entry.get("copies") if isinstance(entry.get("copies"), dict) else {}
            snapshot = copies.get(region)
        if isinstance(snapshot, str) and snapshot.startswith("snap-") and len(snapshot) <= 64:
            found[str(volume_id)] = snapshot
        else:
            missing.append(str(volume_id))
    return found, missing


def plan_problems(check: AttachCheck | InstanceCheck, source: dict[str, Any], region: str,
                  instance: str | None = None) -> list[str]:
    """What stops ``check`` from running in ``region`` on a restore point, before anything is made."""
    found, missing = snapshots_in(source, region)
    problems = []
    if missing:
        where = "EBS snapshot" if source.get("region") == region else f"copy in {region} (add it to dr_copies)"
        problems.append(f"no {where} of volume(s) {', '.join(missing)} in this restore point")
    if not found and not missing:
        problems.append("the restore point names no EBS volume")
    if isinstance(check, InstanceCheck) and found:
        if check.root_volume is None and len(found) > 1:
            problems.append(f"{len(found)} volumes and no root_volume: name the one the AMI boots from")
        elif check.root_volume is not None and check.root_volume not in found and not missing:
            problems.append(f"root_volume {check.root_volume} is not in this restore point ({', '.join(found)})")
    if isinstance(check, AttachCheck) and instance is None and source.get("region") != region:
        problems.append(f"an attach check in {region} needs an instance there: set restore_to.instance")
    return problems


@dataclass
class Ec2CheckResult:
    passed: bool
    detail: str
    healthy_at: float | None  # time.monotonic() when healthy
    region: str
    facts: dict[str, Any] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    leftovers_removed: list[str] = field(default_factory=list)


def run_ec2_check(job: Any, target_name: str, check: AttachCheck | InstanceCheck, source: dict[str, Any], *,
                  clients: Callable[[str, str], Any], region: str, instance: str | None = None,
                  poll: float = 0.5) -> Ec2CheckResult:
    """Run ``check`` on the restore point whose source token is ``source`` in ``region``;
    ``instance`` overrides an attach check's (a drill's DR-region instance). Everything made is
    removed before it returns; raises Ec2SandboxNotRemoved when something could not be."""
    ec2 = clients("ec2", region)
    result = Ec2CheckResult(False, "", None, region)
    result.leftovers_removed = remove_leftovers(ec2, region)
    for removed in result.leftovers_removed:
        job.log(f"removed the leftover of a run that ended: {removed}", level="warning")
    problems = plan_problems(check, source, region, instance)
    if problems:
        raise errors.Ec2SandboxFailed(what=f"checking {target_name}", region=region, detail="; ".join(problems))
    snapshots, _ = snapshots_in(source, region)
    sandbox = ec2_platform.Ec2Sandbox(ec2, region, owner_tag(getattr(job, "id", None)), label=target_name,
                                      timeout=check.timeout.total_seconds(), poll=poll)
    result.facts["sandbox"] = sandbox.name
    try:
        if isinstance(check, AttachCheck):
            _attach(job, sandbox, check, snapshots, instance or check.instance, result)
        else:
            _instance(job, sandbox, check, snapshots, result)
    except errors.Ec2SandboxFailed as exc:
        result.passed, result.detail = False, exc.message
    finally:
        failed = sandbox.cleanup()
        result.created = [r.describe() for r in sandbox.created]
        result.removed = [r.describe() for r in sandbox.removed]
        for resource in sandbox.removed:
            job.log(f"removed {resource.describe()}")
    if failed:
        raise errors.Ec2SandboxNotRemoved(region=region, resources=", ".join(r.id for r in failed),
                                          tag=ec2_platform.SANDBOX_KEY)
    return result


def _free_devices(instance: dict, count: int, first: str | None) -> list[str]:
    used = {m["DeviceName"] for m in instance.get("BlockDeviceMappings", [])} | {instance.get("RootDeviceName", "")}
    used |= {name.replace("/dev/sd", "/dev/xvd") for name in used} | {name.replace("/dev/xvd", "/dev/sd") for name in used}
    letters = "fghijklmnop"
    if first:
        letters = letters[max(0, letters.find(first[-1])):] if first[-1] in letters else first[-1] + letters
    free = [f"/dev/sd{letter}" for letter in letters if f"/dev/sd{letter}" not in used]
    if len(free) < count:
        raise errors.Ec2SandboxFailed(what=f"instance {instance['InstanceId']}", region="its region",
                                      detail=f"only {len(free)} free device name(s) of /dev/sdf-/dev/sdp for {count} volume(s)")
    return free[:count]


def _attach(job: Any, sandbox: Any, check: AttachCheck, snapshots: dict[str, str], instance_id: str,
            result: Ec2CheckResult) -> None:
    instance = sandbox.instance(instance_id)
    if instance is None or instance["State"]["Name"] not in ("running", "stopped"):
        state = instance["State"]["Name"] if instance else "not found"
        raise errors.Ec2SandboxFailed(what=f"sandbox instance {instance_id}", region=sandbox.region,
                                      detail=f"it is {state}; name a running or stopped instance in restore_test "
                                             "(or the drill's restore_to.instance)")
    zone = instance["Placement"]["AvailabilityZone"]
    devices = _free_devices(instance, len(snapshots), check.device)
    attached: dict[str, tuple[str, str]] = {}
    for (volume_id, snapshot_id), device in zip(snapshots.items(), devices):
        new = sandbox.create_volume(snapshot_id, zone)
        job.log(f"volume {new} from {snapshot_id} ({volume_id}) in {zone}")
        sandbox.attach_volume(new, instance_id, device)
        attached[new] = (device, volume_id)
    result.healthy_at = time.monotonic()
    described = sandbox.ec2.describe_volumes(VolumeIds=list(attached))["Volumes"]
    wrong = [v["VolumeId"] for v in described
             if not any(a["InstanceId"] == instance_id and a["State"] == "attached" and
                        a["Device"] == attached[v["VolumeId"]][0] for a in v.get("Attachments", []))]
    result.facts.update({"instance": instance_id, "availability_zone": zone,
                         "volumes": {new: {"device": device, "from_volume": volume, "snapshot": snapshots[volume]}
                                     for new, (device, volume) in attached.items()}})
    if wrong:
        result.passed, result.detail = False, f"not attached as asked: {', '.join(wrong)}"
        return
    for new in attached:
        sandbox.detach_volume(new)
    listing = ", ".join(f"{new} as {device}" for new, (device, _) in attached.items())
    result.passed = True
    result.detail = f"{len(attached)} volume(s) attached to {instance_id} in {zone}: {listing}"


def _instance(job: Any, sandbox: Any, check: InstanceCheck, snapshots: dict[str, str],
              result: Ec2CheckResult) -> None:
    root_volume = check.root_volume or next(iter(snapshots))
    others = [volume for volume in snapshots if volume != root_volume]
    letters = "bcdefghijklmnop"
    extra = [(f"/dev/sd{letters[index]}", snapshots[volume]) for index, volume in enumerate(others)]
    image = sandbox.register_image(snapshots[root_volume], architecture=check.architecture, boot_mode=check.boot_mode,
                                   ena=check.ena, root_device=check.root_device, extra=extra,
                                   description=f"safehold restore test of {result.facts['sandbox']}")
    job.log(f"AMI {image} from {snapshots[root_volume]} ({root_volume}) with {len(extra)} more volume(s)")
    instance = sandbox.run_instance(image, instance_type=check.instance_type, subnet=check.subnet,
                                    security_groups=check.security_groups, key_name=check.key_name)
    result.healthy_at = time.monotonic()
    devices = sorted(m["DeviceName"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m)
    expected = sorted([check.root_device, *[device for device, _ in extra]])
    result.facts.update({"image": image, "instance": instance["InstanceId"], "state": instance["State"]["Name"],
                         "devices": devices, "root_volume": root_volume,
                         "availability_zone": instance.get("Placement", {}).get("AvailabilityZone")})
    job.log(f"instance {instance['InstanceId']} of {image} is {instance['State']['Name']}")
    if instance["State"]["Name"] != "running" or devices != expected:
        result.passed = False
        result.detail = (f"instance {instance['InstanceId']} is {instance['State']['Name']} with devices "
                         f"{', '.join(devices) or 'none'}, expected running with {', '.join(expected)}")
        return
    result.passed = True
    result.detail = (f"instance {instance['InstanceId']} of AMI {image} running in "
                     f"{result.facts['availability_zone']} with {', '.join(devices)}")


def describe(check: AttachCheck | InstanceCheck) -> str:
    if isinstance(check, AttachCheck):
        return f"attach the volumes to {check.instance}"
    return f"run an instance ({check.instance_type}) from an AMI of the snapshots"


__all__ = ["Ec2CheckResult", "describe", "owner_gone", "owner_tag", "plan_problems", "remove_leftovers",
           "run_ec2_check", "snapshots_in"]
