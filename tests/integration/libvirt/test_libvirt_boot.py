"""Restore tests that boot what they restore (``health_check: {type: boot}``): a real guest
(tests/support/guest.py: Debian's cloud kernel, a busybox initramfs, an ext4 disk carrying the line
the guest prints) backed up from a real libvirtd, restored, booted in a sandbox domain under QEMU,
and the sandbox removed whatever happens; through the real ``safehold`` CLI in subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import guest
import pytest
import yaml
from libvirt_support import PASSWORD, write_config

from safehold.platforms.libvirt.sandbox import SANDBOX_PREFIX, leftover_sandboxes

BOOT_TIMEOUT = "3m"  # TCG on 2 shared cores: the guest shows its lines after ~3-6 s when the host is quiet


def cli(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "safehold.cli.main", *args], capture_output=True, text=True,
                          env=_env(config), timeout=timeout)


def _env(config: Path) -> dict:
    return dict(os.environ, SAFEHOLD_CONFIG=str(config), SAFEHOLD_TEST_LIBVIRT_PASSWORD=PASSWORD)


class BootableDomain:
    """A shut-off domain booting the test guest; its disk carries ``line``."""

    def __init__(self, connection, folder: Path) -> None:
        self.connection = connection
        self.name = f"safehold-test-boot-{uuid.uuid4().hex[:8]}"
        self.line = f"restored disk {uuid.uuid4().hex}"
        self.guest = guest.make_guest(folder, self.name, self.line)
        self.domain = connection.defineXML(self.guest.domain_xml(self.name))

    def rewrite_disk(self, line: str) -> None:
        """The live disk now carries another line (the domain is shut off)."""
        fresh = guest.make_disk(self.guest.disk.with_suffix(".new"), line)
        os.replace(fresh, self.guest.disk)

    def remove(self) -> None:
        import libvirt

        try:
            if self.domain.isActive():
                self.domain.destroy()
            self.domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass


@pytest.fixture
def bootable(connection, tmp_path):
    made: list[BootableDomain] = []

    def make() -> BootableDomain:
        domain = BootableDomain(connection, tmp_path / f"guest-{len(made)}")
        made.append(domain)
        return domain

    yield make
    for domain in made:
        domain.remove()


def workspace(tmp_path: Path, domain: BootableDomain, uri: str, check: dict) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    config = write_config(folder, domain.name, uri)
    data = yaml.safe_load(config.read_text())
    data["state_dir"] = str(folder / "state")
    data["targets"][0]["restore_test"] = {"every": "7d", "health_check": check}
    config.write_text(yaml.safe_dump(data))
    return config


def with_check(config: Path, check: dict) -> None:
    data = yaml.safe_load(config.read_text())
    data["targets"][0]["restore_test"]["health_check"] = check
    config.write_text(yaml.safe_dump(data))


def job(config: Path, job_id: int) -> tuple[dict, list[str]]:
    shown = cli(config, "jobs", "--id", str(job_id), "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    return found["job"], [line["message"] for line in found["logs"]]


def sandbox_domains(uri: str) -> list[str]:
    return [leftover.name for leftover in leftover_sandboxes(uri)]


def sandbox_folders(config: Path) -> list[Path]:
    root = config.parent / "state" / "restore-tests"
    return sorted(root.iterdir()) if root.is_dir() else []


def console_check(line: str, **options) -> dict:
    return {"type": "boot", "console": [f"^{guest.MARKER}$", f"^{re.escape(guest.DISK_LINE_PREFIX + line)}$"],
            "timeout": BOOT_TIMEOUT, **options}


def test_a_restored_guest_boots_in_a_sandbox_and_the_art_runs_to_its_sign_of_life(bootable, libvirt_uri, tmp_path):
    """Also the tcp and http probes (one boot for both, to keep CI short): with probes the sandbox
    gets a restricted user-network card; the guest's httpd serves the restored disk's line, so the
    http probe proves the restored disk once more, and the ART runs to the last probe."""
    domain = bootable()
    check = console_check(domain.line, probes=[
        {"type": "tcp", "port": 80},
        {"type": "http", "port": 80, "path": "/", "expect": f"^{re.escape(domain.line)}$"}])
    config = workspace(tmp_path, domain, libvirt_uri, check)
    assert cli(config, "init").returncode == 0
    backup = cli(config, "backup", "-t", "vm")
    assert backup.returncode == 0, backup.stderr
    # The live disk changes after the backup: only the restored disk carries the line the check wants.
    domain.rewrite_disk("written after the backup")

    started = time.monotonic()
    tested = cli(config, "restore-test", "--target", "vm", "--json")
    elapsed = time.monotonic() - started
    assert tested.returncode == 0, tested.stderr
    result = json.loads(tested.stdout)
    assert result["passed"] and result["rto_met"]
    assert guest.MARKER in result["detail"] and f"{guest.DISK_LINE_PREFIX}{domain.line}" in result["detail"]
    assert 0 < result["art_seconds"] < elapsed

    record, log = job(config, result["job_id"])
    boot = record["details"]["boot"]
    assert [match["line"] for match in boot["console_matches"]] == guest.expected_lines(domain.line)
    assert boot["sandbox_domain"].startswith(f"{SANDBOX_PREFIX}vm-") and boot["disks"] == {"vda": "vda"}
    assert boot["boot_from"] == "the kernel of the domain XML saved in the snapshot"
    assert 0 < boot["boot_seconds"] < result["art_seconds"]
    assert record["details"]["art_seconds"] == round(result["art_seconds"], 3)
    assert any(f"sandbox {boot['sandbox_domain']} destroyed and undefined" in line for line in log)
    assert "http port 80 /: status 200, body matches" in result["detail"], result
    probes = boot["probes"]
    assert [(probe["type"], probe["port"], probe["passed"]) for probe in probes] == [("tcp", 80, True),
                                                                                   ("http", 80, True)]
    assert probes[0]["host_port"] == probes[1]["host_port"]  # one forward per guest port
    # The ART runs to the last passing probe, after the console's sign of life.
    assert boot["boot_seconds"] <= probes[1]["seconds"] <= result["art_seconds"] + 1
    assert any("restricted user network, guest port(s) 80 forwarded from loopback" in line for line in log)
    # Nothing of the sandbox is left, and the original domain was never started.
    assert boot["sandbox_domain"] not in sandbox_domains(libvirt_uri)
    assert sandbox_folders(config) == []
    assert not domain.domain.isActive()

    status = cli(config, "status", "--json")
    test = json.loads(status.stdout)["targets"][0]["last_restore_test"]
    assert test["passed"] and test["art_seconds"] == record["details"]["art_seconds"]
    print(f"boot restore test: ART {result['art_seconds']:.2f}s (boot {boot['boot_seconds']:.2f}s, http "
          f"{probes[1]['seconds']:.2f}s), accelerator {boot['accelerator']}")


def test_a_sign_of_life_that_never_shows_fails_within_the_timeout_and_leaves_nothing(bootable, libvirt_uri,
                                                                                     tmp_path):
    domain = bootable()
    config = workspace(tmp_path, domain, libvirt_uri,
                       {"type": "boot", "console": [f"^{guest.MARKER}$", "^this line never appears$"],
                        "timeout": "20s"})
    assert cli(config, "init").returncode == 0
    assert cli(config, "backup", "-t", "vm").returncode == 0

    started = time.monotonic()
    failed = cli(config, "restore-test", "--target", "vm")
    elapsed = time.monotonic() - started
    assert failed.returncode == 22, failed.stderr
    assert "no sign of life within 20s: the console never showed '^this line never appears$'" in failed.stderr
    assert elapsed < 20 + 30  # the timeout, plus the CLI's start, the restore and the removal
    record, log = job(config, int(re.search(r"jobs --id (\d+)", failed.stderr).group(1)))
    boot = record["details"]["boot"]
    assert record["status"] == "failed" and record["details"]["passed"] is False
    assert [match["line"] for match in boot["console_matches"]] == [guest.MARKER]  # it booted, but not enough
    assert f"{guest.DISK_LINE_PREFIX}{domain.line}" in boot["console_tail"]
    assert boot["sandbox_domain"] not in sandbox_domains(libvirt_uri)
    assert sandbox_folders(config) == []


def test_a_guest_that_stops_fails_at_once_and_the_check_can_name_its_own_kernel(bootable, libvirt_uri, tmp_path):
    domain = bootable()
    # The check's kernel, initrd and command line replace the saved domain's: this command line
    # makes the guest power off after its lines, before the never-seen pattern can show.
    check = {"type": "boot", "console": ["^this line never appears$"], "timeout": BOOT_TIMEOUT,
             "kernel": str(domain.guest.kernel), "initrd": str(domain.guest.initrd),
             "cmdline": f"{guest.CMDLINE} safehold.after=poweroff", "memory_mib": 192}
    config = workspace(tmp_path, domain, libvirt_uri, check)
    assert cli(config, "init").returncode == 0
    assert cli(config, "backup", "-t", "vm").returncode == 0

    failed = cli(config, "restore-test", "--target", "vm")
    assert failed.returncode == 22, failed.stderr
    assert re.search(r"the sandbox stopped after [\d.]+s before the console showed '\^this line never appears\$'",
                     failed.stderr), failed.stderr
    record, _ = job(config, int(re.search(r"jobs --id (\d+)", failed.stderr).group(1)))
    assert record["details"]["boot"]["boot_from"] == "the health check's kernel"
    assert record["details"]["boot"]["boot_seconds"] < 120  # not the 3-minute timeout
    assert sandbox_folders(config) == []

    # A kernel that is not there is refused before anything is restored (exit 61).
    with_check(config, dict(check, kernel=str(tmp_path / "no-such-vmlinuz")))
    refused = cli(config, "restore-test", "--target", "vm")
    assert refused.returncode == 61, refused.stderr
    assert f"the kernel {tmp_path / 'no-such-vmlinuz'} cannot be used: No such file or directory" in refused.stderr
    record, log = job(config, max(row["id"] for row in json.loads(cli(config, "jobs", "--json").stdout)))
    assert record["status"] == "failed" and not any("restored snapshot" in line for line in log)

    # A file that is there but is no kernel: QEMU refuses to start the sandbox (exit 61), which goes.
    not_a_kernel = tmp_path / "notes.txt"
    not_a_kernel.write_text("not a kernel\n")
    with_check(config, dict(check, kernel=str(not_a_kernel)))
    refused = cli(config, "restore-test", "--target", "vm")
    assert refused.returncode == 61, refused.stderr
    name = re.search(r"sandbox (safehold-sandbox-vm-\w+) did not start", refused.stderr).group(1)
    assert name not in sandbox_domains(libvirt_uri) and sandbox_folders(config) == []


def test_the_leftover_of_a_killed_run_is_removed_by_the_next_run(bootable, libvirt_uri, connection, tmp_path):
    domain = bootable()
    config = workspace(tmp_path, domain, libvirt_uri,
                       {"type": "boot", "console": ["^this line never appears$"], "timeout": "10m"})
    assert cli(config, "init").returncode == 0
    assert cli(config, "backup", "-t", "vm").returncode == 0

    # A run killed (SIGKILL: no clean-up of any kind) while its sandbox boots.
    process = subprocess.Popen([sys.executable, "-m", "safehold.cli.main", "restore-test", "--target", "vm"],
                               env=_env(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        leftover = _wait_for_sandbox_of(libvirt_uri, process.pid, timeout=120)
    finally:
        process.kill()
        process.wait()
    assert leftover in sandbox_domains(libvirt_uri) and connection.lookupByName(leftover).isActive()
    assert len(sandbox_folders(config)) == 1

    # A sandbox that another, live run is booting is not touched by the next run.
    other = _define_live_sandbox(connection, tmp_path)
    try:
        with_check(config, console_check(domain.line))
        tested = cli(config, "restore-test", "--target", "vm", "--json")
        assert tested.returncode == 0, tested.stderr
        result = json.loads(tested.stdout)
        _, log = job(config, result["job_id"])
        assert f"removed the leftover of a run that ended: domain {leftover}" in "\n".join(log)
        remaining = sandbox_domains(libvirt_uri)
        assert leftover not in remaining and other in remaining
        assert sandbox_folders(config) == []  # the killed run's images and console went with it
    finally:
        from safehold.platforms.libvirt.sandbox import remove_sandbox_domain

        remove_sandbox_domain(libvirt_uri, other)

    # The scheduler's start (Scheduler.recover -> remove_stale_sandboxes) removes them too.
    from safehold.engine.context import Context
    from safehold.engine.restore_test import remove_stale_sandboxes

    with_check(config, {"type": "boot", "console": ["^this line never appears$"], "timeout": "10m"})
    process = subprocess.Popen([sys.executable, "-m", "safehold.cli.main", "restore-test", "--target", "vm"],
                               env=_env(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        leftover = _wait_for_sandbox_of(libvirt_uri, process.pid, timeout=120)
    finally:
        process.kill()
        process.wait()
    context = Context.load(config)
    try:
        assert len(remove_stale_sandboxes(context)) == 1
    finally:
        context.close()
    assert leftover not in sandbox_domains(libvirt_uri) and sandbox_folders(config) == []


def _wait_for_sandbox_of(uri: str, pid: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for leftover in leftover_sandboxes(uri):
            if leftover.owner is not None and leftover.owner.pid == pid and leftover.active:
                return leftover.name
        time.sleep(0.2)
    raise AssertionError(f"no sandbox of process {pid} appeared within {timeout}s")


def _define_live_sandbox(connection, tmp_path: Path) -> str:
    """A shut-off sandbox domain whose owner (this test process) is alive."""
    from safehold.engine.boot_check import make_owner
    from safehold.platforms.libvirt.sandbox import BootSettings, sandbox_name, sandbox_xml

    name = sandbox_name("someone-else")
    owner = make_owner(tmp_path, None, 600)
    connection.defineXML(sandbox_xml(name, [], BootSettings(memory_mib=64), str(tmp_path / "console.log"), owner))
    return name


def test_an_image_target_boots_with_the_kernel_its_check_names(libvirt_uri, tmp_path):
    # A raw image (as from an LVM volume) holds no domain XML: the check names the kernel and the URI.
    files = guest.boot_files()
    line = f"image disk {uuid.uuid4().hex}"
    image = guest.make_disk(tmp_path / "db.raw", line, image_format="raw")
    folder = tmp_path / "ws"
    folder.mkdir()
    config = folder / "targets.yml"
    check = dict(console_check(line), uri=libvirt_uri, kernel=str(files.kernel), initrd=str(files.initrd),
                 cmdline=guest.CMDLINE, memory_mib=guest.MEMORY_MIB)
    config.write_text(yaml.safe_dump({
        "repository": {"url": str(folder / "repo"), "password_env": "SAFEHOLD_TEST_LIBVIRT_PASSWORD"},
        "state_dir": str(folder / "state"),
        "targets": [{"name": "db-disk", "tier": 1, "source": {"type": "image", "path": str(image)},
                     "restore_test": {"every": "1d", "health_check": check}}]}))
    assert cli(config, "init").returncode == 0
    assert cli(config, "backup", "-t", "db-disk").returncode == 0
    guest.make_disk(tmp_path / "other.raw", "not this one", image_format="raw").replace(image)

    tested = cli(config, "restore-test", "--target", "db-disk", "--json")
    assert tested.returncode == 0, tested.stderr
    result = json.loads(tested.stdout)
    record, _ = job(config, result["job_id"])
    boot = record["details"]["boot"]
    assert [match["line"] for match in boot["console_matches"]] == guest.expected_lines(line)
    assert boot["disks"] == {"vda": "restore"} and boot["boot_from"] == "the health check's kernel"
    assert boot["sandbox_domain"].startswith(f"{SANDBOX_PREFIX}db-disk-")
    assert boot["sandbox_domain"] not in sandbox_domains(libvirt_uri) and sandbox_folders(config) == []


def test_a_stopping_control_plane_ends_a_boot_check_and_removes_its_sandbox(bootable, libvirt_uri, tmp_path):
    import threading

    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.engine.restore_test import RestoreTestAborted, abort_health_checks, run_restore_test

    domain = bootable()
    config = workspace(tmp_path, domain, libvirt_uri,
                       {"type": "boot", "console": ["^this line never appears$"], "timeout": "10m"})
    os.environ["SAFEHOLD_TEST_LIBVIRT_PASSWORD"] = PASSWORD
    context = Context.load(config)
    try:
        init_repository(context)
        backup_target(context, "vm")
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                run_restore_test(context, "vm")
                outcome.append(None)
            except BaseException as exc:  # RestoreTestAborted is a BaseException, like KeyboardInterrupt
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        name = _wait_for_sandbox_of(libvirt_uri, os.getpid(), timeout=120)
        stopped = time.monotonic()
        assert abort_health_checks() == 1
        thread.join(60)
        assert not thread.is_alive() and time.monotonic() - stopped < 10
        assert isinstance(outcome[0], RestoreTestAborted)
        assert name not in sandbox_domains(libvirt_uri) and sandbox_folders(config) == []
        assert context.catalog.latest_jobs("restore-test")["vm"].status == "interrupted"
    finally:
        context.close()

