"""A throwaway PostgreSQL cluster: ``TemporaryCluster``.

Restore tests and drills of postgres targets restore into one of these when no server is given:
``initdb`` into a fresh folder, ``pg_ctl start`` listening only on a Unix socket in that folder
(nothing reachable over the network), trust authentication for its own superuser, ``fsync`` off
(the data is thrown away), and ``stop`` removes everything. The server refuses to run as root, so
when safehold runs as root the cluster runs as ``run_as`` (default ``postgres``, the user Debian's
packages create).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile

from ...errors import PostgresError
from .connection import Server
from .tools import find_tool, installed

START_TIMEOUT = 120  # seconds pg_ctl waits for the server to accept connections


class TemporaryCluster:
    def __init__(self, server_version: int | None = None, *, parent: str | None = None, bin_dir: str | None = None,
                 run_as: str | None = None, password: str | None = None) -> None:
        self.server_version = server_version
        self.password = password  # given: scram-sha-256 authentication for every connection
        self.parent = parent
        self.bin_dir = bin_dir
        self.run_as = run_as if run_as is not None else ("postgres" if os.geteuid() == 0 else None)
        self.root: str | None = None
        self.port = 5432
        self.started = False

    @property
    def data(self) -> str:
        assert self.root is not None
        return os.path.join(self.root, "data")

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", self.run_as, "--"] if self.run_as else []

    def _run(self, argv: list[str], what: str) -> None:
        done = subprocess.run(self._prefix() + argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=START_TIMEOUT + 60)
        if done.returncode != 0:
            output = " ".join((done.stderr or done.stdout).split())[-1500:]
            raise PostgresError(server=f"temporary cluster {self.root}", detail=f"{what} failed: {output}")

    def start(self) -> Server:
        """Make and start the cluster; the ``Server`` to reach it. PostgresError when it cannot start."""
        # The server's own major when given, else the newest installed (it reads every older dump).
        newest = installed("initdb", self.bin_dir)
        wanted = self.server_version if self.server_version is not None else (newest[-1].major * 10000 if newest else 0)
        initdb = find_tool("initdb", wanted, self.bin_dir, "temporary cluster")
        pg_ctl = find_tool("pg_ctl", wanted, self.bin_dir or os.path.dirname(initdb.path),
                           "temporary cluster")
        self.root = tempfile.mkdtemp(prefix="safehold-pg-", dir=self.parent)
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o700)  # the server's user must also be able to reach ``parent`` (/tmp: yes)
        self.port = 5432  # on a private socket folder any port number is free
        try:
            authentication = ["-A", "trust"]
            if self.password is not None:
                password_file = os.path.join(self.root, "superuser-password")
                with open(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                    handle.write(self.password + "\n")
                if self.run_as:
                    shutil.chown(password_file, self.run_as)
                authentication = ["-A", "scram-sha-256", f"--pwfile={password_file}"]
            self._run([initdb.path, "-D", self.data, *authentication, "-U", "postgres", "--no-sync", "-E", "UTF8",
                       "--locale=C"], "initdb")
            if self.password is not None:
                os.unlink(password_file)
            options = (f"-c listen_addresses='' -c port={self.port} -c unix_socket_directories='{self.root}' "
                       "-c fsync=off -c full_page_writes=off -c synchronous_commit=off")
            self._run([pg_ctl.path, "-D", self.data, "-l", os.path.join(self.root, "server.log"), "-w", "-s",
                       "-t", str(START_TIMEOUT), "-o", options, "start"], "pg_ctl start")
        except BaseException:
            self.stop()
            raise
        self.started = True
        self._pg_ctl = pg_ctl.path
        return self.server()

    def server(self) -> Server:
        assert self.root is not None
        return Server(host=self.root, port=self.port, user="postgres", password=self.password)

    def stop_server(self, mode: str = "immediate") -> None:
        """Stop the server, keeping its folder (``immediate``: as a crash would, no checkpoint)."""
        if self.started:
            subprocess.run(self._prefix() + [self._pg_ctl, "-D", self.data, "-m", mode, "-w", "-s", "stop"],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
            self.started = False

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (if it runs) and remove the folder; never raises for what is gone."""
        if self.root is None:
            return
        self.stop_server(mode)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
