"""Restore tests: restore a target's newest snapshot into a sandbox, check it, measure the ART.

The actual recovery time (ART) runs from the start of the restore to the end
of a passing health check and is compared with the tier's RTO. The sandbox is
a fresh directory under ``scheduler.sandbox_dir`` (default
``<state_dir>/restore-tests``) and is removed in every case: pass, failed check,
failed restore, or an interruption.

Health checks (``restore_test.health_check`` in targets.yml):
``command`` (a shell command run in the restored tree, exit 0 passes, with a
timeout), ``file_exists`` and ``checksum`` (SHA-256 of a restored file). A file
snapshot is restored to ``<sandbox>/restore/`` and checks run there; an image
snapshot is restored to the file ``<sandbox>/restore`` and checks run in the
sandbox, so they name the image ``restore``. The disks of a VM or EBS target
(libvirt, vmware, hyperv, ebs with ``copy_blocks``) are restored as raw images
into ``<sandbox>/restore/`` through the image destination, one file per disk
(``vda``, ``vm1-Hard disk 1``, ``vol-...``), and checks run there; the platform
itself is never touched. An EBS target with ``copy_blocks: false`` has no data
in the repository and is refused with an error that says so. A postgres target is restored into a
throwaway PostgreSQL cluster and checked there with a ``sql`` query (``engine.postgres``); a
``command`` check then runs with PGHOST, PGPORT and PGUSER naming that cluster.
Without a health check a test passes when every byte restored and verified.

A ``boot`` check (libvirt, image, vmware and hyperv targets, ``engine.boot_check``)
boots the restored images in a sandbox domain on this host's libvirt/QEMU (VMware and
Hyper-V disks are stored raw, so they boot as they are; CPUs, memory and firmware come
from the VM description saved in the snapshot) until its serial console shows every
configured pattern; then the ART runs to that sign of life, and the job's
details say which lines matched, how long the boot took and which sandbox
domain ran (it is destroyed and undefined whatever happens). How the sandbox
boots is settled before anything is restored, and leftovers of killed runs are
removed first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import errors
from ..config.models import AttachCheck, BootCheck, ChecksumCheck, CommandCheck, FileExistsCheck, InstanceCheck, SqlCheck
from .context import Context

SANDBOX_PREFIX = "safehold-restore-test-"
OUTPUT_LIMIT = 4000  # characters of a failing command's output kept in the job log

# Health-check processes now running, so that a stopping control plane can end
# them (abort_health_checks) instead of leaving them behind as orphans.
_checks_lock = threading.Lock()
_running_checks: set[subprocess.Popen[str]] = set()
_aborted: set[int] = set()  # pids of health checks ended by abort_health_checks


class RestoreTestAborted(BaseException):
    """The control plane stopped while the health check ran.

    A BaseException, like KeyboardInterrupt, so that the catalog records the
    job as 'interrupted' rather than 'failed': the data was not found wanting.
    """


@dataclass
class RestoreTestResult:
    target: str
    snapshot_id: str
    passed: bool
    art_seconds: float
    rto_seconds: float
    rto_met: bool
    health_check: str
    detail: str
    bytes_restored: int
    files: int
    job_id: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sandbox_root(context: Context) -> Path:
    configured = context.config.scheduler.sandbox_dir
    return Path(configured) if configured else Path(context.config.state_dir) / "restore-tests"


def run_restore_test(context: Context, target_name: str, *, job_id: int | None = None,
                     snapshot_ref: str = "latest") -> RestoreTestResult:
    """Restore the newest snapshot of ``target_name`` (or ``snapshot_ref``: an id, or
    'latest-clean', the newest judged clean) into a sandbox and run its health check.

    Records a 'restore-test' job whose details hold ``passed``,
    ``art_seconds``, ``rto_seconds`` and ``rto_met``. Raises RestoreTestFailed
    when the health check fails (the job is recorded failed with the same
    details), and the restore's own errors when the restore fails.
    """
    from .restore import restore_in_job

    target = context.config.target(target_name)
    rto = context.config.tier_of(target).rto.total_seconds()
    check = target.restore_test.health_check if target.restore_test else None
    root = sandbox_root(context)
    root.mkdir(parents=True, exist_ok=True)
    details = {"tier": target.tier, "rto_seconds": rto}
    if context.repository_name is not None:
        details["repository"] = context.repository_name  # tested from a copy (copies:), not the repository
    with context.catalog.job("restore-test", target.name, details, job_id=job_id) as job:
        sandbox = Path(tempfile.mkdtemp(prefix=SANDBOX_PREFIX, dir=root))
        job.details["sandbox"] = str(sandbox)
        job.log(f"sandbox {sandbox}")
        try:
            started = time.monotonic()
            destination = sandbox / "restore"
            restore_to = sandbox_destination(target, destination)
            if isinstance(check, BootCheck):
                outcome, passed, detail, art = _boot_test(context, job, target, check, sandbox, restore_to, started,
                                                          snapshot_ref=snapshot_ref)
            elif isinstance(check, (AttachCheck, InstanceCheck)):
                outcome, passed, detail, art = _ec2_test(context, job, target, check, started, snapshot_ref=snapshot_ref)
            elif target.source.type == "postgres":
                from .postgres import restore_into_throwaway_cluster

                destination.mkdir()
                outcome, passed, detail = restore_into_throwaway_cluster(
                    context, job, target, check,
                    lambda other, env: run_health_check(other, destination, "files", env=env))
                art = time.monotonic() - started
            else:
                outcome = restore_in_job(context, job, snapshot_ref, restore_to, target=target.name)
                _log_restored(job, outcome)
                # VM disks: checks run in the folder of images, as in a restored tree.
                passed, detail = run_health_check(check, destination, "files" if isinstance(restore_to, dict)
                                                  else outcome.kind)
                art = time.monotonic() - started
        finally:
            remove_sandbox(sandbox)
        rto_met = passed and art <= rto
        job.details.update({"passed": passed, "art_seconds": round(art, 3), "rto_seconds": rto,
                            "rto_met": rto_met, "health_check": describe(check), "check_detail": detail})
        verdict = "passed" if passed else "FAILED"
        job.log(f"health check {describe(check)} {verdict}: {detail}", level="info" if passed else "error")
        job.log(f"actual recovery time {art:.2f}s against an RTO of {rto:.0f}s: "
                f"{'met' if rto_met else 'NOT met'}", level="info" if rto_met else "warning")
        if not passed:
            raise errors.RestoreTestFailed(target=target.name, detail=detail, job_id=job.id)
        return RestoreTestResult(target.name, outcome.snapshot_id, passed, art, rto, rto_met, describe(check),
                                 detail, outcome.bytes_written, outcome.files, job.id)


def _log_restored(job: Any, outcome: Any) -> None:
    job.log(f"restored snapshot {outcome.snapshot_id[:8]}: {outcome.files} item(s), "
            f"{outcome.bytes_written} bytes in {outcome.duration:.2f}s")


def _boot_test(context: Context, job: Any, target: Any, check: BootCheck, sandbox: Path, restore_to: str | dict,
               started: float, *, snapshot_ref: str = "latest", root: Path | None = None
               ) -> tuple[Any, bool, str, float]:
    """Restore and boot (``engine.boot_check``); returns (the restore's outcome, passed, detail,
    ART to the sign of life). Drills pass the snapshot they chose and their sandbox root."""
    from . import boot_check
    from .restore import restore_in_job

    plan_uri = boot_check.sandbox_uri(target, check)
    for removed in boot_check.remove_leftovers(plan_uri, root or sandbox_root(context)):
        job.log(f"removed the leftover of a run that ended: {removed}", level="warning")
    # The snapshot's saved domain XML decides how the sandbox boots: read it, and refuse what
    # cannot boot, before the first byte is restored; then restore exactly that snapshot.
    snapshot = context.open_repository(load_index=False).find_snapshot(snapshot_ref, target.name)
    plan = boot_check.plan_boot(target, check, dict(snapshot.source or {}))
    boot_check.write_owner(sandbox, job.id)
    outcome = restore_in_job(context, job, snapshot.id, restore_to, target=target.name)
    _log_restored(job, outcome)
    images = Path(restore_to["path"] if isinstance(restore_to, dict) else restore_to)
    result = boot_check.boot_restored(job, target, check, plan, images, sandbox)
    job.details["boot"] = result.facts
    art = (result.alive_at if result.alive_at is not None else time.monotonic()) - started
    return outcome, result.passed, result.detail, art


@dataclass
class Ec2Outcome:
    """What an EC2 check restored, in the shape of a restore's outcome (nothing was written here)."""

    snapshot_id: str
    bytes_written: int = 0
    files: int = 0


