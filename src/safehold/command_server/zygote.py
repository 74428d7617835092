"""The command server's process: pre-loaded once, forked once per command.

``start`` is called by ``safehold serve --commands`` before the server starts any thread (a fork
copies only the calling thread: a lock held by another thread would stay locked forever in the
child). It prepares the socket, forks the zygote and returns. The zygote imports what commands
use, then loops: accept a connection, check that the peer is this uid (SO_PEERCRED; the socket is
0600 in a 0700 directory as well), fork a child for it and report the child's exit status to the
client when it ends (through a pidfd: the status is the real one, a crash included).

The child becomes the client's process for the command: its own session, the client's standard
streams (received as file descriptors), working directory (a descriptor too), umask, argv and
environment (the server's own environment is dropped entirely: a secret or setting of the server
never reaches a command, and the client's secrets are never logged). Then it runs the normal CLI
(``safehold.cli.main.run``) and finishes as an interpreter does (non-daemon threads joined, atexit
handlers run, streams flushed).

Derived keys: the per-process derivation cache of ``repository.crypto`` is inherited by every
child; a child that derives a new key sends the entry back over a pipe and the zygote keeps it
until no command came for ``key_cache_idle`` seconds (0: never kept). Entries are keyed by an HMAC
of the password, the salt and the parameters under a key random per zygote, so a command with a
wrong password finds nothing and fails as it would alone.
"""

from __future__ import annotations

import array
import errno
import io
import json
import logging
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path

from ..errors import CommandSocketUnusable
from . import client

log = logging.getLogger("safehold.command_server")

DEFAULT_KEY_CACHE_IDLE = 600.0  # seconds, gpg-agent's default-cache-ttl
REQUEST_TIMEOUT = 10.0
MAX_REQUEST = 4 << 20
PRELOAD = (
    "safehold.cli.main", "safehold.engine.context", "safehold.config", "safehold.engine.browse",
    "safehold.engine.backup", "safehold.engine.restore", "safehold.repository", "safehold.catalog",
    "safehold.catalog.light", "safehold.catalog.store",
    "safehold.sources.files", "safehold.restore.directory",
)


