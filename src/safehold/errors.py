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
        "it stopped and committed nothing (no snapshot) and deleted nothing more, since a prune may have "
        "removed its data meanwhile (or, for a prune or forget, another host may be using what it would "
        "delete); run it again. If this recurs, find what pauses or cuts off safehold for minutes "
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
    remedy = (
        "see the list above. Blobs missing from the index (a lost or damaged index object): 'safehold repair "
        "index', then check again. Damaged or missing data: 'safehold repair snapshots' writes the affected "
        "snapshots again without the damaged files (it names them; originals are kept unless --forget). "
        "A replayed snapshot: 'safehold forget ID'"
    )
    exit_code = 19


class PruneRefused(SafeholdError):
    """Prune cannot tell what the snapshots use, so it deletes nothing (a damaged index or snapshot)."""

    template = "prune refused, nothing was deleted: {reason}"
    remedy = (
        "'safehold check' names the damage; 'safehold repair index' rebuilds a lost or damaged index from the "
        "pack headers, 'safehold repair snapshots' writes damaged snapshots again without their lost files; "
        "then prune again"
    )
    exit_code = 27


class SnapshotReplayed(SafeholdError):
    """A snapshot that forget removed is present again (its object was copied back): a rollback."""

    template = "snapshot {snapshot} was forgotten and is present again, a replayed copy: {record}"
    remedy = (
        "'safehold forget {snapshot}' removes it again; if it was put back on purpose, restore it with "
        "--allow-replayed"
    )
    exit_code = 28


class RepairRefused(SafeholdError):
    """A repair that would lose data that is not damaged (today: repair snapshots while the index is incomplete)."""

    template = "repair {what} refused, nothing was written: {reason}"
    remedy = ("run 'safehold repair index' first, then 'safehold check'; run 'safehold repair {what}' again "
              "only if check still reports damage")
    exit_code = 29


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


class QueueNotConfigured(SafeholdError):
    template = "the job queue is not usable: {detail}"
    remedy = ("set scheduler.executor: procrastinate, put the queue's PostgreSQL DSN in the variable named by "
              "scheduler.queue_dsn_env (default SAFEHOLD_QUEUE_DSN) or in scheduler.queue_dsn_file, and install "
              "the 'workers' extra (pip install 'safehold[workers]')")
    exit_code = 96


class QueueUnreachable(SafeholdError):
    template = "cannot reach the job queue at {dsn}: {detail}"
    remedy = ("check that PostgreSQL answers at that DSN and that its schema is in place "
              "('safehold worker --apply-schema' creates procrastinate's tables once)")
    exit_code = 97


class WorkerCatalogLost(SafeholdError):
    template = "this worker stopped taking work: the catalog did not answer for {seconds}s ({detail})"
    remedy = ("check the catalog database (catalog.url) and the network path to it, then start the worker "
              "again (systemd restarts it); jobs it could not record are retried")
    exit_code = 98


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


# --- Linux hosts over SSH (64-66) ---------------------------------------------


class SshHostKeyRejected(SourceError):
    template = "SSH host {host} is refused: {detail}"
    remedy = (
        "host keys are never accepted automatically: if the host was rebuilt, check its new key out of band "
        "(on its console: 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub') and put it in the known_hosts file "
        "or host_key named in the configuration; otherwise treat the connection as under attack"
    )
    exit_code = 64


class SshConnectionFailed(SourceError):
    template = "SSH host {host}: {detail}"
    remedy = (
        "check host, port and user, that the key is in the account's authorized_keys and that the SFTP "
        "subsystem is enabled; a backup cut off is not written, and the next run starts from the last "
        "completed snapshot"
    )
    exit_code = 65


class SshCommandFailed(SourceError):
    template = "the {which} command on SSH host {host} failed (exit status {status}): {detail}"
    remedy = "run the command by hand on the host as the backup user ('ssh USER@HOST COMMAND') and fix it"
    exit_code = 66


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


# --- sandboxes that boot restored disks (restore tests with type: boot; codes 61-63) ---------


class SandboxSetupFailed(SafeholdError):
    template = "cannot boot a sandbox for {target}: {detail}"
    remedy = ("fix restore_test.health_check of {target} in targets.yml (kernel, initrd, uri, memory_mib), "
              "then run 'safehold restore-test --target {target}'")
    exit_code = 61