def _ec2_test(context: Context, job: Any, target: Any, check: AttachCheck | InstanceCheck, started: float, *,
              snapshot_ref: str = "latest", region: str | None = None, instance: str | None = None
              ) -> tuple[Ec2Outcome, bool, str, float]:
    """An ``attach`` or ``instance`` check of an ebs target (``engine.ec2_check``) on the EBS
    snapshots of the restore point (in ``region``, default the target's, from the DR copies there);
    returns (outcome, passed, detail, ART to attached/running). Job details: ``ec2``."""
    from .ebs import clients_for
    from .ec2_check import run_ec2_check

    snapshot = context.open_repository(load_index=False).find_snapshot(snapshot_ref, target.name)
    source = dict(snapshot.source or {})
    where = region or target.source.region
    clients = clients_for(context, target.source.endpoint_url)
    job.log(f"restore point {snapshot.id[:8]}: its EBS snapshots in {where}")
    result = run_ec2_check(job, target.name, check, source, clients=clients, region=where, instance=instance)
    job.details["ec2"] = {"region": result.region, **result.facts, "created": result.created,
                          "removed": result.removed, "leftovers_removed": result.leftovers_removed}
    art = (result.healthy_at if result.healthy_at is not None else time.monotonic()) - started
    return Ec2Outcome(snapshot.id), result.passed, result.detail, art


