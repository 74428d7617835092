"""Every expected failure safehold can report, with a stable exit code and a remedy.

Each class carries a message template (filled from keyword arguments), a remedy
hint and an exit code. Exit codes are a contract with scripts and monitoring:
they are listed in docs/exit-codes.md and never renumbered. A class marked
``bug = True`` signals something that should not happen (corruption we cannot
explain, a broken invariant): the CLI prints a traceback for those and asks for
a report, and one clear line for everything else.
"""

from __future__ import annotations

import errno


class SafeholdError(Exception):
    """Base class. Subclasses set ``template``, ``remedy`` and ``exit_code``."""

    template = "{message}"
    remedy = ""
    exit_code = 1
    bug = False

    def __init__(self, message: str | None = None, /, **fields: object) -> None:
        self.fields = fields
        if message is not None:
            fields.setdefault("message", message)
        try:
            text = self.template.format(**fields)
        except (KeyError, IndexError):
            text = message or self.template
        super().__init__(text)

    @property
    def message(self) -> str:
        return str(self)

    @property
    def hint(self) -> str:
        try:
            return self.remedy.format(**self.fields)
        except (KeyError, IndexError):
            return self.remedy

    def as_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "remedy": self.hint,
            "exit_code": self.exit_code,
        }


# --- repository -------------------------------------------------------------


class RepositoryDoesNotExist(SafeholdError):
    template = "no safehold repository at {url}"
    remedy = "create one with 'safehold init', or check repository.url in the configuration"
    exit_code = 10


class RepositoryAlreadyExists(SafeholdError):
    template = "a repository already exists at {url}"
    remedy = "use it as it is, or choose another repository.url"
    exit_code = 11


class ForeignRepository(SafeholdError):
    template = "{url} is not a safehold repository ({reason})"
    remedy = "point repository.url at a safehold repository or an empty directory"
    exit_code = 12


class UnsupportedRepositoryVersion(SafeholdError):
    template = "repository at {url} has format version {found}; this safehold reads versions {supported}"
    remedy = "upgrade safehold to a release that supports format version {found}"
    exit_code = 12


class WrongPassword(SafeholdError):
    template = "the password does not open any key of the repository at {url}"
    remedy = "check the variable named by repository.password_env (or password_file); 'safehold key list' shows the keys"
    exit_code = 13


class PasswordMissing(SafeholdError):
    template = "no repository password: {detail}"
    remedy = "export {variable}=... or set repository.password_file to a file holding it"
    exit_code = 13


class TooManyKeys(SafeholdError):
    template = (
        "the password opens none of the key files tried: {tried} of the {count} in {url} "
        "(without a key id at most {tried} are tried, the most likely first)"
    )
    remedy = (
        "pass --key-id with the first characters of your key's id (or set SAFEHOLD_KEY_ID); the ids are the "
        "file names under keys/ and 'safehold key list' shows them with their creator and date"
    )
    exit_code = 13


class RepositoryLocked(SafeholdError):
    template = "repository is locked {kind} by {holder} since {since}"
    remedy = (
        "wait for that job to finish; if it is dead, 'safehold unlock' removes stale locks "
        "('safehold unlock --remove-all' if you are sure nothing runs)"
    )
    exit_code = 14


class LockLost(SafeholdError):
    template = "{purpose} lost its lock on the repository: {reason}"
    remedy = (
        "it stopped and committed nothing (no snapshot), since a prune may have removed its data "
        "meanwhile; run it again. If this recurs, find what pauses or cuts off safehold for minutes "
        "(a suspended VM, a stopped process, a stalled network); locks go stale after {stale}"
    )
    exit_code = 25


class KeyNotFound(SafeholdError):
    template = "no key {key_id} in the repository"
    remedy = "'safehold key list' shows the key ids"
    exit_code = 15


class LastKey(SafeholdError):
    template = "refusing to remove key {key_id}: it is the only key and the repository would become unreadable"
    remedy = "add another key first with 'safehold key add'"
    exit_code = 15


