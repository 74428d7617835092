"""The libvirt commands as a user runs them: the real ``safehold`` CLI in subprocesses against a
real libvirtd; exit codes and JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from libvirt_support import PASSWORD, same_contents, write_config

MiB = 1024 * 1024


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SAFEHOLD_CONFIG=str(config), SAFEHOLD_TEST_LIBVIRT_PASSWORD=PASSWORD)
    return subprocess.run([sys.executable, "-m", "safehold.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_backup_restore_define_and_errors_through_the_cli(make_domain, libvirt_uri, connection, tmp_path):
    domain = make_domain()
    domain.write(0x9C, 5 * MiB, 1 * MiB)
    config = write_config(tmp_path, domain.name, libvirt_uri)
    assert cli(config, "init").returncode == 0

    backup = cli(config, "backup", "-t", "vm")
    assert backup.returncode == 0, backup.stderr
    assert "only crash-consistent" in backup.stderr  # the warning reaches the user, not only the job log

    listed = cli(config, "libvirt", "checkpoints", domain.name, "--uri", libvirt_uri, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == domain.checkpoints()

    busy = cli(config, "libvirt", "restore", "latest:vm", "--replace", domain.name, "--json")
    assert busy.returncode == 53, busy.stderr
    assert "running" in busy.stderr

    restored = cli(config, "libvirt", "restore", "latest:vm", "--images-dir", str(tmp_path / "images"),
                   "--define", f"{domain.name}-cli", "--json")
    assert restored.returncode == 0, restored.stderr
    outcome = json.loads(restored.stdout)
    assert outcome["action"] == "define" and outcome["domain"] == f"{domain.name}-cli"
    try:
        domain.flush()
        compared = same_contents(domain.image, Path(outcome["disks"]["vda"]))
        assert compared.returncode == 0, compared.stdout
        assert connection.lookupByName(f"{domain.name}-cli").isActive() == 0
    finally:
        connection.lookupByName(f"{domain.name}-cli").undefine()

    (tmp_path / "other").mkdir()
    missing = write_config(tmp_path / "other", "safehold-test-no-such-domain", libvirt_uri)
    assert cli(missing, "init").returncode == 0
    failed = cli(missing, "backup", "-t", "vm")
    assert failed.returncode == 51, failed.stderr
    assert "no libvirt domain named 'safehold-test-no-such-domain'" in failed.stderr
