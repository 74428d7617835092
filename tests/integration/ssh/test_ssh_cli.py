"""The SSH target as a user drives it: ``config check``, ``backup`` and ``restore --to ssh://`` through
the real ``safehold`` CLI in subprocesses, and a refused host key as one line and exit code 64."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ssh_support import PASSWORD, make_tree, tree_state, write_config


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SAFEHOLD_CONFIG=str(config), SAFEHOLD_TEST_SSH_PASSWORD=PASSWORD)
    return subprocess.run([sys.executable, "-m", "safehold.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_check_backup_and_restore_to_ssh_through_the_cli(tmp_path, ssh_server, fast_kdf):
    data = make_tree(tmp_path / "host")
    config = write_config(tmp_path, ssh_server, [str(data)])
    check = cli(config, "config", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "not supported" not in check.stdout + check.stderr
    assert cli(config, "init").returncode == 0
    backup = cli(config, "backup", "-t", "host", "--json")
    assert backup.returncode == 0, backup.stderr
    out = tmp_path / "restored"
    url = f"ssh://{ssh_server.user}@{ssh_server.host}:{ssh_server.port}{out}"
    restore = cli(config, "restore", "latest:host", "--to", url, "--json")
    assert restore.returncode == 0, restore.stderr
    assert json.loads(restore.stdout)["destination"] == url
    assert tree_state(out / "etc") == tree_state(data)


def test_a_changed_host_key_is_one_clear_line_and_exit_64(tmp_path, ssh_server, fast_kdf):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    forged = tmp_path / "forged_known_hosts"
    forged.write_text(f"[{ssh_server.host}]:{ssh_server.port} {kind} {blob}\n")
    config = write_config(tmp_path, ssh_server, [str(tmp_path)], known_hosts=str(forged))
    assert cli(config, "init").returncode == 0
    backup = cli(config, "backup", "-t", "host")
    assert backup.returncode == 64, backup.stdout + backup.stderr
    assert "Traceback" not in backup.stderr
    assert "host key does not match" in backup.stdout + backup.stderr
