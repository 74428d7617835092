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
        self.port = 5432  # on a private socket folder any port number is free
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

    def prepare(self) -> str:
        """Make the cluster's private folder (owned by ``run_as``); returns it. ``data`` lies inside."""
        if self.root is None:
            user = None
            if self.run_as:
                try:
                    user = pwd.getpwnam(self.run_as)
                except KeyError:
                    raise PostgresError(server="temporary cluster", detail=f"no user {self.run_as!r} to run it as "
                                        "(PostgreSQL refuses to run as root); install PostgreSQL's server package, "
                                        "which makes the postgres user") from None
            self.root = tempfile.mkdtemp(prefix="safehold-pg-", dir=self.parent)
            if user is not None:
                os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o700)  # the server's user must also be able to reach ``parent`` (/tmp: yes)
        return self.root

    def start_restored(self, user: str = "postgres") -> Server:
        """Start a server on a data directory restored into ``data`` (a physical backup): with the
        tools of its own major version (PG_VERSION), this folder's socket, and a configuration and
        authentication of our own (trust on the private socket), so neither the original's settings
        nor its pg_hba.conf (which may live outside the data directory) get in the way. It recovers
        to the end of the backup before it accepts connections."""
        assert self.root is not None
        try:
            with open(os.path.join(self.data, "PG_VERSION"), encoding="ascii") as handle:
                major = handle.read().strip()
            version = int(major) * 10000 if "." not in major else int(major.replace(".", "")) * 100
        except (OSError, ValueError) as exc:
            raise PostgresError(server=f"temporary cluster {self.root}",
                                detail=f"the restored data directory has no readable PG_VERSION: {exc}") from None
        pg_ctl = find_tool("pg_ctl", version, self.bin_dir, "temporary cluster")
        files = {"postgresql.conf": "", "pg_hba.conf": "local all all trust\n", "pg_ident.conf": ""}
        for name, text in files.items():
            path = os.path.join(self.root, name)
            with open(path, "w", encoding="ascii") as handle:
                handle.write(text)
            if self.run_as:
                shutil.chown(path, self.run_as)
        options = (f"-c config_file='{self.root}/postgresql.conf' -c hba_file='{self.root}/pg_hba.conf' "
                   f"-c ident_file='{self.root}/pg_ident.conf' -c listen_addresses='' -c port={self.port} "
                   f"-c unix_socket_directories='{self.root}' -c fsync=off -c archive_mode=off")
        self._pg_ctl = pg_ctl.path
        self._run([pg_ctl.path, "-D", self.data, "-l", os.path.join(self.root, "server.log"), "-w", "-s",
                   "-t", str(START_TIMEOUT), "-o", options, "start"], "pg_ctl start of the restored data directory")
        self.started = True
        return Server(host=self.root, port=self.port, user=user)

    def start(self) -> Server:
        """Make and start the cluster; the ``Server`` to reach it. PostgresError when it cannot start."""
        # The server's own major when given, else the newest installed (it reads every older dump).
        newest = installed("initdb", self.bin_dir)
        wanted = self.server_version if self.server_version is not None else (newest[-1].major * 10000 if newest else 0)
        initdb = find_tool("initdb", wanted, self.bin_dir, "temporary cluster")
        pg_ctl = find_tool("pg_ctl", wanted, self.bin_dir or os.path.dirname(initdb.path),
                           "temporary cluster")
        self.prepare()
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
