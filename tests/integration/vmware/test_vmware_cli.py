"""The VMware commands as a user runs them: list VMs, back up, restore as a new VM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

MiB = 1024 * 1024


def test_cli_lists_backs_up_and_restores(tmp_path: Path, lab) -> None:
    lab.resize_disk("DC0_H0_VM1", 4 * MiB)
    lab.write("DC0_H0_VM1", 2 * MiB, os.urandom(100_000))
    config = {
        "repository": {"url": f"file://{tmp_path}/repo"},
        "state_dir": str(tmp_path / "state"),
        "targets": [{"name": "vm1", "tier": 2, "source": {
            "type": "vmware", "server": lab.server, "user": lab.USER, "ca_file": str(lab.ca_file),
            "vms": ["DC0_H0_VM1"]}}],
    }
    (tmp_path / "targets.yml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, SAFEHOLD_CONFIG=str(tmp_path / "targets.yml"), SAFEHOLD_PASSWORD="repository password",
               SAFEHOLD_VSPHERE_PASSWORD=lab.PASSWORD)

    def safehold(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "safehold.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == code, f"{args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    safehold("init")
    listed = json.loads(safehold("vmware", "vms", "vm1", "--json").stdout)
    assert [vm["name"] for vm in listed] == ["DC0_H0_VM1"] and listed[0]["cbt"] is False
    backup = safehold("backup", "--target", "vm1")
    assert "crash-consistent" in backup.stderr and "changed-block tracking was off" in backup.stderr
    restored = json.loads(safehold("vmware", "restore", "latest", "--target", "vm1", "--new-vm", "copy", "--json").stdout)
    assert restored["created"] and restored["bytes_written"] == 4 * MiB
    assert lab.read("copy") == lab.read("DC0_H0_VM1")
    # Expected failures: one line, the documented exit code.
    missing = safehold("vmware", "restore", "latest", "--target", "vm1", "--vm", "no-such-vm", code=33)
    assert "no such VM" in missing.stderr and "Traceback" not in missing.stderr
    env["SAFEHOLD_VSPHERE_PASSWORD"] = "wrong"
    refused = safehold("backup", "--target", "vm1", code=54)
    assert "wrong user name or password" in refused.stderr
