"""VMware jobs beyond backup and restore (``engine.restore`` restores VM disks to vSphere):
listing the VMs a target selects."""

from __future__ import annotations

from .. import errors
from .context import Context


def _vmware_source(context: Context, target_name: str):
    from ..sources.vmware import VmwareSource

    target = context.config.target(target_name)
    if target.source.type != "vmware":
        raise errors.UsageError(f"target {target_name!r} is a {target.source.type} target, not vmware")
    return VmwareSource(**target.source.model_dump(exclude={"type"}))


def list_target_vms(context: Context, target_name: str) -> list[dict]:
    """The VMs a vmware target selects right now (name, id, power state, CBT, tools)."""
    return _vmware_source(context, target_name).list_vms()