#: Sources whose disks a restore test writes as images into ``<sandbox>/restore/``, one file per disk.
VM_SOURCES = ("libvirt", "vmware", "hyperv", "ebs")


def sandbox_destination(target: Any, destination: Path) -> str | dict:
    """Where a restore test restores ``target``: its files, or its image, at ``destination``; the
    disks of a VM or EBS target through the image destination into the directory ``destination``
    (the platform is never touched), named after the disk ('vda', 'vm1-Hard disk 1', the volume id)."""
    from ..restore.base import destination_for_source
    from ..sources import REGISTRY

    kind = target.source.type
    destination_for_source(kind, REGISTRY.get(kind, (None, None, None))[2])  # no destination, no test
    if kind not in VM_SOURCES:
        return str(destination)
    return {"kind": "image", "path": str(destination), "into_directory": True, "flatten_names": True}


def describe(check: Any) -> str:
    if check is None:
        return "restore verified"
    if isinstance(check, BootCheck):
        probes = "".join(f", then {probe.type} port {probe.port}" + (f" {probe.path}" if probe.type == "http" else "")
                         for probe in check.probes)
        return f"boot until the console shows {', '.join(repr(pattern) for pattern in check.console)}{probes}"
    if isinstance(check, SqlCheck):
        return f"sql {check.query!r} expect {check.expect}"
    if isinstance(check, (AttachCheck, InstanceCheck)):
        from .ec2_check import describe as describe_ec2

        return describe_ec2(check)
    if isinstance(check, CommandCheck):
        return f"command {check.run!r}"
    if isinstance(check, FileExistsCheck):
        return f"file_exists {check.path!r}"
    return f"checksum {check.path!r}"


