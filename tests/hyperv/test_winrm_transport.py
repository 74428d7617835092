"""PsrpShell (pypsrp) on the wire: HTTPS, Basic logon, WS-Management shells and PSRP pipelines,
against the loopback endpoint in ``winrm_server`` that hands each script to the fake host.

Covers what the fake-host tests cannot: parameters bound through PSRP (never pasted into the
script), JSON output decoded from PSRP objects, failed pipelines mapped to PowerShellFailed with
their category, certificate checking, a refused logon, and an expired session (HTTP 401) that
fails the job with HyperVSessionExpired while cleanup logs on again and removes the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_hyperv import FakeHyperVHost
from winrm_server import WinRMServer

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.platforms.hyperv import scripts
from safehold.platforms.hyperv.shell import PowerShellFailed, PsrpShell
from safehold.sources.hyperv import HyperVSource

MiB = 1024 * 1024


@pytest.fixture
def winrm(host: FakeHyperVHost, tmp_path: Path):
    server = WinRMServer(host, tmp_path)
    yield server
    server.stop()
    assert server.errors == [], "the WinRM endpoint failed to answer a request"


def shell_for(server: WinRMServer, **options) -> PsrpShell:
    settings = dict(port=server.port, username="svc-backup", password="secret", ssl=True, verify_certificate=True,
                    ca_bundle=str(server.certificate), auth="basic") | options
    return PsrpShell("127.0.0.1", **settings)


def test_scripts_run_with_bound_parameters_and_json_output(winrm: WinRMServer, host: FakeHyperVHost) -> None:
    vm = host.create_vm("db'; Remove-VM *; '", [6 * MiB])  # a hostile name stays a parameter value
    host.guest_write(vm.name, 0, 5 * MiB, 4096, 0xAA)
    shell = shell_for(winrm)
    try:
        described = shell.run(scripts.DESCRIBE_VM, Name=vm.name)
        assert described["Id"] == vm.id and described["Disks"][0]["Size"] == 6 * MiB
        checkpoint = shell.run(scripts.CREATE_CHECKPOINT, VMId=vm.id, ConsistencyLevel=1, Name="c")
        number = shell.run(scripts.MOUNT_DISK, Path=checkpoint["HardDrives"][0]["Path"])["Number"]
        import base64
        data = base64.b64decode(shell.run(scripts.READ_DISK, Number=number, Offset=5 * MiB - 4096,
                                          Length=4 * 1024 * 1024 // 4)["Data"])  # 1 MiB: many PSRP fragments
        assert data[:4096] == bytes(4096) and data[4096:8192] == b"\xaa" * 4096
        with pytest.raises(PowerShellFailed) as failed:
            shell.run(scripts.DESCRIBE_VM, Name="missing")
        assert failed.value.category == "InvalidArgument"
        assert failed.value.error_id == "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"
        assert "unable to find a virtual machine" in failed.value.message
    finally:
        shell.close()
    assert "Delete" in winrm.requests  # close ends the remote shell


def test_certificate_checking_is_on_by_default(winrm: WinRMServer) -> None:
    with pytest.raises(errors.HyperVConnectionFailed, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        shell_for(winrm, ca_bundle=None).run(scripts.LIST_CHECKPOINTS, VMId="x")
    lab = shell_for(winrm, ca_bundle=None, verify_certificate=False)  # only when the configuration says so
    with pytest.raises(PowerShellFailed):
        lab.run(scripts.LIST_CHECKPOINTS, VMId="x")
    lab.close()


def test_refused_logon_is_a_connection_failure(winrm: WinRMServer) -> None:
    with pytest.raises(errors.HyperVConnectionFailed) as failure:
        shell_for(winrm, password="wrong").run(scripts.LIST_CHECKPOINTS, VMId="x")
    assert failure.value.exit_code == 60 and "Failed to authenticate" in str(failure.value)


def test_backups_over_winrm_and_an_expired_session(workspace, winrm: WinRMServer, host: FakeHyperVHost,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HyperVSource, "connect", lambda self: shell_for(winrm))
    host.delete_vm("vm1")
    host.create_vm("vm1", [12 * MiB, 2 * MiB])  # PSRP's encoding is slow on shared cores: keep it small
    host.guest_write("vm1", 0, 0, MiB, 0x10)
    full = backup_target(workspace, "vm1")
    host.guest_write("vm1", 1, MiB, 4096, 0x11)
    reads = host.count("read-disk")
    host.at("read-disk", reads + 1, host.expire_session)  # the logon expires in the middle of reading
    with pytest.raises(errors.HyperVSessionExpired) as expired:
        backup_target(workspace, "vm1")
    assert expired.value.exit_code == 59 and "authenticate" in str(expired.value)
    assert host.checkpoints == {} and host.mounts == {}, "cleanup logged on again and removed the checkpoint"
    after = backup_target(workspace, "vm1")
    assert after.parent_id == full.snapshot_id and after.summary["bytes_read"] == 64 * 1024