class KeyFileInvalid(SafeholdError):
    """A key file that is malformed or asks for key derivation parameters out of bounds.

    Refused before deriving anything: a tampered key file must not make every open hang."""

    template = "key file {key_id} of {url} is refused: {detail}"
    remedy = (
        "the file was damaged or tampered with; open the repository with another password and replace it "
        "('safehold key remove {key_id}', then 'safehold key add')"
    )
    exit_code = 26


class SnapshotNotFound(SafeholdError):
    template = "no snapshot matches {ref!r}"
    remedy = "'safehold snapshots' lists them; use an id prefix of at least 4 characters or 'latest'"
    exit_code = 16


class AmbiguousSnapshot(SafeholdError):
    template = "snapshot prefix {ref!r} matches {count} snapshots"
    remedy = "give more characters of the id"
    exit_code = 16


class PathNotInSnapshot(SafeholdError):
    template = "{path!r} is not in snapshot {snapshot}"
    remedy = "'safehold ls {snapshot}' shows what it holds"
    exit_code = 16


class IntegrityError(SafeholdError):
    """Stored data does not match its id or fails authentication: damage or tampering."""

    template = "damaged data: {detail}"
    remedy = "run 'safehold check --read-data' to find every damaged pack and the snapshots it touches"
    exit_code = 17


class RestoreIncomplete(SafeholdError):
    template = "restore finished with {count} damaged file(s): {paths}"
    remedy = "every other file was restored; restore the damaged ones from an older snapshot ('safehold snapshots')"
    exit_code = 18


class CheckFailed(SafeholdError):
    template = "check found {count} error(s)"
    remedy = "see the list above; restore affected files from other snapshots, then 'safehold forget' the damaged ones and 'safehold prune'"
    exit_code = 19


class StorageFull(SafeholdError):
    template = "no space left on the repository storage ({detail})"
    remedy = "free space or grow the volume, then run the backup again; earlier snapshots are intact"
    exit_code = 20


class BackendError(SafeholdError):
    template = "storage error: {detail}"
    remedy = "check that the repository storage is reachable and writable, then retry"
    exit_code = 21


# --- control plane: jobs, restore tests -------------------------------------


class RestoreTestFailed(SafeholdError):
    template = "restore test of {target} failed: {detail}"
    remedy = (
        "'safehold jobs --id {job_id}' shows the log; fix the health check in targets.yml or the data, "
        "then run 'safehold restore-test --target {target}'"
    )
    exit_code = 22


class JobNotRunnable(SafeholdError):
    template = "job {job_id} cannot run: {detail}"
    remedy = "'safehold jobs --id {job_id}' shows its status; only a queued job can be run or cancelled"
    exit_code = 23


class SchedulerRunning(SafeholdError):
    template = "another scheduler already runs on the catalog {catalog}: {holder}"
    remedy = ("one scheduler per catalog: stop that one first, or start this control plane with "
              "'safehold serve --no-scheduler' (its API still queues jobs for the running scheduler)")
    exit_code = 24


# --- configuration and targets ----------------------------------------------


class ConfigError(SafeholdError):
    """One or more problems in targets.yml; ``problems`` holds one line each."""

    template = "{path}: {count} problem(s) in the configuration:\n{details}"
    remedy = "fix the lines above; 'safehold config check' validates without running anything"
    exit_code = 30

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(path=path, count=len(problems), details="\n".join("  " + p for p in problems))


class ConfigNotFound(SafeholdError):
    template = "configuration file {path} does not exist"
    remedy = "pass --config FILE or set SAFEHOLD_CONFIG; configs/targets.yml is an example"
    exit_code = 30


class TargetNotFound(SafeholdError):
    template = "no target named {name!r} in {path}"
    remedy = "known targets: {known}"
    exit_code = 31


class SourceError(SafeholdError):
    template = "cannot read source {source}: {detail}"
    remedy = "check that the path exists and is readable by the user running safehold"
    exit_code = 32


