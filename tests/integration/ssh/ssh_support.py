"""Helpers of the SSH suite: the test sshd's coordinates, a targets.yml for it, cutting its
connections, counting the files its SFTP server opened, and comparing trees."""

from __future__ import annotations

import json
import os
import signal
import stat
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "ssh-suite-password"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    key: str
    known_hosts: str
    sftp_log: str
    pid_file: str
    unprivileged_user: str = ""  # an SFTP-only account without root's reach (files it cannot read)

    @classmethod
    def from_environment(cls, environ) -> "SshServer":
        return cls(host=environ["SAFEHOLD_TEST_SSH_HOST"], port=int(environ["SAFEHOLD_TEST_SSH_PORT"]),
                   user=environ["SAFEHOLD_TEST_SSH_USER"], key=environ["SAFEHOLD_TEST_SSH_KEY"],
                   known_hosts=environ["SAFEHOLD_TEST_SSH_KNOWN_HOSTS"],
                   sftp_log=environ["SAFEHOLD_TEST_SSH_SFTP_LOG"], pid_file=environ["SAFEHOLD_TEST_SSH_PID"],
                   unprivileged_user=environ.get("SAFEHOLD_TEST_SSH_UNPRIVILEGED_USER", ""))

    def source(self, paths: list[str], **options) -> dict:
        return {"type": "ssh", "host": self.host, "port": self.port, "user": self.user, "paths": paths,
                "identity_file": self.key, "known_hosts": self.known_hosts, **options}

    def opened(self) -> list[str]:
        """Every file the server's sftp-server has opened so far (its VERBOSE log)."""
        try:
            lines = Path(self.sftp_log).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [line.split('"')[1] for line in lines if line.startswith('open "')]

    def cut_connections(self) -> int:
        """SIGKILL every process serving a connection (the listening sshd stays): the client sees
        its connection drop, as when a host reboots or a link fails."""
        master = int(Path(self.pid_file).read_text())
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                children.setdefault(int(fields[1]), []).append(int(entry))
        victims, stack = [], list(children.get(master, []))
        while stack:
            pid = stack.pop()
            victims.append(pid)
            stack.extend(children.get(pid, []))
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(victims)


def write_config(folder: Path, server: SshServer, paths: list[str], **source) -> Path:
    path = folder / "targets.yml"
    path.write_text(textwrap.dedent(f"""\
        repository: {{url: {folder / 'repo'}, password_env: SAFEHOLD_TEST_SSH_PASSWORD}}
        catalog: {{url: "sqlite:///{folder / 'state' / 'catalog.db'}"}}
        targets:
          - name: host
            tier: 2
            source: {json.dumps(server.source(paths, **source))}
        """))
    os.environ["SAFEHOLD_TEST_SSH_PASSWORD"] = PASSWORD
    return path


def tree_state(root: Path) -> dict[bytes, tuple]:
    """(type, mode, mtime s, content or link target) of every entry below ``root``, by relative path."""
    state: dict[bytes, tuple] = {}
    base = os.fsencode(root)
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            full = os.path.join(folder, name)
            relative = os.path.relpath(full, base)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                state[relative] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                state[relative] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                with open(full, "rb") as handle:
                    state[relative] = ("file", stat.S_IMODE(st.st_mode), int(st.st_mtime), handle.read())
    return state


def connections(server: SshServer) -> int:
    """Processes serving a connection right now (children of the listening sshd)."""
    master = int(Path(server.pid_file).read_text())
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            count += int(fields[1]) == master
    return count


def make_tree(root: Path) -> Path:
    (root / "etc" / "app" / "conf.d").mkdir(parents=True)
    (root / "etc" / "app" / "main.conf").write_text("listen 80\n")
    (root / "etc" / "app" / "conf.d" / "a.conf").write_text("a\n")
    secret = root / "etc" / "app" / "secret"
    secret.write_bytes(b"key")
    secret.chmod(0o600)
    (root / "etc" / "empty").write_bytes(b"")
    (root / "etc" / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024 + 123))  # several read windows
    (root / "etc" / "current").symlink_to("app/main.conf")
    (root / "etc" / os.fsdecode(b"caf\xe9-latin1")).write_bytes(b"not utf-8 name")
    (root / "etc" / "cache").mkdir()
    (root / "etc" / "cache" / "x.tmp").write_text("excluded")
    past = time.time() - 3600
    for path in (root / "etc").rglob("*"):
        os.utime(path, (past, past), follow_symlinks=False)
    return root / "etc"
