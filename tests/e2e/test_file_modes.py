"""Files safehold creates are private whatever the umask; a password file others can read is warned about.

The real CLI runs under umask 000 and 022 (``sh -c 'umask ...; exec safehold'``) and the
modes it leaves behind are checked: the state folder 0700, the catalog database 0600,
repository folders 0700 and repository objects 0600.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from e2e_support import CLI, Workspace


def run_with_umask(ws: Workspace, umask: str, *args: str, code: int = 0,
                   env: dict | None = None) -> subprocess.CompletedProcess:
    command = ["sh", "-c", f'umask {umask}; exec "$@"', "sh", *CLI, *args]
    proc = subprocess.run(command, cwd=ws.root, env=ws.environment(extra=env), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("umask", ["000", "022"])
def test_state_catalog_and_repository_are_private(workspace: Workspace, umask: str) -> None:
    (workspace.data / "a.txt").write_text("hello\n")
    workspace.write_config(repository_url="nested/repo")  # parent folders are created too
    run_with_umask(workspace, umask, "init")
    run_with_umask(workspace, umask, "backup", "--target", "files")

    state = workspace.state
    assert mode(state) == 0o700
    catalogs = [p for p in state.iterdir() if p.name.startswith("catalog.db")]
    assert catalogs, list(state.iterdir())
    for path in catalogs:  # the database and its -wal / -shm companions
        assert mode(path) == 0o600, path

    repo = workspace.root / "nested" / "repo"
    assert mode(workspace.root / "nested") == 0o700
    folders = [repo, *(p for p in repo.rglob("*") if p.is_dir())]
    files = [p for p in repo.rglob("*") if p.is_file()]
    assert len(folders) > 256 and len(files) >= 4
    assert {str(p.relative_to(workspace.root)): oct(mode(p)) for p in folders if mode(p) != 0o700} == {}
    assert {str(p.relative_to(workspace.root)): oct(mode(p)) for p in files if mode(p) != 0o600} == {}


def test_password_file_readable_by_others_is_warned_about(workspace: Workspace) -> None:
    secret = workspace.root / "password"
    secret.write_text(workspace.password + "\n")
    text = workspace.config.read_text().replace("  password_env: SAFEHOLD_PASSWORD",
                                                f"  password_file: {secret}")
    workspace.config.write_text(text)

    os.chmod(secret, 0o644)
    proc = run_with_umask(workspace, "022", "init", env={"SAFEHOLD_PASSWORD": None})
    warnings = [line for line in proc.stderr.splitlines() if "password_file" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("warning:") and str(secret) in warnings[0] and "0644" in warnings[0]
    assert f"chmod 600 {secret}" in warnings[0]

    os.chmod(secret, 0o600)
    proc = run_with_umask(workspace, "022", "snapshots", env={"SAFEHOLD_PASSWORD": None})
    assert "password_file" not in proc.stderr, proc.stderr