class HyperVError(SourceError):
    template = "Hyper-V host {host}, VM {vm}: {detail}"
    remedy = "{advice}"
    exit_code = 58


class HyperVSessionExpired(SourceError):
    template = "the PowerShell session to Hyper-V host {host} is no longer valid: {detail}"
    remedy = (
        "check the credentials and the host's WinRM limits (IdleTimeout, MaxShellRunTime), then run the "
        "backup again; the next run starts from the last completed snapshot"
    )
    exit_code = 59


class HyperVConnectionFailed(SourceError):
    template = "cannot connect to Hyper-V host {host}: {detail}"
    remedy = (
        "check the host name and port, that WinRM listens there (Enable-PSRemoting; HTTPS on 5986), that the "
        "host's certificate is trusted (ca_bundle) and that the account may log on"
    )
    exit_code = 60


class DestinationError(SafeholdError):
    template = "cannot restore to {destination}: {detail}"
    remedy = "choose an empty directory or a new file, or pass --overwrite"
    exit_code = 33


class DestinationFull(DestinationError):
    """The restore destination ran out of space: the exit code of a full repository, its own words."""

    template = "no space left on the restore destination {destination} ({detail})"
    remedy = "free space there or restore to a larger volume, then run the restore again; the repository is unchanged"
    exit_code = 20



# --- virtual machines (libvirt: 50-53) ---------------------------------------


class HypervisorUnavailable(SourceError):
    template = "cannot use libvirt at {uri}: {detail}"
    remedy = "check that libvirtd runs and answers ('virsh -c {uri} list --all') and that this user may connect"
    exit_code = 50


class DomainNotFound(SourceError):
    template = "no libvirt domain named {domain!r} at {uri}"
    remedy = "list the domains with 'virsh -c {uri} list --all' and fix source.domain in the configuration"
    exit_code = 51


class DomainVanished(SourceError):
    template = "libvirt domain {domain!r} went away during the backup: {detail}"
    remedy = ("nothing was stored and the backup job and its checkpoint were removed; the previous snapshot "
              "stays the parent, so run the backup again once the domain is back")
    exit_code = 52


class DomainBusy(DestinationError):
    template = "cannot restore into libvirt domain {domain!r}: {detail}"
    remedy = "shut the domain down ('virsh shutdown {domain}') or restore as a new domain with --define NAME"
    exit_code = 53

# --- EBS restores ------------------------------------------------------------------


class EbsSnapshotPending(SafeholdError):
    template = "EBS snapshot {snapshot_id} in {region} is still {state} ({progress}); a volume cannot be made from it yet"
    remedy = "wait until 'aws ec2 describe-snapshots --snapshot-ids {snapshot_id}' shows completed, then run the restore again"
    exit_code = 45


class EbsDeviceInUse(SafeholdError):
    template = "device {device} is already in use on instance {instance_id} (in use: {used})"
    remedy = "pass a free device name with --device, e.g. {free}, or leave --device out to take the first free one"
    exit_code = 46


class EbsInstanceInOtherRegion(SafeholdError):
    template = "instance {instance_id} is in {instance_region}, not in {region} where snapshot {snapshot_id} is{detail}"
    remedy = ("copy the snapshot to {instance_region} first (add the region to the target's dr_copies), or restore "
              "to an instance in {region}")
    exit_code = 47

# --- VMware vSphere (codes 54-57) ---------------------------------------------


class VSphereConnectFailed(SafeholdError):
    template = "cannot connect to vSphere at {server}: {detail}"
    remedy = (
        "check source.server, source.user and the password variable; for a certificate error set "
        "source.ca_file to the CA that signed the vCenter certificate (source.insecure: true only in a lab)"
    )
    exit_code = 54


class VMNotFound(SafeholdError):
    template = "no VM on {server} matches {selection}"
    remedy = (
        "check the VM names, the folder (an inventory path such as DC0/vm/prod) and the tags in targets.yml; "
        "'safehold vmware vms TARGET' lists what a target selects"
    )
    exit_code = 55