class SandboxNotRemoved(SafeholdError):
    template = "sandbox {name} at {uri} was not entirely removed: {detail}"
    remedy = ("remove it by hand ('virsh -c {uri} destroy {name}; virsh -c {uri} undefine {name}' and delete "
              "{folder}); the next restore test also removes leftover safehold-sandbox-* domains whose run ended")
    exit_code = 62
# --- PostgreSQL and command sources (67-69) --------------------------------------


class PostgresToolTooOld(SourceError):
    template = ("{tool} {tool_version} ({path}) is older than the PostgreSQL server {server} ({server_version}); "
                "it cannot dump or restore a server newer than itself")
    remedy = ("install the PostgreSQL {major} client tools (Debian: apt install postgresql-client-{major}), "
              "or point the source's bin_dir at a folder holding them")
    exit_code = 67


class PostgresError(SourceError):
    template = "PostgreSQL {server}: {detail}"
    remedy = ("check that the server runs and accepts connections from this host, the user and database names, "
              "and that the password is in the environment variable or file the configuration names")
    exit_code = 68


class PostgresRestoreRefused(DestinationError):
    template = "cannot restore into PostgreSQL {destination}: {detail}"
    remedy = "{advice}"
    exit_code = 33  # a DestinationError with the remedy that fits a database


class CommandFailed(SourceError):
    template = "command {name!r}: {detail}"
    remedy = "run the command by hand as the user running safehold and read its error output (also in the job log)"
    exit_code = 69


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


# --- EC2 sandboxes and restores to EC2 (codes 83-86) ------------------------------------------


class Ec2SandboxFailed(SafeholdError):
    template = "EC2 in {region}: {what}: {detail}"
    remedy = ("check the IAM permissions (ec2:CreateVolume, AttachVolume, RegisterImage, RunInstances, CreateTags "
              "and their Describe/Delete calls), the account's limits and the names in targets.yml or the "
              "options; everything made so far was removed")
    exit_code = 83


class Ec2SandboxNotRemoved(SafeholdError):
    template = "EC2 sandbox resources in {region} were not removed: {resources}"
    remedy = ("remove them by hand (aws ec2 terminate-instances / delete-volume / deregister-image / "
              "delete-snapshot --region {region}); the next restore test or drill also removes resources "
              "tagged {tag} whose run ended")
    exit_code = 84

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


class KeyRetained(SafeholdError):
    """``safehold key remove`` or ``key passwd`` on an Object Lock repository whose credentials may not
    delete key files (the shipped backup role may not, so that stolen backup credentials cannot hide
    the keys that every locked backup needs)."""

    template = ("{done}key {key_id} was not removed: it is locked by Object Lock until {until} and these "
                "credentials may not delete key files")
    remedy = ("remove it with credentials allowed s3:DeleteObject on keys/ (the break-glass role, "
              "deploy/iam/README.md): 'safehold key remove {key_id}'; that only hides it, its locked version "
              "stays stored until {until}, then the bucket's lifecycle rule expires it")
    exit_code = 37


class UsageError(SafeholdError):
    template = "{message}"
    exit_code = 2


class PartialFailure(SafeholdError):
    template = "{failed} of {total} target(s) failed: {names}"
    remedy = "see the errors above; the other targets completed"
    exit_code = 3


class BackupPartial(SafeholdError):
    """Every target wrote its snapshot, but some left out items they could not read (job status
    'partial'). When targets also failed, PartialFailure (3) is reported instead: a failure wins."""

    template = "{partial} of {total} target(s) backed up partially: {names} ({count} item(s) left out or changed)"
    remedy = (
        "the snapshots hold everything that could be read; 'safehold jobs --id JOB' lists what was left out "
        "and why: fix the permissions, or exclude the paths in targets.yml, and back up again"
    )
    exit_code = 4


class DrillNotFound(SafeholdError):
    template = "no drill named {name!r} in {path}"
    remedy = "known drills: {known}; drills are defined under 'drills:' in targets.yml"
    exit_code = 80


