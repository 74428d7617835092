"""Exit codes are a contract: documented, stable, and each error explains itself."""

from pathlib import Path

import pytest

from safehold import errors

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exit-codes.md"

# Once shipped, a code never changes. Adding a class means adding it here.
STABLE = {
    "UsageError": 2, "PartialFailure": 3, "BackupPartial": 4, "RepositoryDoesNotExist": 10, "RepositoryAlreadyExists": 11,
    "ForeignRepository": 12, "UnsupportedRepositoryVersion": 12, "WrongPassword": 13, "PasswordMissing": 13,
    "TooManyKeys": 13, "KeyFileInvalid": 26,
    "RepositoryLocked": 14, "KeyNotFound": 15, "LastKey": 15, "SnapshotNotFound": 16, "AmbiguousSnapshot": 16,
    "PathNotInSnapshot": 16, "IntegrityError": 17, "RestoreIncomplete": 18, "CheckFailed": 19, "StorageFull": 20,
    "BackendError": 21, "RestoreTestFailed": 22, "JobNotRunnable": 23, "SchedulerRunning": 24, "ConfigError": 30, "ConfigNotFound": 30, "TargetNotFound": 31, "SourceError": 32,
    "DestinationError": 33, "JobNotFound": 34, "CatalogSchemaTooNew": 35, "InternalError": 70,
    "HypervisorUnavailable": 50, "DomainNotFound": 51, "DomainVanished": 52, "DomainBusy": 53,
    "EbsSnapshotPending": 45, "EbsDeviceInUse": 46, "EbsInstanceInOtherRegion": 47,
    "VSphereConnectFailed": 54, "VMNotFound": 55, "VSphereBackupFailed": 56, "VSphereSnapshotLeft": 57,
}
STABLE |= {"TokenNotFound": 36, "ImmutabilityAuditFailed": 40}
STABLE |= {"LockLost": 25}
STABLE |= {"HyperVError": 58, "HyperVSessionExpired": 59, "HyperVConnectionFailed": 60}
STABLE |= {"SandboxSetupFailed": 61, "SandboxNotRemoved": 62}
STABLE |= {"KeyRetained": 37}
STABLE |= {"CopyParamsDiffer": 41, "CopyDestinationPassword": 42, "CopySameRepository": 43, "CopyNotFound": 44}
STABLE |= {"PostgresToolTooOld": 67, "PostgresError": 68, "CommandFailed": 69, "PostgresRestoreRefused": 33}
STABLE |= {"PruneRefused": 27, "SnapshotReplayed": 28, "RepairRefused": 29}
STABLE |= {"SshHostKeyRejected": 64, "SshConnectionFailed": 65, "SshCommandFailed": 66}
STABLE |= {"NoCleanSnapshot": 90, "InvalidMark": 91}
STABLE |= {"CommandServerLost": 93, "CommandSocketUnusable": 94}
STABLE |= {"DrillNotFound": 80, "DrillNotReady": 81, "DrillFailed": 82}
STABLE |= {"Ec2SandboxFailed": 83, "Ec2SandboxNotRemoved": 84}
STABLE |= {"DrillNotConfirmed": 38}
STABLE |= {"QueueNotConfigured": 96, "QueueUnreachable": 97, "WorkerCatalogLost": 98}
STABLE |= {"DrillStepLost": 87, "JobFenced": 88}
STABLE |= {"DestinationFull": 20}  # a full restore destination: the code of a full repository


def test_exit_codes_never_change():
    found = {cls.__name__: cls.exit_code for cls in errors.all_error_classes() if cls is not errors.SafeholdError}
    assert found == STABLE


def test_docs_list_every_exit_code():
    assert DOCS.read_text() == errors.exit_code_markdown(), "regenerate: python -m safehold.errors > docs/exit-codes.md"


@pytest.mark.parametrize("cls", [c for c in errors.all_error_classes() if c is not errors.SafeholdError])
def test_every_error_has_a_remedy(cls):
    assert cls.remedy or cls in (errors.UsageError,), f"{cls.__name__} needs a remedy hint"


def test_message_is_filled_from_fields():
    error = errors.WrongPassword(url="file:///r")
    assert str(error) == "the password does not open any key of the repository at file:///r"
    assert "SAFEHOLD" not in error.hint or "password_env" in error.hint
    assert error.as_dict()["exit_code"] == 13


def test_os_errors_map_to_full_disk_or_backend_error():
    import errno

    full = errors.from_os_error(OSError(errno.ENOSPC, "No space left on device"), "writing data/ab")
    assert isinstance(full, errors.StorageFull) and full.exit_code == 20
    other = errors.from_os_error(OSError(errno.EACCES, "Permission denied"), "writing data/ab")
    assert isinstance(other, errors.BackendError) and "Permission denied" in str(other)