class VSphereBackupFailed(SafeholdError):
    template = "backup of VM {vm} failed: {detail}"
    remedy = (
        "safehold removed its VM snapshot (the job log says so) and stored no new snapshot: the previous one "
        "stays the parent of the next run; fix the cause and run the backup again"
    )
    exit_code = 56


class VSphereSnapshotLeft(SafeholdError):
    template = "could not remove snapshot {snapshot} of VM {vm}: {detail}"
    remedy = (
        "remove it in the vSphere client (Snapshots > Manage Snapshots); the next safehold backup of this VM also "
        "removes leftover 'safehold-' snapshots first"
    )
    exit_code = 57


# --- catalog -------------------------------------------------------------------


class JobNotFound(SafeholdError, LookupError):
    template = "no job {job_id} in the catalog"
    remedy = "list recent jobs with 'safehold jobs'"
    exit_code = 34


class CatalogSchemaTooNew(SafeholdError):
    template = "the catalog at {url} has schema revision {revision}, newer than this safehold knows ({head})"
    remedy = "upgrade safehold on this host to the version that last wrote the catalog"
    exit_code = 35


# --- control plane API ------------------------------------------------------------


class TokenNotFound(SafeholdError, LookupError):
    template = "no API token {token_id} in the catalog"
    remedy = "list the tokens with 'safehold token list'"
    exit_code = 36


# --- immutability (S3 Object Lock) ------------------------------------------------


class ImmutabilityAuditFailed(SafeholdError):
    """``safehold repo audit-immutability`` found something that lets backups be deleted or altered."""

    template = "the immutability audit found {count} problem(s)"
    remedy = "apply the fixes listed above, then run 'safehold repo audit-immutability' again"
    exit_code = 40


class UsageError(SafeholdError):
    template = "{message}"
    exit_code = 2


class PartialFailure(SafeholdError):
    template = "{failed} of {total} target(s) failed: {names}"
    remedy = "see the errors above; the other targets completed"
    exit_code = 3


class InternalError(SafeholdError):
    template = "internal error: {message}"
    remedy = "this is a bug in safehold; please report it with the traceback above"
    exit_code = 70
    bug = True


def from_os_error(exc: OSError, what: str) -> SafeholdError:
    """Map an OSError met while storing or reading repository objects to a clear error."""
    detail = f"{what}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(detail=detail)
    return BackendError(detail=detail)


def all_error_classes() -> list[type[SafeholdError]]:
    """Every concrete error class, for the documentation test and docs/exit-codes.md."""
    seen: list[type[SafeholdError]] = []
    stack = [SafeholdError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(reversed(cls.__subclasses__()))
    return seen


def exit_code_markdown() -> str:
    """The body of docs/exit-codes.md; a test keeps the file equal to this."""
    lines = [
        "# Exit codes",
        "",
        "Generated from `src/safehold/errors.py` (`python -m safehold.errors > docs/exit-codes.md`); a test keeps",
        "this file current. Codes are a contract with scripts and monitoring: never renumbered.",
        "",
        "| code | error | meaning | remedy |",
        "| ---: | --- | --- | --- |",
        "| 0 | | success | |",
        "| 2 | (usage) | wrong command-line arguments | see `safehold COMMAND --help` |",
    ]
    for cls in sorted(all_error_classes(), key=lambda c: (c.exit_code, c.__name__)):
        if cls is SafeholdError:
            continue
        meaning = cls.template.replace("\n", " ").replace("|", "\\|")
        remedy = cls.remedy.replace("|", "\\|")
        lines.append(f"| {cls.exit_code} | `{cls.__name__}` | {meaning} | {remedy} |")
    lines += [
        "| 70 | (unexpected) | a bug: a traceback is printed | report it with the traceback |",
        "| 130 | (interrupted) | stopped by Ctrl-C or SIGINT | run the command again |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(exit_code_markdown(), end="")
