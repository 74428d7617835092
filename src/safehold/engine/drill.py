"""Disaster-recovery drills: plan and run a ``drills:`` entry of targets.yml, and prove it with a report.

``plan_drill`` writes nothing: per step the snapshot it would restore (the newest, or the newest
before the drill's ``before``) and its age, the check, the RTO and RPO, how a boot step's sandbox
would boot; everything missing (a target without a snapshot, a kernel that is not there, a source
kind drills cannot restore yet) is listed in ``problems`` rather than raised one at a time.

``run_drill`` records one job of kind ``drill`` and runs the steps in dependency order (waves of
``after``), each through the restore tests' seam (``engine.restore.restore_in_job`` into a fresh
sandbox folder, ``engine.boot_check`` for boot steps), and removes every sandbox whatever happens.
The disaster is declared when the drill starts: a step's actual recovery time (ART) runs from
the drill's start to its healthy check (to the sign of life for boot steps), so later waves
carry the time of the earlier ones, as in a real recovery; its achieved RPO is the age of the
restored snapshot at the drill's start (at ``before`` when the drill names the moment of the
disaster). The job's details hold the whole evidence (no new table); ``write_report`` renders it
as JSON, Markdown and a self-contained HTML page.

A postgres step restores into a throwaway cluster (or the target's ``restore_test.server``) and
runs a ``sql`` check there, as restore tests do. By default steps run one after the other (a
wave's steps too): restores compete for the same cores and repository, and a sequential drill
measures each step's ART without the others. ``parallel: N`` runs up to N ready steps of a wave
at once on threads (``_run_wave_in_parallel``), each with its own view of the job (``_StepJob``)
so that their details never mix; the ARTs then include the competition, as in a real recovery.

With ``scheduler.executor: procrastinate`` a sandbox drill's steps run on the queue's workers
instead, each as a ``drill-step`` job on its target's queue (``engine.drill_workers``); the
report is the same, with each step's worker and attempt.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..config.drills import VM_TO_EC2_SOURCES, Drill, scenario_runbook, topological_order
from ..config.models import AttachCheck, BootCheck, InstanceCheck
from . import drill_workers
from .context import Context

#: Sources a drill step cannot restore in this slice (they need their own sandbox kind).
UNSUPPORTED_SOURCES: dict[str, str] = {}


@dataclass
class StepPlan:
    target: str
    source: str
    tier: int
    after: list[str]
    wave: int
    check: str
    rto_seconds: float
    rpo_objective_seconds: float
    snapshot_id: str | None = None
    snapshot_time: str | None = None
    snapshot_age_seconds: float | None = None
    rpo_met: bool | None = None
    boot_from: str | None = None
    ec2_region: str | None = None  # attach and instance checks: the region the EBS snapshots come up in
    recover_to: str | None = None  # --for-real: the production destination, described
    problems: list[str] = field(default_factory=list)


@dataclass
class DrillPlan:
    drill: str
    scenario: str
    runbook: str
    description: str | None
    reference_time: str  # the moment the achieved RPO is measured from
    before: str | None
    sandbox_directory: str
    waves: list[list[str]]
    steps: list[StepPlan]
    repository: str | None = None  # the copy restored from (copies:), None: the configured repository
    for_real: bool = False

    @property
    def problems(self) -> list[str]:
        return [f"{step.target}: {problem}" for step in self.steps for problem in step.problems]

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["problems"] = self.problems
        document["ready"] = not self.problems
        return document


def _check_of(drill: Drill, target: Any, step: Any) -> Any:
    if step.check is not None:
        check = step.check
    else:
        check = target.restore_test.health_check if target.restore_test else None
    if isinstance(check, BootCheck) and drill.restore_to.uri:
        check = check.model_copy(update={"uri": drill.restore_to.uri})
    if isinstance(check, AttachCheck) and drill.restore_to.instance:
        check = check.model_copy(update={"instance": drill.restore_to.instance})  # the check's is in the lost region
    return check


def drill_sandbox_root(context: Context, drill: Drill) -> Path:
    from .restore_test import sandbox_root

    return Path(drill.restore_to.directory) if drill.restore_to.directory else sandbox_root(context)


def drill_context(context: Context, drill: Drill, repository: str | None = None) -> Context:
    """The context a drill restores through: on the copy ``repository`` (else the drill's own
    ``repository:``) when one is named, so that a region-failure drill reads the DR region's copy.
    Raises CopyNotFound."""
    return context.with_repository(repository or drill.repository or context.repository_name)


def plan_drill(context: Context, name: str, *, now: dt.datetime | None = None,
               repository: str | None = None, for_real: bool = False) -> DrillPlan:
    """What ``safehold drill run NAME`` would do; writes nothing. Raises DrillNotFound, and
    CopyNotFound for a ``repository`` (a copy's name) 'copies:' does not have.

    ``for_real``: what ``--for-real`` would do: each step restores to its ``recover_to`` (a step
    without one is a problem) and boot checks are not planned (production is not booted here).
    """
    from ..repository.forgotten import live_snapshots
    from . import boot_check
    from .restore_test import describe, sandbox_destination

    drill = context.config.drill(name)
    context = drill_context(context, drill, repository)
    now = now or dt.datetime.now(dt.timezone.utc)
    reference = drill.before or now
    waves = topological_order(drill)
    if waves is None:  # the loader refuses cycles; a Config built in code may not
        raise errors.DrillNotReady(name=name, detail="the steps' 'after' dependencies form a cycle")
    wave_of = {target: number for number, wave in enumerate(waves) for target in wave}
    repository = context.open_repository(load_index=False)
    steps = []
    for step in drill.steps:
        target = context.config.target(step.target)
        tier = context.config.tier_of(target)
        check = _check_of(drill, target, step)
        plan = StepPlan(target.name, target.source.type, target.tier, list(step.after), wave_of[target.name],
                        describe(check), (step.rto or tier.rto).total_seconds(), tier.rpo.total_seconds())
        steps.append(plan)
        if for_real:
            spec = step.recover_to
            if spec is None:
                plan.problems.append("no recover_to: --for-real does not know where production is (add "
                                     "'recover_to:' to the step in targets.yml)")
            else:
                plan.recover_to = _describe_destination(spec)
        if target.source.type in UNSUPPORTED_SOURCES:
            plan.problems.append(UNSUPPORTED_SOURCES[target.source.type])
            continue
        try:
            sandbox_destination(target, Path("/nonexistent"))
        except errors.SafeholdError as exc:
            plan.problems.append(f"no sandbox destination for source {target.source.type!r}: {exc.message}")
            continue
        candidates = [snapshot for snapshot in live_snapshots(repository, target.name)
                      if drill.before is None or snapshot.time < drill.before]
        if not candidates:
            when = f" taken before {drill.before.isoformat()}" if drill.before else ""
            plan.problems.append(f"no snapshot{when}: back it up ('safehold backup --target {target.name}')")
            continue
        snapshot = candidates[-1]
        if drill.snapshot == "latest-clean":
            from ..repository.marks import latest_clean, load_records

            clean = latest_clean(candidates, load_records(repository))
            if clean is None:
                plan.problems.append(f"no snapshot judged clean ('safehold snapshots --target {target.name}' shows "
                                     "the verdicts; 'safehold mark ID clean' records one)")
                continue
            snapshot = clean
        age = (reference - snapshot.time).total_seconds()
        plan.snapshot_id, plan.snapshot_time = snapshot.id, snapshot.time.isoformat()
        plan.snapshot_age_seconds = round(age, 3)
        plan.rpo_met = age <= plan.rpo_objective_seconds
        ec2_check = isinstance(check, (AttachCheck, InstanceCheck))
        if drill.restore_to.type == "aws" and not ec2_check:
            plan.problems.append(f"a drill into {drill.restore_to.region} brings ebs targets up with an attach or "
                                 "instance check; give this step one (check: {type: instance})")
        elif ec2_check and drill.restore_to.type == "aws" and target.source.type in VM_TO_EC2_SOURCES:
            plan.ec2_region = drill.restore_to.region
            if snapshot.kind == "files":
                plan.problems.append(f"snapshot {snapshot.id[:8]} holds no disk image to launch in EC2")
        elif ec2_check:
            from .ec2_check import plan_problems

            region = drill.restore_to.region or target.source.region
            plan.ec2_region = region
            plan.problems += plan_problems(check, dict(snapshot.source or {}), region, drill.restore_to.instance)
        elif (snapshot.source or {}).get("blocks_copied") is False:
            plan.problems.append(f"snapshot {snapshot.id[:8]} holds no data in the repository (copy_blocks: false)")
        if isinstance(check, BootCheck) and not for_real:
            try:
                plan.boot_from = boot_check.plan_boot(target, check, dict(snapshot.source or {})).source
            except errors.SafeholdError as exc:
                plan.problems.append(f"the sandbox cannot boot: {exc.message}")
    return DrillPlan(drill.name, drill.scenario, scenario_runbook(drill.scenario), drill.description,
                     reference.isoformat(), drill.before.isoformat() if drill.before else None,
                     str(drill_sandbox_root(context, drill)), waves, steps,
                     repository=context.repository_name, for_real=for_real)


def _describe_destination(spec: str | dict[str, Any]) -> str:
    from .restore import describe as describe_spec

    return spec if isinstance(spec, str) else describe_spec(dict(spec))


# --- running -------------------------------------------------------------------------------------


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class DrillResult:
    passed: bool
    job_id: int
    report_dir: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.evidence, report_dir=self.report_dir)


def default_report_dir(context: Context, name: str, job_id: int) -> Path:
    return Path(context.config.state_dir) / "drills" / f"{name}-job{job_id}"


def run_drill(context: Context, name: str, *, report_dir: str | Path | None = None,
              job_id: int | None = None, repository: str | None = None, for_real: bool = False) -> DrillResult:
    """Run drill ``name`` in sandboxes, record a 'drill' job, write the evidence report.

    ``for_real``: a real recovery (``--for-real``; the caller has had it confirmed): each step
    restores to its ``recover_to`` in production and nothing it restored is removed; file checks
    run on what was restored at a path, other checks (boot, sql, a platform destination) are not
    run on production and the step passes on its verified restore. The job's details and the
    report say ``for_real: true``.

    Raises DrillNotFound, DrillNotReady (the plan lists problems: nothing was restored) and
    DrillFailed (a step failed its check, missed its RTO or was skipped; the report is written
    first and the job recorded failed with the same evidence). With ``job_id`` it runs as that
    queued job (``engine.jobs``: the scheduler, the API), which the caller has claimed.
    """
    plan = plan_drill(context, name, repository=repository, for_real=for_real)
    if plan.problems:
        raise errors.DrillNotReady(name=name, detail="; ".join(plan.problems))
    drill = context.config.drill(name)
    context = drill_context(context, drill, repository)
    wall_start, started = time.time(), time.monotonic()
    # The disaster is declared now: RPOs are measured from here (or from 'before').
    reference = drill.before or dt.datetime.fromtimestamp(wall_start, dt.timezone.utc)
    root = drill_sandbox_root(context, drill)
    root.mkdir(parents=True, exist_ok=True)
    job_details = {"drill": name, "scenario": drill.scenario, "for_real": for_real}
    if context.repository_name is not None:
        job_details["repository"] = context.repository_name
    with context.catalog.job("drill", None, job_details, job_id=job_id) as job:
        job.log(f"drill {name} ({drill.scenario}): {len(plan.steps)} step(s) in {len(plan.waves)} wave(s), "
                + ("FOR REAL: into the production destinations of recover_to" if for_real
                   else f"sandboxes under {root}"))
        leftovers = _remove_leftovers(context, drill, root)
        for removed in leftovers:
            job.log(f"removed the leftover of a run that ended: {removed}", level="warning")
        outcomes: dict[str, dict[str, Any]] = {}
        run = _run_step_for_real if for_real else _run_step
        dispatcher = None
        if drill_workers.on_workers(context, for_real):  # scheduler.executor: procrastinate
            dispatcher = drill_workers.StepDispatcher(context, job, drill, wall_start=wall_start, started=started,
                                                      reference=reference, repository=context.repository_name)
            job.log("steps run on the queue's workers (scheduler.executor: procrastinate)")
        try:
            _run_waves(context, job, drill, plan, outcomes, run, dispatcher, root, started, wall_start, reference)
        finally:
            if dispatcher is not None:
                dispatcher.close()
        ended = time.time()
        steps = [outcomes[step.target] for step in plan.steps]
        passed = all(step["outcome"] == "passed" and step["rto_met"] for step in steps)
        evidence = {
            "format": "safehold-drill-report/1",
            "drill": name, "scenario": drill.scenario, "runbook": plan.runbook, "description": drill.description,
            "job_id": job.id, "started": _iso(wall_start), "ended": _iso(ended),
            "duration_seconds": round(ended - wall_start, 3), "reference_time": reference.isoformat(),
            "before": plan.before, "sandbox_directory": str(root), "repository": plan.repository,
            "waves": plan.waves, "passed": passed, "for_real": for_real,
            "steps": steps,
            "created": [item for step in steps for item in step["created"]],
            "removed": [item for step in steps for item in step["removed"]],
            # What a real recovery restored is meant to stay: it is production now, not a leftover.
            "left_behind": [item for step in steps for item in step["created"]
                            if item not in step["removed"] and item["kind"] != PRODUCTION_KIND],
            "leftovers_removed": leftovers,
        }
        job.details.update(evidence)
        folder = Path(report_dir) if report_dir else default_report_dir(context, name, job.id)
        written = write_report(evidence, folder)
        job.details["report"] = {kind: str(path) for kind, path in written.items()}
        job.log(f"evidence report in {folder}")
        if not passed:
            bad = [f"{step['target']} {step['outcome']}" + (" (RTO missed)" if step["outcome"] == "passed" else "")
                   # A step lost on the way to or on a worker says why in the one line too.
                   + (f" ({step['detail'].removeprefix('DrillStepLost: ')})"
                      if str(step.get("detail", "")).startswith("DrillStepLost") else "")
                   for step in steps if step["outcome"] != "passed" or not step["rto_met"]]
            raise errors.DrillFailed(name=name, detail=", ".join(bad), report=str(folder), job_id=job.id)
        return DrillResult(passed, job.id, str(folder), evidence)


def _run_waves(context: Context, job: Any, drill: Drill, plan: DrillPlan, outcomes: dict[str, dict[str, Any]],
               run: Any, dispatcher: Any, root: Path, started: float, wall_start: float,
               reference: dt.datetime) -> None:
    """Every wave in order; a step whose ``after`` did not pass is skipped. Steps run on the queue's
    workers (``dispatcher``), on threads (``parallel``), or one after the other here."""
    for wave in plan.waves:
        ready = []
        for target_name in wave:
            step_plan = next(step for step in plan.steps if step.target == target_name)
            failed_before = [needed for needed in step_plan.after if outcomes[needed]["outcome"] != "passed"]
            if failed_before:
                outcomes[target_name] = _skipped(step_plan, failed_before)
                job.log(f"{target_name}: skipped, it needs {', '.join(failed_before)}", level="error")
            else:
                ready.append(step_plan)
        if dispatcher is not None:
            outcomes.update(dispatcher.run_wave(ready))
        elif drill.parallel > 1 and len(ready) > 1:
            outcomes.update(_run_wave_in_parallel(context, job, drill, ready, run, root, started, wall_start,
                                                  reference))
        else:
            for step_plan in ready:
                outcomes[step_plan.target] = run(context, job, drill, step_plan, root, started, wall_start,
                                                 reference)


class _StepJob:
    """The drill job as one step of a parallel wave sees it: log lines go to the drill job (the
    catalog takes them from several threads) prefixed by nothing more than the step already says;
    details (``boot`` facts, a restore's result) and progress stay the step's own, so steps never
    read or overwrite each other's. Progress counters are not summed into the drill job."""

    def __init__(self, job: Any) -> None:
        self.id = job.id
        self.catalog = job.catalog
        self._job = job
        self.details: dict[str, Any] = {}
        self.bytes_read = self.bytes_added = self.files = 0
        self.snapshot_id: str | None = None

    def log(self, message: str, level: str = "info") -> None:
        self._job.log(message, level)

    def update(self, *, bytes_read: int | None = None, bytes_added: int | None = None, files: int | None = None,
               snapshot_id: str | None = None) -> None:
        self.bytes_read = bytes_read if bytes_read is not None else self.bytes_read
        self.files = files if files is not None else self.files

    def flush(self) -> None:
        pass


def _run_wave_in_parallel(context: Context, job: Any, drill: Drill, ready: list[Any], run: Any, root: Path,
                          started: float, wall_start: float, reference: dt.datetime) -> dict[str, dict[str, Any]]:
    """The ready steps of one wave on up to ``drill.parallel`` threads; each keeps its own record."""
    from concurrent.futures import ThreadPoolExecutor

    job.log(f"running {', '.join(step.target for step in ready)} at the same time "
            f"(up to {drill.parallel} at once)")
    with ThreadPoolExecutor(max_workers=min(drill.parallel, len(ready)),
                            thread_name_prefix=f"drill-{drill.name}") as pool:
        futures = {step.target: pool.submit(run, context, _StepJob(job), drill, step, root, started, wall_start,
                                            reference) for step in ready}
        return {target: future.result() for target, future in futures.items()}


#: The kind of a resource a --for-real step restored (kept: it is the recovered production).
PRODUCTION_KIND = "recovered in production"


def _run_step_for_real(context: Context, job: Any, drill: Drill, step: Any, root: Path, started: float,
                       wall_start: float, reference: dt.datetime) -> dict[str, Any]:
    """One step of a real recovery: the restore to the step's ``recover_to``, kept; ART to its check."""
    from ..config.models import SqlCheck
    from .restore import restore_in_job
    from .restore_test import _log_restored, run_health_check

    target = context.config.target(step.target)
    spec = drill.step(step.target).recover_to
    check = _check_of(drill, target, drill.step(step.target))
    record = _step_record(step)
    record["for_real"] = True
    record["recover_to"] = step.recover_to
    step_start = time.monotonic()
    record["started"] = _iso(wall_start + (step_start - started))
    job.log(f"{target.name}: FOR REAL: restoring snapshot {step.snapshot_id[:8]} to {step.recover_to}")
    healthy_at: float | None = None
    try:
        outcome = restore_in_job(context, job, step.snapshot_id, spec, target=target.name)
        _log_restored(job, outcome)
        record["created"].append({"kind": PRODUCTION_KIND, "name": step.recover_to})
        if isinstance(spec, str) and not isinstance(check, (BootCheck, SqlCheck)):
            passed, detail = run_health_check(check, Path(spec), outcome.kind)
        else:
            passed, detail = True, (f"restored to {step.recover_to}, every byte verified; the check "
                                    f"({describe_check(check)}) runs in sandbox drills only, not on production")
        healthy_at = time.monotonic()
        record["outcome"] = "passed" if passed else "failed"
        record["detail"] = detail
    except errors.SafeholdError as exc:
        record["outcome"], record["detail"] = "error", f"{type(exc).__name__}: {exc.message}"
    return _finish_step(job, target, step, record, started, step_start, wall_start, healthy_at, reference)


def describe_check(check: Any) -> str:
    from .restore_test import describe

    return describe(check)


def _remove_leftovers(context: Context, drill: Drill, root: Path) -> list[str]:
    """What killed drills and restore tests left in this drill's sandbox folder and on the
    hypervisors of its boot steps (only runs that are over: never a live run's sandbox)."""
    from . import boot_check

    uris = set()
    for step in drill.steps:
        check = _check_of(drill, context.config.target(step.target), step)
        if isinstance(check, BootCheck):
            uris.add(boot_check.sandbox_uri(context.config.target(step.target), check))
    removed: list[str] = []
    for uri in sorted(uris):
        removed += boot_check.remove_leftovers(uri, root)
    return removed + boot_check.remove_leftover_folders(root)


def _step_record(step: Any) -> dict[str, Any]:
    return {"target": step.target, "source": step.source, "tier": step.tier, "after": step.after,
            "wave": step.wave, "check": step.check, "snapshot_id": step.snapshot_id,
            "snapshot_time": step.snapshot_time, "rto_seconds": step.rto_seconds,
            "rpo_objective_seconds": step.rpo_objective_seconds, "started": None, "ended": None,
            "outcome": "skipped", "detail": "", "art_seconds": None, "rto_met": False,
            "rpo_seconds": None, "rpo_met": None, "created": [], "removed": []}


def _skipped(step: Any, failed: list[str]) -> dict[str, Any]:
    record = _step_record(step)
    record["detail"] = f"not started: {', '.join(failed)} did not pass"
    return record


def _run_step(context: Context, job: Any, drill: Drill, step: Any, root: Path, started: float,
              wall_start: float, reference: dt.datetime) -> dict[str, Any]:
    from .boot_check import write_owner
    from .restore import restore_in_job
    from .restore_test import SANDBOX_PREFIX, _boot_test, _log_restored, remove_sandbox, run_health_check, \
        sandbox_destination

    target = context.config.target(step.target)
    check = _check_of(drill, target, drill.step(step.target))
    record = _step_record(step)
    step_start = time.monotonic()
    record["started"] = _iso(wall_start + (step_start - started))
    sandbox = Path(tempfile.mkdtemp(prefix=SANDBOX_PREFIX, dir=root))
    write_owner(sandbox, job.id)  # so that the next run removes it if this one is killed
    record["created"].append({"kind": "sandbox folder", "name": str(sandbox)})
    job.log(f"{target.name}: restoring snapshot {step.snapshot_id[:8]} into {sandbox}")
    healthy_at: float | None = None
    try:
        destination = sandbox / "restore"
        restore_to = sandbox_destination(target, destination)
        if isinstance(check, BootCheck):
            _, passed, detail, art = _boot_test(context, job, target, check, sandbox, restore_to, started,
                                                snapshot_ref=step.snapshot_id, root=root)
            facts = job.details.pop("boot", {})
            record["boot"] = facts
            if facts.get("sandbox_domain"):
                domain = {"kind": "sandbox domain", "name": f"{facts['sandbox_domain']} on {facts.get('sandbox_uri')}"}
                record["created"].append(domain)
                record["removed"].append(domain)  # boot_restored raises SandboxNotRemoved otherwise
            healthy_at = started + art
        elif isinstance(check, InstanceCheck) and target.source.type in VM_TO_EC2_SOURCES:
            passed, detail = _vm_to_ec2(context, job, target, check, step, record)
            healthy_at = record.pop("_healthy_at", None)
        elif isinstance(check, (AttachCheck, InstanceCheck)):
            from .restore_test import _ec2_test

            try:
                _, passed, detail, art = _ec2_test(context, job, target, check, started, snapshot_ref=step.snapshot_id,
                                                   region=step.ec2_region, instance=drill.restore_to.instance)
            finally:
                facts = job.details.pop("ec2", None)
                if facts:
                    record["ec2"] = facts
                    record["created"] += [{"kind": "EC2 " + item.split()[0], "name": item} for item in facts["created"]]
                    record["removed"] += [{"kind": "EC2 " + item.split()[0], "name": item} for item in facts["removed"]]
            healthy_at = started + art
        elif target.source.type == "postgres":
            from .postgres import restore_into_throwaway_cluster

            destination.mkdir()
            given = target.restore_test.server if target.restore_test is not None else None
            where = {"kind": "database server", "name": f"new databases on {given.dsn}"} if given else \
                {"kind": "throwaway PostgreSQL cluster", "name": f"initdb under a temporary folder (step {target.name})"}
            record["created"].append(where)
            try:
                _, passed, detail = restore_into_throwaway_cluster(
                    context, job, target, check,
                    lambda other, env: run_health_check(other, destination, "files", env=env),
                    snapshot_ref=step.snapshot_id)
            finally:
                record["removed"].append(where)  # stopped and removed (or dropped) whatever happened
            healthy_at = time.monotonic()
        else:
            outcome = restore_in_job(context, job, step.snapshot_id, restore_to, target=target.name)
            _log_restored(job, outcome)
            passed, detail = run_health_check(check, destination, "files" if isinstance(restore_to, dict)
                                              else outcome.kind)
            healthy_at = time.monotonic()
        record["outcome"] = "passed" if passed else "failed"
        record["detail"] = detail
    except errors.SafeholdError as exc:
        record["outcome"], record["detail"] = "error", f"{type(exc).__name__}: {exc.message}"
        if isinstance(exc, errors.Ec2SandboxNotRemoved):
            record["created"] += [{"kind": "EC2 resource", "name": f"{name.strip()} in {exc.fields.get('region')}"}
                                  for name in str(exc.fields.get("resources", "")).split(",")]
        if isinstance(exc, errors.SandboxNotRemoved):  # made, and still there: the report must say so
            record["created"].append({"kind": "sandbox domain",
                                      "name": f"{exc.fields.get('name')} on {exc.fields.get('uri')}"})
    finally:
        remove_sandbox(sandbox)
        if not sandbox.exists():
            record["removed"].append({"kind": "sandbox folder", "name": str(sandbox)})
    return _finish_step(job, target, step, record, started, step_start, wall_start, healthy_at, reference)


def _finish_step(job: Any, target: Any, step: Any, record: dict[str, Any], started: float, step_start: float,
                 wall_start: float, healthy_at: float | None, reference: dt.datetime) -> dict[str, Any]:
    """End time, ART (the drill's start to healthy), RTO and RPO verdicts of a step, logged."""
    ended = time.monotonic()
    record["ended"] = _iso(wall_start + (ended - started))
    art = (healthy_at if healthy_at is not None and record["outcome"] == "passed" else ended) - started
    record["art_seconds"] = round(art, 3)
    record["step_seconds"] = round(ended - step_start, 3)
    record["rto_met"] = record["outcome"] == "passed" and art <= step.rto_seconds
    snapshot_time = dt.datetime.fromisoformat(step.snapshot_time)
    record["rpo_seconds"] = round((reference - snapshot_time).total_seconds(), 3)
    record["rpo_met"] = record["rpo_seconds"] <= step.rpo_objective_seconds
    level = "info" if record["outcome"] == "passed" and record["rto_met"] else "error"
    job.log(f"{target.name}: {record['outcome']} ({record['detail']}); ART {art:.2f}s against an RTO of "
            f"{step.rto_seconds:.0f}s, RPO {record['rpo_seconds']:.0f}s against {step.rpo_objective_seconds:.0f}s",
            level=level)
    return record


def _vm_to_ec2(context: Context, job: Any, target: Any, check: InstanceCheck, step: Any,
               record: dict[str, Any]) -> tuple[bool, str]:
    """A VM step of a drill into an AWS region: the snapshot restored as a new EC2 instance (the
    ``ec2`` destination of ``restore --to-ec2``, everything tagged safehold:sandbox), healthy once
    it runs; then the instance, its AMI and EBS snapshots are removed."""
    from ..platforms.aws.ec2 import Resource, remove_resource
    from .restore import restore_in_job

    spec = {"kind": "ec2", "region": step.ec2_region, "instance_type": check.instance_type, "subnet": check.subnet,
            "security_groups": list(check.security_groups), "key_name": check.key_name,
            "architecture": check.architecture, "boot_mode": check.boot_mode, "ena": check.ena,
            "root_device": check.root_device, "timeout": check.timeout.total_seconds(), "sandbox": True}
    outcome = restore_in_job(context, job, step.snapshot_id, spec, target=target.name)
    record["_healthy_at"] = time.monotonic()
    details = outcome.details
    for warning in outcome.warnings:
        job.log(f"{target.name}: {warning}", level="warning")
    record["ec2"] = {"region": step.ec2_region, **details, "warnings": outcome.warnings}
    made = [Resource("instance", details["instance_id"], step.ec2_region),
            Resource("image", details["image_id"], step.ec2_region),
            *[Resource("snapshot", snapshot, step.ec2_region) for snapshot in details["snapshots"].values()]]
    ec2 = _aws_clients(context)("ec2", step.ec2_region)
    failed = []
    for resource in made:
        record["created"].append({"kind": "EC2 " + resource.kind, "name": resource.describe()})
        try:
            remove_resource(ec2, resource, check.timeout.total_seconds())
            record["removed"].append({"kind": "EC2 " + resource.kind, "name": resource.describe()})
        except Exception as exc:  # noqa: BLE001 - each is tried; what resists is reported and left to the next run
            failed.append(f"{resource.describe()} ({exc})")
    if failed:
        raise errors.Ec2SandboxNotRemoved(region=step.ec2_region, resources=", ".join(failed), tag="safehold:sandbox")
    running = details.get("state") == "running"
    disks = ", ".join(f"{disk} as {device}" for disk, device in details.get("disks", {}).items())
    return running, (f"instance {details['instance_id']} of AMI {details['image_id']} {details.get('state')} in "
                     f"{step.ec2_region} with {disks}")


def _aws_clients(context: Context) -> Any:
    from .ebs import aws_location, clients_for

    _, endpoint = aws_location(context, None) if any(t.source.type == "ebs" for t in context.config.targets) \
        else (None, None)
    return clients_for(context, endpoint)


# --- the evidence report -------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    from ..config.durations import format_duration

    whole = float(value)
    return f"{whole:.1f}s" if whole < 120 else f"{format_duration(dt.timedelta(seconds=round(whole)))}"


def _verdict(flag: Any) -> str:
    return "-" if flag is None else ("met" if flag else "MISSED")


def render_markdown(evidence: dict[str, Any]) -> str:
    """The report for people; every value from the configuration or a snapshot is shown as code or
    escaped table text, so it cannot add Markdown structure."""

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'") \
            .replace("<", "&lt;").replace(">", "&gt;")

    lines = [
        f"# Drill report: {cell(evidence['drill'])}",
        "",
        f"- Scenario: {cell(evidence['scenario'])} (runbook: {cell(evidence['runbook'])})",
        f"- Result: **{'PASSED' if evidence['passed'] else 'FAILED'}**",
        f"- Mode: {_mode(evidence)}",
        f"- Started: {cell(evidence['started'])}; ended: {cell(evidence['ended'])} "
        f"({_seconds(evidence['duration_seconds'])})",
        f"- RPO measured from: {cell(evidence['reference_time'])}",
        f"- Catalog job: {evidence['job_id']}",
    ]
    if evidence.get("description"):
        lines.append(f"- Description: {cell(evidence['description'])}")
    lines += ["", "## Steps", "",
              "| target | after | snapshot | started | ended | outcome | ART | RTO | RTO met | RPO | objective | RPO met |",
              "| --- | --- | --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for step in evidence["steps"]:
        lines.append("| " + " | ".join([
            cell(step["target"]), cell(", ".join(step["after"]) or "-"), cell((step["snapshot_id"] or "-")[:12]),
            cell(step["started"] or "-"), cell(step["ended"] or "-"), cell(step["outcome"]),
            _seconds(step["art_seconds"]), _seconds(step["rto_seconds"]), _verdict(step["rto_met"]),
            _seconds(step["rpo_seconds"]), _seconds(step["rpo_objective_seconds"]), _verdict(step["rpo_met"]),
        ]) + " |")
    lines += ["", "## Checks", ""]
    for step in evidence["steps"]:
        lines.append(f"- {cell(step['target'])}: {cell(step['check'])}: {cell(step['detail'])}")
    lines += ["", "## Resources created and removed", "", "| kind | name | removed |", "| --- | --- | --- |"]
    removed = {(item["kind"], item["name"]) for item in evidence["removed"]}
    for item in evidence["created"]:
        lines.append(f"| {cell(item['kind'])} | {cell(item['name'])} | "
                     f"{_removed_word(item, removed).replace('NO', '**NO**')} |")
    lines.append("")
    return "\n".join(lines)


def _mode(evidence: dict[str, Any]) -> str:
    if evidence.get("for_real"):
        return "FOR REAL: a recovery into the production destinations (recover_to), which are kept"
    return "rehearsal in sandboxes, all removed"


def _removed_word(item: dict[str, Any], removed: set[tuple[str, str]]) -> str:
    if (item["kind"], item["name"]) in removed:
        return "yes"
    return "kept (production)" if item["kind"] == PRODUCTION_KIND else "NO"


_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #999;padding:.3em .6em;text-align:left}th{background:#eee}
.passed,.met{color:#060}.forreal{color:#a00}.failed,.error,.skipped,.MISSED,.NO{color:#a00;font-weight:bold}"""


def render_html(evidence: dict[str, Any]) -> str:
    """A self-contained page (inline style, no script, no external resource); everything escaped."""

    def text(value: Any) -> str:
        return html.escape("" if value is None else str(value), quote=True)

    def tagged(word: str) -> str:
        return f'<span class="{text(word)}">{text(word)}</span>'

    result = "passed" if evidence["passed"] else "failed"
    rows = []
    for step in evidence["steps"]:
        rows.append("<tr>" + "".join(f"<td>{value}</td>" for value in [
            text(step["target"]), text(", ".join(step["after"]) or "-"), text((step["snapshot_id"] or "-")[:12]),
            text(step["started"] or "-"), text(step["ended"] or "-"), tagged(step["outcome"]),
            text(_seconds(step["art_seconds"])), text(_seconds(step["rto_seconds"])),
            tagged(_verdict(step["rto_met"])), text(_seconds(step["rpo_seconds"])),
            text(_seconds(step["rpo_objective_seconds"])), tagged(_verdict(step["rpo_met"])),
            text(step["check"]), text(step["detail"]),
        ]) + "</tr>")
    removed = {(item["kind"], item["name"]) for item in evidence["removed"]}
    resources = "".join(
        f"<tr><td>{text(item['kind'])}</td><td>{text(item['name'])}</td>"
        f"<td>{tagged(_removed_word(item, removed))}</td></tr>"
        for item in evidence["created"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Drill report: {text(evidence['drill'])}</title><style>{_STYLE}</style></head>
<body><h1>Drill report: {text(evidence['drill'])}</h1>
<p>Scenario <b>{text(evidence['scenario'])}</b> (runbook {text(evidence['runbook'])}):
result {tagged(result)}.</p>
<p>Mode: {'<b class="forreal">' if evidence.get('for_real') else '<span>'}{text(_mode(evidence))}{'</b>' if evidence.get('for_real') else '</span>'}</p>
<p>{text(evidence.get('description') or '')}</p>
<ul><li>Started {text(evidence['started'])}, ended {text(evidence['ended'])}
({text(_seconds(evidence['duration_seconds']))})</li>
<li>RPO measured from {text(evidence['reference_time'])}</li><li>Catalog job {text(evidence['job_id'])}</li></ul>
<h2>Steps</h2><table><tr><th>target</th><th>after</th><th>snapshot</th><th>started</th><th>ended</th>
<th>outcome</th><th>ART</th><th>RTO</th><th>RTO met</th><th>RPO</th><th>objective</th><th>RPO met</th>
<th>check</th><th>detail</th></tr>
{''.join(rows)}</table>
<h2>Resources created and removed</h2><table><tr><th>kind</th><th>name</th><th>removed</th></tr>
{resources}</table>
</body></html>
"""


def write_report(evidence: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``folder`` (created 0700); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md", "html": folder / "report.html"}
    paths["json"].write_text(json.dumps(evidence, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(evidence), encoding="utf-8")
    paths["html"].write_text(render_html(evidence), encoding="utf-8")
    return paths