def prepare_socket(path: str | Path) -> socket.socket:
    """A listening socket at ``path`` (mode 0600) in a directory this user owns and others cannot
    enter; raises CommandSocketUnusable otherwise, or when a live server already listens there."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError as exc:
        raise CommandSocketUnusable(path=str(path), detail=f"its directory: {exc.strerror or exc}") from None
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise CommandSocketUnusable(
            path=str(path), detail=f"its directory {folder} is owned by uid {info.st_uid} with mode "
                                   f"{stat.S_IMODE(info.st_mode):o} (must be uid {os.geteuid()}, 700)")
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            pass  # left behind by a server that ended without cleaning up: replaced below
        else:
            raise CommandSocketUnusable(path=str(path), detail="another 'safehold serve' listens there")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = folder / f".{path.name}.{os.getpid()}"
    try:
        temporary.unlink(missing_ok=True)
        previous = os.umask(0o177)  # born 0600: no moment where another user could connect
        try:
            listener.bind(str(temporary))
        finally:
            os.umask(previous)
        os.chmod(temporary, 0o600)
        listener.listen(64)
        os.replace(temporary, path)
    except OSError as exc:
        listener.close()
        temporary.unlink(missing_ok=True)
        raise CommandSocketUnusable(path=str(path), detail=exc.strerror or str(exc)) from None
    return listener


def command_socket(state_dir: str | Path) -> str:
    """Where ``safehold serve`` listens: $SAFEHOLD_COMMAND_SOCKET, else command.sock in the
    configured state directory (clients look there when SAFEHOLD_STATE_DIR names it or it is the
    default one)."""
    explicit = os.environ.get(client.SOCKET_ENV)
    return os.path.abspath(explicit) if explicit else os.path.join(os.path.abspath(state_dir), client.SOCKET_NAME)


def _log_to_stderr() -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def serve_commands(path: str | Path, key_cache_idle: float = DEFAULT_KEY_CACHE_IDLE) -> None:
    """``safehold serve --commands-only``: this process is the zygote, until SIGTERM or Ctrl-C."""
    listener = prepare_socket(path)
    _log_to_stderr()
    Zygote(listener, str(path), key_cache_idle, None).serve()


def start(path: str | Path, key_cache_idle: float = DEFAULT_KEY_CACHE_IDLE) -> int:
    """Prepare the socket and fork the zygote; return its pid. Call before any thread starts. The
    zygote ends when this process does (it watches a pipe) or on SIGTERM/SIGINT, after the commands
    it runs have finished."""
    listener = prepare_socket(path)
    alive_read, alive_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(alive_write)
            _log_to_stderr()
            Zygote(listener, str(path), key_cache_idle, alive_read).serve()
        except BaseException:  # noqa: BLE001 - the zygote must never return into the caller's stack
            log.exception("command server failed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(alive_read)
    listener.close()
    os.set_inheritable(alive_write, False)
    _keep_open.append(alive_write)  # closed when this process ends: the zygote then ends too
    return pid


_keep_open: list[int] = []


class Zygote:
    def __init__(self, listener: socket.socket, path: str, key_cache_idle: float, alive: int | None) -> None:
        self.listener = listener
        self.path = path
        self.key_cache_idle = key_cache_idle
        self.alive = alive
        self.keys_read, self.keys_write = os.pipe()
        self.children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
        self.last_command = time.monotonic()
        self.pending = b""
        self.accepting = True
        self.selector = selectors.DefaultSelector()
        self.inode = os.stat(path).st_ino  # the socket file this zygote made (removed only if still it)
        self.server_log: int | None = None
        self.stopping = False
        # SIGTERM/SIGINT only set a flag and wake the loop (a byte on this pipe), so a signal never
        # cuts a step in half (a child reaped but its status not yet sent to its client).
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)

    # --- the zygote ---------------------------------------------------------------

    def serve(self) -> None:
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.preload()
        log.info("serving commands on %s (derived keys kept %s)", self.path,
                 f"until {self.key_cache_idle:g} s without a command" if self.key_cache_idle > 0 else "never")
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.keys_read, selectors.EVENT_READ, "keys")
        self.selector.register(self.wake_read, selectors.EVENT_READ, "wake")
        if self.alive is not None:
            self.selector.register(self.alive, selectors.EVENT_READ, "alive")
        try:
            while self.accepting or self.children:
                self.step()
        finally:
            self.close_listener()
            self.forget_keys("the command server stopped")

    def _stop(self, number: int, frame: object) -> None:
        self.stopping = True

    def step(self) -> None:
        timeout = None
        if self.key_cache_idle > 0 and self.cached_keys():
            timeout = max(0.0, self.last_command + self.key_cache_idle - time.monotonic())
        events = self.selector.select(timeout)
        if not events and timeout is not None:
            self.forget_keys(f"no command for {self.key_cache_idle:g} s")
        for key, _ in events:
            if key.data == "accept":
                self.accept()
            elif key.data == "keys":
                self.read_keys()
            elif key.data == "wake":
                try:
                    os.read(self.wake_read, 512)
                except BlockingIOError:
                    pass
            elif key.data == "alive":
                log.info("the server ended: the command server stops after its %d running command(s)",
                         len(self.children))
                self.close_listener()
            else:
                self.reap(key.fd)
        if self.stopping and self.accepting:
            log.info("stopping: no new commands; waiting for %d running command(s)", len(self.children))
            self.close_listener()

    def close_listener(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        for fd in (self.listener, self.alive):
            if fd is not None:
                try:
                    self.selector.unregister(fd)
                except (KeyError, ValueError):
                    pass
        try:  # remove the socket only if it is still ours (a new server may have replaced it)
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        self.listener.close()
        if self.alive is not None:
            os.close(self.alive)
            self.alive = None

    def preload(self) -> None:
        """Import what commands use (the whole point of the zygote); no thread is started."""
        import importlib

        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError as exc:  # an optional extra not installed
                log.debug("not preloaded: %s (%s)", name, exc)
        try:
            from ..repository.lazy_numpy import numpy

            numpy()  # with OpenBLAS at one thread: no thread exists at fork
            import typer.main

            from ..cli.app import app

            typer.main.get_command(app)  # Typer's parameter adapters (pydantic) and Click's tree
            from ..config import load_config_text

            load_config_text("repository: {url: /nonexistent}\ntargets:\n- {name: t, tier: 3, source: {type: files, "
                             "paths: [/]}}\n", "/nonexistent/targets.yml",
                             environ={})  # builds the deferred validators of the common models
        except Exception as exc:  # noqa: BLE001 - a warm-up only: commands still work without it
            log.debug("warm-up incomplete: %r", exc)
        import threading

        assert threading.active_count() == 1, "a preloaded module started a thread"

    def accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        # Only the same user: the socket's mode says so too, but root can connect to anything, and a
        # directory's mode can be changed later. The command would run with this user's rights.
        uid = client.peer_uid(connection)
        if uid != os.geteuid():
            log.warning("refused a connection from uid %d (serving uid %d only)", uid, os.geteuid())
            connection.close()
            return
        self.last_command = time.monotonic()
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("cannot fork for a command: %s", exc)
            connection.close()  # the client runs the command itself
            return
        if pid == 0:
            self.child(connection)  # never returns
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, connection)
        self.selector.register(pidfd, selectors.EVENT_READ, "child")

    def reap(self, pidfd: int) -> None:
        pid, connection = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            answer, text = b"D" + bytes([os.WTERMSIG(status)]), f"killed by signal {os.WTERMSIG(status)}"
        else:
            code = os.waitstatus_to_exitcode(status)
            answer, text = b"X" + struct.pack(">i", code), f"exit {code}"
        log.info("command process %d: %s", pid, text)
        try:
            connection.sendall(answer)
        except OSError:
            pass  # the client is gone (or was refused and runs the command itself)
        connection.close()

    def read_keys(self) -> None:
        from ..repository import crypto

        self.pending += os.read(self.keys_read, 65536)
        while len(self.pending) >= 4:
            entry_size, key_size = struct.unpack(">HH", self.pending[:4])
            if len(self.pending) < 4 + entry_size + key_size:
                break
            entry = self.pending[4:4 + entry_size]
            key = self.pending[4 + entry_size:4 + entry_size + key_size]
            self.pending = self.pending[4 + entry_size + key_size:]
            if self.key_cache_idle > 0:
                crypto.remember_derived(entry, key)
                log.info("keeping a derived key (%d in all)", self.cached_keys())

    def cached_keys(self) -> int:
        from ..repository import crypto

        return crypto.derived_count()

    def forget_keys(self, why: str) -> None:
        from ..repository import crypto

        count = crypto.forget_derived()
        if count:
            log.info("forgot %d derived key(s): %s", count, why)

    # --- a child: the client's process -------------------------------------------

    def child(self, connection: socket.socket) -> None:
        code = 1
        self.server_log = os.dup(2)  # until the command starts, failures are the server's to log
        try:
            code = self._child(connection)
        except BaseException:  # noqa: BLE001 - never return into the zygote's loop
            try:
                import traceback

                if self.server_log is not None:
                    os.write(self.server_log, f"command server: a command's process failed before the "
                                              f"command started:\n{traceback.format_exc()}".encode())
                else:
                    traceback.print_exc()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)

    def _child(self, connection: socket.socket) -> int:
        os.setsid()  # the server's terminal (its Ctrl-C) never reaches a command
        for handler in list(log.handlers):  # the command logs as it would alone, not into the server's log
            log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
        log.propagate = True
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(self.wake_read)
        os.close(self.wake_write)
        # Nothing of the server or of other commands stays open in a command's process.
        self.selector.close()
        self.listener.close()
        for pidfd, (_, other) in self.children.items():
            os.close(pidfd)
            other.close()
        self.children.clear()
        if self.alive is not None:
            os.close(self.alive)
        os.close(self.keys_read)
        keys_write = self.keys_write
        request, fds = self._read_request(connection)
        if request is None:
            for fd in fds:
                os.close(fd)
            connection.sendall(b"R")
            return 0
        from ..repository import crypto

        if self.key_cache_idle > 0:
            crypto.on_new_derived(lambda entry, key: _send_key(keys_write, entry, key))
        else:
            os.close(keys_write)
        self._become_client(request, fds)
        connection.sendall(b"S")
        connection.settimeout(REQUEST_TIMEOUT)
        try:
            go = connection.recv(1)
        except OSError:
            go = b""
        connection.settimeout(None)
        if go != b"G":
            return 0  # the client gave up waiting and runs the command itself
        os.close(self.server_log)
        self.server_log = None
        _watch(connection)
        return self._run()

    def _read_request(self, connection: socket.socket) -> tuple[dict | None, list[int]]:
        connection.settimeout(REQUEST_TIMEOUT)
        fds: list[int] = []
        try:
            data, ancillary, _, _ = connection.recvmsg(4, socket.CMSG_SPACE(4 * array.array("i").itemsize))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    numbers = array.array("i")
                    numbers.frombytes(payload[:len(payload) - len(payload) % numbers.itemsize])
                    fds.extend(numbers)
            if len(data) != 4 or len(fds) != 4:
                return None, fds
            size = struct.unpack(">I", data)[0]
            if size > MAX_REQUEST:
                return None, fds
            body = b""
            while len(body) < size:
                part = connection.recv(size - len(body))
                if not part:
                    return None, fds
                body += part
            request = json.loads(body)
        except (OSError, ValueError):
            return None, fds
        finally:
            connection.settimeout(None)
        # The client is this user, but its request is still checked before use: a malformed one
        # is refused (the client then runs the command itself), never half applied.
        if not isinstance(request, dict) or request.get("protocol") != client.PROTOCOL:
            return None, fds
        if request.get("identity") != client.identity():
            return None, fds  # another build or interpreter: it would not behave as the client's
        argv, env, umask, stdio = (request.get(k) for k in ("argv", "env", "umask", "stdio"))
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
                and isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
                and isinstance(umask, int) and 0 <= umask <= 0o777 and isinstance(stdio, dict)):
            return None, fds
        return request, fds

    def _become_client(self, request: dict, fds: list[int]) -> None:
        stdin, stdout, stderr, cwd = fds
        os.fchdir(cwd)
        os.close(cwd)
        os.umask(request["umask"])
        os.environ.clear()  # the server's environment is not the command's
        os.environ.update(request["env"])
        time.tzset()
        for received, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(received, target)
        for received in {stdin, stdout, stderr} - {0, 1, 2}:
            os.close(received)
        streams = request["stdio"]

        def text(fd: int, name: str, mode: str, line_buffering: bool):
            encoding, errors = (streams.get(name) or ["utf-8", "strict"])[:2]
            raw = io.open(fd, mode + "b", closefd=False)
            return io.TextIOWrapper(raw, encoding=encoding, errors=errors, line_buffering=line_buffering)

        # As the interpreter makes them: stdout line-buffered on a terminal, stderr always.
        sys.stdin = sys.__stdin__ = text(0, "stdin", "r", False)
        sys.stdout = sys.__stdout__ = text(1, "stdout", "w", os.isatty(1))
        sys.stderr = sys.__stderr__ = text(2, "stderr", "w", True)
        sys.argv = list(request["argv"])
        from ..cli.output import configure_consoles

        configure_consoles()  # colours and width for the client's terminal and environment

    def _run(self) -> int:
        from ..cli.main import run

        code: object = 0
        try:
            run()
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        return _finish(code)


def _finish(code: object) -> int:
    """End as the interpreter does after the main module: the exit code of SystemExit, non-daemon
    threads joined, atexit handlers run, the streams flushed."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        print(code, file=sys.stderr)
        status = 1
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize does first
    except Exception:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout:
                status = status or 120  # as the interpreter when flushing stdout fails
    return status


def _send_key(fd: int, entry: bytes, key: bytes) -> None:
    try:  # one write under PIPE_BUF: atomic among the children writing the same pipe
        os.write(fd, struct.pack(">HH", len(entry), len(key)) + entry + key)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise


def _watch(connection: socket.socket) -> None:
    """Deliver the signals the client forwards; a client gone (its terminal closed, killed) hangs
    the command up, as a process whose terminal went away."""
    import threading

    def watch() -> None:
        while True:
            try:
                data = connection.recv(2)
            except OSError:
                data = b""
            if not data:
                os.kill(os.getpid(), signal.SIGHUP)
                return
            if data[:1] == b"K" and len(data) == 2 and data[1] in client.FORWARDED_SIGNALS:
                if data[1] in (signal.SIGINT, signal.SIGQUIT):
                    # A terminal sends these to the whole foreground group, so the programs a
                    # command runs (pg_dump, ssh, a command source) get them too: this process
                    # leads its own group, which holds them unless they left it.
                    os.killpg(os.getpgrp(), data[1])
                else:
                    os.kill(os.getpid(), data[1])

    threading.Thread(target=watch, name="command-server-signals", daemon=True).start()