def run_health_check(check: CommandCheck | FileExistsCheck | ChecksumCheck | SqlCheck | None, tree: Path,
                     kind: str = "files", env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Run ``check`` against the restored ``tree``; returns (passed, one-line detail). ``env``: added
    to a command's environment."""
    if check is None:
        return True, "every restored byte verified against its chunk id"
    if isinstance(check, SqlCheck):
        return False, "a sql health check needs a postgres target (its restore makes a database to query)"
    # An image restore writes one file; checks still run in the sandbox so a
    # command can find it, and paths name it relative to the sandbox.
    where = tree if kind == "files" else tree.parent
    if isinstance(check, CommandCheck):
        return _run_command(check, where, env)
    path = where / check.path
    if isinstance(check, FileExistsCheck):
        return (True, f"{check.path} exists") if path.exists() else (False, f"{check.path} does not exist")
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        return False, f"cannot read {check.path}: {error.strerror or error}"
    if digest.hexdigest() == check.sha256:
        return True, f"{check.path} has the expected SHA-256"
    return False, f"{check.path} has SHA-256 {digest.hexdigest()}, expected {check.sha256}"


def _run_command(check: CommandCheck, where: Path, env: dict[str, str] | None = None) -> tuple[bool, str]:
    # Its own process group, so that a timeout or an abort ends the whole
    # pipeline the shell started, not only the shell.
    process = subprocess.Popen(check.run, shell=True, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                               env=dict(os.environ, **env) if env else None)
    with _checks_lock:
        _running_checks.add(process)
    try:
        try:
            output, _ = process.communicate(timeout=check.timeout.total_seconds())
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return False, f"command still running after {check.timeout.total_seconds():.0f}s"
    finally:
        with _checks_lock:
            _running_checks.discard(process)
            aborted = process.pid in _aborted
            _aborted.discard(process.pid)
    if aborted:
        raise RestoreTestAborted("the control plane stopped during the health check")
    output = (output or "").strip()[-OUTPUT_LIMIT:]
    if process.returncode == 0:
        return True, "exit status 0"
    return False, f"exit status {process.returncode}" + (f": {output}" if output else "")


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def abort_health_checks() -> int:
    """End every running health-check command and boot check (the control plane is stopping); returns how many.

    Their restore tests are recorded as 'interrupted' and remove their sandboxes.
    """
    from .boot_check import abort_boot_checks

    with _checks_lock:
        processes = list(_running_checks)
        _aborted.update(process.pid for process in processes)
    for process in processes:
        _kill_group(process)
    return len(processes) + abort_boot_checks()


def remove_stale_sandboxes(context: Context) -> list[Path]:
    """Remove sandboxes left by a process that was killed (SIGKILL, power loss) mid-test.

    Call only when no restore test runs on this host (the scheduler does at start).
    """
    root = sandbox_root(context)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(SANDBOX_PREFIX) and entry.is_dir():
                remove_sandbox(entry)
                removed.append(entry)
    _remove_stale_sandbox_domains(context)
    return removed


def _remove_stale_sandbox_domains(context: Context) -> None:
    """Sandbox domains of ended runs on the hypervisors of the configured boot checks; a hypervisor
    that does not answer now is left for the next boot check, which removes them first."""
    import logging

    from . import boot_check

    uris = {boot_check.sandbox_uri(target, target.restore_test.health_check) for target in context.config.targets
            if target.restore_test and isinstance(target.restore_test.health_check, BootCheck)}
    for uri in sorted(uris):
        try:
            for removed in boot_check.remove_leftovers(uri, sandbox_root(context)):
                logging.getLogger(__name__).warning("removed %s left by an interrupted restore test", removed)
        except errors.SafeholdError as exc:
            logging.getLogger(__name__).warning("could not look for leftover sandboxes at %s: %s", uri, exc)


def remove_sandbox(sandbox: Path) -> None:
    """Remove the sandbox whatever the restored tree's permissions (read-only directories included)."""

    def make_writable_and_retry(function, path, _excinfo) -> None:
        parent = os.path.dirname(path)
        for directory in (parent, path):
            try:
                os.chmod(directory, 0o700, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
        function(path)

    if sandbox.exists():
        shutil.rmtree(sandbox, onerror=make_writable_and_retry)
