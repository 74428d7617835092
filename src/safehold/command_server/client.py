"""The client of the command server, taken by the ``safehold`` entry point before anything else.

Standard library only (it runs on every command, served or not). ``run_through_server`` returns
the command's exit status when a command server ran it, or ``None`` when the command must run in
this process: no socket, ``SAFEHOLD_NO_SERVER`` set, a server of another user, another build or
another interpreter, or any error before the server said the command started. After that point the
command may have done work, so a lost connection is an error (CommandServerLost, exit 93), never a
second run.

Protocol (version 1), one connection per command, both ends the same uid (SO_PEERCRED):
client -> server: 4-byte big-endian length with SCM_RIGHTS (stdin, stdout, stderr, the working
directory), then that many bytes of JSON: protocol, identity, argv, env, umask, stdio encodings.
server -> client: ``S`` (ready), client -> server: ``G`` (go: the command now runs there, never
here), server -> client: ``X`` + 4-byte status (exited) or ``D`` + 1 byte (killed by
that signal); ``R`` instead of ``S``: refused, run it here. client -> server after ``G``: ``K`` + 1 byte: a
signal to deliver to the command (Ctrl-C and friends are forwarded, not acted on here).
"""

from __future__ import annotations

import os
import sys

# Only os and sys at module level: every command without a server passes here, and socket, json and
# friends cost ~10-20 ms of imports that a command in its own process may never need.

PROTOCOL = 1
SOCKET_ENV = "SAFEHOLD_COMMAND_SOCKET"
NO_SERVER_ENV = "SAFEHOLD_NO_SERVER"
STATE_DIR_ENV = "SAFEHOLD_STATE_DIR"  # config.models.STATE_DIR_ENV (a test keeps them equal)
DEFAULT_STATE_DIR = "/var/lib/safehold"  # config.models.DEFAULT_STATE_DIR
SOCKET_NAME = "command.sock"
START_TIMEOUT = 10.0  # seconds to wait for 'started' before running the command here
FORWARDED_SIGNALS = (2, 15, 1, 3, 10, 12)  # SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 (Linux numbers)


def socket_path(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> str:
    """Where clients look for the server: $SAFEHOLD_COMMAND_SOCKET, else command.sock in
    $SAFEHOLD_STATE_DIR, else in the default state directory."""
    explicit = environ.get(SOCKET_ENV)
    if explicit:
        return os.path.abspath(explicit)
    return os.path.join(os.path.abspath(environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR), SOCKET_NAME)


def identity() -> dict:
    """What must be equal on both ends for a served command to behave as a local one: the same
    safehold code (its version and where it is), the same interpreter and the same import path
    (its first entry, the script's folder, aside)."""
    from .. import __version__

    return {"version": __version__, "package": os.path.realpath(os.path.dirname(os.path.dirname(__file__))),
            "python": sys.version, "executable": os.path.realpath(sys.executable), "path": sys.path[1:]}


def peer_uid(connection) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED: pid, uid, gid)."""
    import socket
    import struct

    return struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     struct.calcsize("3i")))[1]


def _stdio() -> dict:
    streams = {}
    for name in ("stdin", "stdout", "stderr"):
        stream = getattr(sys, name)
        streams[name] = [getattr(stream, "encoding", None) or "utf-8", getattr(stream, "errors", None) or "strict"]
    return streams


def _request() -> bytes:
    import json

    umask = os.umask(0o077)
    os.umask(umask)
    document = {"protocol": PROTOCOL, "identity": identity(), "argv": list(sys.argv), "env": dict(os.environ),
                "umask": umask, "stdio": _stdio()}
    # ensure_ascii keeps undecodable bytes (surrogate escapes in argv and env) intact both ways
    return json.dumps(document, ensure_ascii=True).encode("ascii")


def _receive(connection, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = connection.recv(size - len(data))
        if not part:
            raise ConnectionError("the command server closed the connection")
        data += part
    return data


def run_through_server() -> int | None:
    """Run this process's command (sys.argv) in the command server; None: run it here."""
    if os.environ.get(NO_SERVER_ENV):
        return None
    path = socket_path()
    try:
        if not os.path.exists(path):
            return None
        for fd in (0, 1, 2):
            os.fstat(fd)  # a closed standard stream: nothing to hand over, run here
    except (OSError, ValueError):
        return None
    import array
    import socket
    import struct

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = None
    try:
        connection.settimeout(START_TIMEOUT)
        try:
            connection.connect(path)
            # The environment holds secrets (SAFEHOLD_PASSWORD): only to a server of this user.
            if peer_uid(connection) != os.geteuid():
                return None
            body = _request()
            cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
            connection.sendmsg([struct.pack(">I", len(body))],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2, cwd]))])
            connection.sendall(body)
            answer = _receive(connection, 1)
        except (OSError, ValueError):
            return None
        finally:
            if cwd is not None:
                os.close(cwd)
        if answer != b"S":
            return None  # refused (another build, a bad request) or ended before starting: run here
        try:
            # The go-ahead: from here on the command is the server's to run, never also ours. A
            # server that answered late to a client that gave up never gets it and runs nothing.
            connection.sendall(b"G")
        except OSError:
            return None
        return _wait(connection)
    finally:
        connection.close()


def _wait(connection) -> int:
    """Forward signals until the server reports the command's end; return its exit status."""
    import signal
    import struct

    connection.settimeout(None)

    def forward(number: int, frame: object) -> None:
        try:
            connection.sendall(b"K" + bytes([number]))
        except OSError:
            pass

    for number in FORWARDED_SIGNALS:
        signal.signal(number, forward)
    try:
        kind = _receive(connection, 1)
        if kind == b"X":
            return struct.unpack(">i", _receive(connection, 4))[0]
        if kind == b"D":
            number = _receive(connection, 1)[0]
            for forwarded in FORWARDED_SIGNALS:
                signal.signal(forwarded, signal.SIG_DFL)
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)  # end as the command did (a shell sees the same signal)
            return 128 + number
        detail = f"unexpected answer {kind!r}"
    except OSError as exc:  # ConnectionError included
        detail = str(exc)
    return _lost(detail)


def _lost(detail: str) -> int:
    from ..errors import CommandServerLost

    error = CommandServerLost(detail=detail)
    sys.stderr.write(f"error: {error.message}\nhint: {error.hint}\n")
    return error.exit_code
