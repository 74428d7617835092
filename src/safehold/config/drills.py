"""Disaster-recovery drills: ``Drill`` (a named plan for one scenario) and its ``DrillStep``s.

A drill restores several targets in dependency order (``after``: the database before the
application) into a sandbox, runs each step's health check (the ``HealthCheck`` models of restore
tests, so ``boot`` boots restored VM disks), and measures each target's actual recovery time
against its RTO and the age of the restored point against its RPO. ``safehold drill plan`` shows
what a drill would do, ``safehold drill run`` runs it (``engine.drill``).

Cross-file rules (a step names a configured target, ``after`` names steps of the same drill and
forms no cycle, a ``boot`` check needs a bootable source) are checked by ``drill_problems`` on the
raw data, so the loader reports them with their line like any other problem.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails

from safehold.config.common import _check_kind, _invalid, _Model, _problem, _resolve_path
from safehold.config.fields import Duration
from safehold.config.restore_test import (
    BOOTABLE_SOURCES,
    EC2_CHECK_SOURCES,
    HEALTH_CHECK_TYPES,
    HealthCheck,
    bootable_sources_text,
    check_libvirt_uri,
    not_bootable_advice,
)
from safehold.config.targets import TARGET_NAME_PATTERN

__all__ = ["DRILL_SCENARIOS", "SCENARIO_RUNBOOKS", "Drill", "DrillDestination", "DrillStep", "drill_problems",
           "scenario_runbook", "topological_order"]

#: Sources whose VM snapshots a drill into an AWS region brings up as new EC2 instances (restore --to-ec2).
VM_TO_EC2_SOURCES = ("libvirt", "image", "vmware", "hyperv")
#: The seed's three disasters; each has a runbook at runbooks/<runbook>.md.
DRILL_SCENARIOS = ("on_prem_host_failure", "aws_region_failure", "data_corruption")
#: The runbook (under runbooks/) of each scenario, as the seed's README links them.
SCENARIO_RUNBOOKS = {
    "on_prem_host_failure": "on_prem_host_failure.md",
    "aws_region_failure": "aws_region_failure.md",
    "data_corruption": "data_corruption_recovery.md",
}


class DrillDestination(_Model):
    """Where a drill restores: a sandbox on this host, optionally on another libvirt hypervisor or folder."""

    type: Literal["sandbox", "aws"] = Field(
        "sandbox",
        description=(
            "Destination kind. 'sandbox': a fresh folder on this host, removed afterwards; VM disks are booted "
            "in sandbox domains (new names, no network, no production MACs) that are destroyed and undefined. "
            "'aws': the DR region named by 'region': ebs targets come back from their DR-region copies of the "
            "EBS snapshots as volumes (attach checks) or an AMI and an instance (instance checks), and VMs "
            "(libvirt, image, vmware, hyperv; instance checks) as new instances from the repository (as restore "
            "--to-ec2 does); everything made is removed afterwards."
        ),
        examples=["sandbox", "aws"],
    )
    region: str | None = Field(
        None,
        description="type aws: the region the drill recovers into; each ebs target needs a dr_copies entry for it.",
        examples=["us-west-2"],
    )
    instance: str | None = Field(
        None,
        description="type aws: the instance in that region that attach checks attach the volumes to (the "
        "check's own instance lives in the lost region).",
        examples=["i-0123456789abcdef0"],
    )
    directory: str | None = Field(
        None,
        description=(
            "Folder under which the drill's sandboxes are made (another disk or storage pool standing for the "
            "surviving host). Default: the restore tests' sandbox_dir. Relative paths are relative to this file."
        ),
        examples=["/srv/dr"],
    )
    uri: str | None = Field(
        None,
        description=(
            "libvirt URI of the hypervisor that boots the restored VMs of boot steps (it must see the folder "
            "above). Default: each check's own uri, else the target's, else qemu:///system."
        ),
        examples=["qemu:///system"],
    )

    @field_validator("directory")
    @classmethod
    def _check_directory(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise _invalid("directory is empty; name a folder on this host, e.g. /srv/dr")
        return _resolve_path(value, info)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        return check_libvirt_uri(value)

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", value):
            raise _invalid(f"{value!r} is not an AWS region name; expected e.g. us-west-2")
        return value

    @field_validator("instance")
    @classmethod
    def _check_instance(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"i-[0-9a-f]{8,17}", value):
            raise _invalid(f"{value!r} is not an EC2 instance id; expected e.g. i-0123456789abcdef0")
        return value

    @model_validator(mode="after")
    def _region_for_aws(self) -> DrillDestination:
        if self.type == "aws" and self.region is None:
            raise _invalid("restore_to type aws needs 'region': the DR region the drill recovers into, e.g. us-west-2")
        if self.type != "aws" and (self.region is not None or self.instance is not None):
            given = "region" if self.region is not None else "instance"
            raise _invalid(f"{given} is for restore_to type aws; remove it, or set type: aws")
        return self


class DrillStep(_Model):
    """One target restored by a drill, after the steps it depends on."""

    target: str = Field(min_length=1, description="Name of a configured target.", examples=["db-vm"])
    after: list[str] = Field(
        default_factory=list,
        description="Targets of this drill that must be healthy before this one starts (the database first).",
        examples=[["db-vm"]],
    )
    check: HealthCheck | None = Field(
        None,
        description=(
            "Health check run on the restored data (the kinds of restore_test.health_check). Default: the "
            "target's restore_test.health_check; without either the step passes when every byte restored and "
            "verified."
        ),
        examples=[{"type": "boot", "console": ["login:"]}],
    )
    rto: Duration | None = Field(
        None,
        description="Recovery time objective of this step, measured from the drill's start. Default: the tier's RTO.",
        examples=["1h"],
    )
    recover_to: str | dict[str, Any] | None = Field(
        None,
        description=(
            "Where 'safehold drill run NAME --for-real' recovers this target in a real disaster (production, "
            "nothing removed afterwards): a folder (files) or image path, or a destination as 'safehold restore' "
            "takes it, e.g. {kind: libvirt, images_dir: ..., define: NAME} or {kind: postgres, to_dsn: ...}. "
            "Sandbox drills ignore it; --for-real refuses a drill with a step without it."
        ),
        examples=["/srv/recovered/app", {"kind": "libvirt", "images_dir": "/var/lib/libvirt/images",
                                         "define": "db-vm"}],
    )

    @field_validator("recover_to")
    @classmethod
    def _check_recover_to(cls, value: str | dict[str, Any] | None, info: ValidationInfo) -> str | dict[str, Any] | None:
        if value is None:
            return None
        if isinstance(value, str):
            if not value.strip():
                raise _invalid("recover_to is empty; name a folder or image path, or a destination mapping")
            return _resolve_path(value, info)
        from pydantic import ValidationError

        from safehold.restore.options import parse_options

        try:
            parse_options(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise _invalid(f"recover_to is not a restore destination ({where + ': ' if where else ''}{first['msg']}); e.g. "
                           "{kind: libvirt, images_dir: /var/lib/libvirt/images, define: db-vm}") from None
        return value

    @field_validator("after", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("check", mode="before")
    @classmethod
    def _check_kind(cls, value: object) -> object:
        return _check_kind(value, what="health check", supported=HEALTH_CHECK_TYPES)


class Drill(_Model):
    """A rehearsed disaster: which targets are restored, where, in what order, checked how, against which RTO."""

    name: str = Field(
        pattern=TARGET_NAME_PATTERN,
        description="Unique name of the drill ('safehold drill run NAME').",
        examples=["kvm-01-lost"],
    )
    scenario: Literal["on_prem_host_failure", "aws_region_failure", "data_corruption"] = Field(
        description=(
            "The disaster rehearsed; each has its runbook in runbooks/ (on_prem_host_failure.md, "
            "aws_region_failure.md, data_corruption_recovery.md)."
        ),
        examples=["on_prem_host_failure"],
    )
    description: str | None = Field(None, description="What the drill proves, for the report.",
                                    examples=["kvm-01 is lost: database and web server come back on kvm-02"])
    restore_to: DrillDestination = Field(
        default_factory=DrillDestination,
        description="Where the steps restore (default: a sandbox on this host).",
        examples=[{"type": "sandbox", "directory": "/srv/dr", "uri": "qemu:///system"}],
    )
    every: Duration | None = Field(
        None,
        description=(
            "Run the drill this often from the scheduler ('safehold serve', 'safehold scheduler run'), one drill "
            "at a time. Default: only when asked ('safehold drill run NAME' or the API)."
        ),
        examples=["30d"],
    )
    before: datetime | None = Field(
        None,
        description=(
            "Restore the newest snapshot taken before this time instead of the newest one (data_corruption: the "
            "moment the damage began). ISO 8601; without a zone it is UTC. It is also the 'time of the disaster' "
            "the achieved RPO is measured from."
        ),
        examples=["2026-12-01T00:00:00Z"],
    )
    repository: str | None = Field(
        None,
        description=(
            "Restore from this copy (a name under 'copies:') instead of the configured repository: the "
            "aws_region_failure drill restores from the copy in the DR region, as a real recovery would. "
            "'safehold drill plan/run --repository NAME' overrides it."
        ),
        examples=["offsite"],
    )
    snapshot: Literal["latest", "latest-clean"] = Field(
        "latest",
        description=(
            "Which snapshot of each target is restored (of those before 'before', if set): 'latest', or "
            "'latest-clean', the newest judged clean by the ransomware signals (docs/ransomware.md)."
        ),
        examples=["latest-clean"],
    )
    steps: list[DrillStep] = Field(min_length=1, description="The targets restored, each at most once.",
                                   examples=[[{"target": "db"}, {"target": "web", "after": ["db"]}]])
    parallel: int = Field(
        1, ge=1, le=16,
        description=(
            "How many steps of one wave (steps whose 'after' are all done) run at the same time. 1 (the "
            "default): one after the other, so each step's ART is measured without the others competing for "
            "the CPU, disks and repository; more recovers faster when the destinations and the repository "
            "can take it, as in a real recovery of several hosts. With scheduler.executor: procrastinate each "
            "step runs on a worker of its target's queue, up to this many at once."
        ),
        examples=[4],
    )

    @field_validator("before")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    def step(self, target: str) -> DrillStep:
        return next(step for step in self.steps if step.target == target)


def topological_order(drill: Drill) -> list[list[str]] | None:
    """The steps' targets in waves: every step of a wave depends only on earlier waves. None on a cycle."""
    pending = {step.target: set(step.after) for step in drill.steps}
    waves: list[list[str]] = []
    done: set[str] = set()
    while pending:
        ready = sorted(name for name, needs in pending.items() if needs <= done)
        if not ready:
            return None
        waves.append(ready)
        done.update(ready)
        for name in ready:
            del pending[name]
    return waves


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for needed in edges.get(node, []):
            if state.get(needed) == 1:
                return path[path.index(needed):] + [needed]
            if needed in edges and state.get(needed) is None:
                found = visit(needed)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in edges:
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def drill_problems(data: dict[str, Any]) -> list[InitErrorDetails]:
    """Cross-file problems of ``drills:``: duplicate names, unknown targets, bad or cyclic ``after``,
    boot checks of sources that cannot boot."""
    drills = data.get("drills")
    if not isinstance(drills, list):
        return []
    targets = data.get("targets") if isinstance(data.get("targets"), list) else []
    kinds: dict[str, object] = {}
    for target in targets:
        if isinstance(target, dict) and isinstance(target.get("name"), str):
            source = target.get("source")
            kinds[target["name"]] = source.get("type") if isinstance(source, dict) else None
    known = ", ".join(sorted(kinds)) or "(none)"
    problems: list[InitErrorDetails] = []
    seen: dict[str, int] = {}
    for index, drill in enumerate(drills):
        if not isinstance(drill, dict):
            continue
        name = drill.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(_problem(("drills", index, "name"), f"duplicate drill name {name!r}: "
                                         f"drills[{seen[name]}] has it too; names must be unique", name))
            else:
                seen[name] = index
        repository = drill.get("repository")
        if isinstance(repository, str):
            copies = [copy.get("name") for copy in data.get("copies") or [] if isinstance(copy, dict)] \
                if isinstance(data.get("copies"), list) else []
            if repository not in copies:
                problems.append(_problem(("drills", index, "repository"),
                                         f"repository {repository!r} is not a copy under 'copies:' (configured: "
                                         f"{', '.join(str(name) for name in copies) or '(none)'})", repository))
        steps = drill.get("steps")
        if not isinstance(steps, list):
            continue
        first: dict[str, int] = {}
        edges: dict[str, list[str]] = {}
        for position, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("target"), str):
                continue
            target = step["target"]
            if target in first:
                problems.append(_problem(("drills", index, "steps", position, "target"),
                                         f"target {target!r} appears twice in this drill (also steps[{first[target]}]); "
                                         "restore each target once", target))
            first.setdefault(target, position)
            if target not in kinds:
                problems.append(_problem(("drills", index, "steps", position, "target"),
                                         f"unknown target {target!r}; configured targets: {known}", target))
            check = step.get("check")
            restore_to = drill.get("restore_to")
            into_aws = isinstance(restore_to, dict) and restore_to.get("type") == "aws"
            vm_to_ec2 = into_aws and kinds.get(target) in VM_TO_EC2_SOURCES
            if vm_to_ec2:
                if not isinstance(check, dict) or check.get("type") != "instance":
                    problems.append(_problem(
                        ("drills", index, "steps", position, "check"),
                        f"a drill into an AWS region brings the VM of target {target!r} up as an EC2 instance "
                        "(restore --to-ec2); give this step check: {type: instance}", target))
            elif isinstance(check, dict) and check.get("type") in ("attach", "instance"):
                from safehold.config.models import ec2_check_problems

                configured = next((t for t in targets if isinstance(t, dict) and t.get("name") == target), None)
                if configured is not None:
                    problems += ec2_check_problems(("drills", index, "steps", position, "check"), check, configured)
            if into_aws and isinstance(kinds.get(target), str) and not vm_to_ec2 \
                    and kinds[target] not in EC2_CHECK_SOURCES:
                problems.append(_problem(
                    ("drills", index, "steps", position, "target"),
                    f"a drill into an AWS region restores ebs targets from their DR-region copies and VMs "
                    f"({', '.join(VM_TO_EC2_SOURCES)}) as new instances; target {target!r} has source "
                    f"{kinds[target]!r}: restore it in a drill with a sandbox destination", target))
            if isinstance(check, dict) and check.get("type") == "boot" and isinstance(kinds.get(target), str) \
                    and kinds[target] not in BOOTABLE_SOURCES:
                problems.append(_problem(
                    ("drills", index, "steps", position, "check", "type"),
                    f"health check type 'boot' boots the restored disks of {bootable_sources_text()} targets; "
                    f"target {target!r} has source {kinds[target]!r}: {not_bootable_advice(kinds[target])}",
                    "boot"))
            after = step.get("after")
            after = [after] if isinstance(after, str) else after
            edges[target] = [item for item in after if isinstance(item, str)] if isinstance(after, list) else []
        for position, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("target"), str):
                continue
            for needed in edges.get(step["target"], []):
                if needed == step["target"]:
                    problems.append(_problem(("drills", index, "steps", position, "after"),
                                             f"step {needed!r} cannot come after itself; remove it from 'after'", needed))
                elif needed not in first:
                    steps_named = ", ".join(first) or "(none)"
                    problems.append(_problem(("drills", index, "steps", position, "after"),
                                             f"{needed!r} is not a step of this drill; 'after' names targets of "
                                             f"the same drill: {steps_named}", needed))
        acyclic = {node: [n for n in needs if n != node and n in first] for node, needs in edges.items()}
        cycle = _find_cycle(acyclic)
        if cycle:
            position = first[cycle[0]]
            problems.append(_problem(("drills", index, "steps", position, "after"),
                                     f"the 'after' dependencies form a cycle: {' -> '.join(cycle)}; "
                                     "a step can only wait for steps that do not wait for it", cycle[0]))
    return problems


def scenario_runbook(scenario: str) -> str:
    return f"runbooks/{SCENARIO_RUNBOOKS[scenario]}"