class DrillNotReady(SafeholdError):
    template = "drill {name} cannot run: {detail}"
    remedy = "'safehold drill plan {name}' lists what is missing; back up the targets it names or fix targets.yml"
    exit_code = 81


class DrillFailed(SafeholdError):
    template = "drill {name} failed: {detail}"
    remedy = "the evidence report in {report} and 'safehold jobs --id {job_id}' show each step; fix it and run " \
             "'safehold drill run {name}' again"
    exit_code = 82


class DrillStepLost(SafeholdError):
    template = "drill {name}, step {target}: {detail}"
    remedy = ("'safehold workers' shows which workers are alive and the queues they take ({queue} here); start a "
              "worker on that queue ('safehold worker --queues {queue}'), raise scheduler.retries, or give the "
              "step a longer rto, then run the drill again")
    exit_code = 87


class JobFenced(SafeholdError):
    template = "job {job_id} is no longer this attempt's to finish: it is {status} ({detail}); nothing was committed"
    remedy = ("nothing to repair: the job was taken from this worker (its heartbeat stopped, e.g. the process was "
              "paused or cut off from the catalog) and retried elsewhere; the packs this attempt wrote are "
              "unreferenced and 'safehold prune' removes them. Check why this worker stalled")
    exit_code = 88


class DrillNotConfirmed(SafeholdError):
    template = "drill {name} --for-real was not confirmed: {detail}; nothing was restored"
    remedy = "a real recovery writes to production: run it from a terminal and answer 'yes', or add --yes " \
             "once you have read 'safehold drill plan {name} --for-real'"
    exit_code = 38


class NoCleanSnapshot(SafeholdError):
    template = "no snapshot of target {target!r} is judged clean (none is clean and not after a suspicious one)"
    remedy = ("'safehold snapshots --target {target}' shows each verdict; 'safehold scan ID' judges snapshots "
              "written before verdicts existed, 'safehold mark ID clean' records that one is good")
    exit_code = 90


class InvalidMark(SafeholdError):
    template = "cannot mark snapshot {snapshot}: {detail}"
    remedy = "give 'clean' or 'suspicious', e.g. 'safehold mark {snapshot} clean --note \"checked the files\"'"
    exit_code = 91


class CommandServerLost(SafeholdError):
    template = ("the command server's process for this command ended without reporting its exit status "
                "({detail}); the command may have run in part")
    remedy = ("check with 'safehold snapshots' or the job list what it did; set SAFEHOLD_NO_SERVER=1 to run "
              "commands in their own process, and look at the log of 'safehold serve'")
    exit_code = 93


class CommandSocketUnusable(SafeholdError):
    template = "cannot serve commands on {path}: {detail}"
    remedy = ("the command socket's directory must be owned by the user running 'safehold serve' and closed "
              "to others (chmod 700 DIR); stop the other 'safehold serve' that listens there, or leave out "
              "--commands")
    exit_code = 94


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


# --- repository copies (codes 41-44) -----------------------------------------------


class CopyParamsDiffer(SafeholdError):
    """``safehold copy`` between repositories whose blob ids differ for the same data."""

    template = ("repository {destination} does not share the chunking parameters and id key of {source} "
                "(source {source_id}, destination {destination_id}): the same data has other blob ids there")
    remedy = ("create the destination with 'safehold init --copy-params-from {source}' (a new, empty repository "
              "with its own password and master key) and copy into that one")
    exit_code = 41


class CopyDestinationPassword(SafeholdError):
    """The password given for a copy's destination (or an init's parameter source) opens no key of it."""

    template = "the password from {password_source} does not open any key of the repository at {url}"
    remedy = ("check {password_source}: it must hold that repository's own password "
              "(not the password of the configured repository)")
    exit_code = 42


class CopySameRepository(SafeholdError):
    template = "{url} is the repository being copied from (repository {repository_id}): a copy needs another one"
    remedy = "name a different repository with --to (a repository created with 'safehold init --copy-params-from')"
    exit_code = 43


class CopyNotFound(SafeholdError):
    template = "no copy named {name!r} in {path}"
    remedy = "configured copies: {known}; copies are defined under 'copies:' in targets.yml (or pass a url to --to)"
    exit_code = 44


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

